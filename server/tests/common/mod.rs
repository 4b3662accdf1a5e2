//! Test harness: one real server per test binary, started on port 0 with real models from the prepared
//! repository, plus clients and the reference-agreement rules of `../shared/images/README.md`.
//!
//! Missing inputs (repository, a variant, the test images, ONNX Runtime) make the tests FAIL with a message
//! saying what to run; they never pass silently.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use clap::Parser;
use mobilenet_proto::v1::inference_client::InferenceClient;
use mobilenet_serve::{Listeners, config::Config};
use serde_json::Value;
use tonic::transport::Channel;

pub struct TestServer {
    pub http: String,
    pub grpc: String,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

fn env_dir(var: &str, default: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    assert!(
        path.exists(),
        "{var}={} does not exist: {hint}",
        path.display()
    );
    path
}

pub fn repository() -> PathBuf {
    env_dir(
        "MODEL_REPOSITORY",
        "../models/repository",
        "run `make models` (or set MODEL_REPOSITORY)",
    )
}

pub fn images() -> PathBuf {
    env_dir(
        "TEST_IMAGES",
        "../../shared/images",
        "set TEST_IMAGES to the shared test images folder",
    )
}

pub fn image(name: &str) -> Vec<u8> {
    let path = images().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading test image {}: {e}", path.display()))
}

pub fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        serde_json::from_slice(&image("reference.json")).expect("reference.json parses")
    })
}

/// The reference images (every key of reference.json but `_about`).
pub fn reference_images() -> Vec<String> {
    reference()
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with('_'))
        .cloned()
        .collect()
}

/// Starts a server serving `models` with extra flags, in its own thread and runtime so that it outlives
/// the per-test runtimes, and waits until it is ready (models loaded and warmed).
pub fn start(models: &[&str], extra: &[&str]) -> TestServer {
    start_in(&repository(), models, extra)
}

/// [`start`] on another model repository (a test that builds its own).
pub fn start_in(repo: &Path, models: &[&str], extra: &[&str]) -> TestServer {
    for model in models {
        assert!(
            repo.join(model).join("config.json").is_file(),
            "variant {model} is missing from {}: run `make models`",
            repo.display()
        );
    }
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "set ORT_DYLIB_PATH to libonnxruntime.so (see Makefile)"
    );
    let joined = models.join(",");
    let mut args = vec![
        "mobilenet-serve",
        "--model-repository",
        repo.to_str().unwrap(),
        "--models",
        &joined,
    ];
    args.extend(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]);
    args.extend(extra);
    let config = Config::parse_from(args);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listeners = Listeners::bind(&config).await.unwrap();
            let addrs = (
                listeners.http.local_addr().unwrap(),
                listeners.grpc.local_addr().unwrap(),
            );
            addr_tx.send(addrs).unwrap();
            let result = mobilenet_serve::run(config, listeners, async move {
                let _ = shutdown_rx.await;
            })
            .await;
            if let Err(e) = result {
                eprintln!("server failed: {e:#}");
                std::process::abort();
            }
        });
    });
    let (http, grpc) = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server bound its sockets");
    let server = TestServer {
        http: format!("http://{http}"),
        grpc: format!("http://{grpc}"),
        shutdown: Mutex::new(Some(shutdown_tx)),
    };
    wait_ready(&server.http);
    server
}

impl TestServer {
    pub fn shutdown(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    pub async fn grpc_client(&self) -> InferenceClient<Channel> {
        InferenceClient::connect(self.grpc.clone())
            .await
            .expect("gRPC connect")
            .max_decoding_message_size(64 << 20)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn wait_ready(base: &str) {
    let url = format!("{base}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    // Own thread and runtime: callers may be inside a test's runtime, where block_on is not allowed.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            loop {
                if let Ok(r) = reqwest::get(&url).await
                    && r.status() == 200
                {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "server not ready after 300 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    })
    .join()
    .expect("server became ready");
}

/// A multipart form with `bytes` in the field `image`.
pub fn form(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    )
}

/// Reference top-1 agreement: same top-1 label, or within the reference top-3 when its two best are close.
pub fn classification_agrees(ours_top1: &str, reference: &Value) -> bool {
    let refs = reference.as_array().unwrap();
    let label = |i: usize| refs[i]["label"].as_str().unwrap();
    let score = |i: usize| refs[i]["score"].as_f64().unwrap();
    ours_top1 == label(0) || (score(0) - score(1) < 0.1 && (0..3).any(|i| ours_top1 == label(i)))
}

pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let inter =
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: [f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter)
}

/// Every reference detection with score >= 0.6 is found with the same label and IoU >= 0.8.
/// `ours` is (label, normalised [x1, y1, x2, y2]).
pub fn detections_agree(ours: &[(String, [f64; 4])], reference: &Value) -> Result<(), String> {
    for r in reference
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["score"].as_f64().unwrap() >= 0.6)
    {
        let label = r["label"].as_str().unwrap();
        let b: Vec<f64> = r["box_xyxy_norm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let rb = [b[0], b[1], b[2], b[3]];
        if !ours.iter().any(|(l, ob)| l == label && iou(*ob, rb) >= 0.8) {
            return Err(format!("reference {label} {rb:?} not found in {ours:?}"));
        }
    }
    Ok(())
}

/// Share of pixels on which our class map (at the original size) agrees with the reference mask, which is
/// brought to the original size with the same nearest-neighbour rule the server uses.
pub fn mask_agreement(ours: &[u8], width: u32, height: u32, reference_mask: &str) -> f64 {
    let reference = image::load_from_memory(&image(reference_mask))
        .expect("reference mask decodes")
        .to_luma8();
    let (rw, rh) = reference.dimensions();
    let mut same = 0usize;
    for y in 0..height {
        let sy = (((y as f64 + 0.5) * rh as f64 / height as f64) as u32).min(rh - 1);
        for x in 0..width {
            let sx = (((x as f64 + 0.5) * rw as f64 / width as f64) as u32).min(rw - 1);
            if ours[(y * width + x) as usize] == reference.get_pixel(sx, sy)[0] {
                same += 1;
            }
        }
    }
    same as f64 / (width * height) as f64
}

/// Expands a run-length mask.
pub fn expand_rle(values: &[u32], lengths: &[u32]) -> Vec<u8> {
    values
        .iter()
        .zip(lengths)
        .flat_map(|(&v, &n)| std::iter::repeat_n(v as u8, n as usize))
        .collect()
}

/// The value of a Prometheus sample whose line starts with `prefix` (name plus label subset, in order).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `host:port` of a server URL.
pub fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// A raw TCP connection to a server URL, for clients an HTTP library would not imitate.
pub async fn connect(base: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr(base))
        .await
        .expect("connect")
}

/// One HTTP/1.1 response: status and body (read by Content-Length), or None if none came within `limit`.
pub async fn read_response(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<(u16, String)> {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(limit, async {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    return Some((status, body.to_string()));
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten()
}
