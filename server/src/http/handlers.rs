//! HTTP handlers and their JSON shapes (README "HTTP API"). Each inference handler parses, calls the service
//! and renders; nothing else.
use axum::{
    Json,
    extract::{RawQuery, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::{AppState, extract};
use crate::{
    error::{Error, Result},
    model_info,
    postprocess::finish::{Mask, Segmentation},
    repository::Task,
    routing::Selector,
    service::{self, Answer, AutoRouting, InferRequest, Input, Protocol, Timings},
};

pub async fn classify(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    let answer = async {
        let request = infer_request(&state, Task::Classification, query, request).await?;
        state.service.classify(request).await
    };
    match answer.await {
        Ok(answer) => render(&answer, json!({ "classes": answer.body })),
        Err(e) => e.into_response(),
    }
}

pub async fn detect(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    let answer = async {
        let request = infer_request(&state, Task::Detection, query, request).await?;
        state.service.detect(request).await
    };
    match answer.await {
        Ok(answer) => render(&answer, json!({ "detections": answer.body })),
        Err(e) => e.into_response(),
    }
}

pub async fn segment(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    let answer = async {
        let request = infer_request(&state, Task::Segmentation, query, request).await?;
        state.service.segment(request).await
    };
    match answer.await {
        Ok(answer) => render_segmentation(answer),
        Err(e) => e.into_response(),
    }
}

/// Judges a request from its head, before its body is read ([`Service::refuse_from_head`], which records a
/// refusal): the request back when admission would take it now, else the refusal to answer at once.
///
/// [`Service::refuse_from_head`]: crate::service::Service::refuse_from_head
pub(super) fn judge_head(
    state: &AppState,
    task: Task,
    selector: &Selector,
    deadline: Option<std::time::Instant>,
    request: Request,
) -> Result<Request> {
    let Err(refused) =
        state
            .service
            .refuse_from_head(Some(task), Some(selector), deadline, Protocol::Http)
    else {
        return Ok(request);
    };
    // Answered now; the body is read and dropped behind the answer (under the body layer's byte budget and
    // read timeout), so that the connection stays usable: closing it instead made every refused client
    // reconnect, which cost more than the read saved (docs/abuse.md). A client that waits for `100 Continue`
    // sends no body after a final answer, so there is nothing to drain: hyper closes.
    if request.headers().get(header::EXPECT).is_none() {
        let mut body = request.into_body().into_data_stream();
        tokio::spawn(async move { while let Some(Ok(_)) = body.next().await {} });
    }
    Err(refused)
}

/// The service's request from the HTTP one, or the error that refuses it before the service sees it (then
/// recorded here, as the service records everything after).
async fn infer_request(
    state: &AppState,
    task: Task,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<InferRequest> {
    let start = std::time::Instant::now();
    let refused = |error: Error| {
        service::record_refused(Some(task), Protocol::Http, &error, start.elapsed());
        error
    };
    // Everything the head says is judged before the body is read: a request that is refused anyway is
    // answered without taking in its upload (lingering close lets the answer reach a client still sending).
    let deadline = extract::deadline(request.headers(), start).map_err(refused)?;
    let options = extract::options(task, query.as_deref()).map_err(refused)?;
    let request = judge_head(state, task, &options.selector, deadline, request)?;
    let image = extract::image(request, state.max_body_bytes)
        .await
        .map_err(refused)?;
    Ok(InferRequest {
        input: Input::Image(image),
        selector: options.selector,
        options: options.task,
        png: options.png,
        deadline,
        received: start,
        raw_outputs: false,
        protocol: Protocol::Http,
    })
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    model: &'a str,
    image_width: u32,
    image_height: u32,
    #[serde(flatten)]
    body: T,
    timings: Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto: Option<AutoRouting>,
}

/// The JSON answer: the task's `body` fields between the fields every answer has.
fn render<B>(answer: &Answer<B>, body: serde_json::Value) -> Response {
    let envelope = Envelope {
        model: &answer.model,
        image_width: answer.image_width,
        image_height: answer.image_height,
        body,
        timings: answer.timings,
        auto: answer.auto,
    };
    (answer_headers(answer), Json(envelope)).into_response()
}

/// A segmentation as JSON with a run-length mask, or (`format=png`) as the mask's PNG alone.
fn render_segmentation(answer: Answer<Segmentation>) -> Response {
    match &answer.body.mask {
        Mask::Rle {
            width,
            height,
            values,
            lengths,
        } => render(
            &answer,
            json!({
                "classes": answer.body.classes,
                "mask": {"encoding": "rle", "width": width, "height": height, "values": values, "lengths": lengths},
            }),
        ),
        Mask::Png(png) => (
            answer_headers(&answer),
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
            png.clone(),
        )
            .into_response(),
    }
}

/// `x-model-variant` and a `Server-Timing` header with the phases, for browsers' and proxies' tooling.
fn answer_headers<B>(answer: &Answer<B>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&answer.model) {
        headers.insert("x-model-variant", v);
    }
    let t = &answer.timings;
    let timing = format!(
        "decode;dur={:.3}, queue;dur={:.3}, inference;dur={:.3}, postprocess;dur={:.3}, total;dur={:.3}",
        t.decode_ms, t.queue_ms, t.inference_ms, t.postprocess_ms, t.total_ms
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", v);
    }
    headers
}

pub async fn models(State(state): State<AppState>) -> Result<Response> {
    let router = state.service.router().ok_or(Error::NotReady)?;
    Ok(Json(json!({ "models": model_info::list(router) })).into_response())
}

pub async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    refused_route(
        uri.path(),
        Error::UnknownRoute {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    refused_route(
        uri.path(),
        Error::MethodNotAllowed {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
    )
}

/// Records a request to a path or with a method that has no handler, under the task its path names, if any.
fn refused_route(path: &str, error: Error) -> Error {
    let task = match path {
        "/v1/classify" => Some(Task::Classification),
        "/v1/detect" => Some(Task::Detection),
        "/v1/segment" => Some(Task::Segmentation),
        _ => None,
    };
    service::record_refused(task, Protocol::Http, &error, std::time::Duration::ZERO);
    error
}

pub async fn healthz() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// 200 when every model is loaded, warm and healthy; else 503 saying why, naming the unhealthy models.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let service = &state.service;
    if service.is_ready() {
        // Judged now, so a model thread stuck in a batch shows while it is stuck.
        let unhealthy = crate::health::unhealthy(service);
        if unhealthy.is_empty() {
            return Json(json!({"status": "ready"})).into_response();
        }
        let body = json!({"status": "unhealthy", "models": unhealthy});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let status = if service.is_draining() {
        "draining"
    } else {
        "loading"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": status })),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state.metrics),
    )
        .into_response()
}
