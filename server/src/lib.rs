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
//! - [`service`]: route to a variant ([`routing`]; with `model=auto`, the best one whose predicted latency
//!   fits the budget: [`auto`]), take an admission permit (429 at once when full),
//!   decode and resize on a bounded blocking pool ([`imaging`]), queue, finish, and record metrics once.
//! - [`batching`]: per-model queue. [`batching::policy`] is the pure rule for when a batch closes and what is
//!   dropped (client gone, deadline passed); [`batching::queue`] is the actor that applies it.
//! - [`engine`]: one std thread per ONNX Runtime session; builds the batch tensor, runs it and decodes
//!   each request's outputs with [`postprocess`] (top-k, SSD boxes + NMS, segmentation masks).
//!
//! Around it: [`net`] (the connection cap, header/body/keep-alive timers and request-body byte admission
//! in front of both transports), [`config`] (clap flags/env, with CPU-sized defaults from [`cpus`] and
//! memory-sized ones from [`memory`]), [`repository`] (the
//! `models/repository` format), [`metrics`] (every metric name; [`process`] reads the process series),
//! [`shutdown`] (signals and draining),
//! [`sched`] (the CPU scheduling policy and priority of the model threads), [`malloc`] (the C allocator's arenas and trimming),
//! [`health`] (whether each model still serves, for `/readyz` and gRPC health).
pub mod auto;
pub mod batching;
pub mod config;
pub mod cpus;
pub mod decode_cost;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod health;
pub mod http;
pub mod imaging;
pub mod malloc;
pub mod memory;
pub mod metrics;
pub mod model_info;
pub mod net;
pub mod oip;
pub mod options;
pub mod postprocess;
pub mod process;
pub mod repository;
pub mod routing;
pub mod sched;
pub mod service;
pub mod shutdown;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tower_layer::Layer;

