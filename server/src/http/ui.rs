//! The page at `/`: a person tries every model in a browser (upload a photo, pick a task and a variant, see the
//! classes, boxes and mask drawn, compare variants, watch the server's load). Three static files, embedded in
//! the binary so the page works offline and needs no build step; they call the native HTTP API like any client.
//! `--ui false` leaves `/` unrouted.
use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// One embedded file with its media type. `no-cache`: a browser revalidates after an upgrade rather than
/// running an older script against a newer API.
fn asset(body: &'static str, media_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The page's routes, merged into the HTTP application when the page is on.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}
