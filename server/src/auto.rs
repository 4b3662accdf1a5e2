//! `model=auto`: the best variant whose predicted end-to-end latency fits the request's budget.
//!
//! The router gives the task's ladder, best quality first (`make models` ranks it from each variant's
//! published or measured quality); of a long ladder only [`MAX_STEPS`] variants, spaced by cost, are tried
//! ([`ladder_steps`]). Each variant's batcher predicts the time a request sent to it now would
//! take: the wait behind the requests it has admitted, its own run, and decoding this image, which
//! [`crate::decode_cost`] predicts from the image's size. All models share the same CPUs, so the work the other
//! models and the decode pool ([`DecodeBacklog`]) have taken on delays it too ([`shared_cpu_latency`]):
//! without that, a step-down spread the load over several variants whose batches then ran side by side at
//! two to five times their learned time (docs/auto.md). The first variant whose prediction fits is chosen; when
//! none does, the request is refused at once, before anything is queued, so that no work is spent on an
//! answer that would come too late. Each variant's predictions are raised by a [`Margin`] learned from
//! how far its answers overran their predictions, so that the budget holds for the requests the predictions
//! underestimate (a burst arriving together, a batch that ran long, the CPU taken by something else).
//! Pure logic, no threads, the clock passed in (the backlog's counter aside): every rule is unit tested below.
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How many of a variant's latest auto-routed answers its margin is taken from: the 99.5th percentile of 512
/// is their third largest overrun. With 128 answers and the 99th percentile (the second largest) until session
/// 15, 2.1-2.4% of the answers at the flagship's capacity came late, against 1.1-1.5% with this window, in
/// alternating runs (docs/auto.md).
const MARGIN_WINDOW: usize = 512;

/// How long an answer counts towards the margin. A margin that only answers could shrink would stay up for
/// good once it made the variant too slow to be chosen (no more answers from it); with an age limit it comes
/// back down once the variant's last answers are four seconds old (fading over four more, [`Margin::at`]), and
/// the variant is tried again.
const MARGIN_MAX_AGE: Duration = Duration::from_secs(4);

/// The share of those answers whose overrun the margin covers.
const MARGIN_QUANTILE: f64 = 0.995;

/// Below this many recent answers a margin is no longer taken as settled: the variant is predicted with at
/// least the margin it had when it last had this many, or a higher one its fewer answers gave since, fading to
/// zero over [`MARGIN_MAX_AGE`]. Until session
/// 19 the margin of a variant whose answers thinned out fell to nothing the moment its last overrun expired,
/// and the requests that then rushed to it came late: at twice the flagship's capacity 14-20% of the answers
/// of a variant with fewer than 10 answers in the 4 s before, with a median margin of zero (docs/auto.md).
const SETTLED_ANSWERS: usize = 50;

/// How many variants of a ladder `model=auto` tries at most: the first, the cheapest, and between them those
/// nearest to evenly spaced costs ([`ladder_steps`]). Every variant in use splits the load and the CPUs among
/// more sessions, each with fewer recent answers to learn its margin from, and one that costs little less than
/// the step above is chosen just when that one is predicted to miss the budget, so it is predicted to meet it by
/// a hair. On the 2-CPU test machine the seven-variant classification ladder thinned to 224, 160, 128 and 96
/// answered 0.3-0.5% late at the flagship's capacity against 0.9-1.3% with all seven, with 6-15% more goodput at
/// twice it, in three alternating pairs of runs; with the 192 variant as a fifth step, 0.7% and 1.2%; with this
/// rule, 0.3-0.7% in four runs (docs/auto.md, session 17).
pub const MAX_STEPS: usize = 4;

/// Whether `model=auto` tries a candidate of the ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Taken,
    PassedOver,
}

