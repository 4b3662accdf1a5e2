//! The per-model queue: bounded admission at the edge, and an actor task that forms batches.
//!
//! A request first takes a semaphore permit ([`Batcher::try_admit`]); if none is free, or if the requests
//! already admitted would make it wait longer than the limit or past its deadline ([`latency`]), it is refused
//! at once (429 / RESOURCE_EXHAUSTED) instead of queueing. The permit travels with the job and is
//! released when the job is answered or dropped, so the capacity counts queued *and* running requests. The
//! actor owns the waiting jobs, asks [`BatchPolicy`] what to do, skips cancelled and expired jobs, and sends
//! closed batches to the model threads over a bounded channel.
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::latency::{self, LatencyModel, WaitVerdict};
use super::policy::{BatchPolicy, Decision, DropReason, ModelState, skip_reason};
use crate::{
    error::{Error, Result},
    imaging::{Encoded, Prepared},
    metrics,
    postprocess::{Decoded, RawTensor, TaskOptions},
};

/// A job's image: prepared on the decode pool before it was queued, or still encoded, for the model thread
/// to prepare right before the run (see `ModelKnobs::decode_in_model_thread`), with the decode memory
/// reserved for it, released once it is prepared.
pub enum Payload {
    Prepared(Prepared),
    Encoded(Encoded),
}

/// One admitted request waiting for (or in) a batch.
pub struct Job {
    pub payload: Payload,
    pub options: TaskOptions,
    /// Whether the answer carries the model's own output tensors too ([`JobOutput::raw`]).
    pub raw_outputs: bool,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<JobOutput>>,
    pub _permit: OwnedSemaphorePermit,
}

impl Job {
    /// Why this job should not run now, if it should not.
    pub fn skip_reason(&self, now: Instant) -> Option<DropReason> {
        skip_reason(self.reply.is_closed(), self.deadline, now)
    }

    /// Answers a job that will not run; the client, if still there, learns why.
    pub fn drop_with(self, model: &str, reason: DropReason) {
        metrics::record_dropped(model, reason.as_str(), 1);
        let _ = self.reply.send(Err(Error::DeadlineExceeded));
    }
}

/// What the model thread returns for one job.
#[derive(Debug)]
pub struct JobOutput {
    pub decoded: Decoded,
    /// The model's own outputs for this request, when it asked for them.
    pub raw: Vec<RawTensor>,
    /// The image's original size, for scaling boxes and masks back to it.
    pub width: u32,
    pub height: u32,
    /// Time the model thread spent preparing an encoded payload (zero for a prepared one).
    pub decode: Duration,
    pub queue: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
    pub batch_size: usize,
}

pub struct Batch {
    pub jobs: Vec<Job>,
}

/// Shared between admission, the actor and the model threads: how many batches are handed over and not
/// finished, and what batches cost.
pub struct ModelLoad {
    pub instances: usize,
    in_flight: AtomicUsize,
    /// Requests in those batches: admitted requests that are no longer queued.
    running: AtomicUsize,
    /// The batches a model thread has begun and not finished: (id, when it began, size). What a new
    /// request waits for is what they have left, not their whole time.
    started: std::sync::Mutex<Vec<(u64, Instant, usize)>>,
    next_batch: AtomicU64,
    finished: Notify,
    /// How long batches keep a model thread, decoding on it included: the queue wait ahead of a request.
    latency: std::sync::Mutex<LatencyModel>,
    /// The same without the decoding on the thread: a request's own run, once its image is decoded.
    runs: std::sync::Mutex<LatencyModel>,
}

impl ModelLoad {
    pub fn new(instances: usize, max_batch_size: usize) -> Arc<ModelLoad> {
        Arc::new(ModelLoad {
            instances,
            in_flight: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            started: Default::default(),
            next_batch: AtomicU64::new(0),
            finished: Notify::new(),
            latency: std::sync::Mutex::new(LatencyModel::new(max_batch_size)),
            runs: std::sync::Mutex::new(LatencyModel::new(max_batch_size)),
        })
    }

    /// Called by a model thread with how long a batch of `size` kept it busy (the warm-up's too), of which
    /// `decoding` went to decoding its images on the thread.
    pub fn observe_batch(&self, size: usize, took: Duration, decoding: Duration) {
        let samples = [
            (&self.latency, took),
            (&self.runs, took.saturating_sub(decoding)),
        ];
        for (model, sample) in samples {
            model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(size, sample);
        }
    }

