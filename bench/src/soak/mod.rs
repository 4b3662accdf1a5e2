//! The soak test of issue 14 part 7 (`make soak`): minutes of steady load at a fraction of capacity, to
//! see what only time shows: memory that creeps up, errors that appear after thousands of requests, a
//! latency that drifts.
//!
//! 1. Short closed-loop pre-runs measure the capacity of the mix: every task (classify, detect, segment)
//!    over both protocols in turn, real JPEGs from `TEST_IMAGES`. The median of three readings is taken,
//!    because on a shared VM one reading can be 20% high, and 80% of a high reading is an overload.
//! 2. The soak sends the same mix open-loop ([`crate::openloop`]) at `fraction` of that capacity (80% by
//!    default) for the whole duration, while [`crate::procfs`] samples the server's RSS every few seconds.
//! 3. [`report`] turns it into figures: RSS after warm-up (the median of the second tenth of the run) and
//!    at the end (the median of the last tenth) and the drift between them; the RSS at rest before the load and
//!    after it has drained, and the drift between those; the error count (anything not
//!    2xx / OK, a 429 included: at 80% of capacity nothing should be refused); p50 / p99 per tenth.

pub mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mobilenet_client::{ClassifyOptions, Client, DetectOptions, Protocol, Selector};

use crate::openloop;
use crate::procfs::{Sampler, Trace};

/// gRPC channels the load spreads over, so that one connection's stream limit cannot queue requests in
/// the client.
const GRPC_CHANNELS: usize = 4;
/// Requests the generator keeps in flight at most (a bound on its own memory if the server stalls).
const MAX_IN_FLIGHT: usize = 4096;
/// The kinds of request in the mix, sent in this order.
pub const MIX: [(&str, &str); 6] = [
    ("classify", "HTTP"),
    ("classify", "gRPC"),
    ("detect", "HTTP"),
    ("detect", "gRPC"),
    ("segment", "HTTP"),
    ("segment", "gRPC"),
];

/// The clients and images every request of the mix is drawn from.
#[derive(Clone)]
pub struct Mixer {
    http: Client,
    grpc: Arc<Vec<Client>>,
    images: Arc<Vec<Bytes>>,
}

impl Mixer {
    pub async fn connect(
        http_url: &str,
        grpc_url: &str,
        images: Arc<Vec<Bytes>>,
    ) -> anyhow::Result<Mixer> {
        let mut grpc = Vec::new();
        for _ in 0..GRPC_CHANNELS {
            grpc.push(Client::connect(Protocol::Grpc, Some(grpc_url)).await?);
        }
        Ok(Mixer {
            http: Client::connect(Protocol::Http, Some(http_url)).await?,
            grpc: Arc::new(grpc),
            images,
        })
    }

    /// Request `i` of the mix: kind `i % 6`, image `i / 6` in turn. Its error as text, if any.
    pub fn request(&self, i: u64) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let (task, protocol) = MIX[(i % MIX.len() as u64) as usize];
        let client = if protocol == "HTTP" {
            self.http.clone()
        } else {
            self.grpc[(i as usize / MIX.len()) % self.grpc.len()].clone()
        };
        let image = self.images[(i as usize / MIX.len()) % self.images.len()].clone();
        async move {
            let s = Selector::default();
            let result = match task {
                "classify" => client
                    .classify(image, &s, &ClassifyOptions::default())
                    .await
                    .map(drop),
                "detect" => client
                    .detect(image, &s, &DetectOptions::default())
                    .await
                    .map(drop),
                _ => client.segment(image, &s).await.map(drop),
            };
            result.map_err(|e| format!("{task} over {protocol}: {e}"))
        }
    }
}

/// Requests per second of the mix, closed loop at `concurrency`, answers counted after a 1 s warm-up.
pub async fn capacity(
    mixer: &Mixer,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let begin = Instant::now() + Duration::from_secs(1);
    let end = begin + duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mixer = mixer.clone();
        workers.spawn(async move {
            let (mut done, mut errors, mut first) = (0usize, 0usize, None);
            // Each worker walks the mix from its own offset so that all kinds run at once.
            let mut i = w as u64;
            while Instant::now() < end {
                let result = mixer.request(i).await;
                i += 1;
                // Throughput counts answers that arrive inside the window, whenever they were sent: with
                // second-long segmentations in flight, counting only requests sent and answered inside
                // it would miss the ones that straddle its ends.
                let answered_at = Instant::now();
                if answered_at < begin || answered_at > end {
                    continue;
                }
                match result {
                    Ok(()) => done += 1,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            (done, errors, first)
        });
    }
    let (mut done, mut errors, mut first) = (0, 0, None);
    while let Some(w) = workers.join_next().await {
        let (d, e, f) = w?;
        done += d;
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    anyhow::ensure!(
        errors == 0 && done > 0,
        "the capacity pre-run failed: {errors} errors, first: {}",
        first.unwrap_or_default()
    );
    Ok(done as f64 / duration.as_secs_f64())
}

/// The median of `rounds` readings of [`capacity`], and the readings in the order taken.
pub async fn median_capacity(
    mixer: &Mixer,
    concurrency: usize,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut readings = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        readings.push(capacity(mixer, concurrency, duration).await?);
    }
    Ok((median(&readings), readings))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub struct Soak {
    pub capacity: f64,
    /// Every pre-run reading, of which `capacity` is the median.
    pub capacity_readings: Vec<f64>,
    pub rate: f64,
    pub duration: Duration,
    pub run: openloop::Run<Result<(), String>>,
    pub rss: Trace,
    /// The RSS at rest just before the load and once it has drained ([`at_rest`]).
    pub rss_at_rest: (Option<u64>, Option<u64>),
}

/// How long the server is left idle before its RSS is read at rest: past the malloc trimmer's period (1 s by
/// default), so that the pages freed by the last requests have gone back to the kernel.
const REST: Duration = Duration::from_secs(3);

/// The server's RSS after [`REST`] without load.
async fn at_rest(pid: u32) -> Option<u64> {
    tokio::time::sleep(REST).await;
    crate::procfs::read(pid).map(|m| m.rss)
}

/// `rate` requests per second of the mix for `duration`, sampling the RSS of `pid` every `rss_period`.
pub async fn soak(
    mixer: &Mixer,
    pid: u32,
    (capacity, capacity_readings): (f64, Vec<f64>),
    rate: f64,
    duration: Duration,
    rss_period: Duration,
    rss_kill: u64,
) -> Soak {
    let before = at_rest(pid).await;
    let sampler = Sampler::start(pid, rss_period, rss_kill);
    let run = openloop::run(rate, duration, MAX_IN_FLIGHT, |i| mixer.request(i)).await;
    let rss = sampler.stop();
    let after = at_rest(pid).await;
    Soak {
        capacity,
        capacity_readings,
        rate,
        duration,
        run,
        rss,
        rss_at_rest: (before, after),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_ignores_one_high_reading() {
        assert_eq!(median(&[40.0, 51.0, 41.0]), 41.0);
        assert_eq!(median(&[40.0, 42.0]), 41.0);
        assert_eq!(median(&[7.0]), 7.0);
    }
}