/// Which candidates (best quality first) `model=auto` tries, from each one's cost in multiply-adds per image,
/// the paper's measure. With [`MAX_STEPS`] or fewer, or a cost unknown (0), every one. Otherwise the first, the
/// cheapest, and for each of the costs evenly spaced between theirs (geometrically: from 301M to 56M in four
/// steps is about 172M and 98M in between) the candidate nearest to it. A candidate after the cheapest is passed
/// over, and so is one that costs as much as the first (the int8 variants of the float flagship: same
/// multiply-adds). Multiply-adds rather than the throughput measured here: measured at start-up (tried), the
/// ratio of neighbouring variants' figures moved from one start to the next (192 over 224: 1.0-1.39; 128 over
/// 160: 1.26-1.74), and the steps with it.
pub fn ladder_steps(costs: &[u64]) -> Vec<Step> {
    if costs.len() <= MAX_STEPS || costs.contains(&0) {
        return vec![Step::Taken; costs.len()];
    }
    let ln = |i: usize| (costs[i] as f64).ln();
    // The first of the cheapest, so that an equal cost later in the ladder (lower quality) is not preferred.
    let cheapest = (0..costs.len()).min_by_key(|&i| (costs[i], i)).unwrap_or(0);
    let mut steps = vec![Step::PassedOver; costs.len()];
    steps[0] = Step::Taken;
    steps[cheapest] = Step::Taken;
    for j in 1..MAX_STEPS - 1 {
        let target = ln(0) + (ln(cheapest) - ln(0)) * j as f64 / (MAX_STEPS - 1) as f64;
        let nearest = (1..cheapest)
            .filter(|&i| steps[i] == Step::PassedOver && costs[i] < costs[0])
            .min_by(|&a, &b| (ln(a) - target).abs().total_cmp(&(ln(b) - target).abs()));
        if let Some(i) = nearest {
            steps[i] = Step::Taken;
        }
    }
    steps
}

/// The candidates [`ladder_steps`] takes, in order.
pub fn taken<T>(candidates: Vec<T>, cost: impl Fn(&T) -> u64) -> Vec<T> {
    let steps = ladder_steps(&candidates.iter().map(cost).collect::<Vec<_>>());
    candidates
        .into_iter()
        .zip(steps)
        .filter_map(|(c, step)| (step == Step::Taken).then_some(c))
        .collect()
}

/// What the router decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// The candidate at `index` fits; `predicted` is `None` for a variant that has not run a batch yet (it is
    /// given the benefit of the doubt: the warm-up runs one, so this happens only in the first instants).
    Fits {
        index: usize,
        predicted: Option<Duration>,
    },
    /// The candidate at `index` was predicted to fit but its own admission would refuse the request (its
    /// queue full, or its expected wait over the server's limit), and no candidate after it fits: the
    /// client gets that admission's refusal, which says why, rather than a prediction within its budget
    /// called over it.
    Refused { index: usize },
    /// No candidate fits; the fastest predicted and its prediction, for the client's error message.
    NoneFits { fastest: usize, predicted: Duration },
}

/// The first candidate (best quality first) whose prediction fits `budget` and that `admits` (asked only of
/// those that fit, in order). `predictions` is never empty. A budget larger than the server's queue-wait
/// limit can fit a variant whose admission then refuses the request; without asking, `model=auto` sent
/// requests there and they were refused as overloaded while a smaller variant had room (docs/auto.md,
/// session 23).
pub fn choose(
    predictions: &[Option<Duration>],
    budget: Duration,
    mut admits: impl FnMut(usize) -> bool,
) -> Choice {
    let mut fastest: Option<(usize, Duration)> = None;
    let mut refused = None;
    for (index, predicted) in predictions.iter().enumerate() {
        match *predicted {
            Some(p) if p > budget => {
                if fastest.is_none_or(|(_, best)| p < best) {
                    fastest = Some((index, p));
                }
            }
            predicted if admits(index) => return Choice::Fits { index, predicted },
            _ => {
                refused.get_or_insert(index);
            }
        }
    }
    match (refused, fastest) {
        (Some(index), _) => Choice::Refused { index },
        (None, fastest) => {
            let (fastest, predicted) = fastest.unwrap_or_default();
            Choice::NoneFits { fastest, predicted }
        }
    }
}

/// The time a request whose own work (its variant's queue ahead of it and its run) takes `own` with the CPUs
/// to itself will take while the other models work off `others`: the CPUs are shared fairly (processor
/// sharing), so each other model's backlog delays it by as much of that backlog as runs before it is done,
/// at most `own`. Every variant's sessions use all the CPUs when they run, so one's backlog is time on the
/// whole machine and the delays add up.
pub fn shared_cpu_latency(own: Duration, others: impl IntoIterator<Item = Duration>) -> Duration {
    own + others.into_iter().map(|b| b.min(own)).sum::<Duration>()
}

/// The decoding the service has taken on and not finished, as the sum of each image's predicted time:
/// the decode pool's queue, which a request routed now waits behind and whose CPU every model shares. Each
/// image adds itself with [`add`](Self::add) and is taken off when its [`Pending`] guard drops, whether it
/// finished, failed or its client left.
#[derive(Debug, Default)]
pub struct DecodeBacklog {
    nanos: AtomicU64,
}

