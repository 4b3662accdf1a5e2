//! The bare pipeline: what the server does per image, with no server around it. Decode + resize + normalise
//! ([`imaging::prepare`]), one ONNX Runtime run of the batch on a session built by the server's own
//! [`instance::build_session`] (same graph options, same intra-op threads, no spinning), and the server's
//! post-processing ([`postprocess::decode`], plus the class-map resize and RLE for segmentation).
//!
//! Two shapes of the same work:
//! - [`Bare::measure_sequential`]: one image after the other on one thread, the floor for one client's
//!   latency. It runs on the solo session when the server has one, as the server runs a lone request;
//! - [`Bare::measure_pipelined`]: as many decode threads as the server has (`--decode-threads`) feed batches
//!   over a small bounded channel to as many session threads as the server has instances, so decoding
//!   overlaps inference as it does in the server. With a solo session it is also measured on that session
//!   alone ([`Layout::Solo`]), and with each instance's thread decoding its own batch right before running
//!   it ([`Layout::InstancesInline`], what the server's model threads do with `decode_in_model_thread`).
//!   The best of every layout and batch size is the throughput the server is compared with.
//!
//! And the engine's limit, with no decoding at all: [`Bare::measure_engine`] runs the same sessions in the
//! same layout on input tensors prepared before the clock starts (ONNX Runtime and the post-processing only),
//! the most the server could ever serve; [`Bare::measure_engine_single`] times one image at a time on the
//! session a lone request runs on.
//!
//! Every thread of the pipeline, ONNX Runtime's included, runs under the server's `--cpu-scheduling` policy,
//! as the server's threads do; the load generator on the main thread keeps the default.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use mobilenet_serve::config::ModelKnobs;
use mobilenet_serve::engine::instance;
use mobilenet_serve::imaging::{self, ImageLimits, InputData, Prepared};
use mobilenet_serve::options;
use mobilenet_serve::postprocess::{self, Decoded, TaskOptions, segment};
use mobilenet_serve::repository::{Task, Variant};
use mobilenet_serve::sched::{self, CpuScheduling};
use ort::environment::Environment;
use ort::session::Session;

use crate::stats::Samples;

pub struct Bare {
    variant: Arc<Variant>,
    /// One per server instance of the variant, each with the server's intra-op threads.
    sessions: Vec<Session>,
    /// The server's solo session, when it has one.
    solo: Option<Session>,
    options: TaskOptions,
    image_limits: ImageLimits,
    scheduling: CpuScheduling,
}

/// Which sessions run the batches of an overlapped pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One runner per server instance, each on its own session.
    Instances,
    /// The solo session alone.
    Solo,
    /// One runner per server instance, each decoding its own batch, with no decode threads.
    InstancesInline,
}

/// Throughput at one batch size, and the time of each batch.
pub struct BatchRun {
    pub layout: Layout,
    pub batch_size: usize,
    pub images_per_s: f64,
    pub per_batch: Samples,
}

impl Bare {
    /// The bare pipeline of `variant` in the layout the server's `config` gives it, and that layout.
    pub fn open_as_served(
        env: &Environment,
        variant: Variant,
        config: &mobilenet_serve::config::Config,
    ) -> anyhow::Result<(Bare, ModelKnobs)> {
        let knobs = config.knobs_for(&variant.config.name, variant.config.serving)?;
        let bare = Bare::open(
            env,
            variant,
            &knobs,
            config.image_limits(),
            config.cpu_scheduling,
        )?;
        Ok((bare, knobs))
    }

