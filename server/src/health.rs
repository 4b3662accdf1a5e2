//! Whether each loaded model still serves, as the model threads report it: a thread stuck in one batch past
//! the watchdog time, or a run of failed batches (an ONNX Runtime error, a model output that does not decode,
//! a panic), makes the model unhealthy until the batch ends or a batch succeeds.
//!
//! [`Tracker`] is the pure rule (no clock, no lock, unit tested below); [`ModelHealth`] is the shared handle
//! the model threads feed. Readers judge at the time they ask, so a hang shows while the thread is still stuck:
//! `/readyz` checks on each request, and [`watch`] checks on a ticker for gRPC health watchers, and sends a
//! failing model the probes that let it show it recovered.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    batching::Payload,
    engine::{Model, instance},
    grpc::{
        GrpcService, InferenceServer,
        oip::{GrpcInferenceServiceServer, OipService},
    },
    imaging::Prepared,
    metrics,
    service::Service,
};

/// When a model counts as unhealthy. Zero turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// A batch running longer than this means its thread is stuck.
    pub watchdog: Duration,
    /// This many failed batches in a row, with no success between them, mean the model fails.
    pub failed_batches: u32,
    /// A failing model is sent a probe (the zeroed image of its warm-up) this long after it turned failing,
    /// then as often while it still fails: see [`Tracker::probe_due`].
    pub probe_every: Duration,
}

/// How one batch ended, as far as the model's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The session ran and its outputs decoded (a request may still have failed on its own image).
    Served,
    /// The session failed, its outputs could not be read, or the thread panicked: every request failed.
    Failed,
    /// Nothing ran: every job was cancelled, expired or had an undecodable image. Says nothing of the model.
    Skipped,
}

/// Why a model is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A thread has been in its current batch for `busy`, longer than the watchdog.
    Stuck { busy: Duration },
    /// The last `batches` batches all failed.
    Failing { batches: u32 },
}

impl Problem {
    pub fn reason(self) -> &'static str {
        match self {
            Problem::Stuck { .. } => "stuck",
            Problem::Failing { .. } => "failing",
        }
    }

    /// For operators; the errors themselves are in the log, where the model thread reported them.
    pub fn detail(self, policy: HealthPolicy) -> String {
        match self {
            Problem::Stuck { busy } => format!(
                "a batch has been running for {:.1} s, over the {} s watchdog",
                busy.as_secs_f64(),
                policy.watchdog.as_secs_f64()
            ),
            Problem::Failing { batches } => {
                format!("the last {batches} batches failed (see the server log)")
            }
        }
    }
}

/// One model's batches as its threads report them; each thread has a slot.
#[derive(Debug)]
pub struct Tracker {
    policy: HealthPolicy,
    /// Per thread: when its current batch started, if it is in one.
    running: Vec<Option<Instant>>,
    consecutive_failures: u32,
    /// When the failures in a row reached the threshold, while they still do.
    failing_since: Option<Instant>,
    last_probe: Option<Instant>,
}

impl Tracker {
    pub fn new(policy: HealthPolicy, threads: usize) -> Tracker {
        Tracker {
            policy,
            running: vec![None; threads],
            consecutive_failures: 0,
            failing_since: None,
            last_probe: None,
        }
    }

    pub fn started(&mut self, thread: usize, now: Instant) {
        if let Some(slot) = self.running.get_mut(thread) {
            *slot = Some(now);
        }
    }

