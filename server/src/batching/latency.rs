//! What one model's batches cost, learned online, and the queue wait a new request can expect.
//!
//! Admission by count alone (`--queue-capacity`) lets a request in that will wait a second behind a full queue;
//! admission by expected wait refuses it at once instead, so the client can retry elsewhere or pick a smaller
//! variant. The model threads report how long each batch kept them busy; the estimate is a decaying average
//! per batch size, seeded by the warm-up so that the first requests are judged sensibly. Pure logic, no clock
//! and no threads, so every rule is unit tested below.
use std::time::Duration;

/// Weight of the newest batch in the decaying averages: about the last ten batches count.
const NEWEST_WEIGHT: f64 = 0.1;

/// Rounds of full batches (on every instance) that admission always lets wait, whatever the wait limit: a
/// queue measured in batches, as TF Serving's batch scheduler bounds it (`max_enqueued_batches`). Without it a
/// fixed limit would refuse a slow model's fourth concurrent client (the 513 segmenter takes about 0.1 s per
/// image here); with it, eight clients of any model on this 2-CPU machine are served.
const ROUNDS_ALWAYS_ADMITTED: u32 = 4;

#[derive(Debug)]
pub struct LatencyModel {
    /// Seconds per image at each batch size (index 0 is batch 1), `None` until a batch of that size ran.
    per_image: Vec<Option<f64>>,
}

impl LatencyModel {
    pub fn new(max_batch_size: usize) -> LatencyModel {
        LatencyModel {
            per_image: vec![None; max_batch_size.max(1)],
        }
    }

    /// A batch of `size` kept a model thread busy for `took` (decoding on the thread, running, splitting).
    pub fn observe(&mut self, size: usize, took: Duration) {
        let Some(slot) = size.checked_sub(1).and_then(|i| self.per_image.get_mut(i)) else {
            return;
        };
        let sample = took.as_secs_f64() / size as f64;
        *slot = Some(match *slot {
            Some(avg) => avg + NEWEST_WEIGHT * (sample - avg),
            None => sample,
        });
    }

    /// Seconds per image at batch `size`: its own average, else the nearest smaller size's (batching makes
    /// images cheaper, so that errs on the slow side), else the nearest larger size's.
    fn per_image(&self, size: usize) -> Option<f64> {
        let i = size.clamp(1, self.per_image.len()) - 1;
        let smaller = self.per_image[..=i].iter().rev().flatten().next();
        let larger = || self.per_image[i..].iter().flatten().next();
        smaller.or_else(larger).copied()
    }

    /// How long a batch of `size` takes, once any batch has been seen.
    pub fn batch_time(&self, size: usize) -> Option<Duration> {
        self.per_image(size)
            .map(|s| Duration::from_secs_f64(s * size.max(1) as f64))
    }

    /// Expected wait of a request that arrives with `ahead` requests admitted before it (queued or running),
    /// served by `instances` sessions in batches of up to `max_batch_size`: the work ahead, at the per-image
    /// cost of the batches it will form, shared by the instances. `None` before anything was observed.
    pub fn expected_wait(
        &self,
        ahead: usize,
        instances: usize,
        max_batch_size: usize,
    ) -> Option<Duration> {
        if ahead == 0 {
            return Some(Duration::ZERO);
        }
        let instances = instances.max(1);
        let batch = ahead.div_ceil(instances).clamp(1, max_batch_size.max(1));
        self.per_image(batch)
            .map(|s| Duration::from_secs_f64(s * ahead as f64 / instances as f64))
    }
}

/// The wait of a request with `ahead` requests admitted before it (queued or running), of which the batches in
/// `started` (time since each began, its size) are running now: the work ahead, shared by the instances, where a
/// started batch counts with the time it has left, not its whole time. A request arriving mid-batch waits for
/// the rest of it only, on average half: counting the whole made the predictions of a busy flagship about 6 ms
/// longer than its answers took (docs/auto.md, session 18), and admission, which counted it whole until session
/// 22, refused requests `model=auto` had just predicted to be answered in time (docs/auto.md). `None` until a
/// batch has run.
pub fn wait_behind(
    waits: &LatencyModel,
    ahead: usize,
    started: &[(Duration, usize)],
    instances: usize,
    max_batch_size: usize,
) -> Option<Duration> {
    let mut started_requests = 0;
    let mut left = Duration::ZERO;
    for &(elapsed, size) in started {
        started_requests += size;
        left += waits.batch_time(size)?.saturating_sub(elapsed);
    }
    let rest = waits.expected_wait(
        ahead.saturating_sub(started_requests),
        instances,
        max_batch_size,
    )?;
    Some(rest + left / instances.max(1) as u32)
}

