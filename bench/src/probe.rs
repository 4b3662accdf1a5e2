//! The normal request every abuse case watches: a real JPEG to `POST /v1/classify`, on a fresh connection
//! each time (a new user arrives on a new connection; reusing one would slip past a connection cap or a
//! full accept queue), checked against the reference top-1 label of `reference.json`.
//!
//! [`Probe::during`] sends one every `period` until told to stop, one at a time, so that the probe itself
//! adds no load worth counting; a probe that hangs shows as its own latency, up to [`PROBE_TIMEOUT`].

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::watch;

use crate::stalls::Stalls;
use crate::stats::Samples;

/// How long one probe may take before it counts as failed: long past the 200 ms goal, short enough that a
/// hung server does not stall the suite.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with an accepted top-1 label.
    Correct,
    /// 200 with another label, or an answer that is not the API's JSON.
    Wrong(String),
    /// 429: the server refused at admission, the overload contract.
    Refused,
    /// Any other status, a broken connection or the timeout.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// When it was sent: a slow probe is placed in the attack's timeline by it.
    pub sent: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

#[derive(Clone)]
pub struct Probe {
    http: reqwest::Client,
    image: Bytes,
    /// Top-1 labels that count as correct.
    expected: Vec<String>,
}

impl Probe {
    /// The probe for `image_name` in `images`, the expected labels read from its `reference.json`: the
    /// reference top-1, or any of its top 3 when the first two scores are within 0.1 (the rule of the
    /// server's own reference tests, for images whose top classes are close).
    pub fn new(images: &Path, image_name: &str) -> anyhow::Result<Probe> {
        let image = std::fs::read(images.join(image_name))
            .with_context(|| format!("reading the probe image {image_name}"))?;
        let reference: serde_json::Value = serde_json::from_slice(
            &std::fs::read(images.join("reference.json")).context("reading reference.json")?,
        )
        .context("parsing reference.json")?;
        let expected = expected_labels(&reference[image_name]["classify_stretch"])
            .with_context(|| format!("no classify_stretch reference for {image_name}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT)
            .build()?;
        Ok(Probe {
            http,
            image: Bytes::from(image),
            expected,
        })
    }

    /// One probe against the server at `base` (`http://127.0.0.1:port`).
    pub async fn once(&self, base: &str) -> ProbeResult {
        let sent = Instant::now();
        let outcome = self.send(base).await;
        ProbeResult {
            sent,
            latency: sent.elapsed(),
            outcome,
        }
    }

    async fn send(&self, base: &str) -> Outcome {
        let answer = self
            .http
            .post(format!("{base}/v1/classify"))
            .header("content-type", "image/jpeg")
            .body(self.image.clone())
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(short_error(&e)),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed(format!("HTTP {status}, body lost: {}", short_error(&e)));
            }
        };
        match status {
            200 => self.judge(&body),
            429 => Outcome::Refused,
            other => Outcome::Failed(format!("HTTP {other}")),
        }
    }

    fn judge(&self, body: &[u8]) -> Outcome {
        let label = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["classes"][0]["label"].as_str().map(str::to_owned));
        match label {
            Some(l) if self.expected.contains(&l) => Outcome::Correct,
            Some(l) => Outcome::Wrong(format!("top-1 {l:?}, expected {:?}", self.expected[0])),
            None => Outcome::Wrong("200 without classes".to_owned()),
        }
    }

    /// Probes every `period` (one at a time) until `stop` turns true; returns every result.
    ///
    /// The probes run on a thread and runtime of their own: the attacks' thousands of client tasks share the
    /// suite's runtime, and a probe queued behind them would time the suite's scheduler, not the server.
    pub fn during(
        &self,
        base: String,
        period: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Vec<ProbeResult>> {
        let probe = self.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    return vec![ProbeResult {
                        sent: Instant::now(),
                        latency: Duration::ZERO,
                        outcome: Outcome::Failed(format!("the probe's runtime: {e}")),
                    }];
                }
            };
            runtime.block_on(async move {
                let mut results = Vec::new();
                loop {
                    let started = Instant::now();
                    results.push(probe.once(&base).await);
                    let next = started + period;
                    tokio::select! {
                        _ = tokio::time::sleep_until(next.into()) => {}
                        _ = stop.wait_for(|s| *s) => return results,
                    }
                    if *stop.borrow() {
                        return results;
                    }
                }
            })
        })
    }
}

fn expected_labels(reference: &serde_json::Value) -> Option<Vec<String>> {
    let refs = reference.as_array()?;
    let label = |i: usize| refs.get(i)?["label"].as_str().map(str::to_owned);
    let score = |i: usize| refs.get(i)?["score"].as_f64();
    let mut labels = vec![label(0)?];
    if score(0)? - score(1).unwrap_or(0.0) < 0.1 {
        labels.extend((1..3).filter_map(label));
    }
    Some(labels)
}