    pub fn finished(&mut self, thread: usize, outcome: BatchOutcome, now: Instant) {
        if let Some(slot) = self.running.get_mut(thread) {
            *slot = None;
        }
        match outcome {
            BatchOutcome::Served => {
                self.consecutive_failures = 0;
                self.failing_since = None;
                self.last_probe = None;
            }
            BatchOutcome::Failed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.failing() && self.failing_since.is_none() {
                    self.failing_since = Some(now);
                }
            }
            BatchOutcome::Skipped => {}
        }
    }

    fn failing(&self) -> bool {
        self.policy.failed_batches > 0 && self.consecutive_failures >= self.policy.failed_batches
    }

    /// Whether a failing model should be sent a probe now. A model reported failing may get no more traffic
    /// (a load balancer takes the server out of rotation), so without a probe it could never show that it
    /// recovered; and a model that fails only on some inputs (a client resending one bad image) is shown to
    /// still serve the others. Probes come `probe_every` apart, so a model that really fails stays failing.
    pub fn probe_due(&self, now: Instant) -> bool {
        let Some(since) = self
            .failing_since
            .filter(|_| !self.policy.probe_every.is_zero())
        else {
            return false;
        };
        let last = self.last_probe.unwrap_or(since);
        now.saturating_duration_since(last) >= self.policy.probe_every
    }

    pub fn probe_sent(&mut self, now: Instant) {
        self.last_probe = Some(now);
    }

    /// What is wrong at `now`; empty when the model is healthy. A stuck thread is named before failures.
    pub fn problems(&self, now: Instant) -> Vec<Problem> {
        let mut problems = Vec::new();
        let longest = self
            .running
            .iter()
            .flatten()
            .map(|&since| now.saturating_duration_since(since))
            .max();
        if let Some(busy) = longest
            && !self.policy.watchdog.is_zero()
            && busy > self.policy.watchdog
        {
            problems.push(Problem::Stuck { busy });
        }
        if self.failing() {
            problems.push(Problem::Failing {
                batches: self.consecutive_failures,
            });
        }
        problems
    }
}

/// The handle a model's threads and the health readers share.
#[derive(Debug)]
pub struct ModelHealth {
    policy: HealthPolicy,
    tracker: Mutex<Tracker>,
}

impl ModelHealth {
    pub fn new(policy: HealthPolicy, threads: usize) -> Arc<ModelHealth> {
        Arc::new(ModelHealth {
            policy,
            tracker: Mutex::new(Tracker::new(policy, threads)),
        })
    }

    pub fn policy(&self) -> HealthPolicy {
        self.policy
    }

    pub fn batch_started(&self, thread: usize) {
        self.tracker().started(thread, Instant::now());
    }

    pub fn batch_finished(&self, thread: usize, outcome: BatchOutcome) {
        self.tracker().finished(thread, outcome, Instant::now());
    }

