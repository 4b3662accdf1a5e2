//! Connections and time are bounded (issue 14, part 2) and request bodies are admitted by their bytes:
//! half headers, slow bodies and idle keep-alive connections are cut off; the connection cap and the gRPC
//! stream cap hold and open connections are counted; the default deadline applies; the body budget answers 429 / RESOURCE_EXHAUSTED before
//! reading a body. Each case also checks the server still serves a normal request afterwards.
//!
//! Raw TCP clients, because an HTTP library would not send half a header or hold a body open. Limits are
//! short so the tests are fast; timing assertions are bounds with generous margins, not performance.
mod common;

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::*;
use mobilenet_proto::v1 as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

const CLASSIFIER: &str = "mobilenet_v2_1.0_96";

const HEADER_MS: u64 = 500;
const IDLE_MS: u64 = 2000;
const BODY_MS: u64 = 1000;
const STREAMS: usize = 4;

/// Short header, keep-alive and body timers, and few gRPC streams per connection.
fn timers_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(
            &[CLASSIFIER],
            &[
                "--header-read-timeout-ms",
                &HEADER_MS.to_string(),
                "--keep-alive-timeout-ms",
                &IDLE_MS.to_string(),
                "--body-read-timeout-ms",
                &BODY_MS.to_string(),
                "--grpc-max-concurrent-streams",
                &STREAMS.to_string(),
            ],
        )
    })
}

