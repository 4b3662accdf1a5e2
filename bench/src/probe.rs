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
    pub fn during(
        &self,
        base: String,
        period: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Vec<ProbeResult>> {
        let probe = self.clone();
        tokio::spawn(async move {
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
}

impl Summary {
    pub fn of(results: &[ProbeResult], goal: Duration) -> Summary {
        let mut s = Summary::default();
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
                s.slow += 1;
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
        let r = |ms, outcome| ProbeResult {
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
        );
        assert_eq!(
            (s.sent, s.correct, s.refused, s.bad, s.slow),
            (5, 2, 1, 2, 1)
        );
        assert_eq!(s.latency.quantile(1.0), 10_000.0);
    }
}
