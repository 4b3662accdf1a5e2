//! All configuration, from flags or environment variables (clap). Every field documents why it exists.
//! Per-model batching and session knobs come, first match wins, from a `--model-override` for that variant,
//! a global flag, the variant's `serving` hints in the model repository, and built-in defaults sized from the
//! CPUs this process may use.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
    health::HealthPolicy,
    repository::{ServingHints, SessionLayout},
    sched::CpuScheduling,
};

/// Largest batch when neither a flag nor the model repository says otherwise.
const DEFAULT_MAX_BATCH_SIZE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mobilenet-serve",
    version,
    about = "Serve the MobileNetV2 family over HTTP and gRPC"
)]
pub struct Config {
    /// Address for the HTTP/JSON API, health probes and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address for the gRPC API (with health and reflection services).
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Folder written by `make models` (index.json plus one folder per variant).
    #[arg(long, env = "MODEL_REPOSITORY", default_value = "models/repository")]
    pub model_repository: PathBuf,

    /// Serve only these variants (comma-separated); empty serves every variant of the index. Saves memory and
    /// start-up time when only some are needed.
    #[arg(long, env = "MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Path to libonnxruntime.so: ONNX Runtime is loaded at run time from the project's own install rather
    /// than linked, so the server binary does not embed a particular build.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib: Option<PathBuf>,

    /// Default classification variant, overriding index.json.
    #[arg(long, env = "DEFAULT_CLASSIFICATION")]
    pub default_classification: Option<String>,

    /// Default detection variant, overriding index.json.
    #[arg(long, env = "DEFAULT_DETECTION")]
    pub default_detection: Option<String>,

    /// Default segmentation variant, overriding index.json.
    #[arg(long, env = "DEFAULT_SEGMENTATION")]
    pub default_segmentation: Option<String>,

    /// Largest batch the batcher forms, for every model. Larger batches raise throughput under load at some
    /// latency cost. Default: the model's `serving.max_batch_size` in the repository, else 8.
    #[arg(long, env = "MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,

    /// How long (ms) a batch may wait for more requests after its first one while the model is busy. An idle
    /// model runs a lone request at once, so this only adds latency under load.
    #[arg(long, env = "MAX_QUEUE_DELAY_MS", default_value_t = 5)]
    pub max_queue_delay_ms: u64,

    /// Requests admitted per model (queued or running) before answering 429 / RESOURCE_EXHAUSTED; bounds
    /// memory and latency under overload.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = 128)]
    pub queue_capacity: usize,

    /// Longest expected queue wait (ms) a model admits a request into; beyond it the request is refused at once
    /// with 429 / RESOURCE_EXHAUSTED (kind `overloaded`) instead of waiting behind a long queue. The wait is
    /// predicted from the batches the model ran (seeded by the warm-up) and the requests ahead; the limit is
    /// never less than four rounds of full batches, so a slow model still queues and batches. A request
    /// that would miss its own deadline is refused the same way. 0: admission by count only.
    #[arg(long, env = "MAX_QUEUE_WAIT_MS", default_value_t = 200)]
    pub max_queue_wait_ms: u64,

    /// ONNX Runtime sessions per model, each on its own thread, for every model. Default: from the model's
    /// `serving.sessions` in the repository, one per CPU for `per_cpu`, else 1. With as many as the CPUs,
    /// each gets one intra-op thread and a solo session (below) serves lone requests.
    #[arg(long, env = "INSTANCES")]
    pub instances: Option<usize>,

    /// ONNX Runtime intra-op threads per session. Default: the CPUs available divided by the instances, so
    /// that a busy model uses the whole allowance without oversubscribing.
    #[arg(long, env = "INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,

    /// Intra-op threads of a model's solo session: one more session, which runs a batch whenever no other
    /// batch of that model is in flight, so that a lone request gets every CPU while a loaded model runs
    /// its single-threaded instances side by side. 0 turns it off. Default: the CPUs available when a model
    /// has several instances with fewer threads than that, else 0.
    #[arg(long, env = "SOLO_INTRA_OP_THREADS")]
    pub solo_intra_op_threads: Option<usize>,

