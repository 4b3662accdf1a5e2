//! How busy a model's sessions have been lately: the share of the last [`WINDOW`] they spent running batches.
//!
//! `model=auto` predicts a request's time from the work every model has admitted when it is routed; the work
//! the other models take on while it waits delays it too, and a model that has been busy lately is likely to
//! stay so for the next few hundred milliseconds (docs/auto.md, session 21). Pure logic, the clock passed in.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// How far back the share looks: a few of the slowest variant's flights (the 513 segmenter's requests take
/// 150-200 ms at its capacity here), so that it follows a load that moves within a second.
pub const WINDOW: Duration = Duration::from_millis(500);

/// At most this many finished batches are kept: a bound on the memory whatever the batches' length (at 1 ms a
/// batch, two instances finish 1,000 in a window).
const MAX_KEPT: usize = 2048;

/// The batches a model's sessions finished within the last [`WINDOW`], as (began, ended), oldest first.
#[derive(Debug, Default)]
pub struct BusyTime {
    finished: VecDeque<(Instant, Instant)>,
}

impl BusyTime {
    /// A session ran a batch from `began` to `ended`.
    pub fn record(&mut self, began: Instant, ended: Instant) {
        if self.finished.len() == MAX_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back((began, ended));
        while self
            .finished
            .front()
            .is_some_and(|&(_, end)| ended.saturating_duration_since(end) > WINDOW)
        {
            self.finished.pop_front();
        }
    }

    /// The share (0 to 1) of the last [`WINDOW`] before `now` that the model's `instances` spent running
    /// batches, the finished ones and those `running` since the instants given. A batch that began before the
    /// window counts with its part inside it.
    pub fn share(
        &self,
        now: Instant,
        running: impl IntoIterator<Item = Instant>,
        instances: usize,
    ) -> f64 {
        let from = now.checked_sub(WINDOW).unwrap_or(now);
        let inside = |began: Instant, ended: Instant| {
            ended.min(now).saturating_duration_since(began.max(from))
        };
        let busy: Duration = self
            .finished
            .iter()
            .map(|&(began, ended)| inside(began, ended))
            .chain(running.into_iter().map(|began| inside(began, now)))
            .sum();
        let whole = WINDOW.as_secs_f64() * instances.max(1) as f64;
        (busy.as_secs_f64() / whole).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn an_idle_model_has_no_share() {
        let t0 = Instant::now();
        assert_eq!(BusyTime::default().share(t0 + ms(1000), [], 1), 0.0);
    }

    #[test]
    fn the_share_counts_the_window_only_and_divides_by_the_instances() {
        let t0 = Instant::now();
        let mut busy = BusyTime::default();
        // 100 ms before the window (from t0 + 500 ms to t0 + 1000 ms), 50 ms across its start, 100 ms inside.
        busy.record(t0, t0 + ms(100));
        busy.record(t0 + ms(450), t0 + ms(550));
        busy.record(t0 + ms(700), t0 + ms(800));
        let now = t0 + ms(1000);
        assert!((busy.share(now, [], 1) - 0.3).abs() < 1e-9);
        assert!((busy.share(now, [], 2) - 0.15).abs() < 1e-9);
        // A batch running for the last 100 ms counts too.
        assert!((busy.share(now, [t0 + ms(900)], 1) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_model_busy_the_whole_window_has_a_share_of_one() {
        let t0 = Instant::now();
        let mut busy = BusyTime::default();
        busy.record(t0, t0 + ms(600));
        // Two sessions' overlapping batches on one instance cannot make it more than busy.
        busy.record(t0 + ms(100), t0 + ms(600));
        assert_eq!(busy.share(t0 + ms(600), [], 1), 1.0);
        assert!((busy.share(t0 + ms(600), [], 2) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn old_batches_are_dropped_and_the_record_stays_bounded() {
        let t0 = Instant::now();
        let mut busy = BusyTime::default();
        busy.record(t0, t0 + ms(10));
        busy.record(t0 + ms(2000), t0 + ms(2010));
        assert_eq!(
            busy.finished.len(),
            1,
            "a batch that ended a window before the last is dropped"
        );
        for i in 0..(MAX_KEPT as u64 + 10) {
            let at = t0 + ms(3000) + Duration::from_micros(i);
            busy.record(at, at);
        }
        assert_eq!(busy.finished.len(), MAX_KEPT);
    }
}
