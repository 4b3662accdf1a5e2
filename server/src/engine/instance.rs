//! One session instance: the thread loop, batch tensor assembly, the run, and the per-request split.
//! `build_session`, `run_session` and `collect_rows` are public so that the benchmark's bare pipeline runs
//! exactly the code the server runs.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ort::{
    environment::Environment,
    session::{Session, SessionOutputs, builder::GraphOptimizationLevel},
    value::{DynValue, TensorRef},
};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::sharing::ModelShare;
use crate::{
    batching::{Batch, Job, JobOutput, ModelLoad, Payload},
    error::Error,
    health::{BatchOutcome, ModelHealth},
    imaging::{InputData, Prepared},
    metrics,
    postprocess::{self, Row, TaskOptions, Values},
    repository::{InputDtype, OutputSpec, Task, Variant},
    sched::{self, CpuScheduling},
};

pub struct Context {
    pub env: Environment,
    pub variant: Arc<Variant>,
    pub intra_op_threads: usize,
    pub max_batch_size: usize,
    pub batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
    pub load: Arc<ModelLoad>,
    /// Where this thread reports each batch's start and outcome, in its own slot.
    pub health: Arc<ModelHealth>,
    pub health_slot: usize,
    pub share: ModelShare,
    /// `--cpu-scheduling` and `--model-thread-nice`, set before the session exists so that ONNX Runtime's
    /// threads inherit them.
    pub cpu_scheduling: CpuScheduling,
    pub thread_nice: i32,
}

/// Thread body: build and warm the session, report readiness, then serve until the queue closes.
pub fn run(ctx: Context, ready: std::sync::mpsc::SyncSender<anyhow::Result<()>>) {
    let name = ctx.variant.config.name.clone();
    if let Err(e) = sched::apply_to_current_thread(ctx.cpu_scheduling)
        .and_then(|()| sched::lower_current_thread_priority(ctx.thread_nice))
    {
        tracing::warn!(model = %name, error = %e, "could not set the model thread's scheduling; serving with the default");
    }
    let loaded = build_session(&ctx.env, &ctx.variant, ctx.intra_op_threads, &ctx.share)
        .and_then(|mut s| warm_up(&mut s, &ctx.variant, ctx.max_batch_size, &ctx.load).map(|_| s));
    let mut session = match loaded {
        Ok(session) => session,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        // Holding the lock while waiting is fine: the other instances have nothing to do either.
        let next = ctx
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocking_recv();
        let Some(batch) = next else { break };
        ctx.health.batch_started(ctx.health_slot);
        // A panic while serving one batch (a bug, or a model output config.json did not foresee) must not
        // take the model down: its jobs are dropped, so their clients get a 500, and the thread serves on.
        let mut slot = BatchSlot::new(&ctx.load, batch.jobs.len());
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&mut session, &ctx.variant, batch, &mut slot)
        }));
        let outcome = served.unwrap_or_else(|_| {
            tracing::error!(model = %name, "a batch panicked; its requests failed, the model serves on");
            BatchOutcome::Failed
        });
        ctx.health.batch_finished(ctx.health_slot, outcome);
        // Released here if the batch ended before its run (every job dropped) or panicked.
        drop(slot);
    }
    tracing::debug!(model = %name, "model thread stopped");
}

pub fn build_session(
    env: &Environment,
    variant: &Variant,
    intra_op_threads: usize,
    share: &ModelShare,
) -> anyhow::Result<Session> {
    let e = |e: ort::Error| anyhow::anyhow!("{}: {e}", variant.config.name);
    let mut builder = Session::builder(env).map_err(e)?;
    // Kernels that repack their weights (QLinearConv, MatMul, Gemm, ...) store them once for the model.
    builder = builder
        .with_prepacked_weights(&share.prepacked)
        .map_err(|err| e(err.into()))?;
    if share.env_arena {
        builder = builder.with_env_allocators().map_err(|err| e(err.into()))?;
    }
    let session = builder
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|err| e(err.into()))?
        .with_intra_threads(intra_op_threads)
        .map_err(|err| e(err.into()))?
        .with_inter_threads(1)
        .map_err(|err| e(err.into()))?
        // Spinning workers would steal the cores that image decoding needs between batches.
        .with_intra_op_spinning(false)
        .map_err(|err| e(err.into()))?
        .commit_from_file(&variant.model_path)
        .map_err(e)?;
    Ok(session)
}