    /// Per-variant overrides, e.g. `mobilenet_v2_1.0_224:max_batch_size=16,instances=2`. Keys: max_batch_size,
    /// max_queue_delay_ms, queue_capacity, max_queue_wait_ms, instances, intra_op_threads,
    /// solo_intra_op_threads, decode_in_model_thread (0 or 1). Repeat the flag, or separate with `;`.
    #[arg(long, env = "MODEL_OVERRIDES", value_delimiter = ';')]
    pub model_override: Vec<String>,

    /// Threads decoding and resizing images, off the async reactor. Default: the CPUs available.
    #[arg(long, env = "DECODE_THREADS")]
    pub decode_threads: Option<usize>,

    /// Largest decoded image (width x height) accepted; guards against decompression bombs. Checked from the
    /// image header before decoding.
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Longest side accepted, in pixels. Within the pixel limit, a very long side still costs memory in the
    /// resize (its buffers scale with the source side times the target side).
    #[arg(long, env = "MAX_IMAGE_SIDE", default_value_t = 32_768)]
    pub max_image_side: u32,

    /// Largest ratio of the longer side to the shorter. A 1:39,000,000 strip is a memory attack, not a photo;
    /// 32:1 admits every panorama format in use.
    #[arg(long, env = "MAX_IMAGE_ASPECT_RATIO", default_value_t = 32)]
    pub max_image_aspect_ratio: u32,

    /// Largest estimated memory (MiB) to decode and resize one image, estimated from its header before
    /// anything is allocated. The default admits a 40 MP photo in every format (a 16-bit RGBA PNG is the
    /// worst at about 450 MiB). Capped by the decode memory budget.
    #[arg(long, env = "MAX_IMAGE_MEMORY_MIB", default_value_t = 512)]
    pub max_image_memory_mib: u64,

    /// Decode a JPEG at the strongest IDCT reduction (1/2, 1/4, 1/8) that still covers the model's input,
    /// then resize, as Pillow's `draft()` does: faster, and the pixels differ slightly from a full decode
    /// (docs/preprocessing.md). `false` decodes in full, exactly as the reference pipeline does.
    #[arg(long, env = "JPEG_SCALED_DECODE", default_value_t = true, action = clap::ArgAction::Set)]
    pub jpeg_scaled_decode: bool,

    /// Serve the page at `/` on the HTTP port, to try every model in a browser (`false`: an API-only server,
    /// `/` is a 404).
    #[arg(long, env = "UI", default_value_t = true, action = clap::ArgAction::Set)]
    pub ui: bool,

    /// Decode memory (MiB) shared by every image being decoded at once, on the decode pool and on the model
    /// threads: an image waits (within its deadline) until its estimate fits. Default: a quarter of the
    /// memory this process may use (its cgroup limit, else the machine's), so that a burst of large images
    /// cannot take the process past its limit.
    #[arg(long, env = "DECODE_MEMORY_BUDGET_MIB")]
    pub decode_memory_budget_mib: Option<u64>,

    /// Largest request body in bytes (HTTP and gRPC messages).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// A model whose thread has been in one batch for this long (s) is reported stuck: `/readyz` answers 503
    /// and gRPC health NOT_SERVING, naming it, until the batch ends, so a load balancer stops sending work
    /// that would only queue. The slowest batch measured, the 513 segmenter's 8 images at about 20 img/s, takes
    /// 0.4 s, so 30 s is far past any batch that is merely slow. 0 turns the watchdog off.
    #[arg(long, env = "MODEL_WATCHDOG_SECS", default_value_t = 30)]
    pub model_watchdog_secs: u64,

    /// A model whose last this-many batches all failed (ONNX Runtime errors, outputs that do not decode,
    /// panics) is reported failing, like a stuck one, until a batch succeeds. More than one, so that a single
    /// bad batch does not take the server out of rotation. 0 turns the rule off.
    #[arg(long, env = "UNHEALTHY_AFTER_FAILED_BATCHES", default_value_t = 3)]
    pub unhealthy_after_failed_batches: u32,