impl DecodeBacklog {
    pub fn add(self: &Arc<Self>, predicted: Duration) -> Pending {
        let nanos = u64::try_from(predicted.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        Pending {
            backlog: self.clone(),
            nanos,
        }
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// One image's share of the [`DecodeBacklog`], given back on drop.
#[derive(Debug)]
pub struct Pending {
    backlog: Arc<DecodeBacklog>,
    nanos: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.backlog.nanos.fetch_sub(self.nanos, Ordering::Relaxed);
    }
}

/// How much later than predicted a variant's auto-routed answers came: the 99.5th percentile of (actual -
/// predicted) over its latest [`MARGIN_WINDOW`] answers of the last [`MARGIN_MAX_AGE`], never negative. Added
/// to its predictions, it turns "predicted to fit" into "fits in 199 of 200 such requests" without a hand-set
/// constant. Per variant, because a busy flagship's errors say nothing of an idle small variant's. Added
/// rather than multiplied: a factor, tried too (docs/auto.md), grew large on short predictions at light load
/// and moved requests off the flagship that would have been on time. With fewer than [`SETTLED_ANSWERS`]
/// recent answers it never falls faster than a linear fade. Per variant rather than borrowed from the task's
/// other variants: borrowed, a flagship's slow spell shut out the variants below it too, and requests were
/// refused (20% of them at half the flagship's capacity in one run, docs/auto.md, session 19).
#[derive(Debug, Clone, Default)]
pub struct Margin {
    /// (when the answer came, actual - predicted in seconds), oldest first.
    overruns: VecDeque<(Instant, f64)>,
    /// The margin a variant with fewer than [`SETTLED_ANSWERS`] recent answers is predicted with at least,
    /// fading from when it was taken: the last one taken from that many answers or more, or a higher one taken
    /// from fewer since.
    settled: Option<(Instant, Duration)>,
}

impl Margin {
    pub fn observe(&mut self, now: Instant, predicted: Duration, actual: Duration) {
        if self.overruns.len() == MARGIN_WINDOW {
            self.overruns.pop_front();
        }
        self.overruns
            .push_back((now, actual.as_secs_f64() - predicted.as_secs_f64()));
    }

    /// The margin at `now`: zero when no recent answer came later than predicted and the last settled
    /// margin has faded. With fewer than [`SETTLED_ANSWERS`] recent answers it never falls faster than
    /// linearly, to zero in [`MARGIN_MAX_AGE`]: until session 20 a variant that had never had that many fell from
    /// the overrun of its last few answers to nothing the moment they expired, the requests that had not fitted
    /// elsewhere rushed to it, came late, and shut it out for another 4 s (docs/auto.md).
    pub fn at(&mut self, now: Instant) -> Duration {
        while self
            .overruns
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > MARGIN_MAX_AGE)
        {
            self.overruns.pop_front();
        }
        let mut sorted: Vec<f64> = self.overruns.iter().map(|(_, o)| *o).collect();
        sorted.sort_by(f64::total_cmp);
        let rank = (MARGIN_QUANTILE * sorted.len() as f64).ceil() as usize;
        let recent = match sorted.len() {
            0 => Duration::ZERO,
            n => Duration::from_secs_f64(sorted[rank.clamp(1, n) - 1].max(0.0)),
        };
        let fading = self.settled.map_or(Duration::ZERO, |(at, margin)| {
            let left = 1.0
                - now.saturating_duration_since(at).as_secs_f64() / MARGIN_MAX_AGE.as_secs_f64();
            margin.mul_f64(left.max(0.0))
        });
        if sorted.len() >= SETTLED_ANSWERS || recent > fading {
            self.settled = Some((now, recent));
            return recent;
        }
        fading
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_ladder_keeps_the_ends_and_the_variants_nearest_to_even_steps_between() {
        use Step::*;
        // The classification ladder, millions of multiply-adds: 224, int8, int8 per channel, 192, 160, 128,
        // 96. Even steps from 301 to 56 are 172 and 98: 160 (154) and 128 (99) are nearest.
        let costs = [301, 301, 301, 221, 154, 99, 56];
        assert_eq!(
            ladder_steps(&costs),
            [
                Taken, PassedOver, PassedOver, PassedOver, Taken, Taken, Taken
            ]
        );
        // Nothing after the cheapest, nothing as costly as the first.
        let costs = [800, 800, 400, 200, 100, 150];
        assert_eq!(
            ladder_steps(&costs),
            [Taken, PassedOver, Taken, Taken, Taken, PassedOver]
        );
        assert_eq!(
            taken(
                vec![("a", 800), ("b", 700), ("c", 420), ("d", 190), ("e", 100)],
                |c| c.1
            )
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
            ["a", "c", "d", "e"]
        );
    }

    #[test]
    fn short_or_uncosted_ladders_are_kept_whole() {
        use Step::*;
        assert_eq!(
            ladder_steps(&[100, 100, 90, 400]),
            [Taken; 4],
            "four or fewer"
        );
        assert_eq!(
            ladder_steps(&[400, 0, 300, 200, 100]),
            [Taken; 5],
            "a cost unknown"
        );
        assert!(ladder_steps(&[]).is_empty());
    }

    #[test]
    fn the_best_variant_that_fits_wins() {
        let p = [Some(ms(30)), Some(ms(12)), Some(ms(5))];
        assert_eq!(
            choose_admitted(&p, ms(50)),
            Choice::Fits {
                index: 0,
                predicted: Some(ms(30))
            }
        );
        assert_eq!(
            choose_admitted(&p, ms(20)),
            Choice::Fits {
                index: 1,
                predicted: Some(ms(12))
            }
        );
        assert_eq!(
            choose_admitted(&p, ms(12)),
            Choice::Fits {
                index: 1,
                predicted: Some(ms(12))
            },
            "a prediction equal to the budget fits"
        );
    }

    #[test]
    fn a_busy_flagship_steps_down_even_past_a_faster_but_busier_one() {
        // The flagship's queue is deep, the second is busy too, the third is idle.
        let p = [Some(ms(400)), Some(ms(90)), Some(ms(8))];
        assert_eq!(
            choose_admitted(&p, ms(50)),
            Choice::Fits {
                index: 2,
                predicted: Some(ms(8))
            }
        );
    }

    #[test]
    fn none_fits_names_the_fastest() {
        let p = [Some(ms(40)), Some(ms(9)), Some(ms(15))];
        assert_eq!(
            choose_admitted(&p, ms(5)),
            Choice::NoneFits {
                fastest: 1,
                predicted: ms(9)
            }
        );
    }

    #[test]
    fn an_unmeasured_variant_gets_the_benefit_of_the_doubt() {
        let p = [Some(ms(400)), None, Some(ms(1))];
        assert_eq!(
            choose_admitted(&p, ms(50)),
            Choice::Fits {
                index: 1,
                predicted: None
            }
        );
    }

    /// [`choose`] with every candidate admitting.
    fn choose_admitted(predictions: &[Option<Duration>], budget: Duration) -> Choice {
        choose(predictions, budget, |_| true)
    }

    #[test]
    fn a_fitting_variant_whose_admission_refuses_is_passed_over() {
        let p = [Some(ms(30)), Some(ms(12)), Some(ms(5))];
        let mut asked = Vec::new();
        let choice = choose(&p, ms(50), |i| {
            asked.push(i);
            i != 0
        });
        assert_eq!(
            choice,
            Choice::Fits {
                index: 1,
                predicted: Some(ms(12))
            }
        );
        assert_eq!(
            asked,
            [0, 1],
            "admission is asked of the fitting candidates in order, and no further"
        );
        let p = [Some(ms(80)), Some(ms(30)), Some(ms(20))];
        let mut asked = Vec::new();
        choose(&p, ms(50), |i| {
            asked.push(i);
            true
        });
        assert_eq!(asked, [1], "a candidate over budget is not asked");
    }

    #[test]
    fn when_every_fitting_variant_refuses_its_first_refusal_is_the_answer() {
        let p = [Some(ms(80)), Some(ms(30)), Some(ms(20)), Some(ms(70))];
        assert_eq!(choose(&p, ms(50), |_| false), Choice::Refused { index: 1 });
        let unmeasured = [None, Some(ms(90))];
        assert_eq!(
            choose(&unmeasured, ms(50), |_| false),
            Choice::Refused { index: 0 },
            "an unmeasured variant's admission is asked too"
        );
        assert_eq!(
            choose(&[Some(ms(80)), Some(ms(60))], ms(50), |_| false),
            Choice::NoneFits {
                fastest: 1,
                predicted: ms(60)
            },
            "with none fitting, the refusal is over budget"
        );
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(1)
    }

    #[test]
    fn the_margin_covers_a_high_percentile_of_recent_overruns() {
        let t0 = Instant::now();
        let mut margin = Margin::default();
        assert_eq!(margin.at(t0), Duration::ZERO, "nothing observed yet");
        for _ in 0..MARGIN_WINDOW {
            margin.observe(t0, ms(20), ms(15)); // early: no margin needed
        }
        assert_eq!(
            margin.at(t0),
            Duration::ZERO,
            "early answers never make it negative"
        );
        // The overruns past the percentile: two in 512 at the 99.5th.
        let ignored = MARGIN_WINDOW - (MARGIN_QUANTILE * MARGIN_WINDOW as f64).ceil() as usize;
        assert_eq!(ignored, 2);
        for _ in 0..ignored {
            margin.observe(t0, ms(20), ms(60));
        }
        assert_eq!(
            margin.at(t0),
            Duration::ZERO,
            "two overruns in 512 are past the 99.5th percentile"
        );
        margin.observe(t0, ms(20), ms(32));
        assert!(
            close(margin.at(t0), ms(12)),
            "three are not: the smallest of them is the margin"
        );
        for _ in 0..MARGIN_WINDOW {
            margin.observe(t0, ms(20), ms(25));
        }
        assert!(close(margin.at(t0), ms(5)), "old answers leave the window");
    }

    #[test]
    fn a_margin_comes_back_down_when_its_variant_is_no_longer_chosen() {
        let t0 = Instant::now();
        let mut margin = Margin::default();
        for _ in 0..10 {
            margin.observe(t0, ms(10), ms(80));
        }
        assert!(close(margin.at(t0 + Duration::from_secs(1)), ms(70)));
        let last_seen = t0 + MARGIN_MAX_AGE;
        assert!(
            close(margin.at(last_seen), ms(70)),
            "the answers still count"
        );
        assert!(
            margin.at(last_seen + ms(1)) > ms(69),
            "they expired: no snap to nothing"
        );
        assert!(
            close(margin.at(last_seen + MARGIN_MAX_AGE / 2), ms(35)),
            "half faded"
        );
        assert_eq!(
            margin.at(last_seen + MARGIN_MAX_AGE),
            Duration::ZERO,
            "no answers for eight seconds: the variant is predicted afresh"
        );
    }

    #[test]
    fn a_few_answers_raise_a_fading_margin_but_do_not_lower_it() {
        let t0 = Instant::now();
        let mut margin = Margin::default();
        margin.observe(t0, ms(10), ms(30));
        assert!(close(margin.at(t0), ms(20)));
        let later = t0 + MARGIN_MAX_AGE / 2;
        margin.observe(later, ms(10), ms(10));
        assert!(
            close(margin.at(later), ms(20)),
            "a punctual answer among few does not undo the overrun"
        );
        margin.observe(later, ms(10), ms(50));
        assert!(
            close(margin.at(later), ms(40)),
            "a larger overrun raises it"
        );
        let last_seen = later + MARGIN_MAX_AGE;
        assert!(close(margin.at(last_seen), ms(40)));
        assert!(
            close(margin.at(last_seen + MARGIN_MAX_AGE / 4), ms(30)),
            "then fades from there"
        );
    }

    #[test]
    fn a_margin_fades_when_its_answers_thin_out() {
        let t0 = Instant::now();
        let mut margin = Margin::default();
        for _ in 0..SETTLED_ANSWERS {
            margin.observe(t0, ms(10), ms(40));
        }
        assert!(close(margin.at(t0), ms(30)), "settled");
        let last_settled = t0 + MARGIN_MAX_AGE;
        assert!(close(margin.at(last_settled), ms(30)), "still settled");
        let gone = last_settled + ms(1);
        assert!(
            margin.at(gone) > ms(29),
            "every answer expired: about the settled margin, not nothing"
        );
        margin.observe(gone, ms(10), ms(12));
        assert!(
            close(margin.at(last_settled + MARGIN_MAX_AGE / 2), ms(15)),
            "half faded, above what a few answers give"
        );
        assert!(
            close(margin.at(last_settled + MARGIN_MAX_AGE), ms(2)),
            "faded: the few answers' own margin"
        );
    }

    #[test]
    fn other_models_backlogs_delay_a_request_at_most_by_its_own_work() {
        assert_eq!(shared_cpu_latency(ms(20), []), ms(20), "alone on the CPUs");
        // 5 ms of another model's work runs beside it in full; of 100 ms, only as much as its own 20 ms
        // runs before it is done.
        assert_eq!(shared_cpu_latency(ms(20), [ms(5), ms(100)]), ms(45));
        assert_eq!(
            shared_cpu_latency(ms(20), [Duration::ZERO; 3]),
            ms(20),
            "idle models cost nothing"
        );
    }

    #[test]
    fn the_decode_backlog_counts_each_image_until_its_guard_drops() {
        let backlog = Arc::new(DecodeBacklog::default());
        let first = backlog.add(ms(3));
        let second = backlog.add(ms(5));
        assert_eq!(backlog.total(), ms(8));
        drop(first);
        assert_eq!(backlog.total(), ms(5));
        drop(second);
        assert_eq!(backlog.total(), Duration::ZERO);
    }
}