/// Runs a zeroed image through the whole path once, so the first real request is not the slow one and a
/// broken config.json (wrong output names or shapes) fails at load instead of at the first request.
///
/// The runs after the first (which pays for first-run allocations) seed the model's latency estimate, so that
/// admission by expected wait judges the first requests from this machine's figures.
fn warm_up(
    session: &mut Session,
    variant: &Variant,
    max_batch_size: usize,
    load: &ModelLoad,
) -> anyhow::Result<()> {
    let (data, options) = zero_input(variant);
    let name = &variant.config.name;
    // A single image, then two when batching is on: the second run proves the batch dimension really is
    // symbolic and that outputs split per request, at load rather than under the first concurrent load.
    // The last single image is timed, warm.
    for (run, batch) in [1, max_batch_size.min(2), 1].into_iter().enumerate() {
        let started = Instant::now();
        let inputs = vec![&data; batch];
        let outputs = run_session(session, variant, &inputs)
            .map_err(|e| anyhow::anyhow!("{name}: warm-up with batch {batch}: {e}"))?;
        let rows = collect_rows(&outputs, &variant.config.output, batch)
            .map_err(|e| anyhow::anyhow!("{name}: warm-up with batch {batch}: {e}"))?;
        if let Some(row) = rows.first() {
            variant.raw_outputs.get_or_init(|| {
                postprocess::raw_tensors(&variant.config.output, row)
                    .into_iter()
                    .map(|t| (t.name, t.data.datatype(), t.shape))
                    .collect()
            });
        }
        for row in &rows {
            postprocess::decode(&variant.config.output, &variant.labels, row, options)
                .map_err(|e| anyhow::anyhow!("{name}: warm-up decode: {e:?}"))?;
        }
        if run > 0 {
            load.observe_batch(batch, started.elapsed(), Duration::ZERO);
        }
    }
    Ok(())
}

/// A zeroed image and the cheapest options for `variant`: the warm-up's input, and the health probe's (an
/// input known to run, since the model loaded with it).
pub fn zero_input(variant: &Variant) -> (InputData, TaskOptions) {
    let input = &variant.config.input;
    let len = input.elements();
    let data = match input.dtype {
        InputDtype::Uint8 => InputData::U8(vec![0; len]),
        InputDtype::Float32 => InputData::F32(vec![0.0; len]),
    };
    let options = match variant.config.task {
        Task::Classification => TaskOptions::Classify { top_k: 1 },
        Task::Detection => TaskOptions::Detect {
            score_threshold: 0.5,
            iou_threshold: 0.5,
            max_detections: 1,
        },
        Task::Segmentation => TaskOptions::Segment,
    };
    (data, options)
}

/// A job that will run: its image prepared, and the parts of the job still needed to answer it.
struct Ready {
    image: Prepared,
    decode: Duration,
    options: TaskOptions,
    raw_outputs: bool,
    enqueued: Instant,
    reply: oneshot::Sender<crate::error::Result<JobOutput>>,
    /// Held until the answer is ready: the model's capacity, and the requests admission counts ahead of a
    /// new one, include running requests.
    permit: OwnedSemaphorePermit,
}

impl Ready {
    /// Gives the queue place back, then answers. In this order, a client that sends its next request the
    /// moment it has its answer never finds its own previous request still counted ahead of it.
    fn answer(self, output: crate::error::Result<JobOutput>) {
        drop(self.permit);
        // The client may have gone meanwhile; that is not an error here.
        let _ = self.reply.send(output);
    }
}