    /// Whether a probe is due, counting it as sent if it is (one caller, the health task, sends it).
    pub fn take_probe(&self) -> bool {
        let now = Instant::now();
        let mut tracker = self.tracker();
        let due = tracker.probe_due(now);
        if due {
            tracker.probe_sent(now);
        }
        due
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.tracker().problems(Instant::now())
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // Nothing in the tracker can panic half-way, so a poisoned lock still holds consistent state.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One problem of one model, as `/readyz` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unhealthy {
    pub model: String,
    pub reason: &'static str,
    pub detail: String,
}

/// Every problem of every loaded model, judged now; empty when all are healthy or none is loaded yet.
/// Whether the server serves: every model loaded and warmed, none stuck or failing, not draining.
pub fn serving(service: &Service) -> bool {
    service.is_ready() && unhealthy(service).is_empty()
}

pub fn unhealthy(service: &Service) -> Vec<Unhealthy> {
    let Some(router) = service.router() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for model in router.models() {
        for problem in model.health.problems() {
            found.push(Unhealthy {
                model: model.variant.config.name.clone(),
                reason: problem.reason(),
                detail: problem.detail(model.health.policy()),
            });
        }
    }
    found
}

/// How often gRPC health is brought up to date: watchers learn of a hang or a recovery within this time.
const GRPC_REPORT_PERIOD: Duration = Duration::from_secs(1);

/// Keeps gRPC health (the inference service and the overall "" service) in line with the models: SERVING
/// while the service is ready and every model healthy, else NOT_SERVING; and sends the probes that are due.
/// Runs until the runtime stops.
pub async fn watch(service: Arc<Service>, reporter: HealthReporter) {
    let mut reported = None;
    let mut ticker = tokio::time::interval(GRPC_REPORT_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Some(router) = service.router() {
            for model in router.models() {
                if model.health.take_probe() {
                    tokio::spawn(probe(model.clone()));
                }
            }
        }
        let healthy = service.is_ready() && unhealthy(&service).is_empty();
        // Only changes are sent: each send wakes every watcher, even with an unchanged status.
        if reported == Some(healthy) {
            continue;
        }
        let status = if healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_grpc_status(&reporter, status).await;
        reported = Some(healthy);
    }
}

/// Runs the model's warm-up image through its queue like a request; its batch counts for the model's
/// health as any other. A full queue skips the probe: requests are reaching the model anyway.
async fn probe(model: Arc<Model>) {
    let name = model.variant.config.name.as_str();
    let Ok(permit) = model.batcher.try_admit(None) else {
        metrics::record_probe(name, "queue_full");
        return;
    };
    let (data, options) = instance::zero_input(&model.variant);
    let input = &model.variant.config.input;
    let image = Prepared {
        data,
        width: input.width,
        height: input.height,
    };
    let deadline = Instant::now() + model.health.policy().probe_every;
    let answer = model
        .batcher
        .submit(
            permit,
            Payload::Prepared(image),
            options,
            Some(deadline),
            false,
        )
        .await;
    let outcome = match &answer {
        Ok(_) => "ok",
        Err(e) => e.parts().kind,
    };
    tracing::info!(model = %name, outcome, "probed a failing model");
    metrics::record_probe(name, outcome);
}

/// Sets every gRPC health service that speaks for the models: our inference service, the Open Inference
/// Protocol's, and the server ("").
pub async fn set_grpc_status(reporter: &HealthReporter, status: ServingStatus) {
    use tonic::server::NamedService;
    reporter
        .set_service_status(<InferenceServer<GrpcService> as NamedService>::NAME, status)
        .await;
    reporter
        .set_service_status(
            <GrpcInferenceServiceServer<OipService> as NamedService>::NAME,
            status,
        )
        .await;
    reporter.set_service_status("", status).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy {
        watchdog: Duration::from_secs(10),
        failed_batches: 3,
        probe_every: Duration::from_secs(5),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_new_model_is_healthy() {
        assert!(Tracker::new(POLICY, 2).problems(Instant::now()).is_empty());
    }

    #[test]
    fn a_batch_past_the_watchdog_is_stuck_until_it_ends() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 2);
        t.started(1, t0);
        assert!(
            t.problems(t0 + secs(10)).is_empty(),
            "at the watchdog, not past it"
        );
        assert_eq!(
            t.problems(t0 + secs(11)),
            vec![Problem::Stuck { busy: secs(11) }]
        );
        t.finished(1, BatchOutcome::Served, t0);
        assert!(t.problems(t0 + secs(11)).is_empty());
    }

