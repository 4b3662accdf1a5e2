//! Behaviour under load: concurrent requests are batched and all answered correctly (a bad image among them
//! failing alone), a full queue and a long expected wait are refused at once, a request whose client left is dropped before inference,
//! `/metrics` exposes every series, and shutdown answers what it accepted. No assertion depends on timing.
mod common;

use std::{sync::OnceLock, time::Duration};

use common::*;
use mobilenet_proto::v1 as pb;

const MODEL: &str = "mobilenet_v2_1.0_224";

/// A server that waits a little for batches to fill, so that concurrency shows up as batches > 1.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start(
            &[MODEL],
            // 64 requests at once must all be served here, so admission counts requests only (the
            // expected-wait limit has its own test below).
            &[
                "--max-batch-size",
                "8",
                "--max-queue-delay-ms",
                "20",
                "--max-queue-wait-ms",
                "0",
            ],
        )
    })
}

fn batches_over_one(metrics: &str) -> f64 {
    let labels = [("model", MODEL)];
    metric_value(metrics, "mobilenet_batch_size_count", &labels)
        - metric_value(
            metrics,
            "mobilenet_batch_size_bucket",
            &[("model", MODEL), ("le", "1")],
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_all_correct() {
    let server = server();
    let http = reqwest::Client::new();
    let grpc = server.grpc_client().await;
    let names = ["cat.bmp", "burger.jpg", "parrot.jpg", "grace_hopper.bmp"];
    let mut tasks = Vec::new();
    for i in 0..64 {
        let name = names[i % names.len()];
        let (http, mut grpc, url) = (http.clone(), grpc.clone(), server.url("/v1/classify"));
        // Every eighth image is truncated: it fails alone (its model thread decodes it), its batch runs on.
        if i % 8 == 3 {
            let jpeg = image("burger.jpg");
            let cut = jpeg[..jpeg.len() / 2].to_vec();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    let r = http.post(url).multipart(form(cut, "cut.jpg")).send().await;
                    assert_eq!(r.unwrap().status(), 400, "request {i}");
                } else {
                    let request = pb::ClassifyRequest {
                        image: cut.into(),
                        ..Default::default()
                    };
                    let status = grpc.classify(request).await.unwrap_err();
                    assert_eq!(status.code(), tonic::Code::InvalidArgument, "request {i}");
                }
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let top1 = if i % 2 == 0 {
                let r = http
                    .post(url)
                    .multipart(form(image(name), name))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: serde_json::Value = r.json().await.unwrap();
                body["classes"][0]["label"].as_str().unwrap().to_string()
            } else {
                let request = pb::ClassifyRequest {
                    image: image(name).into(),
                    ..Default::default()
                };
                grpc.classify(request).await.unwrap().into_inner().classes[0]
                    .label
                    .clone()
            };
            assert!(
                classification_agrees(&top1, &reference()[name]["classify_stretch"]),
                "request {i} on {name}: {top1}"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let metrics = server.metrics().await;
    assert!(
        batches_over_one(&metrics) > 0.0,
        "no batch larger than 1 in:\n{metrics}"
    );
}

/// Rounds of 16 concurrent classifications (half HTTP, half gRPC) until both protocols saw a refusal and
/// something was served; every HTTP refusal must be a 429 of `kind` with a Retry-After.
async fn flood_until_refused(server: &TestServer, kind: &str) {
    let http = reqwest::Client::new();
    let grpc = server.grpc_client().await;
    let (mut http_refused, mut grpc_refused, mut served) = (0, 0, 0);
    for _round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (http, mut grpc, url) = (http.clone(), grpc.clone(), server.url("/v1/classify"));
            let kind = kind.to_string();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    let r = http
                        .post(url)
                        .multipart(form(image("parrot.jpg"), "parrot.jpg"))
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => (0, 0, 1),
                        429 => {
                            assert!(r.headers().contains_key("retry-after"));
                            let body: serde_json::Value = r.json().await.unwrap();
                            assert_eq!(body["kind"], kind.as_str(), "{body}");
                            (1, 0, 0)
                        }
                        other => panic!("unexpected status {other}"),
                    }
                } else {
                    let request = pb::ClassifyRequest {
                        image: image("parrot.jpg").into(),
                        ..Default::default()
                    };
                    match grpc.classify(request).await {
                        Ok(_) => (0, 0, 1),
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => (0, 1, 0),
                        Err(status) => panic!("unexpected status {status:?}"),
                    }
                }
            }));
        }
        for task in tasks {
            let (h, g, s) = task.await.unwrap();
            (http_refused, grpc_refused, served) = (http_refused + h, grpc_refused + g, served + s);
        }
        if http_refused > 0 && grpc_refused > 0 && served > 0 {
            break;
        }
    }
    assert!(
        http_refused > 0 && grpc_refused > 0 && served > 0,
        "refused http {http_refused}, grpc {grpc_refused}, served {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_refused_at_once() {
    // One place in the queue and batches of one: concurrent requests must overflow it. With one place, no
    // request ever waits behind another, so the expected-wait limit never refuses first.
    static TINY: OnceLock<TestServer> = OnceLock::new();
    let server = TINY.get_or_init(|| {
        start(
            &["mobilenet_v2_1.0_96"],
            &["--queue-capacity", "1", "--max-batch-size", "1"],
        )
    });
    flood_until_refused(server, "queue_full").await;
    let metrics = server.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "mobilenet_rejected_total",
            &[("model", "mobilenet_v2_1.0_96"), ("reason", "queue_full")]
        ) > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_expected_wait_is_refused_before_the_queue_is_full() {
    // Room for 128, but a 1 ms wait limit (raised to one batch of one, a few ms): a request that finds
    // several ahead of it must be refused at once, as overloaded, while the count cap is never reached.
    static SHORT: OnceLock<TestServer> = OnceLock::new();
    let server = SHORT.get_or_init(|| {
        start(
            &["mobilenet_v2_1.0_96"],
            &[
                "--max-queue-wait-ms",
                "1",
                "--max-batch-size",
                "1",
                "--instances",
                "1",
            ],
        )
    });
    flood_until_refused(server, "overloaded").await;
    let metrics = server.metrics().await;
    let rejected = |reason| {
        metric_value(
            &metrics,
            "mobilenet_rejected_total",
            &[("model", "mobilenet_v2_1.0_96"), ("reason", reason)],
        )
    };
    assert!(rejected("expected_wait") > 0.0, "{metrics}");
    assert_eq!(rejected("queue_full"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_request_is_dropped() {
    let server = server();
    let dropped = |m: &str| {
        metric_value(
            m,
            "mobilenet_dropped_total",
            &[("model", MODEL), ("reason", "cancelled")],
        )
    };
    let before = dropped(&server.metrics().await);
    // Clients that give up quickly while the model is busy with the others' batches: some of them are
    // queued when they leave, and the batcher must skip them. Repeat until that has happened.
    let patient = reqwest::Client::new();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    for _round in 0..30 {
        let mut tasks = Vec::new();
        for i in 0..24 {
            let client = if i % 3 == 0 {
                patient.clone()
            } else {
                impatient.clone()
            };
            let url = server.url("/v1/classify");
            tasks.push(tokio::spawn(async move {
                let _ = client
                    .post(url)
                    .multipart(form(image("cat_720p.jpg"), "cat_720p.jpg"))
                    .send()
                    .await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // The drop is counted when the batcher next looks at the queue; give it a moment.
        for _ in 0..20 {
            if dropped(&server.metrics().await) > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!(
        "no cancelled request was dropped:\n{}",
        server.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_grpc_deadline_is_dropped_or_refused() {
    let server = server();
    let mut client = server.grpc_client().await;
    let mut request = tonic::Request::new(pb::ClassifyRequest {
        image: image("cat.bmp").into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_nanos(1));
    let status = client
        .classify(request)
        .await
        .expect_err("a 1 ns deadline cannot be met");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_timeout_is_honoured() {
    let server = server();
    let send = |timeout_ms: &'static str| {
        reqwest::Client::new()
            .post(server.url("/v1/classify"))
            .header("x-request-timeout-ms", timeout_ms)
            .multipart(form(image("cat.bmp"), "cat.bmp"))
            .send()
    };
    let before = deadline_outcomes(&server.metrics().await);
    // Decoding a 640x480 BMP and one inference take several milliseconds: 1 ms cannot be met.
    let r = send("1").await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "deadline_exceeded", "{body}");
    assert_eq!(
        deadline_outcomes(&server.metrics().await),
        before + 1.0,
        "the expired request is counted with outcome deadline_exceeded"
    );
    // A deadline that can be met changes nothing.
    let r = send("60000").await.unwrap();
    assert_eq!(r.status(), 200);
}

fn deadline_outcomes(metrics: &str) -> f64 {
    metric_value(
        metrics,
        "mobilenet_requests_total",
        &[
            ("model", MODEL),
            ("protocol", "http"),
            ("outcome", "deadline_exceeded"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_series() {
    let server = server();
    let r = reqwest::Client::new()
        .post(server.url("/v1/classify"))
        .multipart(form(image("cat.bmp"), "cat.bmp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = server.metrics().await;
    for series in [
        "mobilenet_requests_total{",
        "mobilenet_request_duration_seconds_bucket{",
        "mobilenet_phase_duration_seconds_bucket{",
        "mobilenet_batch_size_bucket{",
        "mobilenet_queue_depth{",
        "mobilenet_rejected_total{",
        "mobilenet_dropped_total{",
        "mobilenet_model_info{",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    for phase in ["decode", "queue", "inference", "postprocess"] {
        assert!(
            metrics.contains(&format!("phase=\"{phase}\"")),
            "phase {phase} missing"
        );
    }
    let ok = [
        ("model", MODEL),
        ("task", "classification"),
        ("protocol", "http"),
        ("outcome", "ok"),
    ];
    assert!(metric_value(&metrics, "mobilenet_requests_total", &ok) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_accepted_requests_then_stops() {
    let server = start(&["mobilenet_v2_1.0_128"], &["--max-queue-delay-ms", "50"]);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), server.url("/v1/classify"));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .multipart(form(image("cat.bmp"), "cat.bmp"))
                .send()
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    server.shutdown();
    for task in tasks {
        // Accepted requests are answered in full; ones that raced the shutdown may be refused at connect
        // or answered 503, but none may fail mid-way or with another status.
        match task.await.unwrap() {
            Ok(r) => assert!(
                matches!(r.status().as_u16(), 200 | 503),
                "status {}",
                r.status()
            ),
            Err(e) => assert!(e.is_connect() || e.is_request(), "{e:?}"),
        }
    }
    // Eventually the server stops listening; until then it reports not ready.
    for _ in 0..100 {
        match reqwest::get(server.url("/readyz")).await {
            Ok(r) => assert_ne!(r.status(), 200, "ready while draining"),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server still listening 10 s after shutdown");
}
