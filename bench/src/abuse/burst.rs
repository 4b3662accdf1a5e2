//! Ten times the classifier's capacity for ten seconds. The capacity is measured first, in the same run, by
//! a short closed loop ([`crate::load`]); the burst is then open-loop ([`crate::openloop`]), half over HTTP
//! and half over gRPC (on several channels, so that one connection's stream limit does not queue requests
//! in the client). Overload must be refused fast (429 / RESOURCE_EXHAUSTED) and nothing may fail.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mobilenet_client::{ClassifyOptions, Client, ClientError, Selector};
use mobilenet_serve::repository::Task;

use super::witness::is_refusal;
use crate::openloop;
use crate::stats::Samples;

/// gRPC channels the burst spreads over.
const GRPC_CHANNELS: usize = 4;
/// Requests the generator keeps in flight at most; far above what an admitting server leaves waiting.
const MAX_IN_FLIGHT: usize = 8192;

#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub capacity: f64,
    pub rate: f64,
    pub sent: usize,
    pub served: usize,
    pub refused: usize,
    /// Neither served nor refused at admission: 5xx, other codes, broken connections.
    pub bad: usize,
    pub first_bad: Option<String>,
    /// Arrivals the generator could not send (its in-flight cap) or whose task failed.
    pub not_sent: usize,
    pub refusal_ms: Samples,
    /// The refusals split by transport, to show where their time goes.
    pub refusal_http_ms: Samples,
    pub refusal_grpc_ms: Samples,
    pub served_ms: Samples,
    pub max_lag_ms: f64,
}

impl Burst {
    pub fn describe(&self) -> String {
        format!(
            "capacity {:.0}/s, burst {:.0}/s: {} sent, {} served (p50 {:.0} ms), {} refused (p99 {:.1} ms; HTTP {:.1}, gRPC {:.1}), {} bad{}, generator lag max {:.0} ms",
            self.capacity,
            self.rate,
            self.sent,
            self.served,
            self.served_ms.p50(),
            self.refused,
            self.refusal_ms.p99(),
            self.refusal_http_ms.p99(),
            self.refusal_grpc_ms.p99(),
            self.bad,
            if self.not_sent > 0 {
                format!(", {} not sent", self.not_sent)
            } else {
                String::new()
            },
            self.max_lag_ms
        )
    }
}

/// Closed-loop classify throughput over HTTP at `concurrency`, after a short warm-up.
pub async fn capacity(
    http: &Client,
    model: &str,
    images: Arc<Vec<Bytes>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let run = crate::load::closed_loop(
        http,
        Task::Classification,
        model,
        images,
        concurrency,
        Duration::from_millis(500),
        duration,
    )
    .await;
    anyhow::ensure!(
        run.errors == 0 && run.images_per_s > 0.0,
        "the capacity pre-run failed: {} errors, first: {}",
        run.errors,
        run.first_error.unwrap_or_default()
    );
    Ok(run.images_per_s)
}

/// `factor` x `capacity` requests per second for `duration`.
pub async fn burst(
    http: Client,
    grpc_url: &str,
    images: Arc<Vec<Bytes>>,
    capacity: f64,
    factor: f64,
    duration: Duration,
) -> anyhow::Result<Burst> {
    let mut clients = vec![http];
    for _ in 0..GRPC_CHANNELS {
        clients.push(Client::connect(mobilenet_client::Protocol::Grpc, Some(grpc_url)).await?);
    }
    let clients = Arc::new(clients);
    let rate = capacity * factor;
    let run = openloop::run(rate, duration, MAX_IN_FLIGHT, |i| {
        // Even arrivals over HTTP, odd ones over the gRPC channels in turn.
        let client = if i % 2 == 0 {
            clients[0].clone()
        } else {
            clients[1 + (i as usize / 2) % GRPC_CHANNELS].clone()
        };
        let image = images[i as usize % images.len()].clone();
        async move {
            let answer = client
                .classify(image, &Selector::default(), &ClassifyOptions::default())
                .await
                .map(drop);
            (i % 2 == 0, answer)
        }
    })
    .await;
    let mut b = Burst {
        capacity,
        rate,
        sent: run.records.len(),
        not_sent: run.skipped + run.lost,
        ..Burst::default()
    };
    for r in &run.records {
        b.max_lag_ms = b.max_lag_ms.max(r.lag.as_secs_f64() * 1e3);
        let (over_http, result) = &r.result;
        match result {
            Ok(()) => {
                b.served += 1;
                b.served_ms.push(r.latency);
            }
            Err(e) if is_refusal(e) => {
                b.refused += 1;
                b.refusal_ms.push(r.latency);
                match over_http {
                    true => b.refusal_http_ms.push(r.latency),
                    false => b.refusal_grpc_ms.push(r.latency),
                }
            }
            Err(e) => {
                b.bad += 1;
                b.first_bad.get_or_insert_with(|| describe_error(e));
            }
        }
    }
    Ok(b)
}

fn describe_error(e: &ClientError) -> String {
    e.to_string()
}