/// reqwest's errors hide the cause ("connection refused", "timed out") in their sources.
fn short_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// What the probes of one span saw.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub sent: usize,
    pub correct: usize,
    pub refused: usize,
    /// Wrong answers and failures, first few kept.
    pub problems: Vec<String>,
    pub bad: usize,
    /// Every probe's time to its answer or failure.
    pub latency: Samples,
    /// Probes (correct or refused) slower than the goal.
    pub slow: usize,
    /// When the slow ones were sent, in seconds from the first probe, first few kept.
    pub slow_at: Vec<f64>,
    /// Probes over the goal only by the time the machine itself stood still ([`crate::stalls`]): not
    /// counted in `slow`.
    pub stalled: usize,
    /// The most machine-stall time within one of them.
    pub stalled_most: Duration,
}

impl Summary {
    /// `stalls`: what the stall watcher saw over the same span; a slow probe that the machine's stalls
    /// account for is counted as `stalled`, not `slow`, and only when the watcher ran at real-time priority.
    pub fn of(results: &[ProbeResult], goal: Duration, stalls: &Stalls) -> Summary {
        let mut s = Summary::default();
        let first = results.iter().map(|r| r.sent).min();
        for r in results {
            s.sent += 1;
            s.latency.push(r.latency);
            match &r.outcome {
                Outcome::Correct => s.correct += 1,
                Outcome::Refused => s.refused += 1,
                Outcome::Wrong(why) | Outcome::Failed(why) => {
                    s.bad += 1;
                    if s.problems.len() < 3 {
                        s.problems.push(why.clone());
                    }
                }
            }
            if matches!(r.outcome, Outcome::Correct | Outcome::Refused) && r.latency > goal {
                let stalled = if stalls.realtime {
                    stalls.overlap(r.sent, r.sent + r.latency)
                } else {
                    Duration::ZERO
                };
                if r.latency.saturating_sub(stalled) <= goal {
                    s.stalled += 1;
                    s.stalled_most = s.stalled_most.max(stalled);
                    continue;
                }
                s.slow += 1;
                if s.slow_at.len() < 3 {
                    let since = first.map_or(Duration::ZERO, |f| r.sent.duration_since(f));
                    s.slow_at.push(since.as_secs_f64());
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_clear_winner_is_the_only_label_accepted() {
        let r =
            json!([{"label": "cheeseburger", "score": 0.97}, {"label": "bagel", "score": 0.02}]);
        assert_eq!(expected_labels(&r).unwrap(), vec!["cheeseburger"]);
    }

    #[test]
    fn close_scores_accept_the_top_three() {
        let r = json!([{"label": "a", "score": 0.4}, {"label": "b", "score": 0.35}, {"label": "c", "score": 0.1}, {"label": "d", "score": 0.05}]);
        assert_eq!(expected_labels(&r).unwrap(), vec!["a", "b", "c"]);
        assert!(expected_labels(&json!(null)).is_none());
    }

    #[test]
    fn summary_counts_slow_and_bad_probes() {
        let start = Instant::now();
        let r = |ms, outcome| ProbeResult {
            sent: start + Duration::from_millis(ms),
            latency: Duration::from_millis(ms),
            outcome,
        };
        let s = Summary::of(
            &[
                r(10, Outcome::Correct),
                r(300, Outcome::Correct),
                r(1, Outcome::Refused),
                r(10_000, Outcome::Failed("timed out".into())),
                r(5, Outcome::Wrong("top-1 \"x\"".into())),
            ],
            Duration::from_millis(200),
            &Stalls::default(),
        );
        assert_eq!(
            (s.sent, s.correct, s.refused, s.bad, s.slow),
            (5, 2, 1, 2, 1)
        );
        assert_eq!(s.latency.quantile(1.0), 10_000.0);
        // Each was sent `ms` after `start`: the slow one 299 ms after the first (the 1 ms one).
        assert_eq!(s.slow_at.len(), 1);
        assert!((s.slow_at[0] - 0.299).abs() < 1e-9, "{:?}", s.slow_at);
    }

    #[test]
    fn a_probe_slow_only_by_a_machine_stall_is_set_apart() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let probe = |sent_ms, ms| ProbeResult {
            sent: at(sent_ms),
            latency: Duration::from_millis(ms),
            outcome: Outcome::Correct,
        };
        // The machine stood still from 1000 to 1250 ms.
        let stall = crate::stalls::Stall {
            from: at(1000),
            to: at(1250),
        };
        let results = [
            probe(0, 20),
            // 290 ms, 250 of them stalled: 40 ms of its own.
            probe(990, 290),
            // 400 ms, 240 of them stalled: 160 ms of its own, under the goal too.
            probe(1010, 400),
            // 500 ms, 250 stalled: 250 of its own, over the goal.
            probe(950, 500),
        ];
        let goal = Duration::from_millis(200);
        let realtime = Stalls {
            realtime: true,
            stalls: vec![stall],
        };
        let s = Summary::of(&results, goal, &realtime);
        assert_eq!((s.slow, s.stalled), (1, 2));
        assert_eq!(s.stalled_most, Duration::from_millis(250));
        // A watcher without real-time priority may have been held off by the server's load: nothing is
        // set apart.
        let normal = Stalls {
            realtime: false,
            ..realtime
        };
        let s = Summary::of(&results, goal, &normal);
        assert_eq!((s.slow, s.stalled), (3, 0));
    }
}
