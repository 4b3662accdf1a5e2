//! The page at `/`: a person tries every model in a browser (upload a photo or pick a bundled sample, pick a
//! task and a variant, see the classes, boxes and mask drawn, compare variants, watch the server's load).
//! Three static files and three sample photos, embedded in the binary so the page works offline and needs no
//! build step; the page calls the native HTTP API like any client. `--ui false` leaves `/` unrouted.
use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, Method, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::handlers;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// The photos the page offers (server/ui/samples/README.md: what they show, their licence).
const SAMPLES: [(&str, &[u8]); 3] = [
    ("burger.jpg", include_bytes!("../../ui/samples/burger.jpg")),
    (
        "cats_and_dogs.jpg",
        include_bytes!("../../ui/samples/cats_and_dogs.jpg"),
    ),
    (
        "segmentation_input_rotation0.jpg",
        include_bytes!("../../ui/samples/segmentation_input_rotation0.jpg"),
    ),
];

/// One embedded file with its media type. `no-cache`: a browser revalidates after an upgrade rather than
/// running an older script against a newer API.
fn asset(body: impl IntoResponse, media_type: &'static str) -> Response {
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
        .route("/ui/samples/{name}", get(sample))
}

/// A bundled sample by its file name; any other name is an unknown route, answered and counted as one.
async fn sample(Path(name): Path<String>, method: Method, uri: Uri) -> Response {
    match SAMPLES.iter().find(|(file, _)| *file == name) {
        Some((_, bytes)) => asset(*bytes, "image/jpeg"),
        None => handlers::unknown_route(method, uri).await.into_response(),
    }
}