    /// Reads the latency model under its lock, without copying it (admission runs per request).
    fn with_latency<T>(&self, read: impl FnOnce(&LatencyModel) -> T) -> T {
        read(&self.latency.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn state(&self) -> ModelState {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        // At most one batch waits in the channel behind the busy instances: it is ready the moment one frees
        // up, while prefetching more would only take requests away from batches that could still grow.
        ModelState {
            idle: in_flight < self.instances,
            can_accept: in_flight <= self.instances,
        }
    }

    /// Called by a model thread when it begins a batch of `size` requests; the id goes to [`batch_done`].
    ///
    /// [`batch_done`]: Self::batch_done
    pub fn batch_started(&self, size: usize) -> u64 {
        let id = self.next_batch.fetch_add(1, Ordering::Relaxed);
        self.started().push((id, Instant::now(), size));
        id
    }

    fn started(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Instant, usize)>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by a model thread when it has run the batch `id` of `size` requests.
    pub fn batch_done(&self, id: u64, size: usize) {
        self.started().retain(|(started, _, _)| *started != id);
        self.running.fetch_sub(size, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.finished.notify_one();
    }
}

/// Handle to one model's queue; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    model: Arc<str>,
    capacity: usize,
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    load: Arc<ModelLoad>,
    max_batch_size: usize,
    max_queue_wait: Option<Duration>,
}

/// How a model's queue admits requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Requests admitted (queued or running) at most: `--queue-capacity`.
    pub capacity: usize,
    /// The longest expected queue wait admitted (`--max-queue-wait-ms`), never less than four rounds of full
    /// batches; `None` admits by count only.
    pub max_queue_wait: Option<Duration>,
}

impl Batcher {
    /// Starts the actor on the current runtime; batches go out on `dispatch`, or on `solo` when they find
    /// the model idle.
    pub fn start(
        model: &str,
        policy: BatchPolicy,
        admission: Admission,
        load: Arc<ModelLoad>,
        dispatch: mpsc::Sender<Batch>,
        solo: Option<mpsc::Sender<Batch>>,
    ) -> Batcher {
        // The permits bound the channel's occupancy, so a send on it never waits.
        let capacity = admission.capacity;
        let (jobs, rx) = mpsc::channel(capacity);
        let outlets = Outlets { dispatch, solo };
        tokio::spawn(actor(model.into(), policy, rx, load.clone(), outlets));
        Batcher {
            model: model.into(),
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            jobs,
            load,
            max_batch_size: policy.max_batch_size,
            max_queue_wait: admission.max_queue_wait,
        }
    }

    /// Takes a place in the queue, or refuses at once: when the model is at capacity, when the requests
    /// ahead would keep this one waiting past the limit, or when it could not be answered by `deadline`.
    pub fn try_admit(&self, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.queue_full())
            .map_err(Refusal::record)?;
        // This request's own permit is not ahead of it.
        let ahead = self.capacity - self.permits.available_permits() - 1;
        match self.judge_wait(ahead, deadline) {
            Some(refusal) => Err(refusal.record()),
            None => Ok(permit),
        }
    }

    /// The end-to-end time a request sent now would take, if its image takes `decode` to prepare: the wait
    /// behind the requests admitted before it, plus the run of the batch it joins
    /// ([`latency::predict_completion`]). `None` until a batch has run.
    pub fn predict_latency(&self, decode: Duration) -> Option<Duration> {
        let ahead = self.capacity - self.permits.available_permits();
        let running = self.load.running.load(Ordering::Acquire);
        let started = self.started_batches();
        let runs = self.load.runs.lock().unwrap_or_else(|p| p.into_inner());
        let completion = self.load.with_latency(|waits| {
            latency::predict_completion(
                waits,
                &runs,
                ahead,
                running,
                &started,
                self.load.instances,
                self.max_batch_size,
            )
        })?;
        Some(completion + decode)
    }

    /// The batches running now: the time since each began, its size.
    fn started_batches(&self) -> Vec<(Duration, usize)> {
        let now = Instant::now();
        self.load
            .started()
            .iter()
            .map(|&(_, at, size)| (now.saturating_duration_since(at), size))
            .collect()
    }

    /// The work this model has admitted and not finished, in time on its sessions: zero when idle or before
    /// a batch has run. What a request of another model sharing the CPUs competes with. Running batches count
    /// whole here, unlike in [`latency::wait_behind`]: `model=auto`'s margins and ladder were measured with
    /// this backlog, and counting it shorter has not been (docs/auto.md, session 22).
    pub fn backlog(&self) -> Duration {
        self.expected_wait_now().unwrap_or_default()
    }

    /// The wait behind everything admitted now (queued or running); `None` until a batch has run.
    fn expected_wait_now(&self) -> Option<Duration> {
        let ahead = self.capacity - self.permits.available_permits();
        self.load.with_latency(|model| {
            model.expected_wait(ahead, self.load.instances, self.max_batch_size)
        })
    }

    /// What [`try_admit`](Self::try_admit) would answer now, without taking a place: for refusing a
    /// request from its head, before its body is read. Records nothing; the caller records the refusal
    /// it acts on.
    pub fn would_refuse(&self, deadline: Option<Instant>) -> Option<Refusal> {
        let free = self.permits.available_permits();
        if free == 0 {
            return Some(self.queue_full());
        }
        self.judge_wait(self.capacity - free, deadline)
    }

    fn queue_full(&self) -> Refusal {
        Refusal {
            model: self.model.clone(),
            reason: "queue_full",
            error: Error::QueueFull {
                model: self.model.to_string(),
            },
        }
    }