    /// How often (s) a failing model is sent a probe, the zeroed image of its warm-up, through its queue like
    /// a request; a probe that succeeds makes the model healthy again. Without probes, a model that a load
    /// balancer stopped sending traffic to could never show that it recovered, and a client resending one
    /// image that makes a model fail would keep it out of rotation. 0 turns probes off.
    #[arg(long, env = "FAILING_MODEL_PROBE_SECS", default_value_t = 10)]
    pub failing_model_probe_secs: u64,

    /// Bytes of request bodies the process buffers at once, over both transports. A request that would go
    /// past it is refused with 429 / RESOURCE_EXHAUSTED before its body is read in full (up front when it
    /// declares a Content-Length), and its bytes count until its answer is produced. Default: a quarter of
    /// the memory this process may use (cgroup limit, else RAM), leaving the rest to the models, decoding
    /// and the runtime. At least `--max-body-bytes`, so any admissible body can be admitted when idle.
    #[arg(long, env = "BODY_BUDGET_BYTES")]
    pub body_budget_bytes: Option<u64>,

    /// Time (ms) a request body may take to arrive in full, from its request head, on both transports
    /// (408 / DEADLINE_EXCEEDED after it): a client trickling bytes cannot hold a connection and a buffer for
    /// minutes. nginx's `client_body_timeout` value, counted over the whole body rather than between reads.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 60_000)]
    pub body_read_timeout_ms: u64,

    /// Time (ms) a request head may take to arrive, from the connection opening or the first byte of the
    /// next request; for gRPC, the time until the HTTP/2 preface arrives. Closes slowloris connections that
    /// send half a header, or nothing. nginx's `client_header_timeout` (60 s).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 60_000)]
    pub header_read_timeout_ms: u64,

    /// Time (ms) an HTTP connection may stay idle between requests before it is closed. nginx's
    /// `keepalive_timeout` (75 s): longer than the 60 s idle timeout of common load balancers, so that they
    /// close first and never send a request on a connection we are closing.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_MS", default_value_t = 75_000)]
    pub keep_alive_timeout_ms: u64,

    /// Open connections per listener (HTTP and gRPC each). Beyond it, new connections wait in the kernel's
    /// listen backlog until one closes. Bounds file descriptors and per-connection memory; the process
    /// needs `ulimit -n` of at least twice this plus a few hundred.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: u32,

    /// Length of each listener's accept queue (`listen(2)` backlog; the kernel caps it at
    /// `net.core.somaxconn`, 4096 by default). Connections that arrive faster than the accept loop takes them
    /// wait there; past it the kernel drops their SYNs and clients retry after a second. 4096 as Go's
    /// listeners (somaxconn); std and tokio use 128, which a flood of new connections overflows.
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Idle time (s) before the kernel probes a silent peer with TCP keepalive, on both listeners, so a
    /// client that vanished without closing does not hold its connection forever. 0 turns it off. Go
    /// net/http's default (15 s).
    #[arg(long, env = "TCP_KEEPALIVE_SECS", default_value_t = 15)]
    pub tcp_keepalive_secs: u64,

    /// Concurrent gRPC streams (requests) per connection; one connection cannot open 10,000 at once.
    /// nginx's `http2_max_concurrent_streams` (128).
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub grpc_max_concurrent_streams: u32,

    /// Interval (s) of HTTP/2 keepalive pings on gRPC connections; a peer that does not answer one within
    /// `--grpc-keepalive-timeout-secs` is disconnected. 0 turns pings off. gRPC's server default (2 h).
    #[arg(long, env = "GRPC_KEEPALIVE_INTERVAL_SECS", default_value_t = 7200)]
    pub grpc_keepalive_interval_secs: u64,

