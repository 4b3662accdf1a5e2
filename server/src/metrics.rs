//! Every metric name of the service, with its unit in the name, and the few functions that record them.
//! Requests are recorded once, where the service finishes a request; batches once, on the model thread.
use std::{sync::OnceLock, time::Duration};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by `model`, `task`, `protocol` (http|grpc) and `outcome` (ok or the error kind).
pub const REQUESTS_TOTAL: &str = "mobilenet_requests_total";
/// End-to-end time inside the server, by `model`, `task`, `protocol`.
pub const REQUEST_DURATION_SECONDS: &str = "mobilenet_request_duration_seconds";
/// Time per phase (`decode`, `queue`, `inference`, `postprocess`) by `model`.
pub const PHASE_DURATION_SECONDS: &str = "mobilenet_phase_duration_seconds";
/// Requests per batch run by ONNX Runtime, by `model`.
pub const BATCH_SIZE: &str = "mobilenet_batch_size";
/// Batches run on a model's solo session (nothing else of the model in flight), by `model`.
pub const SOLO_BATCHES_TOTAL: &str = "mobilenet_solo_batches_total";
/// Requests waiting in a model's batcher, by `model`.
pub const QUEUE_DEPTH: &str = "mobilenet_queue_depth";
/// Requests refused at admission, by `model` and `reason`: `queue_full` (the count cap), `expected_wait` (over
/// `--max-queue-wait-ms`), `deadline` (the wait would end past the deadline), `too_late` (the run alone would).
pub const REJECTED_TOTAL: &str = "mobilenet_rejected_total";
/// Admitted requests dropped before inference, by `model` and `reason` (cancelled, deadline_exceeded).
pub const DROPPED_TOTAL: &str = "mobilenet_dropped_total";
/// Decode memory reserved now by images being decoded, and the budget it is drawn from (bytes).
pub const DECODE_MEMORY_BYTES: &str = "mobilenet_decode_memory_bytes";
pub const DECODE_MEMORY_LIMIT_BYTES: &str = "mobilenet_decode_memory_limit_bytes";
/// `model=auto` decisions by `task` and chosen `model` ("none" when no variant fitted the budget).
pub const AUTO_ROUTED_TOTAL: &str = "mobilenet_auto_routed_total";
/// `model=auto` requests by `task`, `model` and `outcome`: `met` (answered within the budget) or `missed`
/// (answered late, or failed after it was routed).
pub const AUTO_BUDGET_TOTAL: &str = "mobilenet_auto_budget_total";
/// Always 1, labelled with each loaded variant's attributes and knobs.
pub const MODEL_INFO: &str = "mobilenet_model_info";
/// Probes sent to failing models, by `model` and `outcome` (ok, or the error kind).
pub const HEALTH_PROBES_TOTAL: &str = "mobilenet_health_probes_total";
/// Inference requests inside the service (body read; decoding, queued or running), by `protocol`.
pub const REQUESTS_IN_FLIGHT: &str = "mobilenet_requests_in_flight";
/// Open client connections, by `protocol`: what `--max-connections` caps.
pub const OPEN_CONNECTIONS: &str = "mobilenet_open_connections";

// The process series the Prometheus client libraries export by default, read from /proc by `process`.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0];

/// Installs the Prometheus recorder once per process and returns the handle that renders `/metrics`.
/// Several servers in one process (tests) share it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only fails on an empty bucket list, which the constants above are not.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            // Published at zero so that the series exist before the first request.
            for protocol in ["http", "grpc"] {
                gauge!(REQUESTS_IN_FLIGHT, "protocol" => protocol).set(0.0);
                gauge!(OPEN_CONNECTIONS, "protocol" => protocol).set(0.0);
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        "Inference requests by model, task, protocol and outcome"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Request time in the server, from the request's head to its answer"
    );
    describe_histogram!(
        PHASE_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Request time per phase"
    );
    describe_histogram!(BATCH_SIZE, "Requests per ONNX Runtime batch");
    describe_counter!(
        SOLO_BATCHES_TOTAL,
        "Batches run on the model's solo session, with the model to themselves"
    );
    describe_gauge!(QUEUE_DEPTH, "Requests waiting in the batcher");
    describe_counter!(REJECTED_TOTAL, "Requests refused at admission, by reason");
    describe_counter!(
        DROPPED_TOTAL,
        "Admitted requests dropped before inference, by reason"
    );
    describe_gauge!(
        DECODE_MEMORY_BYTES,
        metrics::Unit::Bytes,
        "Estimated decode memory reserved by images being decoded"
    );
    describe_gauge!(
        DECODE_MEMORY_LIMIT_BYTES,
        metrics::Unit::Bytes,
        "The decode memory budget"
    );
    describe_counter!(
        AUTO_ROUTED_TOTAL,
        "model=auto decisions, by chosen variant (none: refused, no variant fitted the budget)"
    );
    describe_counter!(
        AUTO_BUDGET_TOTAL,
        "model=auto requests routed to a variant, by whether they met their latency budget"
    );
    describe_gauge!(MODEL_INFO, "Loaded model variants (value 1)");
    describe_gauge!(REQUESTS_IN_FLIGHT, "Inference requests being served");
    describe_gauge!(OPEN_CONNECTIONS, "Open client connections, by protocol");
    describe_counter!(
        HEALTH_PROBES_TOTAL,
        "Probes sent to failing models, by outcome"
    );
}

