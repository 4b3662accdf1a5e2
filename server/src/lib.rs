//! mobilenet-serve: the MobileNetV2 family (classification, detection, segmentation) served over HTTP
//! (axum) and gRPC (tonic) from ONNX Runtime, with one dynamic batcher per model.
//!
//! # Layout
//!
//! A request flows top to bottom:
//!
//! - [`http`] / [`grpc`]: thin transports. Parse the image and options ([`options`] validates them for
//!   both), call the [`service`], render the answer. Errors are one type, [`error::Error`], mapped once to
//!   HTTP status, gRPC code and a `kind` label.
//! - [`service`]: route to a variant ([`routing`]), take an admission permit (429 at once when full),
//!   decode and resize on a bounded blocking pool ([`imaging`]), queue, finish, and record metrics once.
//! - [`batching`]: per-model queue. [`batching::policy`] is the pure rule for when a batch closes and what is
//!   dropped (client gone, deadline passed); [`batching::queue`] is the actor that applies it.
//! - [`engine`]: one std thread per ONNX Runtime session; builds the batch tensor, runs it and decodes
//!   each request's outputs with [`postprocess`] (top-k, SSD boxes + NMS, segmentation masks).
//!
//! Around it: [`config`] (clap flags/env, with CPU-sized defaults from [`cpus`] and
//! memory-sized ones from [`memory`]), [`repository`] (the
//! `models/repository` format), [`metrics`] (every metric name), [`shutdown`] (signals and draining),
//! [`sched`] (the CPU scheduling policy of the server's threads), [`malloc`] (the C allocator's arenas).
pub mod batching;
pub mod config;
pub mod cpus;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod imaging;
pub mod malloc;
pub mod memory;
pub mod metrics;
pub mod options;
pub mod postprocess;
pub mod repository;
pub mod routing;
pub mod sched;
pub mod service;
pub mod shutdown;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    config::Config,
    engine::Model,
    grpc::{GrpcService, InferenceServer},
    repository::{Repository, Task},
    routing::Router,
    service::Service,
    shutdown::Drain,
};

/// Already-bound sockets, so callers (tests) can bind port 0 and read the address first.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            http: TcpListener::bind(config.http_addr)
                .await
                .with_context(|| format!("binding HTTP {}", config.http_addr))?,
            grpc: TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("binding gRPC {}", config.grpc_addr))?,
        })
    }
}