use crate::{
    config::Config,
    engine::Model,
    grpc::{GrpcService, InferenceServer},
    net::{accept::Acceptor, body::BodyLimits, phase::Timeouts},
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
        let backlog = config.listen_backlog;
        Ok(Listeners {
            http: net::accept::listen(config.http_addr, backlog)
                .with_context(|| format!("binding HTTP {}", config.http_addr))?,
            grpc: net::accept::listen(config.grpc_addr, backlog)
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
    let (http_addr, grpc_addr) = (listeners.http.local_addr()?, listeners.grpc.local_addr()?);
    let metrics = metrics::install();
    let service = Arc::new(
        Service::new(
            config.decode_threads(),
            config.image_limits(),
            imaging::DecodeBudget::new(config.decode_budget_bytes()),
        )
        .with_default_timeout(config.default_request_timeout()),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_grpc_status(&health, tonic_health::ServingStatus::NotServing).await;
    let drain = Drain::default();

    tokio::spawn({
        let (service, health, drain) = (service.clone(), health.clone(), drain.clone());
        async move {
            shutdown.await;
            service.start_draining();
            health::set_grpc_status(&health, tonic_health::ServingStatus::NotServing).await;
            drain.trigger();
        }
    });

    // One budget of buffered request-body bytes and one body read timeout for both transports.
    let body_limits = BodyLimits::new(
        config.body_budget_bytes(),
        Duration::from_millis(config.body_read_timeout_ms),
        config.max_body_bytes as u64,
    );
    let app = http::app(http::AppState {
        service: service.clone(),
        metrics,
        max_body_bytes: config.max_body_bytes,
        ui: config.ui,
    })
    .layer(body_limits.layer());
    let acceptor = |listener, protocol| {
        Acceptor::new(
            listener,
            config.max_connections,
            config.tcp_keepalive(),
            protocol,
        )
    };
    let timeouts = Timeouts {
        header: Duration::from_millis(config.header_read_timeout_ms),
        idle: Duration::from_millis(config.keep_alive_timeout_ms),
    };
    let http = net::http1::serve(
        acceptor(listeners.http, "http"),
        app,
        timeouts,
        drain.clone(),
    );
    // Reflection in both versions: v1, and v1alpha for the clients that still ask for it only (older
    // grpcurl, Postman, Python's grpcio-reflection), which would get UNIMPLEMENTED from v1 alone.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mobilenet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    // Outermost, so that a call refused from its head holds none of the body budget; it also counts what tonic
    // refuses of an admitted call before the method runs (grpc::unreached).
    let head_admission = grpc::head::HeadAdmissionLayer {
        service: service.clone(),
    };
    let inference = head_admission.layer(
        body_limits.layer().layer(
            InferenceServer::new(GrpcService {
                service: service.clone(),
            })
            .max_decoding_message_size(config.max_body_bytes),
        ),
    );
    // The Open Inference Protocol, under the same body limits and head admission (its head names no model:
    // a call is refused from it only when every model would refuse it).
    let oip = head_admission.layer(
        body_limits.layer().layer(
            grpc::oip::GrpcInferenceServiceServer::new(grpc::oip::OipService {
                service: service.clone(),
            })
            .max_decoding_message_size(config.max_body_bytes),
        ),
    );
    // HTTP/2's defaults (16 KiB frames, 1 MiB of window per connection) cut a 600 KB photo into ~40 frames
    // read one syscall each, and stall 8 concurrent uploads on one connection for window updates. Larger
    // frames and windows let a whole image arrive in a few reads. Memory stays bounded: a window is at most
    // what one connection may have in flight, and each message is capped at `max_body_bytes`.
    let mut grpc = tonic::transport::Server::builder()
        .max_frame_size(GRPC_MAX_FRAME_BYTES)
        .initial_stream_window_size(GRPC_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(config.grpc_max_concurrent_streams)
        .http2_keepalive_interval(config.grpc_keepalive_interval())
        .http2_keepalive_timeout(Some(Duration::from_secs(
            config.grpc_keepalive_timeout_secs,
        )));
    if let Some(age) = config.grpc_max_connection_age() {
        grpc = grpc.max_connection_age(age);
    }
    let grpc = grpc
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(inference)
        .add_service(oip)
        .serve_with_incoming_shutdown(
            net::grpc::incoming(acceptor(listeners.grpc, "grpc"), timeouts.header),
            drain.wait(),
        );
    let serving = async {
        tokio::try_join!(
            async {
                http.await;
                anyhow::Ok(())
            },
            async { grpc.await.context("gRPC server") }
        )
    };
    tokio::pin!(serving);

    let runtime = tokio::runtime::Handle::current();
    let load_config = config.clone();
    let loading = tokio::task::spawn_blocking(move || {
        let router = load_models(&load_config, &runtime)?;
        let sample = measure_decode_speed(&router, &load_config);
        if load_config.malloc_trim_interval_ms > 0 {
            malloc::trim_now();
        }
        anyhow::Ok((router, sample))
    });
    tokio::select! {
        loaded = loading => {
            let (router, decode_sample) = loaded.context("model loading panicked")??;
            service.set_models(router, decode_sample);
            health::set_grpc_status(&health, tonic_health::ServingStatus::Serving).await;
            // From now on NOT_SERVING while a model is stuck or failing, SERVING again when it recovers.
            tokio::spawn(health::watch(service.clone(), health.clone()));
            let page = if config.ui { format!("http://{http_addr}/") } else { "off (--ui false)".into() };
            tracing::info!(http = %format!("http://{http_addr}"), grpc = %grpc_addr, %page, "all models loaded and warmed; ready");
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

/// Prepares a synthetic 720p JPEG for the first model, which `model=auto` predicts decoding from until requests
/// refine it. Not fatal: limits below a 720p photo refuse the sample, and `auto` then learns from the first
/// request.
fn measure_decode_speed(
    router: &Router<Model>,
    config: &Config,
) -> Option<imaging::calibrate::DecodeSample> {
    let first = &router.models()[0].variant.config.input;
    match imaging::calibrate::decode_sample(first, &config.image_limits()) {
        Ok(sample) => {
            tracing::info!(
                bytes = sample.bytes,
                pixels = sample.pixels,
                took_us = sample.took.as_micros() as u64,
                "decode speed measured"
            );
            Some(sample)
        }
        Err(e) => {
            tracing::warn!(error = %e, "decode speed not measured at start-up");
            None
        }
    }
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
        let model = engine::load_model(
            &env,
            variant,
            knobs.clone(),
            config.health_policy(),
            runtime,
        )?;
        let load_ms = started.elapsed().as_millis() as u64;
        tracing::info!(model = %name, layout = %knobs.layout(), load_ms, "model loaded");
        tracing::debug!(model = %name, ?knobs, "model knobs");
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
    Ok(Router::new(models, defaults, repository.auto))
}