    /// How long (s) to wait for the answer to an HTTP/2 keepalive ping. gRPC's default (20 s).
    #[arg(long, env = "GRPC_KEEPALIVE_TIMEOUT_SECS", default_value_t = 20)]
    pub grpc_keepalive_timeout_secs: u64,

    /// Age (s) after which a gRPC connection is asked to close (GOAWAY; clients reconnect), which also
    /// bounds how long an idle one holds its slot: tonic has no idle timeout. 0: no limit, gRPC's default.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE_SECS", default_value_t = 0)]
    pub grpc_max_connection_age_secs: u64,

    /// Deadline (ms) of a request that sets none (`x-request-timeout-ms` over HTTP, `grpc-timeout` over
    /// gRPC), from when the service takes it: the answer is then 504 / DEADLINE_EXCEEDED, and a request
    /// still queued is dropped. 0: no default deadline. Envoy's default route timeout (15 s).
    #[arg(long, env = "DEFAULT_REQUEST_TIMEOUT_MS", default_value_t = 15_000)]
    pub default_request_timeout_ms: u64,

    /// After SIGTERM/SIGINT, how long (s) to keep answering accepted requests before exiting anyway.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Linux scheduling policy of the model threads and ONNX Runtime's (see the `sched` module): `batch`
    /// (SCHED_BATCH) keeps their wake-ups from preempting each other's intra-op work mid-operator; `normal` is
    /// the kernel's default SCHED_OTHER. The rest of the server always runs under SCHED_OTHER, so that a
    /// socket's wake-up does preempt inference.
    #[arg(long, env = "CPU_SCHEDULING", value_enum, default_value_t = CpuScheduling::Batch)]
    pub cpu_scheduling: CpuScheduling,

    /// Nice value (0 to 19) of the model threads and the ONNX Runtime threads they start. Above the rest of
    /// the server's (0), so that under overload admission, refusals, health checks and scrapes get a CPU at
    /// once instead of after an inference thread's time slice; inference still takes every idle cycle.
    #[arg(long, env = "MODEL_THREAD_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub model_thread_nice: i32,

    /// Whether every ONNX Runtime session allocates from one CPU arena registered on the environment, instead
    /// of an arena per session. Each arena keeps the largest activations it ever held, so with one per session
    /// a `per_cpu` model keeps three; with one shared arena, sessions that do not run at the same time reuse
    /// the same memory (docs/memory.md: about half the resident set with all variants loaded).
    #[arg(long, env = "ORT_SHARED_ARENA", default_value_t = true, action = clap::ArgAction::Set)]
    pub ort_shared_arena: bool,

    /// Most glibc malloc arenas for the process (`M_ARENA_MAX`); 0 keeps glibc's default of 8 per CPU. Each
    /// thread that allocates may get an arena of its own, which keeps the memory it freed; the server runs
    /// dozens of threads (runtime, decode pool, model threads, ONNX Runtime's), so the default holds tens
    /// of MB of freed memory. Set before any thread starts.
    #[arg(long, env = "MALLOC_ARENAS", default_value_t = 2)]
    pub malloc_arenas: usize,

    /// How often (ms) a background thread hands the allocator's free pages back to the kernel
    /// (`malloc_trim`); 0 never. glibc keeps pages freed below a live block resident, so after bursts of large
    /// images the process would hold their memory until the next burst reuses it (docs/memory.md).
    #[arg(long, env = "MALLOC_TRIM_INTERVAL_MS", default_value_t = 1000)]
    pub malloc_trim_interval_ms: u64,

    /// Log format: human-readable text or one JSON object per line for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Batching and session knobs for one model, after defaults and overrides are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelKnobs {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub queue_capacity: usize,
    /// `--max-queue-wait-ms`; `None` admits by count only.
    pub max_queue_wait: Option<Duration>,
    pub instances: usize,
    pub intra_op_threads: usize,
    /// 0: no solo session.
    pub solo_intra_op_threads: usize,
    /// Whether the model's threads decode their batch's images themselves, instead of the decode pool before
    /// queueing. By default they do when each instance has a single intra-op thread: the thread is then one
    /// core's worth of work, the image is decoded on the core that runs it, and each request saves the two
    /// thread hand-offs to and from the pool. A wider session would leave its other cores idle meanwhile.
    pub decode_in_model_thread: bool,
    /// `--ort-shared-arena`: the sessions allocate from the environment's arena.
    pub shared_arena: bool,
    /// `--cpu-scheduling` and `--model-thread-nice`, for the model threads.
    pub cpu_scheduling: CpuScheduling,
    pub thread_nice: i32,
}

