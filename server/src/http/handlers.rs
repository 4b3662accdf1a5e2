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
    repository::Task,
    service::{Answer, AnswerBody, AutoRouting, InferRequest, Mask, Protocol, Timings},
};

pub async fn classify(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    infer(state, Task::Classification, query, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn detect(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    infer(state, Task::Detection, query, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn segment(state: State<AppState>, query: RawQuery, request: Request) -> Response {
    infer(state, Task::Segmentation, query, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn infer(
    State(state): State<AppState>,
    task: Task,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response> {
    // Everything the head says is judged before the body is read: a request that is refused anyway is
    // answered without taking in its upload (lingering close lets the answer reach a client still sending).
    let deadline = extract::deadline(request.headers())?;
    let options = extract::options(task, query.as_deref())?;
    if let Err(refused) =
        state
            .service
            .refuse_from_head(task, Some(&options.selector), deadline, Protocol::Http)
    {
        // Answered now; the body is read and dropped behind the answer (under the body layer's byte budget
        // and read timeout), so that the connection stays usable: closing it instead made every refused
        // client reconnect, which cost more than the read saved (docs/abuse.md). A client that waits for
        // `100 Continue` sends no body after a final answer, so there is nothing to drain: hyper closes.
        if request.headers().get(header::EXPECT).is_none() {
            let mut body = request.into_body().into_data_stream();
            tokio::spawn(async move { while let Some(Ok(_)) = body.next().await {} });
        }
        return Err(refused);
    }
    let image = extract::image(request, state.max_body_bytes).await?;
    let request = InferRequest {
        image,
        selector: options.selector,
        options: options.task,
        png: options.png,
        deadline,
        protocol: Protocol::Http,
    };
    let answer = state.service.infer(task, request).await?;
    Ok(render(answer))
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

fn render(answer: Answer) -> Response {
    let headers = answer_headers(&answer);
    let envelope = |body: serde_json::Value| Envelope {
        model: &answer.model,
        image_width: answer.image_width,
        image_height: answer.image_height,
        body,
        timings: answer.timings,
        auto: answer.auto,
    };
    let response = match &answer.body {
        AnswerBody::Classes(classes) => Json(envelope(json!({ "classes": classes }))).into_response(),
        AnswerBody::Detections(detections) => Json(envelope(json!({ "detections": detections }))).into_response(),
        AnswerBody::Segmentation { classes, mask: Mask::Rle { width, height, values, lengths } } => Json(envelope(json!({
            "classes": classes,
            "mask": {"encoding": "rle", "width": width, "height": height, "values": values, "lengths": lengths},
        })))
        .into_response(),
        AnswerBody::Segmentation { mask: Mask::Png(png), .. } => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], png.clone()).into_response()
        }
    };
    (headers, response).into_response()
}

/// `x-model-variant` and a `Server-Timing` header with the phases, for browsers' and proxies' tooling.
fn answer_headers(answer: &Answer) -> HeaderMap {
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
    let models: Vec<_> = router
        .models()
        .iter()
        .map(|m| {
            let c = &m.variant.config;
            json!({
                "name": c.name,
                "task": c.task.as_str(),
                "width": c.attributes.width,
                "resolution": c.attributes.resolution,
                "precision": c.attributes.precision,
                "parameters": c.attributes.parameters,
                "multiply_adds": c.attributes.multiply_adds,
                "is_default": router.is_default(c),
                "num_classes": m.num_classes(),
                "description": c.description,
                "quality": c.quality,
                "auto_rank": router.auto_rank(c),
            })
        })
        .collect();
    Ok(Json(json!({ "models": models })).into_response())
}

pub async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::UnknownRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
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
