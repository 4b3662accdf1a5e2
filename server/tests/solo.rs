//! The solo session: a request that finds the model idle runs on the model's wide solo session, and
//! concurrent requests spread over the narrow instances. In a test binary of its own, because the metrics
//! recorder is per process and other servers would add to the same counters.
mod common;

use common::*;

const MODEL: &str = "mobilenet_v2_1.0_224";

/// Classifies `name` over HTTP and checks the answer against the reference.
async fn classify_and_check(http: &reqwest::Client, url: &str, name: &str) {
    let response = http
        .post(url)
        .multipart(form(image(name), name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let top1 = body["classes"][0]["label"].as_str().unwrap();
    assert!(
        classification_agrees(top1, &reference()[name]["classify_stretch"]),
        "{name}: {top1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_requests_run_solo_and_concurrent_ones_on_the_instances() {
    let server = start(
        &[MODEL],
        &[
            "--instances",
            "2",
            "--intra-op-threads",
            "1",
            "--solo-intra-op-threads",
            "2",
            "--max-batch-size",
            "1",
            // All 24 at once must be served, so admission counts requests only.
            "--max-queue-wait-ms",
            "0",
        ],
    );
    let http = reqwest::Client::new();
    let names = ["burger.jpg", "parrot.jpg", "cat.bmp"];
    // One after the other: each finds the model idle.
    for name in names {
        classify_and_check(&http, &server.url("/v1/classify"), name).await;
    }
    let labels = [("model", MODEL)];
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, "mobilenet_solo_batches_total", &labels),
        names.len() as f64,
        "every lone request runs solo:\n{metrics}"
    );

    // All at once: while the solo session is busy, the others go to the instances.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (http, name, url) = (
                http.clone(),
                names[i % names.len()],
                server.url("/v1/classify"),
            );
            tokio::spawn(async move { classify_and_check(&http, &url, name).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let metrics = server.metrics().await;
    let batches = metric_value(&metrics, "mobilenet_batch_size_count", &labels);
    let solo = metric_value(&metrics, "mobilenet_solo_batches_total", &labels);
    assert_eq!(batches, 27.0, "max batch size 1: one batch per request");
    assert!(
        solo < batches,
        "under concurrency some batches run on the instances:\n{metrics}"
    );
    server.shutdown();
}