/// Serves until `shutdown` resolves, then drains. Both servers accept at once; `/readyz` turns ready when
/// every model is loaded and warmed. Returns an error if the models cannot be loaded.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = metrics::install();
    let service = Arc::new(Service::new(
        config.decode_threads(),
        config.max_image_pixels,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<InferenceServer<GrpcService>>()
        .await;
    let drain = Drain::default();

    tokio::spawn({
        let (service, health, drain) = (service.clone(), health.clone(), drain.clone());
        async move {
            shutdown.await;
            service.start_draining();
            health
                .set_not_serving::<InferenceServer<GrpcService>>()
                .await;
            drain.trigger();
        }
    });

    let app = http::app(http::AppState {
        service: service.clone(),
        metrics,
        max_body_bytes: config.max_body_bytes,
    });
    // TCP_NODELAY on every connection: answers are small writes that Nagle's algorithm would hold back
    // until the client's delayed ACK (~40 ms), which would dominate the latency of a one-image request.
    let http_listener = axum::serve::ListenerExt::tap_io(listeners.http, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http = axum::serve(http_listener, app).with_graceful_shutdown(drain.wait());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mobilenet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let inference = InferenceServer::new(GrpcService {
        service: service.clone(),
    })
    .max_decoding_message_size(config.max_body_bytes);
    // HTTP/2's defaults (16 KiB frames, 1 MiB of window per connection) cut a 600 KB photo into ~40 frames
    // read one syscall each, and stall 8 concurrent uploads on one connection for window updates. Larger
    // frames and windows let a whole image arrive in a few reads. Memory stays bounded: a window is at most
    // what one connection may have in flight, and each message is capped at `max_body_bytes`.
    let grpc = tonic::transport::Server::builder()
        .max_frame_size(GRPC_MAX_FRAME_BYTES)
        .initial_stream_window_size(GRPC_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW_BYTES)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(inference)
        .serve_with_incoming_shutdown(nodelay_incoming(listeners.grpc), drain.wait());
    let serving = async {
        tokio::try_join!(async { http.await.context("HTTP server") }, async {
            grpc.await.context("gRPC server")
        })
    };
    tokio::pin!(serving);

    let runtime = tokio::runtime::Handle::current();
    let load_config = config.clone();
    let loading = tokio::task::spawn_blocking(move || load_models(&load_config, &runtime));
    tokio::select! {
        loaded = loading => {
            let router = loaded.context("model loading panicked")??;
            service.set_models(router);
            health.set_serving::<InferenceServer<GrpcService>>().await;
            tracing::info!("all models loaded and warmed; ready");
        }
        served = &mut serving => {
            served?;
            return Ok(());
        }
    }
    let drain_deadline = async {
        drain.wait().await;
        tokio::time::sleep(config.drain_timeout()).await;
    };
    tokio::select! {
        served = &mut serving => { served?; }
        _ = drain_deadline => tracing::warn!("drain timeout passed; exiting with requests in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}

const GRPC_MAX_FRAME_BYTES: u32 = 1 << 20;
const GRPC_STREAM_WINDOW_BYTES: u32 = 4 << 20;
const GRPC_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// Accepted gRPC connections with TCP_NODELAY set (tonic only sets it on listeners it binds itself).
fn nodelay_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Reads the repository and loads every selected variant (sessions built and warmed).
fn load_models(config: &Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<Router<Model>> {
    let env = engine::environment(config.ort_dylib.as_deref())?;
    let repository = Repository::load(&config.model_repository, &config.models)
        .with_context(|| format!("model repository {}", config.model_repository.display()))?;
    let mut defaults = repository.defaults.clone();
    let overrides = [
        (Task::Classification, &config.default_classification),
        (Task::Detection, &config.default_detection),
        (Task::Segmentation, &config.default_segmentation),
    ];
    for (task, name) in overrides {
        if let Some(name) = name {
            anyhow::ensure!(
                repository
                    .variants
                    .iter()
                    .any(|v| v.config.name == *name && v.config.task == task),
                "default {task} variant {name:?} is not a loaded {task} variant"
            );
            defaults.insert(task, name.clone());
        }
    }
    for spec in &config.model_override {
        let name = spec
            .split_once(':')
            .map_or(spec.as_str(), |(name, _)| name.trim());
        anyhow::ensure!(
            repository.variants.iter().any(|v| v.config.name == name),
            "--model-override {spec:?} names no loaded variant"
        );
    }
    let mut models = Vec::new();
    for variant in repository.variants {
        let name = variant.config.name.clone();
        let knobs = config.knobs_for(&name, variant.config.serving)?;
        let started = std::time::Instant::now();
        let model = engine::load_model(&env, variant, knobs.clone(), runtime)?;
        tracing::info!(model = %name, ?knobs, elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
        let c = &model.variant.config;
        metrics::record_model_info(
            &name,
            vec![
                ("model", c.name.clone()),
                ("task", c.task.as_str().to_string()),
                ("width", c.attributes.width.to_string()),
                ("resolution", c.attributes.resolution.to_string()),
                ("precision", c.attributes.precision.clone()),
                ("max_batch_size", knobs.max_batch_size.to_string()),
                ("instances", knobs.instances.to_string()),
                ("intra_op_threads", knobs.intra_op_threads.to_string()),
                (
                    "solo_intra_op_threads",
                    knobs.solo_intra_op_threads.to_string(),
                ),
            ],
        );
        models.push(Arc::new(model));
    }
    Ok(Router::new(models, defaults))
}