/// Reads until the peer closes the connection (EOF or reset); how long that took, or None if it stayed
/// open for `limit`.
async fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// A normal request gets its answer.
async fn classifies(server: &TestServer) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/classify"))
        .multipart(form(image("burger.jpg"), "burger.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_header_or_nothing_is_cut_off_after_the_header_timeout() {
    let server = timers_server();
    let opened = Instant::now();
    let mut half = connect(&server.http).await;
    half.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = connect(&server.http).await;
    for stream in [&mut half, &mut silent] {
        time_to_close(stream, Duration::from_secs(10))
            .await
            .expect("closed");
        let closed = opened.elapsed();
        // The server's timer starts at its accept, which may come a little before our connect returns.
        assert!(
            closed >= Duration::from_millis(HEADER_MS * 3 / 4),
            "closed after {closed:?}, before the header timeout"
        );
    }
    classifies(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_without_a_preface_is_cut_off_after_the_header_timeout() {
    let server = timers_server();
    let opened = Instant::now();
    let mut silent = connect(&server.grpc).await;
    time_to_close(&mut silent, Duration::from_secs(10))
        .await
        .expect("closed");
    let closed = opened.elapsed();
    assert!(
        closed >= Duration::from_millis(HEADER_MS * 3 / 4),
        "closed after {closed:?}, before the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = timers_server();
    let mut stream = connect(&server.http).await;
    stream.write_all(HEALTHZ).await.unwrap();
    let answered = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answered.map(|(s, _)| s), Some(200));
    let closed = time_to_close(&mut stream, Duration::from_secs(15))
        .await
        .expect("idle connection closed");
    // Longer than the header timeout: the keep-alive timer is its own, not hyper's header timer.
    assert!(
        closed >= Duration::from_millis(IDLE_MS * 3 / 4),
        "closed after {closed:?}, before the keep-alive timeout"
    );
    // A connection that keeps sending requests is not idle.
    let mut busy = connect(&server.http).await;
    for round in 0..4 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
        }
        busy.write_all(HEALTHZ).await.unwrap();
        let answered = read_response(&mut busy, Duration::from_secs(10)).await;
        assert_eq!(answered.map(|(s, _)| s), Some(200), "kept alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_after_the_body_timeout() {
    let server = timers_server();
    let mut stream = connect(&server.http).await;
    let start = Instant::now();
    stream
        .write_all(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    // 1 KB/s: 100 bytes every 100 ms, which would take 100 s.
    let trickle = tokio::spawn(async move {
        while write.write_all(&[0u8; 100]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut data = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), read.read_to_end(&mut data)).await;
    let elapsed = start.elapsed();
    trickle.abort();
    let text = String::from_utf8_lossy(&data);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"kind\":\"body_timeout\""), "{text}");
    assert!(
        elapsed >= Duration::from_millis(BODY_MS * 3 / 4) && elapsed < Duration::from_secs(10),
        "cut off after {elapsed:?}"
    );
    classifies(server).await;
}

/// A gRPC health check on a raw HTTP/2 stream: `finish` sends its (empty) message and ends the stream.
async fn health_check_stream(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    finish: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let request = axum::http::Request::post("http://x/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.expect("h2 ready");
    let (response, mut send) = ready.send_request(request, false).expect("stream opened");
    if finish {
        send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
    }
    (response, send)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grpc_connection_cannot_open_more_than_max_concurrent_streams() {
    let server = timers_server();
    let tcp = connect(&server.grpc).await;
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    // One full round trip first, so the server's SETTINGS (with its stream limit) have arrived.
    let (first, _) = health_check_stream(&mut client, true).await;
    assert_eq!(first.await.expect("answered").status(), 200);

    let mut held = Vec::new();
    for _ in 0..STREAMS {
        held.push(health_check_stream(&mut client, false).await);
    }
    let (extra, _extra_send) = health_check_stream(&mut client, true).await;
    tokio::pin!(extra);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut extra)
            .await
            .is_err(),
        "stream {} served while {STREAMS} were open",
        STREAMS + 1
    );
    // Ending one of the open streams lets the extra one through.
    let (response, mut send) = held.pop().unwrap();
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    assert_eq!(response.await.expect("answered").status(), 200);
    let extra = tokio::time::timeout(Duration::from_secs(10), extra)
        .await
        .expect("extra stream served once one closed");
    assert_eq!(extra.expect("answered").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_the_server_serves_after() {
    const CAP: usize = 3;
    let server = start(&[CLASSIFIER], &["--max-connections", &CAP.to_string()]);
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect(&server.http).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let answered = read_response(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(answered.map(|(s, _)| s), Some(200));
        open.push(stream);
    }
    // Over the cap: the kernel completes the handshake, but the server does not serve it.
    let mut extra = connect(&server.http).await;
    extra.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_response(&mut extra, Duration::from_millis(700)).await,
        None,
        "connection {} served at a cap of {CAP}",
        CAP + 1
    );
    drop(open.pop());
    let answered = read_response(&mut extra, Duration::from_secs(10)).await;
    assert_eq!(
        answered.map(|(s, _)| s),
        Some(200),
        "served once a slot freed"
    );
    drop(open);
    drop(extra);
    classifies(&server).await;
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_counted_until_they_close() {
    let server = start(&[CLASSIFIER], &[]);
    let open = |page: &str, protocol| {
        metric_value(
            page,
            "mobilenet_open_connections",
            &[("protocol", protocol)],
        )
    };
    let before = open(&server.metrics().await, "http");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&server.http).await;
        stream.write_all(HEALTHZ).await.unwrap();
        let answered = read_response(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(answered.map(|(s, _)| s), Some(200));
        held.push(stream);
    }
    let grpc = server.grpc_client().await;
    // The scrape's own connection may count too, and the earlier scrape's may not have closed yet. The HTTP
    // connections were answered, so they are counted already; the gRPC client's connect returns once the
    // kernel has completed the handshake, which may be before the server's accept loop has taken it.
    let start = Instant::now();
    loop {
        let page = server.metrics().await;
        assert!(open(&page, "http") >= before + 3.0, "{page}");
        if open(&page, "grpc") >= 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the gRPC connection is not counted:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    drop(grpc);
    let start = Instant::now();
    loop {
        let page = server.metrics().await;
        if open(&page, "http") <= before + 1.0 && open(&page, "grpc") == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "closed connections still counted:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_deadline_get_the_default_one() {
    // 1 ms: no request can be decoded and classified in that time, so each ends past its deadline.
    let server = start(&[CLASSIFIER], &["--default-request-timeout-ms", "1"]);
    let post = || {
        reqwest::Client::new()
            .post(server.url("/v1/classify"))
            .multipart(form(image("cat_720p.jpg"), "cat.jpg"))
    };
    let response = post().send().await.unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "deadline_exceeded");
    let explicit = post()
        .header("x-request-timeout-ms", "60000")
        .send()
        .await
        .unwrap();
    assert_eq!(explicit.status(), 200, "an explicit deadline wins");

    let mut client = server.grpc_client().await;
    let message = || pb::ClassifyRequest {
        image: image("cat_720p.jpg").into(),
        ..Default::default()
    };
    let status = client.classify(message()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let mut explicit = tonic::Request::new(message());
    explicit.set_timeout(Duration::from_secs(60));
    client
        .classify(explicit)
        .await
        .expect("an explicit deadline wins");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_budget_refuses_before_reading_and_recovers() {
    const BUDGET: u64 = 1 << 20;
    let server = start(
        &[CLASSIFIER],
        &[
            "--body-budget-bytes",
            &BUDGET.to_string(),
            "--max-body-bytes",
            "800000",
        ],
    );
    // Holds 700,000 bytes of the budget: its head declares them, its body never comes.
    let mut holder = connect(&server.http).await;
    holder
        .write_all(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 700000\r\n\r\n",
        )
        .await
        .unwrap();
    // Let the server take the holder's head before the next request arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 400,000 more would pass the budget: refused from the head alone, without sending a byte of body.
    let mut refused = connect(&server.http).await;
    refused
        .write_all(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 400000\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, body) = read_response(&mut refused, Duration::from_secs(10))
        .await
        .expect("an answer before the body was sent");
    assert_eq!(status, 429, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["kind"], "body_budget_full");

    // gRPC shares the budget; its message has no declared length, so its frames are counted as they come.
    let mut client = server.grpc_client().await;
    let status = client
        .classify(pb::ClassifyRequest {
            image: vec![0u8; 400_000].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The holder leaves; its bytes are released and normal requests pass again on both transports.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = reqwest::Client::new()
            .post(server.url("/v1/classify"))
            .multipart(form(image("parrot.jpg"), "parrot.jpg"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(Instant::now() < deadline, "budget not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .classify(pb::ClassifyRequest {
            image: image("parrot.jpg").into(),
            ..Default::default()
        })
        .await
        .expect("gRPC served after the holder left");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_answers_the_request_in_flight_closes_quiet_connections_and_stops_accepting() {
    let server = start(&[CLASSIFIER], &[]);
    let mut silent = connect(&server.http).await;
    let mut in_flight = connect(&server.http).await;
    in_flight
        .write_all(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    in_flight.write_all(&[0u8; 10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown();

    // Far below the 60 s header timeout: closed by the drain, not by its timer.
    assert!(
        time_to_close(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a silent connection outlived the drain"
    );
    // The request that had begun is still answered (not an image: 4xx), then its connection closes.
    in_flight.write_all(&[0u8; 990]).await.unwrap();
    let answered = read_response(&mut in_flight, Duration::from_secs(10)).await;
    let status = answered.map(|(s, _)| s);
    assert!(
        status.is_some_and(|s| (400..500).contains(&s)),
        "in-flight request answered: {status:?}"
    );
    assert!(
        time_to_close(&mut in_flight, Duration::from_secs(10))
            .await
            .is_some()
    );
    // And nothing new is accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr(&server.http)).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