    pub fn open(
        env: &Environment,
        variant: Variant,
        knobs: &ModelKnobs,
        image_limits: ImageLimits,
        scheduling: CpuScheduling,
    ) -> anyhow::Result<Bare> {
        // ONNX Runtime creates a session's intra-op threads when it is built; they inherit the policy.
        // One weight share for the variant's sessions, and the same arena, as the server's `load_model` makes.
        let share = mobilenet_serve::engine::sharing::ModelShare::new(env, knobs.shared_arena)?;
        let (sessions, solo) = under_policy(scheduling, || {
            let sessions = (0..knobs.instances.max(1))
                .map(|_| instance::build_session(env, &variant, knobs.intra_op_threads, &share))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let solo = match knobs.solo_intra_op_threads {
                0 => None,
                threads => Some(instance::build_session(env, &variant, threads, &share)?),
            };
            anyhow::Ok((sessions, solo))
        })?;
        // The server's defaults for requests that set no options (README), so both do the same work.
        let options = match variant.config.task {
            Task::Classification => options::classify(None)?,
            Task::Detection => options::detect(None, None, None)?,
            Task::Segmentation => TaskOptions::Segment,
        };
        Ok(Bare {
            variant: Arc::new(variant),
            sessions,
            solo,
            options,
            image_limits,
            scheduling,
        })
    }

    /// The layouts the overlapped pipeline can run in.
    pub fn layouts(&self) -> Vec<Layout> {
        let mut layouts = vec![Layout::Instances, Layout::InstancesInline];
        if self.solo.is_some() {
            layouts.push(Layout::Solo);
        }
        layouts
    }

    /// Runs prepared images as one batch on `session`: ORT, then the server's post-processing of each image.
    fn infer(
        session: &mut Session,
        variant: &Variant,
        options: TaskOptions,
        prepared: &[Prepared],
    ) -> anyhow::Result<()> {
        let inputs: Vec<&InputData> = prepared.iter().map(|p| &p.data).collect();
        let output_spec = &variant.config.output;
        let outputs = instance::run_session(session, variant, &inputs).map_err(|e| anyhow!(e))?;
        let rows =
            instance::collect_rows(&outputs, output_spec, inputs.len()).map_err(|e| anyhow!(e))?;
        for (row, image) in rows.iter().zip(prepared) {
            match postprocess::decode(output_spec, &variant.labels, row, options)? {
                Decoded::ClassMap(map) => {
                    let full = segment::resize_nearest(&map, image.width, image.height);
                    black_box(segment::fractions(&full.classes));
                    black_box(segment::run_length(&full.classes));
                }
                other => {
                    black_box(other);
                }
            }
        }
        Ok(())
    }

    fn prepare(&self, bytes: &[u8]) -> anyhow::Result<Prepared> {
        Ok(imaging::prepare_checked(
            bytes,
            &self.variant.config.input,
            &self.image_limits,
        )?)
    }

    /// One image at a time, decode then inference, for about `duration` (after one untimed image).
    pub fn measure_sequential(
        &mut self,
        images: &[Bytes],
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        under_policy(self.scheduling, || self.sequential(images, duration))
    }

    fn sequential(&mut self, images: &[Bytes], duration: Duration) -> anyhow::Result<BatchRun> {
        let one = |bare: &mut Bare, i: usize| -> anyhow::Result<()> {
            let prepared = bare.prepare(&images[i % images.len()])?;
            let session = match bare.solo.as_mut() {
                Some(solo) => solo,
                None => &mut bare.sessions[0],
            };
            Bare::infer(session, &bare.variant, bare.options, &[prepared])
        };
        one(self, 0)?;
        let mut i = 0;
        let (per_batch, elapsed) = repeat_for(duration, || {
            i += 1;
            one(self, i)
        })?;
        let images_per_s = per_batch.len() as f64 / elapsed.as_secs_f64();
        Ok(BatchRun {
            layout: if self.solo.is_some() {
                Layout::Solo
            } else {
                Layout::Instances
            },
            batch_size: 1,
            images_per_s,
            per_batch,
        })
    }

