//! The page at `/` is served by the binary itself, from files embedded in it, and `--ui false` turns it off.
//! What the page does in a browser is tested by `server/tests/clients/test_page.py` (Chromium, Playwright).
mod common;

use common::*;

async fn get(server: &TestServer, path: &str) -> (u16, String, String) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let media_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), media_type, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_unless_turned_off() {
    let on = start(&["mobilenet_v2_1.0_96"], &[]);
    let (status, media_type, body) = get(&on, "/").await;
    assert_eq!(status, 200);
    assert!(media_type.starts_with("text/html"), "{media_type}");
    assert!(
        body.contains("/ui/app.js") && body.contains("/ui/style.css"),
        "{body}"
    );
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (status, media_type, body) = get(&on, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(media_type.starts_with(kind), "{path}: {media_type}");
        assert!(!body.is_empty(), "{path}");
    }
    // The bundled samples are the photos of server/ui/samples, byte for byte; other names are unknown routes.
    let sample = reqwest::get(on.url("/ui/samples/burger.jpg"))
        .await
        .unwrap();
    assert_eq!(sample.status(), 200);
    assert_eq!(sample.headers()["content-type"], "image/jpeg");
    let bytes = sample.bytes().await.unwrap();
    let on_disk = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/samples/burger.jpg"),
    )
    .unwrap();
    assert_eq!(bytes.as_ref(), on_disk.as_slice());
    let (status, media_type, _) = get(&on, "/ui/samples/../../Cargo.toml").await;
    assert_eq!(status, 404);
    assert!(media_type.starts_with("application/json"), "{media_type}");
    assert_eq!(get(&on, "/ui/samples/nope.jpg").await.0, 404);
    // The page's script calls the API by these paths.
    let (_, _, script) = get(&on, "/ui/app.js").await;
    for path in ["/v1/models", "/metrics", "/v1/${ENDPOINT[task]}"] {
        assert!(script.contains(path), "{path}");
    }
    drop(on);
    let off = start(&["mobilenet_v2_1.0_96"], &["--ui", "false"]);
    let (status, media_type, body) = get(&off, "/").await;
    assert_eq!(status, 404, "{body}");
    assert!(media_type.starts_with("application/json"), "{media_type}");
    assert_eq!(get(&off, "/ui/app.js").await.0, 404);
}
