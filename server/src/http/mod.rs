//! The HTTP/JSON API (README "HTTP API"): thin axum handlers that parse, call the shared
//! [`Service`](crate::service::Service) and render JSON. Probes and `/metrics` live here too.
pub mod extract;
mod handlers;
mod oip;
mod ui;

use std::sync::Arc;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::service::Service;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Whether `/` serves the page ([`ui`]).
    pub ui: bool,
}

/// The whole HTTP application, without a socket (tests can drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let page = if state.ui {
        ui::routes()
    } else {
        Router::new()
    };
    page.route("/v1/classify", post(handlers::classify))
        .route("/v1/detect", post(handlers::detect))
        .route("/v1/segment", post(handlers::segment))
        .route("/v1/models", get(handlers::models))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        // The Open Inference Protocol (KServe V2), beside the native API.
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(oip::model_metadata),
        )
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(oip::model_ready),
        )
        .route("/v2/models/{name}/infer", post(oip::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip::infer),
        )
        // Wrong paths and methods answer in the same JSON error shape as everything else.
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Multipart reads honour this limit; raw bodies are read with the same limit in `extract`.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