impl ModelKnobs {
    /// How the model is served, in words, for the start-up log: its sessions and threads, its batches, and
    /// where its images are decoded.
    pub fn layout(&self) -> String {
        let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        let solo = match self.solo_intra_op_threads {
            0 => String::new(),
            n => format!(" + a solo session of {}", plural(n, "thread")),
        };
        format!(
            "{} of {}{solo}, batches of up to {}, decoding on {}",
            plural(self.instances, "session"),
            plural(self.intra_op_threads, "thread"),
            self.max_batch_size,
            if self.decode_in_model_thread {
                "the model threads"
            } else {
                "the decode pool"
            }
        )
    }
}

impl Config {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn health_policy(&self) -> HealthPolicy {
        HealthPolicy {
            watchdog: Duration::from_secs(self.model_watchdog_secs),
            failed_batches: self.unhealthy_after_failed_batches,
            probe_every: Duration::from_secs(self.failing_model_probe_secs),
        }
    }

    /// `--body-budget-bytes`, else a quarter of the memory available; never below `--max-body-bytes`.
    pub fn body_budget_bytes(&self) -> u64 {
        self.body_budget_bytes
            .unwrap_or_else(|| crate::memory::available() / 4)
            .max(self.max_body_bytes as u64)
    }

    /// `None` where the flag is 0.
    fn optional(value: u64, unit: fn(u64) -> Duration) -> Option<Duration> {
        (value > 0).then(|| unit(value))
    }

    pub fn tcp_keepalive(&self) -> Option<Duration> {
        Config::optional(self.tcp_keepalive_secs, Duration::from_secs)
    }

    pub fn grpc_keepalive_interval(&self) -> Option<Duration> {
        Config::optional(self.grpc_keepalive_interval_secs, Duration::from_secs)
    }

    pub fn grpc_max_connection_age(&self) -> Option<Duration> {
        Config::optional(self.grpc_max_connection_age_secs, Duration::from_secs)
    }

    pub fn default_request_timeout(&self) -> Option<Duration> {
        Config::optional(self.default_request_timeout_ms, Duration::from_millis)
    }

    pub fn decode_threads(&self) -> usize {
        self.decode_threads
            .unwrap_or_else(crate::cpus::available)
            .max(1)
    }

    /// Bytes of the decode memory budget.
    pub fn decode_budget_bytes(&self) -> u64 {
        self.decode_memory_budget_mib.map_or_else(
            || crate::memory::available() / 4,
            |mib| mib.saturating_mul(1 << 20),
        )
    }

    /// The per-image limits; no image may need more memory than the whole decode budget.
    pub fn image_limits(&self) -> crate::imaging::ImageLimits {
        crate::imaging::ImageLimits {
            max_pixels: self.max_image_pixels,
            max_side: self.max_image_side,
            max_aspect_ratio: self.max_image_aspect_ratio,
            max_memory_bytes: self
                .max_image_memory_mib
                .saturating_mul(1 << 20)
                .min(self.decode_budget_bytes()),
            scaled_jpeg_decode: self.jpeg_scaled_decode,
        }
    }

