//! Admission judged from the request head (docs/limits.md, "Refused from the head"): a request that admission
//! would refuse is answered before its body is read, over HTTP and over gRPC, native and Open Inference
//! Protocol alike, and counted like any other.
//!
//! A test binary of its own: the metrics registry is process-wide, and the connection-gauge tests of
//! `limits.rs` must not see this test's connections.
mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_admission_would_refuse_is_answered_from_its_head() {
    // A segmentation takes tens of milliseconds, so a 1 ms deadline cannot be met: admission refuses it
    // (504, `too_late`), and must do so before reading a body that, here, never comes.
    const SEGMENTER: &str = "deeplabv3_mnv2_257";
    let server = start(&[SEGMENTER], &[]);
    let mut http = connect(&server.http).await;
    http.write_all(
        b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 600000\r\nx-request-timeout-ms: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut http, Duration::from_secs(10))
        .await
        .expect("an answer before the body was sent");
    assert_eq!(status, 504, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["kind"], "deadline_exceeded");
    // The Open Inference Protocol over HTTP: its path names the model.
    let mut oip = connect(&server.http).await;
    oip.write_all(
        format!(
            "POST /v2/models/{SEGMENTER}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 600000\r\nx-request-timeout-ms: 1\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut oip, Duration::from_secs(10))
        .await
        .expect("an OIP answer before the body was sent");
    assert_eq!(status, 504, "{body}");

    // gRPC, native and Open Inference Protocol (whose head names no model: the one model loaded here is
    // every model, so it is judged too).
    for path in [
        "/mobilenet.v1.Inference/Segment",
        "/inference.GRPCInferenceService/ModelInfer",
    ] {
        assert_eq!(
            grpc_status_before_the_message(&server, path)
                .await
                .as_deref(),
            Some("4"),
            "DEADLINE_EXCEEDED from {path}"
        );
    }

    let metrics = server.metrics().await;
    let too_late = metric_value(
        &metrics,
        "mobilenet_rejected_total",
        &[("model", SEGMENTER), ("reason", "too_late")],
    );
    assert_eq!(too_late, 4.0, "{metrics}");
    for (protocol, count) in [("http", 2.0), ("grpc", 2.0)] {
        let counted = metric_value(
            &metrics,
            "mobilenet_requests_total",
            &[
                ("model", SEGMENTER),
                ("protocol", protocol),
                ("outcome", "deadline_exceeded"),
            ],
        );
        assert_eq!(counted, count, "{protocol}: {metrics}");
    }
    // Without the short deadline the same server serves.
    let response = reqwest::Client::new()
        .post(server.url("/v1/segment"))
        .multipart(form(image("burger.jpg"), "burger.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown();
}

/// Opens a call of `path` with a 1 ms deadline and a message announced as 600,000 bytes, of which only the
/// 5-byte prefix is sent: the grpc-status answered before the message arrives, if any.
async fn grpc_status_before_the_message(server: &TestServer, path: &str) -> Option<String> {
    let tcp = connect(&server.grpc).await;
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = axum::http::Request::post(format!("http://x{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "1m")
        .body(())
        .unwrap();
    let mut ready = client.ready().await.expect("h2 ready");
    let (response, mut send) = ready.send_request(request, false).expect("stream opened");
    let prefix = [0u8, 0x00, 0x09, 0x27, 0xC0]; // uncompressed, 600,000 bytes follow
    send.send_data(bytes::Bytes::copy_from_slice(&prefix), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer before the message was sent")
        .expect("answered");
    response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
}
