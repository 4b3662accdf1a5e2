//! What a person sees when the server starts: a line per model (its layout and load time), a ready line with
//! the addresses, and not ONNX Runtime's own warnings (some 40 "Removing initializer ... not used by any node"
//! lines with the default models) unless `ORT_LOG_LEVEL` asks for them.
mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::repository;

const MODEL: &str = "mobilenet_v2_1.0_224";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the release binary with `MODEL`, waits until it is ready, stops it, and returns everything it printed
/// and its HTTP port.
fn start_up_log(ort_log_level: Option<&str>) -> (String, u16) {
    let (http, grpc) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_mobilenet-serve"));
    command
        .args([
            "--model-repository",
            repository().to_str().unwrap(),
            "--models",
            MODEL,
        ])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .env("NO_COLOR", "1")
        .env_remove("ORT_LOG_LEVEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(level) = ort_log_level {
        command.env("ORT_LOG_LEVEL", level);
    }
    let mut child = command.spawn().expect("the server binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let probe = std::net::TcpStream::connect(("127.0.0.1", http)).and_then(|mut s| {
            use std::io::Write;
            s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        });
        if probe.is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(ready, "the server did not become ready:\n{log}");
    (log, http)
}

#[test]
fn start_up_says_what_loaded_and_where_and_no_more() {
    let (quiet, http) = start_up_log(None);
    assert!(
        !quiet.contains("Removing initializer"),
        "ONNX Runtime's load-time warnings are printed by default:\n{quiet}"
    );
    // One line per model with its layout and load time, and a ready line with the addresses.
    let loaded: Vec<&str> = quiet
        .lines()
        .filter(|l| l.contains("model loaded"))
        .collect();
    assert_eq!(loaded.len(), 1, "{quiet}");
    for field in [MODEL, "sessions of", "batches of up to", "load_ms"] {
        assert!(
            loaded[0].contains(field),
            "{field} missing from {}",
            loaded[0]
        );
    }
    assert!(
        quiet
            .lines()
            .any(|l| l.contains("ready") && l.contains(&format!("http://127.0.0.1:{http}"))),
        "{quiet}"
    );
    let (asked, _) = start_up_log(Some("warning"));
    assert!(
        asked.contains("Removing initializer"),
        "ORT_LOG_LEVEL=warning shows ONNX Runtime's warnings again (the model has unused initializers):\n{asked}"
    );
}