    /// The refusal of a request with `ahead` requests queued before it, if the expected wait refuses it.
    fn judge_wait(&self, ahead: usize, deadline: Option<Instant>) -> Option<Refusal> {
        let max_queue_wait = self.max_queue_wait?;
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let started = self.started_batches();
        let verdict = self.load.with_latency(|model| {
            let expected = latency::wait_behind(
                model,
                ahead,
                &started,
                self.load.instances,
                self.max_batch_size,
            );
            latency::judge(
                model,
                expected,
                self.max_batch_size,
                max_queue_wait,
                remaining,
            )
        });
        let (reason, expected, limit, deadline) = match verdict {
            WaitVerdict::Admit => return None,
            WaitVerdict::TooLate => {
                return Some(Refusal {
                    model: self.model.clone(),
                    reason: "too_late",
                    error: Error::DeadlineExceeded,
                });
            }
            WaitVerdict::OverLimit { expected, limit } => ("expected_wait", expected, limit, false),
            WaitVerdict::PastDeadline {
                expected,
                remaining,
            } => ("deadline", expected, remaining, true),
        };
        Some(Refusal {
            model: self.model.clone(),
            reason,
            error: Error::Overloaded {
                model: self.model.to_string(),
                expected_wait_ms: expected.as_millis() as u64,
                limit_ms: limit.as_millis() as u64,
                deadline,
            },
        })
    }

    /// Queues an admitted request and waits for its answer.
    pub async fn submit(
        &self,
        permit: OwnedSemaphorePermit,
        payload: Payload,
        options: TaskOptions,
        deadline: Option<Instant>,
        raw_outputs: bool,
    ) -> Result<JobOutput> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            payload,
            options,
            raw_outputs,
            deadline,
            enqueued: Instant::now(),
            reply,
            _permit: permit,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::internal("batcher stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("model thread dropped a request"))?
    }
}

/// A refusal at admission: the error the client gets, and the reason `mobilenet_rejected_total` counts.
#[derive(Debug)]
pub struct Refusal {
    pub model: Arc<str>,
    pub reason: &'static str,
    pub error: Error,
}

impl Refusal {
    /// Counts the refusal and gives the client's error.
    pub fn record(self) -> Error {
        metrics::record_rejected(&self.model, self.reason);
        self.error
    }
}

/// Where closed batches go: the instances' shared channel, and the solo session's own, if there is one.
struct Outlets {
    dispatch: mpsc::Sender<Batch>,
    solo: Option<mpsc::Sender<Batch>>,
}

impl Outlets {
    /// The solo session takes a batch that has the model to itself (nothing else in flight); it is then
    /// idle, so its one-slot channel has room. Everything else goes to the instances.
    fn for_batch(&self, model: &str, load: &ModelLoad) -> &mpsc::Sender<Batch> {
        match &self.solo {
            Some(solo) if load.in_flight.load(Ordering::Acquire) == 0 => {
                metrics::record_solo_batch(model);
                solo
            }
            _ => &self.dispatch,
        }
    }
}

async fn actor(
    model: Arc<str>,
    policy: BatchPolicy,
    mut rx: mpsc::Receiver<Job>,
    load: Arc<ModelLoad>,
    outlets: Outlets,
) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    loop {
        while let Ok(job) = rx.try_recv() {
            queue.push_back(job);
        }
        let now = Instant::now();
        prune(&model, &mut queue, now);
        metrics::set_queue_depth(&model, queue.len());
        if !open && queue.is_empty() {
            break;
        }
        let oldest = queue.front().map(|j| j.enqueued);
        let decision = policy.decide(queue.len(), oldest, load.state(), now);
        match decision {
            Decision::Close(n) => {
                let jobs: Vec<Job> = queue.drain(..n).collect();
                let outlet = outlets.for_batch(&model, &load);
                load.running.fetch_add(n, Ordering::AcqRel);
                load.in_flight.fetch_add(1, Ordering::AcqRel);
                if outlet.send(Batch { jobs }).await.is_err() {
                    tracing::error!(%model, "model threads stopped; failing the queue");
                    break;
                }
            }
            Decision::Idle if open => match rx.recv().await {
                Some(job) => queue.push_back(job),
                None => open = false,
            },
            Decision::Idle => break,
            Decision::WaitForModel | Decision::WaitUntil(_) => {
                let until = match decision {
                    Decision::WaitUntil(t) => t,
                    // Bounded wait: re-check cancellations and deadlines regularly while the model is busy.
                    _ => now + Duration::from_millis(50),
                };
                tokio::select! {
                    job = rx.recv(), if open => match job {
                        Some(job) => queue.push_back(job),
                        None => open = false,
                    },
                    _ = load.finished.notified() => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
            }
        }
    }
    metrics::set_queue_depth(&model, 0);
}

/// Removes jobs that should not run, counting them.
fn prune(model: &str, queue: &mut VecDeque<Job>, now: Instant) {
    if queue.iter().all(|j| j.skip_reason(now).is_none()) {
        return;
    }
    let mut kept = VecDeque::with_capacity(queue.len());
    for job in queue.drain(..) {
        match job.skip_reason(now) {
            Some(reason) => job.drop_with(model, reason),
            None => kept.push_back(job),
        }
    }
    *queue = kept;
}
