//! The inference service both transports call: route → admit → decode (off the reactor: on the decode pool,
//! or on the model thread when the model's knobs say so) → queue → model thread → finish → answer, with the
//! request recorded in the metrics once, here.
use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{
    auto::{self, Choice, DecodeBacklog, Margin},
    batching::{Payload, Refusal},
    decode_cost::DecodeCost,
    engine::Model,
    error::{Error, Result},
    imaging::{self, DecodeBudget, Encoded, ImageLimits},
    metrics,
    postprocess::{
        Class, Decoded, RawTensor, TaskOptions,
        finish::{self, Detection, Segmentation},
    },
    repository::Task,
    routing::{Router, Selector},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// What a request brings to run the model on.
pub enum Input {
    /// An encoded image (JPEG, PNG, BMP): the server decodes it and prepares the model's input from it.
    Image(Bytes),
    /// One batch row of the model's own input tensor, already prepared by the client (the Open Inference
    /// Protocol's raw tensor input, checked against the model's input by [`crate::oip`]). It is batched
    /// with the images; the "image" it stands for has the input's size.
    Tensor(imaging::Prepared),
}

/// One inference request, transport-independent and already validated.
pub struct InferRequest {
    pub input: Input,
    pub selector: Selector,
    pub options: TaskOptions,
    /// Segmentation only: encode the mask as PNG instead of RLE.
    pub png: bool,
    pub deadline: Option<Instant>,
    /// When the request's head arrived, before its body was read: its deadline, its `model=auto` budget and
    /// its recorded times count from here, as the client's clock does, so that receiving the image counts.
    pub received: Instant,
    pub protocol: Protocol,
    /// Also answer with the model's own output tensors ([`Answer::raw`]).
    pub raw_outputs: bool,
}

/// Phase timings in milliseconds, as the API reports them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub queue_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
}

/// How `model=auto` chose the variant, for the answer (times in milliseconds).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AutoRouting {
    pub budget_ms: f64,
    /// `None` when the chosen variant had not run a batch yet.
    pub predicted_ms: Option<f64>,
    /// What was added to every prediction before comparing it with the budget ([`auto::Margin`]).
    pub margin_ms: f64,
}

/// What `model=auto` decided, kept until the answer to learn from and to judge the budget by.
#[derive(Debug, Clone, Copy)]
struct Routed {
    budget: Duration,
    predicted: Option<Duration>,
    margin: Duration,
    /// The prediction's parts, for the debug event: the chosen variant's own queue, run and decoding (what it
    /// would take with the CPUs to itself), and the time the request had spent in the server when routed. The
    /// rest of `predicted` is the other models' share of the CPUs. `decode` is the part of `own` that is
    /// decoding this image.
    own: Option<Duration>,
    decode: Duration,
    spent: Duration,
}

/// One answer: the task's result `body` ([`Classes`], [`Detections`] or [`Segmentation`]), with what every
/// answer carries.
#[derive(Debug, Clone)]
pub struct Answer<B> {
    pub model: String,
    pub image_width: u32,
    pub image_height: u32,
    pub body: B,
    pub timings: Timings,
    /// Set when the request asked for `model=auto`.
    pub auto: Option<AutoRouting>,
    /// The model's own outputs for this image, when the request asked for them (else empty).
    pub raw: Vec<RawTensor>,
}

pub type Classes = Vec<Class>;
pub type Detections = Vec<Detection>;

/// The finished result of any task, inside the service only: the typed entry points
/// ([`Service::classify`], [`Service::detect`], [`Service::segment`]) unwrap it once, so no front end
/// matches on a task it did not ask for.
enum Body {
    Classes(Classes),
    Detections(Detections),
    Segmentation(Segmentation),
}

impl Answer<Body> {
    fn typed<B>(self, body: impl FnOnce(Body) -> Option<B>) -> Result<Answer<B>> {
        Ok(Answer {
            body: body(self.body)
                .ok_or_else(|| Error::internal("the router chose a model of another task"))?,
            model: self.model,
            image_width: self.image_width,
            image_height: self.image_height,
            timings: self.timings,
            auto: self.auto,
            raw: self.raw,
        })
    }
}