/// Drops the jobs that should no longer run and prepares the encoded images of the rest, answering a job whose
/// image does not decode with its error (the client's 4xx) while the others run on.
fn ready_jobs(variant: &Variant, jobs: Vec<Job>, now: Instant) -> Vec<Ready> {
    let model = variant.config.name.as_str();
    let mut ready = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(reason) = job.skip_reason(now) {
            job.drop_with(model, reason);
            continue;
        }
        let decode_start = Instant::now();
        let image = match job.payload {
            Payload::Prepared(image) => image,
            Payload::Encoded(encoded) => match encoded.prepare(&variant.config.input) {
                Ok(image) => image,
                Err(e) => {
                    drop(job._permit);
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            },
        };
        ready.push(Ready {
            image,
            decode: decode_start.elapsed(),
            options: job.options,
            raw_outputs: job.raw_outputs,
            enqueued: job.enqueued,
            reply: job.reply,
            permit: job._permit,
        });
    }
    ready
}

/// The model's count of batches in flight, given back once per batch: as soon as the session has run, before
/// the answers are sent, or at the latest when dropped. Giving it back before answering matters: a client
/// that sends its next request the moment it has its answer must find the model idle (and reach the solo
/// session), not find it still counted busy while this thread finishes the batch.
struct BatchSlot<'a> {
    load: &'a ModelLoad,
    /// The batch's requests, given back with it: the model's count of requests running.
    size: usize,
    /// The model's id of the batch, from [`ModelLoad::batch_started`].
    id: u64,
    held: bool,
}

impl<'a> BatchSlot<'a> {
    fn new(load: &'a ModelLoad, size: usize) -> BatchSlot<'a> {
        BatchSlot {
            load,
            size,
            id: load.batch_started(size),
            held: true,
        }
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.load.batch_done(self.id, self.size);
        }
    }
}

impl Drop for BatchSlot<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs one batch and answers its jobs; the outcome is the model's, for its health (a job's own bad image
/// is not a model failure).
fn run_batch(
    session: &mut Session,
    variant: &Variant,
    batch: Batch,
    slot: &mut BatchSlot,
) -> BatchOutcome {
    let model = variant.config.name.as_str();
    let start = Instant::now();
    // Last look before spending CPU on them: drop jobs whose client left or whose deadline passed.
    let jobs = ready_jobs(variant, batch.jobs, start);
    if jobs.is_empty() {
        return BatchOutcome::Skipped;
    }
    metrics::record_batch(model, jobs.len());
    let decoding: Duration = jobs.iter().map(|j| j.decode).sum();
    let inputs: Vec<&InputData> = jobs.iter().map(|j| &j.image.data).collect();
    let run_start = Instant::now();
    let result = run_session(session, variant, &inputs);
    let inference = run_start.elapsed();
    slot.release();
    let outputs = match result {
        Ok(outputs) => outputs,
        Err(e) => {
            tracing::error!(%model, error = %e, "inference failed");
            for job in jobs {
                job.answer(Err(Error::internal(format!("inference failed: {e}"))));
            }
            return BatchOutcome::Failed;
        }
    };
    let batch_size = jobs.len();
    let rows = match collect_rows(&outputs, &variant.config.output, batch_size) {
        Ok(rows) => rows,
        Err(e) => {
            for job in jobs {
                job.answer(Err(Error::internal(e.clone())));
            }
            return BatchOutcome::Failed;
        }
    };
    for (job, row) in jobs.into_iter().zip(rows) {
        let post_start = Instant::now();
        let decoded =
            postprocess::decode(&variant.config.output, &variant.labels, &row, job.options);
        let raw = if job.raw_outputs {
            postprocess::raw_tensors(&variant.config.output, &row)
        } else {
            Vec::new()
        };
        let output = decoded.map(|decoded| JobOutput {
            decoded,
            raw,
            width: job.image.width,
            height: job.image.height,
            decode: job.decode,
            queue: start.saturating_duration_since(job.enqueued),
            inference,
            postprocess: post_start.elapsed(),
            batch_size,
        });
        job.answer(output);
    }
    // How long the batch kept this thread, decoding and splitting included: what admission predicts from.
    slot.load
        .observe_batch(batch_size, start.elapsed(), decoding);
    BatchOutcome::Served
}

