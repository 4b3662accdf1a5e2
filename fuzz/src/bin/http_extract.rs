//! Fuzz target: getting the image and the options out of an HTTP request (`http::extract`): the multipart
//! parser and the raw-body reader under the body limit, then the query string of each endpoint.
//!
//! Input layout, so that seeds stay readable text:
//! - byte 0: the content type (`CONTENT_TYPES[b % 8]`) and the body limit (bit 3: 256 bytes, else 64 KiB,
//!   so both the over-limit and the complete paths are reached with small inputs);
//! - up to the first `\n`: the query string;
//! - the rest: the body.
//!
//! The request goes through an axum `Router` with the same `DefaultBodyLimit` layer as `http::app`, because
//! the multipart extractor reads its limit from that layer.
use std::panic::AssertUnwindSafe;

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, RawQuery, Request},
    http::{StatusCode, Uri, header::CONTENT_TYPE},
    routing::post,
};
use mobilenet_fuzz::assert_client_error;
use mobilenet_serve::{http::extract, repository::Task};
use tower::ServiceExt;

const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("multipart/form-data; boundary=fuzzboundary"),
    Some("multipart/form-data; boundary=\"quoted boundary\""),
    Some("multipart/form-data"),
    Some("image/jpeg"),
    Some("application/octet-stream"),
    None,
    Some("text/plain"),
    Some("IMAGE/X-Fuzz; charset=utf-8"),
];

/// The route's handler: what `handlers::infer` does before it calls the service.
async fn extract_all(limit: usize, RawQuery(query): RawQuery, request: Request) -> StatusCode {
    let _ = extract::deadline(request.headers(), std::time::Instant::now());
    match extract::image(request, limit).await {
        Ok(image) => assert!(!image.is_empty() && image.len() <= limit),
        Err(error) => assert_client_error(&error),
    }
    for task in [Task::Classification, Task::Detection, Task::Segmentation] {
        if let Err(error) = extract::options(task, query.as_deref()) {
            assert_client_error(&error);
        }
    }
    StatusCode::OK
}

fn app(limit: usize) -> Router {
    Router::new()
        .route(
            "/",
            post(move |query, request| extract_all(limit, query, request)),
        )
        .layer(DefaultBodyLimit::max(limit))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    // A panic aborts the process (afl's hook), so nothing is observed after an unwind: asserting unwind
    // safety for the runtime and routers is sound.
    let runtime = AssertUnwindSafe(runtime);
    let apps = AssertUnwindSafe([app(64 * 1024), app(256)]);
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, rest)) = data.split_first() else {
            return;
        };
        let (query, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&[][..], rest),
        };
        // A query that is not a valid URI never reaches a handler (hyper refuses the request line), so
        // the body is then fuzzed without one.
        let uri = std::str::from_utf8(query)
            .ok()
            .filter(|q| !q.is_empty())
            .and_then(|q| format!("/?{q}").parse::<Uri>().ok())
            .unwrap_or_else(|| Uri::from_static("/"));
        let mut request = Request::post(uri);
        if let Some(content_type) = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()] {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let Ok(request) = request.body(Body::from(body.to_vec())) else {
            return;
        };
        let app = apps[usize::from(selector >> 3) % 2].clone();
        let response = runtime.block_on(app.oneshot(request)).expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    });
}
