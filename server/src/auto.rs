//! `model=auto`: the best variant whose predicted end-to-end latency fits the request's budget.
//!
//! The router gives the task's ladder, best quality first (`make models` ranks it from each variant's
//! published or measured quality). Each variant's batcher predicts the time a request sent to it now would
//! take: the wait behind the requests it has admitted, its own run, and decoding this image, which
//! [`DecodeCost`] predicts from the image's size. The first variant whose prediction fits is chosen; when
//! none does, the request is refused at once, before anything is queued, so that no work is spent on an
//! answer that would come too late. Pure logic, no clock and no threads: every rule is unit tested below.
use std::time::Duration;

/// Weight of the newest observation in the decode cost's decaying average: about the last twenty images.
const NEWEST_WEIGHT: f64 = 0.05;

/// What the router decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// The candidate at `index` fits; `predicted` is `None` for a variant that has not run a batch yet (it is
    /// given the benefit of the doubt: the warm-up runs one, so this happens only in the first instants).
    Fits {
        index: usize,
        predicted: Option<Duration>,
    },
    /// No candidate fits; the fastest predicted and its prediction, for the client's error message.
    NoneFits { fastest: usize, predicted: Duration },
}

/// The first candidate (best quality first) whose prediction fits `budget`. `predictions` is never empty.
pub fn choose(predictions: &[Option<Duration>], budget: Duration) -> Choice {
    let mut fastest: Option<(usize, Duration)> = None;
    for (index, predicted) in predictions.iter().enumerate() {
        match *predicted {
            None => {
                return Choice::Fits {
                    index,
                    predicted: None,
                };
            }
            Some(p) if p <= budget => {
                return Choice::Fits {
                    index,
                    predicted: Some(p),
                };
            }
            Some(p) => {
                if fastest.is_none_or(|(_, best)| p < best) {
                    fastest = Some((index, p));
                }
            }
        }
    }
    let (fastest, predicted) = fastest.unwrap_or_default();
    Choice::NoneFits { fastest, predicted }
}

/// Seconds of decoding per megapixel of the client's image, learned from the requests served (decoding,
/// resizing and normalising, on the decode pool or on a model thread); the first image observed (the start-up
/// sample, or the first request's when there was none) seeds it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeCost {
    seconds_per_megapixel: Option<f64>,
}

impl DecodeCost {
    pub fn observe(&mut self, pixels: u64, took: Duration) {
        if pixels == 0 {
            return;
        }
        let sample = per_megapixel(pixels, took);
        self.seconds_per_megapixel = Some(match self.seconds_per_megapixel {
            Some(avg) => avg + NEWEST_WEIGHT * (sample - avg),
            None => sample,
        });
    }

    /// Expected decoding time of an image of `pixels`: zero until an image was observed.
    pub fn predict(&self, pixels: u64) -> Duration {
        let per_megapixel = self.seconds_per_megapixel.unwrap_or_default();
        Duration::from_secs_f64(per_megapixel * pixels as f64 / 1e6)
    }
}

fn per_megapixel(pixels: u64, took: Duration) -> f64 {
    took.as_secs_f64() / (pixels.max(1) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_best_variant_that_fits_wins() {
        let p = [Some(ms(30)), Some(ms(12)), Some(ms(5))];
        assert_eq!(
            choose(&p, ms(50)),
            Choice::Fits {
                index: 0,
                predicted: Some(ms(30))
            }
        );
        assert_eq!(
            choose(&p, ms(20)),
            Choice::Fits {
                index: 1,
                predicted: Some(ms(12))
            }
        );
        assert_eq!(
            choose(&p, ms(12)),
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
            choose(&p, ms(50)),
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
            choose(&p, ms(5)),
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
            choose(&p, ms(50)),
            Choice::Fits {
                index: 1,
                predicted: None
            }
        );
    }

    #[test]
    fn decode_cost_scales_with_pixels_and_follows_new_images() {
        let mut cost = DecodeCost::default();
        assert_eq!(
            cost.predict(1_000_000),
            Duration::ZERO,
            "nothing observed yet"
        );
        cost.observe(1_000_000, ms(4));
        assert_eq!(cost.predict(2_000_000), ms(8), "the first image seeds it");
        assert_eq!(cost.predict(0), Duration::ZERO);
        for _ in 0..200 {
            cost.observe(500_000, ms(1)); // 2 ms per megapixel
        }
        let per_mp = cost.predict(1_000_000).as_secs_f64() * 1e3;
        assert!((per_mp - 2.0).abs() < 0.01, "{per_mp}");
        cost.observe(0, ms(100));
        assert!(
            (cost.predict(1_000_000).as_secs_f64() * 1e3 - per_mp).abs() < 1e-9,
            "empty images are ignored"
        );
    }
}