/// The `/metrics` page: the recorded series, then the process series read now.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut page = handle.render();
    page.push_str(&crate::process::render());
    page
}

/// Counts one request in `mobilenet_requests_in_flight` for as long as it lives: dropping it (the answer, an
/// error, or the client going away and its future being dropped) takes the request off.
pub struct InFlight {
    protocol: &'static str,
}

impl InFlight {
    pub fn start(protocol: &'static str) -> InFlight {
        gauge!(REQUESTS_IN_FLIGHT, "protocol" => protocol).increment(1.0);
        InFlight { protocol }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(REQUESTS_IN_FLIGHT, "protocol" => self.protocol).decrement(1.0);
    }
}

/// Counts one open connection in `mobilenet_open_connections` until dropped.
pub struct OpenConnection {
    protocol: &'static str,
}

impl OpenConnection {
    pub fn start(protocol: &'static str) -> OpenConnection {
        gauge!(OPEN_CONNECTIONS, "protocol" => protocol).increment(1.0);
        OpenConnection { protocol }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!(OPEN_CONNECTIONS, "protocol" => self.protocol).decrement(1.0);
    }
}

/// The phase timings of one served request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    pub decode: Duration,
    pub queue: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

/// Records one finished request (successful or not).
pub fn record_request(
    model: &str,
    task: &str,
    protocol: &str,
    outcome: &str,
    total: Duration,
    phases: Option<&PhaseTimes>,
) {
    let labels = [
        ("model", model.to_string()),
        ("task", task.to_string()),
        ("protocol", protocol.to_string()),
    ];
    counter!(REQUESTS_TOTAL, "model" => model.to_string(), "task" => task.to_string(),
        "protocol" => protocol.to_string(), "outcome" => outcome.to_string())
    .increment(1);
    histogram!(REQUEST_DURATION_SECONDS, &labels).record(total.as_secs_f64());
    if let Some(p) = phases {
        for (phase, d) in [
            ("decode", p.decode),
            ("queue", p.queue),
            ("inference", p.inference),
            ("postprocess", p.postprocess),
        ] {
            histogram!(PHASE_DURATION_SECONDS, "model" => model.to_string(), "phase" => phase)
                .record(d.as_secs_f64());
        }
    }
}

pub fn record_batch(model: &str, size: usize) {
    histogram!(BATCH_SIZE, "model" => model.to_string()).record(size as f64);
}

pub fn record_solo_batch(model: &str) {
    counter!(SOLO_BATCHES_TOTAL, "model" => model.to_string()).increment(1);
}

pub fn set_queue_depth(model: &str, depth: usize) {
    gauge!(QUEUE_DEPTH, "model" => model.to_string()).set(depth as f64);
}

pub fn record_auto_routed(task: &'static str, model: &str) {
    counter!(AUTO_ROUTED_TOTAL, "task" => task, "model" => model.to_string()).increment(1);
}

pub fn record_auto_budget(task: &'static str, model: &str, met: bool) {
    let outcome = if met { "met" } else { "missed" };
    counter!(AUTO_BUDGET_TOTAL, "task" => task, "model" => model.to_string(), "outcome" => outcome)
        .increment(1);
}

pub fn record_rejected(model: &str, reason: &'static str) {
    counter!(REJECTED_TOTAL, "model" => model.to_string(), "reason" => reason).increment(1);
}

pub fn record_dropped(model: &str, reason: &'static str, count: u64) {
    counter!(DROPPED_TOTAL, "model" => model.to_string(), "reason" => reason).increment(count);
}

pub fn record_probe(model: &str, outcome: &'static str) {
    counter!(HEALTH_PROBES_TOTAL, "model" => model.to_string(), "outcome" => outcome).increment(1);
}

/// Publishes a loaded model: its info series, and its counters at zero so that dashboards and alerts see
/// the series before the first rejection or drop happens.
pub fn record_model_info(model: &str, labels: Vec<(&'static str, String)>) {
    gauge!(MODEL_INFO, &labels).set(1.0);
    gauge!(QUEUE_DEPTH, "model" => model.to_string()).set(0.0);
    counter!(REJECTED_TOTAL, "model" => model.to_string(), "reason" => "queue_full").increment(0);
    for reason in ["cancelled", "deadline_exceeded"] {
        counter!(DROPPED_TOTAL, "model" => model.to_string(), "reason" => reason).increment(0);
    }
}

/// Adds (or with a negative value, removes) reserved decode memory.
pub fn add_decode_memory(bytes: f64) {
    gauge!(DECODE_MEMORY_BYTES).increment(bytes);
}

pub fn set_decode_memory_limit(bytes: u64) {
    gauge!(DECODE_MEMORY_LIMIT_BYTES).set(bytes as f64);
}
