//! One real mobilenet-serve per test binary, started in-process on port 0 with a few small variants from the
//! prepared model repository. It runs on its own thread and runtime so that it outlives each test's runtime.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use mobilenet_serve::{Listeners, config::Config};

/// The variants the tests use: the default classifier, detector, and the small segmenter.
pub const MODELS: &str = "mobilenet_v2_1.0_224,ssd_mobilenet_v2_fpnlite_256,deeplabv3_mnv2_257";
pub const SEGMENTER: &str = "deeplabv3_mnv2_257";

pub struct TestServer {
    pub http_url: String,
    pub grpc_url: String,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn repository() -> PathBuf {
    std::env::var_os("MODEL_REPOSITORY")
        .map_or_else(|| workspace().join("models/repository"), PathBuf::from)
}

pub fn image(name: &str) -> PathBuf {
    let dir = std::env::var_os("TEST_IMAGES")
        .map_or_else(|| workspace().join("../shared/images"), PathBuf::from);
    dir.join(name)
}

/// Starts the server on first use and waits until `/readyz` says every model is loaded. Panics with the
/// reason (no repository, no ONNX Runtime, server error) rather than letting tests fail obscurely.
pub fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let repo = repository();
        assert!(
            repo.join("index.json").is_file(),
            "model repository {} is missing: run `make models` (or set MODEL_REPOSITORY)",
            repo.display()
        );
        assert!(
            std::env::var_os("ORT_DYLIB_PATH").is_some(),
            "ORT_DYLIB_PATH is not set: run through `make client-test`, or export \
             ORT_DYLIB_PATH=$(.venv/bin/python models/ort_dylib.py)"
        );
        let config = Config::parse_from([
            "mobilenet-serve".into(),
            "--http-addr=127.0.0.1:0".into(),
            "--grpc-addr=127.0.0.1:0".into(),
            format!("--model-repository={}", repo.display()),
            format!("--models={MODELS}"),
        ]);
        let (tx, rx) = std::sync::mpsc::channel();
        let (failed_tx, failed) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async move {
                let listeners = Listeners::bind(&config).await.expect("binding port 0");
                let http = listeners.http.local_addr().expect("http addr");
                let grpc = listeners.grpc.local_addr().expect("grpc addr");
                let _ = tx.send((http, grpc));
                if let Err(e) =
                    mobilenet_serve::run(config, listeners, std::future::pending()).await
                {
                    let _ = failed_tx.send(format!("{e:#}"));
                }
            });
        });
        let (http, grpc) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("test server did not bind");
        let server = TestServer {
            http_url: format!("http://{http}"),
            grpc_url: format!("http://{grpc}"),
        };
        // Polled from a plain thread: `server()` is also called from inside the tests' own runtimes.
        let url = server.http_url.clone();
        if let Err(panic) = std::thread::spawn(move || wait_ready(&url, &failed)).join() {
            std::panic::resume_unwind(panic);
        }
        server
    })
}

fn wait_ready(http_url: &str, failed: &std::sync::mpsc::Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest");
    runtime.block_on(async {
        loop {
            if let Ok(r) = client.get(format!("{http_url}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(e) = failed.try_recv() {
                panic!("test server failed to start: {e}");
            }
            assert!(
                Instant::now() < deadline,
                "test server not ready after 180 s (models failed to load?)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