/// Records a request refused before it reached the service (bad options, no image, a body over the limit, a
/// wrong media type, an unknown route) in `mobilenet_requests_total`, as every other request is: model
/// `none`, the error's kind as its outcome, task `none` where the route names none. The front ends call it
/// for exactly the errors they raise themselves, so each request is counted once.
pub fn record_refused(task: Option<Task>, protocol: Protocol, error: &Error, took: Duration) {
    metrics::record_request(
        "none",
        task.map_or("none", Task::as_str),
        protocol.as_str(),
        error.parts().kind,
        took,
        None,
    );
}

pub struct Service {
    router: OnceLock<Router<Model>>,
    draining: AtomicBool,
    decode_permits: Arc<Semaphore>,
    decode_threads: usize,
    /// The decoding queued on or running on the decode pool, for `model=auto`'s predictions.
    decode_backlog: Arc<DecodeBacklog>,
    image_limits: ImageLimits,
    decode_budget: DecodeBudget,
    /// The deadline of requests that bring none (`--default-request-timeout-ms`).
    default_timeout: Option<Duration>,
    /// Decoding time per megapixel, for `model=auto`'s predictions.
    decode_cost: std::sync::Mutex<DecodeCost>,
    /// Per variant, how much later than predicted its `model=auto` answers came.
    margins: std::sync::Mutex<HashMap<String, Margin>>,
}

impl Service {
    pub fn new(
        decode_threads: usize,
        image_limits: ImageLimits,
        decode_budget: DecodeBudget,
    ) -> Service {
        Service {
            router: OnceLock::new(),
            draining: AtomicBool::new(false),
            decode_permits: Arc::new(Semaphore::new(decode_threads.max(1))),
            decode_threads: decode_threads.max(1),
            decode_backlog: Default::default(),
            image_limits,
            decode_budget,
            default_timeout: None,
            decode_cost: std::sync::Mutex::new(DecodeCost::default()),
            margins: Default::default(),
        }
    }

    /// Gives requests that carry no deadline this one, counted from when the service takes them.
    pub fn with_default_timeout(mut self, timeout: Option<Duration>) -> Service {
        self.default_timeout = timeout;
        self
    }

    /// Installs the loaded models; from then on the service is ready. `decode_sample` is one image's
    /// preparation time, which `model=auto` predicts decoding from until requests refine it (without one,
    /// from the first request's).
    pub fn set_models(
        &self,
        router: Router<Model>,
        decode_sample: Option<imaging::calibrate::DecodeSample>,
    ) {
        if let Some(sample) = decode_sample {
            self.decode_cost()
                .observe(sample.bytes, sample.pixels, sample.took);
        }
        let _ = self.router.set(router);
    }

