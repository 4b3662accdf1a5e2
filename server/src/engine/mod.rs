//! The inference engine: ONNX Runtime sessions, each owned by a dedicated std thread.
//!
//! [`load_model`] starts `instances` threads for a variant. Each builds its own `ort::Session`, runs a warm-up
//! batch (so readiness means warmed, not just loaded), then serves batches from the model's queue: it decodes
//! the images that arrive still encoded, builds the batch tensor, runs it, decodes each request's slice of the outputs and answers on the request's
//! oneshot channel. A client that went away only closes its channel; the thread never panics on it.
//!
//! With `solo_intra_op_threads`, one more thread holds a wider session, and the batcher sends it every batch
//! that finds the model idle: one request at a time gets every CPU, while under load the instances' narrow
//! sessions run side by side, which on a few cores keeps them busier than one wide session can.
pub mod instance;
pub mod sharing;

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use ort::environment::Environment;
use tokio::sync::mpsc;

use crate::{
    batching::{Admission, Batch, Batcher, ModelLoad, policy::BatchPolicy},
    config::ModelKnobs,
    health::{HealthPolicy, ModelHealth},
    repository::Variant,
};

/// One model thread to start: its name suffix, its session's width, and where its batches come from.
struct ThreadPlan {
    label: String,
    intra_op_threads: usize,
    batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
}

/// A loaded, warmed model and the handle to its queue.
pub struct Model {
    pub variant: Arc<Variant>,
    pub knobs: ModelKnobs,
    pub batcher: Batcher,
    /// Fed by the model's threads, read by `/readyz` and gRPC health.
    pub health: Arc<ModelHealth>,
}

impl Model {
    /// Classes the variant can answer: its labels, less the background column when the decoding drops one.
    pub fn num_classes(&self) -> u32 {
        use crate::repository::OutputSpec;
        let labels = self.variant.labels.len() as u32;
        match &self.variant.config.output {
            OutputSpec::Classification {
                background_index: Some(_),
                ..
            }
            | OutputSpec::SsdAnchors {
                background_index: Some(_),
                ..
            } => labels.saturating_sub(1),
            _ => labels,
        }
    }
}

impl AsRef<crate::repository::VariantConfig> for Model {
    fn as_ref(&self) -> &crate::repository::VariantConfig {
        &self.variant.config
    }
}

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process, and the shared library
/// can be loaded only once, so servers started in one process (tests) share it.
pub fn environment(dylib: Option<&Path>) -> anyhow::Result<Environment> {
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);
    let mut slot = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let builder = match dylib {
        Some(path) => ort::init_from(path)
            .map_err(|e| anyhow::anyhow!("loading ONNX Runtime from {}: {e}", path.display()))?,
        None => anyhow::bail!("no ONNX Runtime library: set --ort-dylib or ORT_DYLIB_PATH"),
    };
    let env = builder
        .with_name("mobilenet-serve")
        .build()
        .map_err(|e| anyhow::anyhow!("ONNX Runtime environment: {e}"))?;
    env.set_log_level(ort_log_level(
        std::env::var("ORT_LOG_LEVEL").ok().as_deref(),
    )?);
    *slot = Some(env.clone());
    Ok(env)
}

/// ONNX Runtime's own log level, from `ORT_LOG_LEVEL` (`verbose`, `info`, `warning`, `error`, `fatal`): errors
/// only by default. Its warnings at load time ("Removing initializer ... It is not used by any node", some 40
/// per start with the default models) say nothing a user can act on.
fn ort_log_level(value: Option<&str>) -> anyhow::Result<ort::logging::LogLevel> {
    use ort::logging::LogLevel;
    Ok(match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("error") => LogLevel::Error,
        Some("verbose") => LogLevel::Verbose,
        Some("info") => LogLevel::Info,
        Some("warning") | Some("warn") => LogLevel::Warning,
        Some("fatal") => LogLevel::Fatal,
        Some(other) => {
            anyhow::bail!("ORT_LOG_LEVEL={other:?}: use verbose, info, warning, error or fatal")
        }
    })
}

/// Loads `variant` with `knobs`: starts its threads, waits until every session is built and warmed, and
/// starts its batcher. Its threads report their batches to its health, judged by `health`. Must be called
/// inside a tokio runtime (the batcher is a task); blocks while loading.
pub fn load_model(
    env: &Environment,
    variant: Variant,
    knobs: ModelKnobs,
    health: HealthPolicy,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Model> {
    let variant = Arc::new(variant);
    let name = variant.config.name.clone();
    let load = ModelLoad::new(knobs.instances, knobs.max_batch_size);
    let (dispatch, batches) = mpsc::channel::<Batch>(knobs.instances + 1);
    let batches = Arc::new(Mutex::new(batches));
    // A solo session is one more thread with a channel of its own: the batcher sends it the batches that
    // find the model idle, so a lone request always runs on the same wide session and thread.
    let mut threads: Vec<ThreadPlan> = (0..knobs.instances)
        .map(|i| ThreadPlan {
            label: i.to_string(),
            intra_op_threads: knobs.intra_op_threads,
            batches: batches.clone(),
        })
        .collect();
    let solo = match knobs.solo_intra_op_threads {
        0 => None,
        threads_wide => {
            let (solo_tx, solo_rx) = mpsc::channel::<Batch>(1);
            threads.push(ThreadPlan {
                label: "solo".into(),
                intra_op_threads: threads_wide,
                batches: Arc::new(Mutex::new(solo_rx)),
            });
            Some(solo_tx)
        }
    };
    let health = ModelHealth::new(health, threads.len());
    let share = sharing::ModelShare::new(env, knobs.shared_arena)?;
    let mut started = Vec::new();
    for (slot, plan) in threads.into_iter().enumerate() {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let context = instance::Context {
            env: env.clone(),
            variant: variant.clone(),
            intra_op_threads: plan.intra_op_threads,
            max_batch_size: knobs.max_batch_size,
            batches: plan.batches,
            load: load.clone(),
            health: health.clone(),
            health_slot: slot,
            share: share.clone(),
            cpu_scheduling: knobs.cpu_scheduling,
            thread_nice: knobs.thread_nice,
        };
        std::thread::Builder::new()
            .name(format!("model-{name}-{}", plan.label))
            .spawn(move || instance::run(context, ready_tx))?;
        started.push(ready_rx);
    }
    for ready in started {
        ready
            .recv()
            .map_err(|_| anyhow::anyhow!("{name}: model thread exited while loading"))??;
    }
    let policy = BatchPolicy {
        max_batch_size: knobs.max_batch_size,
        max_queue_delay: knobs.max_queue_delay,
    };
    let _guard = runtime.enter();
    let admission = Admission {
        capacity: knobs.queue_capacity,
        max_queue_wait: knobs.max_queue_wait,
    };
    let batcher = Batcher::start(&name, policy, admission, load, dispatch, solo);
    Ok(Model {
        variant,
        knobs,
        batcher,
        health,
    })
}

#[cfg(test)]
mod log_level_tests {
    use super::*;
    use ort::logging::LogLevel;

    #[test]
    fn errors_only_unless_asked() {
        assert!(matches!(ort_log_level(None).unwrap(), LogLevel::Error));
        assert!(matches!(
            ort_log_level(Some("WARNING")).unwrap(),
            LogLevel::Warning
        ));
        assert!(matches!(
            ort_log_level(Some("verbose")).unwrap(),
            LogLevel::Verbose
        ));
        assert!(ort_log_level(Some("loud")).is_err());
    }
}