/// Builds the batch tensor and runs the session. A single request is fed from its own buffer without a copy.
pub fn run_session<'s>(
    session: &'s mut Session,
    variant: &Variant,
    inputs: &[&InputData],
) -> Result<SessionOutputs<'s>, String> {
    let spec = &variant.config.input;
    let n = inputs.len();
    let [a, b, c] = spec.row_shape();
    let shape = [n, a, b, c];
    if inputs.iter().any(|i| i.len() != spec.elements()) {
        return Err("input size does not match the model".into());
    }
    let name = spec.name.as_str();
    match spec.dtype {
        InputDtype::Uint8 => feed(session, name, shape, inputs, |i| match i {
            InputData::U8(v) => Some(&v[..]),
            _ => None,
        }),
        InputDtype::Float32 => feed(session, name, shape, inputs, |i| match i {
            InputData::F32(v) => Some(&v[..]),
            _ => None,
        }),
    }
}

/// Runs the session on `inputs` as one `shape` tensor of `T`; `get` is each input's data when its dtype is `T`.
fn feed<'s, 'a, T>(
    session: &'s mut Session,
    name: &str,
    shape: [usize; 4],
    inputs: &[&'a InputData],
    get: impl Fn(&'a InputData) -> Option<&'a [T]>,
) -> Result<SessionOutputs<'s>, String>
where
    T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Copy + 'static,
{
    const WRONG_DTYPE: &str = "input dtype does not match the model";
    let joined: Vec<T>;
    let data: &[T] = match inputs {
        [one] => get(one).ok_or(WRONG_DTYPE)?,
        _ => {
            let mut out = Vec::with_capacity(inputs.iter().map(|i| i.len()).sum());
            for input in inputs {
                out.extend_from_slice(get(input).ok_or(WRONG_DTYPE)?);
            }
            joined = out;
            &joined
        }
    };
    let err = |e: ort::Error| e.to_string();
    let tensor = TensorRef::from_array_view((shape, data)).map_err(err)?;
    session.run(ort::inputs![name => tensor]).map_err(err)
}

/// Per request, its rows of every output named by the spec (in spec order).
pub fn collect_rows<'o>(
    outputs: &'o SessionOutputs<'_>,
    spec: &OutputSpec,
    batch: usize,
) -> Result<Vec<Vec<Row<'o>>>, String> {
    let mut per_output = Vec::new();
    for name in spec.output_names() {
        let value = outputs
            .get(name)
            .ok_or_else(|| format!("model has no output {name:?}"))?;
        per_output.push(
            tensor_view(value).ok_or_else(|| format!("output {name:?} has an unsupported type"))?,
        );
    }
    Ok((0..batch)
        .map(|i| {
            per_output
                .iter()
                .map(|(shape, values)| {
                    // A leading dimension of 1 with a larger batch is a broadcast (e.g. constant anchors).
                    let rows = shape.first().copied().unwrap_or(1).max(1) as usize;
                    let (row, rows) = if rows == batch { (i, batch) } else { (0, rows) };
                    Row {
                        shape: shape.get(1..).unwrap_or(&[]),
                        values: values.row(row, rows),
                    }
                })
                .collect()
        })
        .collect())
}

fn tensor_view(value: &DynValue) -> Option<(&[i64], Values<'_>)> {
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Some((shape, Values::F32(data)));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
        return Some((shape, Values::I64(data)));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<i32>() {
        return Some((shape, Values::I32(data)));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<u8>() {
        return Some((shape, Values::U8(data)));
    }
    None
}