    /// The knobs for `variant`: its overrides, else the global flags, else the repository's `hints` for it,
    /// else CPU-sized defaults.
    pub fn knobs_for(&self, variant: &str, hints: ServingHints) -> anyhow::Result<ModelKnobs> {
        let cpus = crate::cpus::available();
        let mut max_batch_size = self.max_batch_size;
        let mut instances = self.instances;
        let mut intra = self.intra_op_threads;
        let mut solo = self.solo_intra_op_threads;
        let mut decode_in_model_thread = None;
        let mut knobs = ModelKnobs {
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_queue_delay: Duration::from_millis(self.max_queue_delay_ms),
            queue_capacity: self.queue_capacity,
            max_queue_wait: Config::optional(self.max_queue_wait_ms, Duration::from_millis),
            instances: 1,
            intra_op_threads: 1,
            solo_intra_op_threads: 0,
            decode_in_model_thread: false,
            shared_arena: self.ort_shared_arena,
            cpu_scheduling: self.cpu_scheduling,
            thread_nice: self.model_thread_nice,
        };
        for spec in &self.model_override {
            let Some((name, settings)) = spec.split_once(':') else {
                anyhow::bail!("--model-override {spec:?}: expected VARIANT:KEY=VALUE[,KEY=VALUE]");
            };
            if name.trim() != variant {
                continue;
            }
            for setting in settings.split(',').filter(|s| !s.trim().is_empty()) {
                let (key, value) = setting.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--model-override {spec:?}: {setting:?} is not KEY=VALUE")
                })?;
                let value: u64 = value.trim().parse()?;
                match key.trim() {
                    "max_batch_size" => max_batch_size = Some(value as usize),
                    "max_queue_delay_ms" => knobs.max_queue_delay = Duration::from_millis(value),
                    "queue_capacity" => knobs.queue_capacity = value as usize,
                    "max_queue_wait_ms" => {
                        knobs.max_queue_wait = Config::optional(value, Duration::from_millis)
                    }
                    "instances" => instances = Some(value as usize),
                    "intra_op_threads" => intra = Some(value as usize),
                    "solo_intra_op_threads" => solo = Some(value as usize),
                    "decode_in_model_thread" => decode_in_model_thread = Some(value != 0),
                    other => anyhow::bail!("--model-override: unknown key {other:?}"),
                }
            }
        }
        knobs.max_batch_size = max_batch_size
            .or(hints.max_batch_size)
            .unwrap_or(DEFAULT_MAX_BATCH_SIZE);
        let hinted_instances = match hints.sessions {
            Some(SessionLayout::PerCpu) => cpus,
            Some(SessionLayout::Shared) | None => 1,
        };
        knobs.instances = instances.unwrap_or(hinted_instances).max(1);
        knobs.intra_op_threads = intra.unwrap_or((cpus / knobs.instances).max(1)).max(1);
        let solo_default = if knobs.instances > 1 { cpus } else { 0 };
        // A solo session no wider than the instances' would only cost memory.
        knobs.solo_intra_op_threads = Some(solo.unwrap_or(solo_default))
            .filter(|&t| t > knobs.intra_op_threads)
            .unwrap_or(0);
        knobs.decode_in_model_thread =
            decode_in_model_thread.unwrap_or(knobs.intra_op_threads == 1);
        anyhow::ensure!(
            knobs.max_batch_size >= 1,
            "{variant}: max_batch_size must be at least 1"
        );
        anyhow::ensure!(
            knobs.queue_capacity >= 1,
            "{variant}: queue_capacity must be at least 1"
        );
        Ok(knobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_to_their_variant_only() {
        let config = Config::parse_from([
            "x",
            "--max-batch-size",
            "4",
            "--model-override",
            "a:max_batch_size=16,instances=2,intra_op_threads=1",
        ]);
        let a = config.knobs_for("a", ServingHints::default()).unwrap();
        assert_eq!(
            (a.max_batch_size, a.instances, a.intra_op_threads),
            (16, 2, 1)
        );
        assert_eq!(
            config
                .knobs_for("b", ServingHints::default())
                .unwrap()
                .max_batch_size,
            4
        );
    }

    #[test]
    fn solo_session_only_when_wider_than_the_instances() {
        let solo = |instances: &str, intra: &str, solo: Option<&str>| {
            let mut args = vec!["x", "--instances", instances, "--intra-op-threads", intra];
            args.extend(
                solo.map(|t| ["--solo-intra-op-threads", t])
                    .into_iter()
                    .flatten(),
            );
            let knobs = Config::parse_from(args)
                .knobs_for("a", ServingHints::default())
                .unwrap();
            knobs.solo_intra_op_threads
        };
        let cpus = crate::cpus::available();
        let default = if cpus > 1 { cpus } else { 0 };
        assert_eq!(solo("2", "1", None), default);
        assert_eq!(solo("2", "1", Some("3")), 3);
        assert_eq!(solo("2", "2", Some("2")), 0, "not wider than the instances");
        assert_eq!(solo("2", "1", Some("0")), 0, "turned off");
        assert_eq!(solo("1", "1", None), 0, "one instance has no solo session");
    }

    #[test]
    fn repository_hints_apply_only_where_no_flag_is_given() {
        let per_cpu = ServingHints {
            sessions: Some(SessionLayout::PerCpu),
            max_batch_size: Some(1),
        };
        let knobs = |args: &[&str]| {
            let args = std::iter::once("x").chain(args.iter().copied());
            Config::parse_from(args).knobs_for("a", per_cpu).unwrap()
        };
        let cpus = crate::cpus::available();
        let hinted = knobs(&[]);
        assert_eq!(
            (
                hinted.max_batch_size,
                hinted.instances,
                hinted.intra_op_threads
            ),
            (1, cpus, 1)
        );
        let flagged = knobs(&["--max-batch-size", "4", "--instances", "1"]);
        assert_eq!(
            (
                flagged.max_batch_size,
                flagged.instances,
                flagged.intra_op_threads
            ),
            (4, 1, cpus)
        );
        let overridden = knobs(&[
            "--max-batch-size",
            "4",
            "--model-override",
            "a:max_batch_size=2",
        ]);
        assert_eq!(
            overridden.max_batch_size, 2,
            "an override beats a global flag"
        );
        let shared = ServingHints {
            sessions: Some(SessionLayout::Shared),
            max_batch_size: None,
        };
        let unhinted = Config::parse_from(["x"]).knobs_for("a", shared).unwrap();
        assert_eq!(
            (
                unhinted.max_batch_size,
                unhinted.instances,
                unhinted.intra_op_threads
            ),
            (DEFAULT_MAX_BATCH_SIZE, 1, cpus)
        );
    }

    #[test]
    fn single_threaded_sessions_decode_their_own_images() {
        let knobs = |args: &[&str]| {
            let args = std::iter::once("x").chain(args.iter().copied());
            Config::parse_from(args)
                .knobs_for("a", ServingHints::default())
                .unwrap()
        };
        assert!(knobs(&["--instances", "2", "--intra-op-threads", "1"]).decode_in_model_thread);
        assert!(!knobs(&["--instances", "1", "--intra-op-threads", "2"]).decode_in_model_thread);
        let overridden = knobs(&[
            "--intra-op-threads",
            "1",
            "--model-override",
            "a:decode_in_model_thread=0",
        ]);
        assert!(
            !overridden.decode_in_model_thread,
            "an override beats the default"
        );
    }

    #[test]
    fn no_image_may_need_more_than_the_decode_budget() {
        let limits = |args: &[&str]| {
            Config::parse_from(std::iter::once("x").chain(args.iter().copied())).image_limits()
        };
        assert_eq!(
            limits(&["--decode-memory-budget-mib", "4096"]).max_memory_bytes,
            512 << 20
        );
        assert_eq!(
            limits(&["--decode-memory-budget-mib", "100"]).max_memory_bytes,
            100 << 20
        );
        let defaults = limits(&[]);
        assert_eq!(
            (
                defaults.max_pixels,
                defaults.max_side,
                defaults.max_aspect_ratio
            ),
            (40_000_000, 32_768, 32)
        );
    }

    #[test]
    fn bad_override_is_an_error() {
        let config = Config::parse_from(["x", "--model-override", "a:bogus=1"]);
        assert!(config.knobs_for("a", ServingHints::default()).is_err());
    }
}
