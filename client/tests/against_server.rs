//! The client library and CLI against a real server (see `common`): both protocols give the same answers,
//! the CLI writes masks and overlays, and server refusals come back with their status and message.

mod common;

use std::process::Command;

use common::{SEGMENTER, image, server};
use mobilenet_client::error::ServerStatus;
use mobilenet_client::{ClassifyOptions, Client, ClientError, DetectOptions, Protocol, Selector};

async fn clients() -> (Client, Client) {
    let s = server();
    let http = Client::connect(Protocol::Http, Some(&s.http_url))
        .await
        .expect("HTTP client");
    let grpc = Client::connect(Protocol::Grpc, Some(&s.grpc_url))
        .await
        .expect("gRPC client");
    (http, grpc)
}

fn read(name: &str) -> Vec<u8> {
    let path = image(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("test image {}: {e}", path.display()))
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mobilenet-client"))
}

#[tokio::test]
async fn both_protocols_list_the_same_models() {
    let (http, grpc) = clients().await;
    let mut a: Vec<String> = http
        .models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut b: Vec<String> = grpc
        .models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(a.contains(&"mobilenet_v2_1.0_224".to_owned()), "{a:?}");
}

#[tokio::test]
async fn classifies_the_parrot_the_same_over_both_protocols() {
    let (http, grpc) = clients().await;
    let options = ClassifyOptions { top_k: Some(3) };
    let a = http
        .classify(read("parrot.jpg"), &Selector::default(), &options)
        .await
        .unwrap();
    let b = grpc
        .classify(read("parrot.jpg"), &Selector::default(), &options)
        .await
        .unwrap();
    // The float classifier is sure of the macaw: the other classes have no probability and are not listed.
    assert!((1..=3).contains(&a.classes.len()), "{:?}", a.classes);
    assert!(a.classes.iter().all(|c| c.score > 0.0), "{:?}", a.classes);
    // reference.json: top-1 is "macaw" (index 89) under either preprocessing.
    assert_eq!(a.classes[0].index, 89, "{:?}", a.classes);
    assert_eq!(
        (&a.model, &a.classes[0].label, a.image_width),
        (&b.model, &b.classes[0].label, b.image_width)
    );
    assert!((a.classes[0].score - b.classes[0].score).abs() < 1e-4);
}

#[tokio::test]
async fn detects_the_bird() {
    let (http, grpc) = clients().await;
    for client in [&http, &grpc] {
        let r = client
            .detect(
                read("parrot.jpg"),
                &Selector::default(),
                &DetectOptions::default(),
            )
            .await
            .unwrap();
        let bird = r
            .detections
            .iter()
            .find(|d| d.label == "bird")
            .unwrap_or_else(|| panic!("{:?}", r.detections));
        assert!(
            bird.bbox.x2 <= r.image_width as f32 + 0.5
                && bird.bbox.y2 <= r.image_height as f32 + 0.5
        );
        assert!(bird.box_normalized.x1 < bird.box_normalized.x2);
    }
}

#[tokio::test]
async fn segmentation_masks_cover_the_image() {
    let (http, grpc) = clients().await;
    let selector = Selector {
        model: Some(SEGMENTER.into()),
        ..Default::default()
    };
    for client in [&http, &grpc] {
        let r = client
            .segment(read("segmentation_input_rotation0.jpg"), &selector)
            .await
            .unwrap();
        let map = mobilenet_client::mask::decode_rle(&r.mask).unwrap();
        assert_eq!((map.width, map.height), (r.image_width, r.image_height));
        let total: f32 = r.classes.iter().map(|c| c.fraction).sum();
        assert!((total - 1.0).abs() < 0.01, "{:?}", r.classes);
    }
}

#[tokio::test]
async fn refusals_carry_the_server_status_and_message() {
    let (http, grpc) = clients().await;
    let nope = Selector {
        model: Some("no_such_model".into()),
        ..Default::default()
    };
    let e = http
        .classify(read("parrot.jpg"), &nope, &ClassifyOptions::default())
        .await
        .unwrap_err();
    match &e {
        ClientError::Server {
            status: ServerStatus::Http(404),
            kind,
            message,
        } => {
            assert_eq!(kind.as_deref(), Some("unknown_model"));
            assert!(message.contains("no_such_model"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let e = grpc
        .classify(read("parrot.jpg"), &nope, &ClassifyOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.server_status(),
        Some(&ServerStatus::Grpc(tonic::Code::NotFound)),
        "{e}"
    );
    // Not an image at all: a 4xx, never a 5xx.
    let e = http
        .classify(
            b"hello".to_vec(),
            &Selector::default(),
            &ClassifyOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e.server_status(), Some(ServerStatus::Http(400..=499))),
        "{e}"
    );
    let e = grpc
        .classify(
            b"hello".to_vec(),
            &Selector::default(),
            &ClassifyOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.server_status(),
        Some(&ServerStatus::Grpc(tonic::Code::InvalidArgument)),
        "{e}"
    );
}

#[test]
fn cli_writes_the_mask_and_the_overlay() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let mask = dir.path().join("mask.png");
    let input = image("segmentation_input_rotation0.jpg");
    let out = cli()
        .args([
            "--server",
            &s.grpc_url,
            "segment",
            "--model",
            SEGMENTER,
            "--mask-out",
        ])
        .arg(&mask)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h) = image::image_dimensions(&input).unwrap();
    assert_eq!(image::image_dimensions(&mask).unwrap(), (w, h));

    let overlay = dir.path().join("overlay.png");
    let input = image("parrot.jpg");
    let out = cli()
        .args([
            "--protocol",
            "http",
            "--server",
            &s.http_url,
            "detect",
            "--overlay-out",
        ])
        .arg(&overlay)
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bird"));
    let drawn = image::open(&overlay).unwrap().to_rgb8();
    let original = image::open(&input).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());
    assert_ne!(drawn, original, "nothing was drawn");
}

#[test]
fn cli_json_output_and_folder_input() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    for name in ["parrot.jpg", "burger.jpg"] {
        std::fs::copy(image(name), dir.path().join(name)).unwrap();
    }
    let out = cli()
        .args(["--server", &s.grpc_url, "--output", "json", "classify"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| {
        r["result"]["classes"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    }));
}

#[test]
fn cli_shows_server_errors_clearly() {
    let s = server();
    let out = cli()
        .args([
            "--protocol",
            "http",
            "--server",
            &s.http_url,
            "classify",
            "--model",
            "no_such_model",
        ])
        .arg(image("parrot.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 404")
            && stderr.contains("no_such_model")
            && stderr.contains("unknown_model"),
        "{stderr}"
    );
}

#[test]
fn cli_reports_an_unreachable_server() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let out = cli()
        .args(["--server", "http://127.0.0.1:9", "models"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot talk to the server at http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn cli_stops_quietly_when_its_reader_leaves() {
    // `mobilenet-client classify <dir> | head`: the reader closes the pipe before the client writes.
    let s = server();
    let dir = image("parrot.jpg").parent().unwrap().to_path_buf();
    let mut child = cli()
        .args(["--protocol", "http", "--server", &s.http_url, "classify"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