    fn decode_cost(&self) -> std::sync::MutexGuard<'_, DecodeCost> {
        self.decode_cost.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn margins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Margin>> {
        self.margins.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn router(&self) -> Option<&Router<Model>> {
        self.router.get()
    }

    pub fn is_ready(&self) -> bool {
        self.router.get().is_some() && !self.is_draining()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Refuses a request from its head alone, before its body is read, when admission would refuse it
    /// now: the model `selector` picks, or with no selector (gRPC carries it in the body) every model of
    /// the task (of any task when `task` is `None`: the Open Inference Protocol's `ModelInfer` names its
    /// model in the body too), because then whichever it names would refuse it too. Everything else (no
    /// models yet, a selector that matches nothing) is left to [`infer`](Self::infer), which answers with
    /// the body read. A refusal is counted like any request, under the refusing model's task.
    pub fn refuse_from_head(
        &self,
        task: Option<Task>,
        selector: Option<&Selector>,
        deadline: Option<Instant>,
        protocol: Protocol,
    ) -> Result<()> {
        let start = Instant::now();
        let Some(router) = self.router.get() else {
            return Ok(());
        };
        let deadline = self.deadline_or_default(deadline, start);
        let refusal = match (task, selector) {
            (Some(task), Some(selector)) => match router.select(task, selector) {
                Ok(model) => model.batcher.would_refuse(deadline).map(|r| (task, r)),
                Err(_) => None,
            },
            _ => {
                let mut first = None;
                let candidates = router
                    .models()
                    .iter()
                    .filter(|m| task.is_none_or(|t| m.variant.config.task == t));
                for model in candidates {
                    match model.batcher.would_refuse(deadline) {
                        None => return Ok(()),
                        Some(refusal) => {
                            first.get_or_insert((model.variant.config.task, refusal));
                        }
                    }
                }
                first
            }
        };
        let Some((task, refusal)) = refusal else {
            return Ok(());
        };
        let model = refusal.model.clone();
        let error = refusal.record();
        metrics::record_request(
            &model,
            task.as_str(),
            protocol.as_str(),
            error.parts().kind,
            start.elapsed(),
            None,
        );
        Err(error)
    }

    /// The request's deadline, or the server's default one from `start`: one rule for the head check, both
    /// transports and the batcher (which drops queued requests past their deadline).
    fn deadline_or_default(&self, deadline: Option<Instant>, start: Instant) -> Option<Instant> {
        deadline.or_else(|| self.default_timeout.map(|t| start + t))
    }

    pub async fn classify(&self, request: InferRequest) -> Result<Answer<Classes>> {
        let answer = self.infer(Task::Classification, request).await?;
        answer.typed(|body| match body {
            Body::Classes(classes) => Some(classes),
            _ => None,
        })
    }

    pub async fn detect(&self, request: InferRequest) -> Result<Answer<Detections>> {
        let answer = self.infer(Task::Detection, request).await?;
        answer.typed(|body| match body {
            Body::Detections(detections) => Some(detections),
            _ => None,
        })
    }

    pub async fn segment(&self, request: InferRequest) -> Result<Answer<Segmentation>> {
        let answer = self.infer(Task::Segmentation, request).await?;
        answer.typed(|body| match body {
            Body::Segmentation(segmentation) => Some(segmentation),
            _ => None,
        })
    }

    /// Serves one request and records it in the metrics, whatever the outcome, timed from its head's arrival.
    async fn infer(&self, task: Task, mut request: InferRequest) -> Result<Answer<Body>> {
        let start = request.received;
        let _in_flight = metrics::InFlight::start(request.protocol.as_str());
        // The client's deadline counts from its head; the server's default one from now, once the body is in:
        // how long an upload may take is the body read timeout's to judge (408), not a 504 for work not begun.
        request.deadline = self.deadline_or_default(request.deadline, Instant::now());
        let (protocol, deadline) = (request.protocol, request.deadline);
        let mut model_name = String::from("none");
        let mut phases = None;
        let mut routed: Option<Routed> = None;
        let inner = self.infer_inner(
            task,
            request,
            start,
            &mut model_name,
            &mut phases,
            &mut routed,
        );
        // The batcher drops a request whose deadline passes while it is queued; this answers one that passes
        // anywhere else (decoding, inference) on time too. Giving up drops the reply channel, so a job still
        // queued is skipped as cancelled.
        let result = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), inner)
                .await
                .unwrap_or(Err(Error::DeadlineExceeded)),
            None => inner.await,
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.parts().kind,
        };
        if let Some(Routed {
            budget,
            predicted,
            margin,
            own,
            decode,
            spent,
        }) = routed
        {
            let took = start.elapsed();
            let phase_ms = |phase: fn(&metrics::PhaseTimes) -> Duration| {
                phases.as_ref().map(|p| phase(p).as_secs_f64() * 1e3)
            };
            // Read by loadtest/auto_calibration.py: how the router's predictions held (docs/auto.md).
            tracing::debug!(
                model = %model_name,
                outcome,
                budget_ms = budget.as_secs_f64() * 1e3,
                predicted_ms = predicted.map(|p| p.as_secs_f64() * 1e3),
                margin_ms = margin.as_secs_f64() * 1e3,
                own_ms = own.map(|o| o.as_secs_f64() * 1e3),
                decode_predicted_ms = decode.as_secs_f64() * 1e3,
                spent_ms = spent.as_secs_f64() * 1e3,
                took_ms = took.as_secs_f64() * 1e3,
                decode_ms = phase_ms(|p| p.decode),
                queue_ms = phase_ms(|p| p.queue),
                inference_ms = phase_ms(|p| p.inference),
                "model=auto answered"
            );
            metrics::record_auto_budget(
                task.as_str(),
                &model_name,
                result.is_ok() && took <= budget,
            );
            if let (Ok(_), Some(predicted)) = (&result, predicted) {
                self.margins()
                    .entry(model_name.clone())
                    .or_default()
                    .observe(Instant::now(), predicted, took);
            }
        }
        metrics::record_request(
            &model_name,
            task.as_str(),
            protocol.as_str(),
            outcome,
            start.elapsed(),
            phases.as_ref(),
        );
        result
    }

    async fn infer_inner(
        &self,
        task: Task,
        request: InferRequest,
        start: Instant,
        model_name: &mut String,
        phases: &mut Option<metrics::PhaseTimes>,
        routed: &mut Option<Routed>,
    ) -> Result<Answer<Body>> {
        // No draining check here: the servers stop taking new requests on shutdown, and everything that got
        // this far was accepted before it, so it is served in full.
        let router = self.router.get().ok_or(Error::NotReady)?;
        let (model, auto) = if request.selector.is_auto() {
            let (model, routing, decision) = self.route_auto(router, task, &request, start)?;
            *routed = Some(decision);
            (model, Some(routing))
        } else {
            (router.select(task, &request.selector)?, None)
        };
        let variant = model.variant.clone();
        *model_name = variant.config.name.clone();
        let permit = model.batcher.try_admit(request.deadline)?;

        let decode_start = Instant::now();
        // For an image, its size and its preparing on the decode pool without the wait for a thread: what
        // the decode cost learns from.
        let (payload, image) = match request.input {
            Input::Image(image) => {
                let bytes = image.len();
                let (payload, preparing) = self.admit_image(&model, image).await?;
                (payload, Some((bytes, preparing)))
            }
            Input::Tensor(prepared) => {
                if !prepared.data.fits(&variant.config.input) {
                    return Err(Error::BadRequest(format!(
                        "the input tensor does not fit {}'s input",
                        variant.config.name
                    )));
                }
                (Payload::Prepared(prepared), None)
            }
        };
        let pool_decode = decode_start.elapsed();

        let output = model
            .batcher
            .submit(
                permit,
                payload,
                request.options,
                request.deadline,
                request.raw_outputs,
            )
            .await?;

        let finish_start = Instant::now();
        let (w, h) = (output.width, output.height);
        let body = match output.decoded {
            Decoded::Classes(classes) => Body::Classes(classes),
            Decoded::Detections(raw) => {
                Body::Detections(finish::detections(raw, w, h, &variant.labels))
            }
            Decoded::ClassMap(map) => {
                // The mask is as large as the client's image: its memory comes from the same budget.
                let reservation = self
                    .decode_budget
                    .reserve(finish::segmentation_cost(&map, w, h))
                    .await?;
                let (labels, png) = (variant.clone(), request.png);
                let segmentation = self
                    .blocking(move || {
                        let finished = finish::segmentation(&map, w, h, png, &labels.labels);
                        drop(reservation);
                        finished
                    })
                    .await?;
                Body::Segmentation(segmentation)
            }
        };
        let postprocess = output.postprocess + finish_start.elapsed();
        let p = metrics::PhaseTimes {
            decode: pool_decode + output.decode,
            queue: output.queue,
            inference: output.inference,
            postprocess,
        };
        *phases = Some(p);
        if let Some((bytes, pool_preparing)) = image {
            self.decode_cost().observe(
                bytes,
                u64::from(w) * u64::from(h),
                pool_preparing + output.decode,
            );
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(Answer {
            model: variant.config.name.clone(),
            image_width: w,
            image_height: h,
            body,
            timings: Timings {
                decode_ms: ms(p.decode),
                queue_ms: ms(p.queue),
                inference_ms: ms(p.inference),
                postprocess_ms: ms(p.postprocess),
                total_ms: ms(start.elapsed()),
            },
            auto,
            raw: output.raw,
        })
    }

    /// An encoded image, ready to queue: its header checked against the limits on the reactor (before
    /// anything is allocated), its decode memory reserved (waiting within the deadline), then prepared on the
    /// decode pool, or left encoded for the model thread when the model's knobs say so. With the payload, the
    /// time its preparing took on the pool (zero when left to the model thread).
    async fn admit_image(&self, model: &Model, image: Bytes) -> Result<(Payload, Duration)> {
        let spec = &model.variant.config.input;
        let inspection = imaging::inspect(&image, spec, &self.image_limits)?;
        let reservation = self.decode_budget.reserve(inspection.memory_bytes).await?;
        let encoded = Encoded {
            bytes: image,
            inspection,
            reservation,
        };
        if model.knobs.decode_in_model_thread {
            return Ok((Payload::Encoded(encoded), Duration::ZERO));
        }
        let variant = model.variant.clone();
        let predicted = self
            .decode_cost()
            .predict(encoded.bytes.len(), encoded.inspection.header.pixels());
        let pending = self.decode_backlog.add(predicted);
        let (prepared, took) = self
            .blocking(move || {
                let started = Instant::now();
                let prepared = encoded.prepare(&variant.config.input);
                drop(pending);
                Ok((prepared?, started.elapsed()))
            })
            .await?;
        Ok((Payload::Prepared(prepared), took))
    }

    /// `model=auto`: the best variant of the ladder whose predicted latency fits the budget (the request's
    /// own, else the time left before its deadline), or a refusal before anything is queued.
    fn route_auto(
        &self,
        router: &Router<Model>,
        task: Task,
        request: &InferRequest,
        start: Instant,
    ) -> Result<(Arc<Model>, AutoRouting, Routed)> {
        let budget = request
            .selector
            .latency_budget
            .or_else(|| request.deadline.map(|d| d.saturating_duration_since(start)))
            .ok_or_else(|| Error::BadOption {
                name: "latency_budget_ms",
                reason: "model=auto needs a latency budget or a request deadline".into(),
            })?;
        let decode = match &request.input {
            Input::Image(image) => self
                .decode_cost()
                .predict(image.len(), imaging::header::parse(image)?.pixels()),
            Input::Tensor(_) => Duration::ZERO,
        };
        let candidates = router.auto_candidates(task, &request.selector)?;
        // The time the request has already spent in the server counts against its budget.
        let spent = start.elapsed();
        // Every model's admitted work competes for the same CPUs as the candidate's.
        let decode_pool = self.decode_backlog.total() / self.decode_threads as u32;
        let backlogs: Vec<(&Arc<Model>, Duration)> = router
            .models()
            .iter()
            .map(|m| (m, m.batcher.backlog()))
            .collect();
        let owns: Vec<Option<Duration>> = candidates
            .iter()
            .map(|c| c.batcher.predict_latency(decode))
            .collect();
        let predictions: Vec<Option<Duration>> = candidates
            .iter()
            .zip(&owns)
            .map(|(c, own)| {
                let others = backlogs
                    .iter()
                    .filter(|(m, _)| !Arc::ptr_eq(m, c))
                    .map(|(_, b)| *b)
                    .chain([decode_pool]);
                Some(auto::shared_cpu_latency((*own)?, others) + spent)
            })
            .collect();
        let with_margin: Vec<Option<Duration>> = {
            let (mut margins, now) = (self.margins(), Instant::now());
            candidates
                .iter()
                .zip(&predictions)
                .map(|(m, p)| {
                    let margin = margins
                        .get_mut(&m.variant.config.name)
                        .map_or(Duration::ZERO, |margin| margin.at(now));
                    p.map(|p| p + margin)
                })
                .collect()
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // What each candidate's admission said when asked, so that the refusal the client gets is the one
        // that decided, even if the queue moves before it is answered.
        let mut refusals: Vec<Option<Refusal>> = candidates.iter().map(|_| None).collect();
        let choice = auto::choose(&with_margin, budget, |index| {
            refusals[index] = candidates[index].batcher.would_refuse(request.deadline);
            refusals[index].is_none()
        });
        match choice {
            Choice::Fits { index, .. } => {
                let model = candidates[index].clone();
                metrics::record_auto_routed(task.as_str(), &model.variant.config.name);
                let predicted = predictions[index];
                let margin = with_margin[index]
                    .zip(predicted)
                    .map_or(Duration::ZERO, |(m, p)| m - p);
                let routing = AutoRouting {
                    budget_ms: ms(budget),
                    predicted_ms: predicted.map(ms),
                    margin_ms: ms(margin),
                };
                let routed = Routed {
                    budget,
                    predicted,
                    margin,
                    own: owns[index],
                    decode,
                    spent,
                };
                Ok((model, routing, routed))
            }
            Choice::Refused { index } => {
                metrics::record_auto_routed(task.as_str(), "none");
                let refusal = refusals[index].take().ok_or_else(|| {
                    Error::internal("model=auto: a refused candidate without its refusal")
                })?;
                Err(refusal.record())
            }
            Choice::NoneFits { fastest, predicted } => {
                metrics::record_auto_routed(task.as_str(), "none");
                Err(Error::OverBudget {
                    task: task.as_str(),
                    fastest: candidates[fastest].variant.config.name.clone(),
                    predicted_ms: predicted.as_millis() as u64,
                    budget_ms: budget.as_millis() as u64,
                })
            }
        }
    }

    /// Runs CPU-bound work on the blocking pool, at most `decode_threads` at a time, so a burst of large
    /// images neither stalls the reactor nor spawns a thread per request.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        // The permit goes with the work: if the caller gives up (a deadline, a client gone), the work still
        // runs to its end on the pool, and must keep its place there until then.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(Error::internal)?
    }
}