/// How long a request admitted now takes until its answer, from its batcher's state: `ahead` requests admitted
/// before it, `running` of them in batches already handed to a session, of which the batches in `started` are
/// running now. It joins the ones still queued in one batch (up to `max_batch_size`), so it waits for the work
/// ahead of that batch ([`wait_behind`], from `waits`, which count the decoding on the model thread), then runs
/// its whole batch on one session (`runs`): a batch of eight on a single-thread session takes about eight times
/// one image, not one image's time. Counting every queued request into its batch errs on the slow side: some of
/// them may already be in a closed batch that waits for a session. `None` until a batch has run.
pub fn predict_completion(
    waits: &LatencyModel,
    runs: &LatencyModel,
    ahead: usize,
    running: usize,
    started: &[(Duration, usize)],
    instances: usize,
    max_batch_size: usize,
) -> Option<Duration> {
    let queued = ahead.saturating_sub(running);
    let batch = (queued + 1).min(max_batch_size.max(1));
    let before = ahead + 1 - batch;
    let wait = wait_behind(waits, before, started, instances, max_batch_size)?;
    Some(wait + runs.batch_time(batch)?)
}

/// Why admission by expected wait refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitVerdict {
    Admit,
    /// The wait would exceed the model's limit.
    OverLimit {
        expected: Duration,
        limit: Duration,
    },
    /// Even with nothing ahead, the request's own batch would end past its deadline: no retry can help.
    TooLate,
    /// The wait and the request's own batch would end past its deadline.
    PastDeadline {
        expected: Duration,
        remaining: Duration,
    },
}