    /// `decoders` threads prepare images (cycling through `images`) into a bounded channel; one thread per
    /// session of `layout` takes them in batches of `batch_size` and runs them for about `duration`, after
    /// one untimed batch each.
    pub fn measure_pipelined(
        &mut self,
        layout: Layout,
        images: &[Bytes],
        batch_size: usize,
        decoders: usize,
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        let decoders = if layout == Layout::InstancesInline {
            0
        } else {
            decoders.max(1)
        };
        // The decode and session threads it starts inherit the policy.
        under_policy(self.scheduling, || {
            let sessions: Vec<&mut Session> = match layout {
                Layout::Instances | Layout::InstancesInline => self.sessions.iter_mut().collect(),
                Layout::Solo => self.solo.iter_mut().collect(),
            };
            anyhow::ensure!(!sessions.is_empty(), "no session for {layout:?}");
            let stop = AtomicBool::new(false);
            let next = AtomicUsize::new(0);
            let (variant, options, limits) = (&*self.variant, self.options, self.image_limits);
            let runners = sessions.len();
            // Room for the batches being formed and the next one: decoding stays ahead without piling up.
            let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Prepared>>(
                (runners + 1) * batch_size,
            );
            let rx = Mutex::new(rx);
            let live_decoders = AtomicUsize::new(decoders);
            let prepare = |i: usize| {
                imaging::prepare_checked(&images[i % images.len()], &variant.config.input, &limits)
                    .map_err(anyhow::Error::from)
            };
            // Each runner takes a whole batch under the lock, as a server instance takes a closed batch.
            let take = || -> anyhow::Result<Vec<Prepared>> {
                if decoders == 0 {
                    return (0..batch_size)
                        .map(|_| prepare(next.fetch_add(1, Ordering::Relaxed)))
                        .collect();
                }
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                (0..batch_size)
                    .map(|_| rx.recv().map_err(|_| anyhow!("decode threads stopped"))?)
                    .collect()
            };
            let run = |session: &mut Session| -> anyhow::Result<(Samples, Duration)> {
                Bare::infer(session, variant, options, &take()?)?;
                // The batch is taken before its timer starts: waiting for decoders is not inference.
                let mut per_batch = Samples::default();
                let start = Instant::now();
                while start.elapsed() < duration || per_batch.len() < 3 {
                    let batch = take()?;
                    let t = Instant::now();
                    Bare::infer(session, variant, options, &batch)?;
                    per_batch.push(t.elapsed());
                }
                Ok((per_batch, start.elapsed()))
            };
            std::thread::scope(|scope| {
                for _ in 0..decoders {
                    let (tx, stop, next, live) = (tx.clone(), &stop, &next, &live_decoders);
                    let prepare = &prepare;
                    scope.spawn(move || {
                        let _done = Decrement(live);
                        while !stop.load(Ordering::Relaxed) {
                            let prepared = prepare(next.fetch_add(1, Ordering::Relaxed));
                            if tx.send(prepared).is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                let runs: Vec<_> = sessions
                    .into_iter()
                    .map(|session| scope.spawn(|| run(session)))
                    .collect();
                let mut result: anyhow::Result<BatchRun> = Ok(BatchRun {
                    layout,
                    batch_size,
                    images_per_s: 0.0,
                    per_batch: Samples::default(),
                });
                for joined in runs {
                    let outcome = joined
                        .join()
                        .map_err(|_| anyhow!("a session thread panicked"))
                        .and_then(|r| r);
                    match (&mut result, outcome) {
                        (Ok(total), Ok((per_batch, elapsed))) => {
                            // Each runner's own rate; together they are the pipeline's.
                            total.images_per_s +=
                                (per_batch.len() * batch_size) as f64 / elapsed.as_secs_f64();
                            total.per_batch.extend(per_batch);
                        }
                        (Ok(_), Err(e)) => result = Err(e),
                        (Err(_), _) => {}
                    }
                }
                // Stop the decoders, emptying the channel until each has seen the flag: one blocked on a full
                // channel would otherwise never return and the scope would never end.
                stop.store(true, Ordering::Relaxed);
                while live_decoders.load(Ordering::Acquire) > 0 {
                    while rx
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .try_recv()
                        .is_ok()
                    {}
                    std::thread::sleep(Duration::from_millis(1));
                }
                result
            })
        })
    }
}

impl Bare {
    /// `batch_size` images prepared in advance (cycling through `images`), the same batch for every run.
    fn prepared_batch(&self, images: &[Bytes], batch_size: usize) -> anyhow::Result<Vec<Prepared>> {
        (0..batch_size)
            .map(|i| self.prepare(&images[i % images.len()]))
            .collect()
    }

    /// The engine's throughput limit: one thread per session of `layout`, each running the same prepared
    /// batch of `batch_size` over and over for about `duration` (after one untimed run each).
    pub fn measure_engine(
        &mut self,
        layout: Layout,
        images: &[Bytes],
        batch_size: usize,
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        let scheduling = self.scheduling;
        let batches = self
            .sessions
            .iter()
            .map(|_| self.prepared_batch(images, batch_size))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (variant, options) = (&*self.variant, self.options);
        let sessions: Vec<&mut Session> = match layout {
            Layout::Instances | Layout::InstancesInline => self.sessions.iter_mut().collect(),
            Layout::Solo => self.solo.iter_mut().collect(),
        };
        anyhow::ensure!(!sessions.is_empty(), "no session for {layout:?}");
        under_policy(scheduling, || {
            std::thread::scope(|scope| {
                let runs: Vec<_> = sessions
                    .into_iter()
                    .zip(&batches)
                    .map(|(session, batch)| {
                        scope.spawn(move || {
                            Bare::infer(session, variant, options, batch)?;
                            repeat_for(duration, || Bare::infer(session, variant, options, batch))
                        })
                    })
                    .collect();
                let mut total = BatchRun {
                    layout,
                    batch_size,
                    images_per_s: 0.0,
                    per_batch: Samples::default(),
                };
                for joined in runs {
                    let (per_batch, elapsed) = joined
                        .join()
                        .map_err(|_| anyhow!("an engine thread panicked"))??;
                    total.images_per_s +=
                        (per_batch.len() * batch_size) as f64 / elapsed.as_secs_f64();
                    total.per_batch.extend(per_batch);
                }
                Ok(total)
            })
        })
    }

    /// One prepared image at a time on the session a lone request runs on (the solo session if there is
    /// one): the engine's single-image time.
    pub fn measure_engine_single(
        &mut self,
        images: &[Bytes],
        duration: Duration,
    ) -> anyhow::Result<BatchRun> {
        let batch = self.prepared_batch(images, 1)?;
        let scheduling = self.scheduling;
        let (variant, options) = (&*self.variant, self.options);
        let (session, layout) = match self.solo.as_mut() {
            Some(solo) => (solo, Layout::Solo),
            None => (&mut self.sessions[0], Layout::Instances),
        };
        under_policy(scheduling, || {
            Bare::infer(session, variant, options, &batch)?;
            let (per_batch, elapsed) =
                repeat_for(duration, || Bare::infer(session, variant, options, &batch))?;
            Ok(BatchRun {
                layout,
                batch_size: 1,
                images_per_s: per_batch.len() as f64 / elapsed.as_secs_f64(),
                per_batch,
            })
        })
    }
}

/// Runs `once` over and over for at least `duration` and three runs, timing each; returns the times and the
/// whole loop's length.
fn repeat_for(
    duration: Duration,
    mut once: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Samples, Duration)> {
    let mut per_run = Samples::default();
    let start = Instant::now();
    while start.elapsed() < duration || per_run.len() < 3 {
        let t = Instant::now();
        once()?;
        per_run.push(t.elapsed());
    }
    Ok((per_run, start.elapsed()))
}

/// Runs `work` on a thread of its own under `policy`, so the threads `work` creates inherit the policy.
fn under_policy<T: Send>(policy: CpuScheduling, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            if let Err(e) = sched::apply_to_current_thread(policy) {
                eprintln!("bare pipeline: could not set the CPU scheduling policy {policy:?}: {e}");
            }
            work()
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Counts a decoder thread out when it returns, however it returns.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}