    #[test]
    fn the_longest_running_thread_is_reported() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 3);
        t.started(0, t0 + secs(5));
        t.started(2, t0);
        assert_eq!(
            t.problems(t0 + secs(12)),
            vec![Problem::Stuck { busy: secs(12) }]
        );
    }

    #[test]
    fn a_busy_thread_with_short_batches_is_not_stuck() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        for i in 0..100 {
            t.started(0, t0 + secs(i));
            t.finished(0, BatchOutcome::Served, t0 + secs(i));
        }
        t.started(0, t0 + secs(100));
        assert!(t.problems(t0 + secs(105)).is_empty());
    }

    #[test]
    fn consecutive_failures_make_it_failing_and_a_success_recovers() {
        let now = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        for _ in 0..2 {
            t.finished(0, BatchOutcome::Failed, now);
        }
        assert!(t.problems(now).is_empty(), "2 of 3");
        t.finished(0, BatchOutcome::Failed, now);
        assert_eq!(t.problems(now), vec![Problem::Failing { batches: 3 }]);
        t.finished(0, BatchOutcome::Failed, now);
        assert_eq!(t.problems(now), vec![Problem::Failing { batches: 4 }]);
        t.finished(0, BatchOutcome::Served, now);
        assert!(t.problems(now).is_empty());
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let now = Instant::now();
        let mut t = Tracker::new(POLICY, 2);
        t.finished(0, BatchOutcome::Failed, now);
        t.finished(1, BatchOutcome::Failed, now);
        t.finished(0, BatchOutcome::Served, now);
        t.finished(1, BatchOutcome::Failed, now);
        t.finished(0, BatchOutcome::Failed, now);
        assert!(
            t.problems(now).is_empty(),
            "only 2 in a row since the success"
        );
    }

    #[test]
    fn skipped_batches_neither_fail_nor_recover() {
        let now = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        t.finished(0, BatchOutcome::Failed, now);
        t.finished(0, BatchOutcome::Failed, now);
        t.finished(0, BatchOutcome::Skipped, now);
        t.finished(0, BatchOutcome::Failed, now);
        assert_eq!(t.problems(now), vec![Problem::Failing { batches: 3 }]);
        t.finished(0, BatchOutcome::Skipped, now);
        assert_eq!(t.problems(now), vec![Problem::Failing { batches: 3 }]);
    }

    #[test]
    fn stuck_and_failing_are_both_reported() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 2);
        for _ in 0..3 {
            t.finished(0, BatchOutcome::Failed, t0);
        }
        t.started(1, t0);
        assert_eq!(
            t.problems(t0 + secs(20)),
            vec![
                Problem::Stuck { busy: secs(20) },
                Problem::Failing { batches: 3 }
            ]
        );
    }

    #[test]
    fn zero_turns_each_rule_off() {
        let t0 = Instant::now();
        let off = HealthPolicy {
            watchdog: Duration::ZERO,
            failed_batches: 0,
            probe_every: Duration::ZERO,
        };
        let mut t = Tracker::new(off, 1);
        t.finished(0, BatchOutcome::Failed, t0);
        t.started(0, t0);
        assert!(t.problems(t0 + secs(3600)).is_empty());
        assert!(!t.probe_due(t0 + secs(3600)));
        let no_probes = HealthPolicy {
            probe_every: Duration::ZERO,
            ..POLICY
        };
        let mut t = Tracker::new(no_probes, 1);
        for _ in 0..3 {
            t.finished(0, BatchOutcome::Failed, t0);
        }
        assert!(!t.problems(t0).is_empty());
        assert!(!t.probe_due(t0 + secs(3600)));
    }

    #[test]
    fn a_healthy_model_is_never_probed() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        t.finished(0, BatchOutcome::Failed, t0);
        t.finished(0, BatchOutcome::Failed, t0);
        assert!(!t.probe_due(t0 + secs(3600)), "2 failures of 3");
    }

    #[test]
    fn a_failing_model_is_probed_every_period_until_a_batch_succeeds() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        for i in 0..3 {
            t.finished(0, BatchOutcome::Failed, t0 + secs(i));
        }
        // Failing since t0 + 2 s, the third failure.
        assert!(!t.probe_due(t0 + secs(6)));
        assert!(t.probe_due(t0 + secs(7)));
        t.probe_sent(t0 + secs(7));
        assert!(!t.probe_due(t0 + secs(8)), "one probe per period");
        // The probe failed too: the model stays failing, and the next probe waits a period.
        t.finished(0, BatchOutcome::Failed, t0 + secs(8));
        assert!(!t.problems(t0 + secs(8)).is_empty());
        assert!(!t.probe_due(t0 + secs(11)));
        assert!(t.probe_due(t0 + secs(12)));
        t.probe_sent(t0 + secs(12));
        t.finished(0, BatchOutcome::Served, t0 + secs(13));
        assert!(t.problems(t0 + secs(13)).is_empty());
        assert!(!t.probe_due(t0 + secs(60)));
        // Failing again later: the period counts from then, not from the old probes.
        for i in 100..103 {
            t.finished(0, BatchOutcome::Failed, t0 + secs(i));
        }
        assert!(!t.probe_due(t0 + secs(106)));
        assert!(t.probe_due(t0 + secs(107)));
    }

    #[test]
    fn an_unknown_thread_slot_is_ignored() {
        let t0 = Instant::now();
        let mut t = Tracker::new(POLICY, 1);
        t.started(5, t0);
        t.finished(5, BatchOutcome::Served, t0);
        assert!(t.problems(t0 + secs(60)).is_empty());
    }
}
