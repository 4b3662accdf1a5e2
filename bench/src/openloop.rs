//! Open-loop load: requests arrive at a constant rate whatever the server does, as real users do, unlike the
//! closed loop of [`crate::load`] where a slow answer delays the next request and hides the slowness.
//!
//! Request `i` is due at `start + i / rate` and runs on its own task. Latency is timed from the moment the
//! request actually started; how late it started (`lag`, the load generator's own delay on a busy machine)
//! is kept apart, so a slow client is not blamed on the server. A cap on requests in flight keeps the
//! generator's memory bounded if the server stops answering: an arrival that finds the cap reached is not
//! sent and counted as `skipped`, which the callers count as an error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

// Tokio's clock, so that the tests can run on paused time.
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub struct Record<T> {
    /// Offset of the request's start from the run's start.
    pub started: Duration,
    /// How late it started against its schedule.
    pub lag: Duration,
    pub latency: Duration,
    pub result: T,
}

pub struct Run<T> {
    pub records: Vec<Record<T>>,
    /// Arrivals not sent because `max_in_flight` requests were already waiting.
    pub skipped: usize,
    /// Tasks that panicked (a bug in the load generator, reported rather than hidden).
    pub lost: usize,
}

/// Sends `make(i)` at `rate` per second for `duration`, then waits for every answer.
pub async fn run<F, Fut, T>(rate: f64, duration: Duration, max_in_flight: usize, make: F) -> Run<T>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let begin = Instant::now();
    let total = (rate * duration.as_secs_f64()).floor() as u64;
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut skipped = 0;
    for i in 0..total {
        let due = begin + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let request = make(i);
        tasks.spawn(async move {
            let started = Instant::now();
            let result = request.await;
            drop(slot);
            Record {
                started: started - begin,
                lag: started.saturating_duration_since(due),
                latency: started.elapsed(),
                result,
            }
        });
    }
    let mut records = Vec::with_capacity(total as usize);
    let mut lost = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => records.push(r),
            Err(_) => lost += 1,
        }
    }
    records.sort_by_key(|r| r.started);
    Run {
        records,
        skipped,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn arrivals_follow_the_rate_not_the_answers() {
        // Answers take 1 s, arrivals come every 10 ms: a closed loop would send 1 request, this sends 50.
        let run = run(100.0, Duration::from_millis(500), 1000, |i| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            i
        })
        .await;
        assert_eq!(run.records.len(), 50);
        assert_eq!(run.skipped, 0);
        assert_eq!(run.records[10].started, Duration::from_millis(100));
        assert!(
            run.records
                .iter()
                .all(|r| r.latency == Duration::from_secs(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_flight_cap_skips_arrivals() {
        let run = run(100.0, Duration::from_millis(500), 10, |_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
        assert_eq!((run.records.len(), run.skipped), (10, 40));
    }
}