/// The admission rule, for a request whose wait behind the requests admitted before it is `expected`
/// ([`wait_behind`]). `limit` is `--max-queue-wait`, raised to the time of [`ROUNDS_ALWAYS_ADMITTED`] full
/// batches, so that a slow model still queues and batches; a model that has seen no batch yet (`expected` is
/// `None`) admits everything (the count cap still holds). `remaining` is the time left before the request's
/// deadline, if it has one.
pub fn judge(
    model: &LatencyModel,
    expected: Option<Duration>,
    max_batch_size: usize,
    limit: Duration,
    remaining: Option<Duration>,
) -> WaitVerdict {
    let Some(expected) = expected else {
        return WaitVerdict::Admit;
    };
    let own = model.batch_time(1).unwrap_or_default();
    match remaining {
        Some(remaining) if own > remaining => return WaitVerdict::TooLate,
        Some(remaining) if expected + own > remaining => {
            return WaitVerdict::PastDeadline {
                expected,
                remaining,
            };
        }
        _ => {}
    }
    let rounds = model.batch_time(max_batch_size).unwrap_or_default() * ROUNDS_ALWAYS_ADMITTED;
    let limit = limit.max(rounds);
    if expected > limit {
        return WaitVerdict::OverLimit { expected, limit };
    }
    WaitVerdict::Admit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn close(a: Duration, b: Duration) -> bool {
        (a.as_secs_f64() - b.as_secs_f64()).abs() < 1e-6
    }

    /// The admission of a request with `ahead` admitted before it, none of them started.
    fn judge_ahead(
        m: &LatencyModel,
        ahead: usize,
        instances: usize,
        max_batch_size: usize,
        limit: Duration,
        remaining: Option<Duration>,
    ) -> WaitVerdict {
        let expected = wait_behind(m, ahead, &[], instances, max_batch_size);
        judge(m, expected, max_batch_size, limit, remaining)
    }

    #[test]
    fn nothing_observed_predicts_nothing_and_admits() {
        let m = LatencyModel::new(8);
        assert_eq!(m.expected_wait(5, 1, 8), None);
        assert_eq!(m.batch_time(1), None);
        assert_eq!(wait_behind(&m, 100, &[], 1, 8), None);
        assert_eq!(
            judge_ahead(&m, 100, 1, 8, ms(100), Some(ms(1))),
            WaitVerdict::Admit
        );
    }

    #[test]
    fn an_empty_queue_waits_nothing() {
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(10));
        assert_eq!(m.expected_wait(0, 2, 1), Some(Duration::ZERO));
    }

    #[test]
    fn the_average_decays_towards_new_batches() {
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(10));
        assert!(close(m.batch_time(1).unwrap(), ms(10)));
        m.observe(1, ms(20));
        assert!(close(m.batch_time(1).unwrap(), ms(11)));
        for _ in 0..100 {
            m.observe(1, ms(20));
        }
        assert!((m.batch_time(1).unwrap().as_secs_f64() - 0.020).abs() < 1e-4);
    }

    #[test]
    fn unseen_sizes_borrow_from_the_nearest_smaller_then_larger() {
        let mut m = LatencyModel::new(8);
        m.observe(2, ms(30)); // 15 ms per image
        assert!(close(m.batch_time(8).unwrap(), ms(120)), "from batch 2");
        assert!(
            close(m.batch_time(1).unwrap(), ms(15)),
            "from batch 2, the only one"
        );
        m.observe(1, ms(20));
        assert!(close(m.batch_time(1).unwrap(), ms(20)));
        assert!(
            close(m.batch_time(3).unwrap(), ms(45)),
            "batch 2's rate, not batch 1's"
        );
        // Sizes past the largest batch are the largest batch's.
        assert!(close(m.batch_time(9).unwrap(), ms(135)));
    }

    #[test]
    fn observations_of_impossible_sizes_are_ignored() {
        let mut m = LatencyModel::new(2);
        m.observe(0, ms(10));
        m.observe(3, ms(10));
        assert_eq!(m.batch_time(1), None);
    }

    #[test]
    fn the_wait_is_the_work_ahead_shared_by_the_instances() {
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(10));
        assert!(close(m.expected_wait(4, 1, 1).unwrap(), ms(40)));
        assert!(close(m.expected_wait(4, 2, 1).unwrap(), ms(20)));
        // With batching, the work ahead runs at the batched rate.
        let mut m = LatencyModel::new(8);
        m.observe(1, ms(10));
        m.observe(8, ms(40)); // 5 ms per image
        assert!(close(m.expected_wait(16, 1, 8).unwrap(), ms(80)));
        assert!(close(m.expected_wait(1, 1, 8).unwrap(), ms(10)));
    }

    #[test]
    fn a_request_runs_in_one_batch_with_the_queued_ones() {
        let mut m = LatencyModel::new(8);
        m.observe(1, ms(4));
        m.observe(4, ms(12)); // 3 ms per image
        m.observe(8, ms(16)); // 2 ms per image
        // Idle: its own image alone.
        assert_eq!(predict_completion(&m, &m, 0, 0, &[], 2, 8), Some(ms(4)));
        // Two running (one per instance), none queued: it waits for them, then runs alone.
        assert!(close(
            predict_completion(&m, &m, 2, 2, &[], 2, 8).unwrap(),
            ms(4) + ms(4)
        ));
        // Three queued and one running: its batch of four waits for the running one (shared by the two
        // instances), then runs whole on one session.
        assert!(close(
            predict_completion(&m, &m, 4, 1, &[], 2, 8).unwrap(),
            ms(2) + ms(12)
        ));
        // Twenty queued: its batch is a full one of eight, behind the other thirteen.
        assert!(close(
            predict_completion(&m, &m, 20, 0, &[], 2, 8).unwrap(),
            m.expected_wait(13, 2, 8).unwrap() + ms(16)
        ));
        // Without batching, nothing changes: the work ahead shared, then its own image.
        let mut single = LatencyModel::new(1);
        single.observe(1, ms(10));
        assert!(close(
            predict_completion(&single, &single, 4, 2, &[], 2, 1).unwrap(),
            ms(30)
        ));
        assert_eq!(
            predict_completion(&LatencyModel::new(8), &m, 0, 0, &[], 1, 8),
            Some(ms(4))
        );
        assert_eq!(
            predict_completion(&m, &LatencyModel::new(8), 0, 0, &[], 1, 8),
            None
        );
    }

    #[test]
    fn a_started_batch_counts_with_the_time_it_has_left() {
        let mut m = LatencyModel::new(8);
        m.observe(1, ms(10));
        m.observe(2, ms(16)); // 8 ms per image
        // One instance, one batch of one running for 4 ms: 6 ms left, then its own 10.
        assert!(close(
            predict_completion(&m, &m, 1, 1, &[(ms(4), 1)], 1, 8).unwrap(),
            ms(6) + ms(10)
        ));
        // Not begun yet (handed over, waiting for the session): its whole time.
        assert!(close(
            predict_completion(&m, &m, 1, 1, &[], 1, 8).unwrap(),
            ms(10) + ms(10)
        ));
        // Running past its expected time: nothing left of it is counted, not a negative time.
        assert!(close(
            predict_completion(&m, &m, 1, 1, &[(ms(30), 1)], 1, 8).unwrap(),
            ms(10)
        ));
        // A started batch of two (16 ms, 5 in) and one more handed over, with two queued: its batch of three
        // waits for the 11 ms left and the other's 10 ms.
        assert!(close(
            predict_completion(&m, &m, 5, 3, &[(ms(5), 2)], 1, 8).unwrap(),
            ms(11) + ms(10) + m.batch_time(3).unwrap()
        ));
    }

    #[test]
    fn over_the_limit_is_refused_with_the_figures() {
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(10));
        assert_eq!(judge_ahead(&m, 9, 1, 1, ms(100), None), WaitVerdict::Admit);
        assert_eq!(
            judge_ahead(&m, 10, 1, 1, ms(100), None),
            WaitVerdict::Admit,
            "at the limit"
        );
        assert_eq!(
            judge_ahead(&m, 11, 1, 1, ms(100), None),
            WaitVerdict::OverLimit {
                expected: m.expected_wait(11, 1, 1).unwrap(),
                limit: ms(100)
            }
        );
    }

    #[test]
    fn the_limit_never_refuses_the_first_rounds_of_full_batches() {
        // A slow model: one batch of 2 takes 400 ms, over a 100 ms limit; four rounds of full batches on its
        // two instances (16 ahead) must still be let in, and no more.
        let mut m = LatencyModel::new(2);
        m.observe(2, ms(400));
        let rounds = ms(400) * ROUNDS_ALWAYS_ADMITTED;
        let ahead = 2 * 2 * ROUNDS_ALWAYS_ADMITTED as usize;
        assert_eq!(
            judge_ahead(&m, ahead, 2, 2, ms(100), None),
            WaitVerdict::Admit
        );
        assert!(matches!(
            judge_ahead(&m, ahead + 1, 2, 2, ms(100), None),
            WaitVerdict::OverLimit { limit, .. } if close(limit, rounds)
        ));
        // A fast model is held to the limit itself.
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(1));
        assert!(matches!(
            judge_ahead(&m, 300, 1, 1, ms(100), None),
            WaitVerdict::OverLimit { limit, .. } if limit == ms(100)
        ));
    }

    #[test]
    fn admission_counts_a_started_batch_with_the_time_it_has_left() {
        // Two sessions each 70 ms into a batch of eight that takes 80 ms (10 ms per image), and 40 ms left
        // before the deadline: counted whole, the sixteen ahead would keep it waiting 80 ms; with the time they
        // have left, 10 ms, and its own run ends in time.
        let mut m = LatencyModel::new(8);
        m.observe(8, ms(80));
        let started = [(ms(70), 8), (ms(70), 8)];
        let expected = wait_behind(&m, 16, &started, 2, 8);
        assert!(close(expected.unwrap(), ms(10)));
        assert_eq!(
            judge(&m, expected, 8, ms(100), Some(ms(40))),
            WaitVerdict::Admit
        );
        assert!(matches!(
            judge_ahead(&m, 16, 2, 8, ms(100), Some(ms(40))),
            WaitVerdict::PastDeadline { .. }
        ));
    }

    #[test]
    fn a_request_that_cannot_meet_its_deadline_is_refused() {
        let mut m = LatencyModel::new(1);
        m.observe(1, ms(50));
        assert_eq!(
            judge_ahead(&m, 0, 1, 1, ms(100), Some(ms(60))),
            WaitVerdict::Admit
        );
        // Its own run alone is too long: not an overload, the deadline is.
        assert_eq!(
            judge_ahead(&m, 0, 1, 1, ms(100), Some(ms(40))),
            WaitVerdict::TooLate
        );
        assert_eq!(
            judge_ahead(&m, 0, 1, 1, ms(100), Some(ms(0))),
            WaitVerdict::TooLate
        );
        // It could run alone in time, but not behind the one ahead: an overload, under the wait limit.
        assert_eq!(
            judge_ahead(&m, 1, 1, 1, ms(1000), Some(ms(90))),
            WaitVerdict::PastDeadline {
                expected: ms(50),
                remaining: ms(90)
            }
        );
    }
}
