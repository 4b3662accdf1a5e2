//! The solo session: a request that finds the model idle runs on the model's wide solo session, and
//! concurrent requests spread over the narrow instances. In a test binary of its own, because the metrics
//! recorder is per process and other servers would add to the same counters.
mod common;

use common::*;

const MODEL: &str = "mobilenet_v2_1.0_224";

async fn classify(http: &reqwest::Client, url: &str, name: &str) -> String {
    let response = http
        .post(url)
        .multipart(form(image(name), name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    body["classes"][0]["label"].as_str().unwrap().to_string()
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
        ],
    );
    let http = reqwest::Client::new();
    let names = ["burger.jpg", "parrot.jpg", "cat.bmp"];
    // One after the other: each finds the model idle.
    for name in names {
        let top1 = classify(&http, &server.url("/v1/classify"), name).await;
        assert!(
            classification_agrees(&top1, &reference()[name]["classify_stretch"]),
            "{name} on the solo session: {top1}"
        );
    }
    let labels = [("model", MODEL)];
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, "mobilenet_solo_batches_total", &labels),
        names.len() as f64,
        "every lone request runs solo:\n{metrics}"
    );

    // All at once: while the solo session is busy, the others go to the instances.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, name, url) = (
            http.clone(),
            names[i % names.len()],
            server.url("/v1/classify"),
        );
        tasks.push(tokio::spawn(async move {
            let top1 = classify(&http, &url, name).await;
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
    let batches = metric_value(&metrics, "mobilenet_batch_size_count", &labels);
    let solo = metric_value(&metrics, "mobilenet_solo_batches_total", &labels);
    assert_eq!(batches, 27.0, "max batch size 1: one batch per request");
    assert!(
        solo < batches,
        "under concurrency some batches run on the instances:\n{metrics}"
    );
    server.shutdown();
}
