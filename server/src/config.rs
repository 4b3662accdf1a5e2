//! All configuration, from flags or environment variables (clap). Every field documents why it exists.
//! Per-model batching and session knobs come, first match wins, from a `--model-override` for that variant,
//! a global flag, the variant's `serving` hints in the model repository, and built-in defaults sized from the
//! CPUs this process may use.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
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
    /// max_queue_delay_ms, queue_capacity, instances, intra_op_threads,
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

    /// Largest request body in bytes (HTTP and gRPC messages).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// After SIGTERM/SIGINT, how long (s) to keep answering accepted requests before exiting anyway.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Linux scheduling policy of every server thread (see the `sched` module): `batch` (SCHED_BATCH) keeps
    /// network and decode wake-ups from preempting ONNX Runtime's intra-op threads mid-operator, which
    /// raises throughput at saturation; `normal` is the kernel's default SCHED_OTHER.
    #[arg(long, env = "CPU_SCHEDULING", value_enum, default_value_t = CpuScheduling::Batch)]
    pub cpu_scheduling: CpuScheduling,

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
    pub instances: usize,
    pub intra_op_threads: usize,
    /// 0: no solo session.
    pub solo_intra_op_threads: usize,
    /// Whether the model's threads decode their batch's images themselves, instead of the decode pool before
    /// queueing. By default they do when each instance has a single intra-op thread: the thread is then one
    /// core's worth of work, the image is decoded on the core that runs it, and each request saves the two
    /// thread hand-offs to and from the pool. A wider session would leave its other cores idle meanwhile.
    pub decode_in_model_thread: bool,
    /// The decompression-bomb limit (`--max-image-pixels`), for the images the model threads decode.
    pub max_image_pixels: u64,
    /// `--ort-shared-arena`: the sessions allocate from the environment's arena.
    pub shared_arena: bool,
}

impl Config {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn decode_threads(&self) -> usize {
        self.decode_threads
            .unwrap_or_else(crate::cpus::available)
            .max(1)
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
            instances: 1,
            intra_op_threads: 1,
            solo_intra_op_threads: 0,
            decode_in_model_thread: false,
            max_image_pixels: self.max_image_pixels,
            shared_arena: self.ort_shared_arena,
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
        assert_eq!(overridden.max_image_pixels, 40_000_000);
    }

    #[test]
    fn bad_override_is_an_error() {
        let config = Config::parse_from(["x", "--model-override", "a:bogus=1"]);
        assert!(config.knobs_for("a", ServingHints::default()).is_err());
    }
}
