//! What decoding a client's image will cost, learned from the images decoded so far: `model=auto` adds it to
//! every candidate's prediction, and the decode pool's backlog is counted in it.
//!
//! Time per pixel alone was off here (docs/auto.md, session 18): a JPEG's entropy decoding costs by its
//! compressed bytes, and the rest (the scaled IDCT, the resize, the normalising) by its pixels, so the test
//! set's 0.5 MP, 597 KB parrot decodes slower than the 0.9 MP, 105 KB 720p cat (5.4 against 2.1 ms with
//! libjpeg-turbo on one thread). The per-pixel rate predicted 7.4–8.8 ms of decoding for the requests sent to
//! the small variants, whose decoding took 3.8–4.7 ms. So the cost is a linear
//! function of the compressed size, the pixel count and a fixed part, fitted by least squares over the latest
//! [`WINDOW`] images, each coefficient kept at zero or above (a negative one would promise a free decode to an
//! image unlike the recent ones). Pure logic: unit tested below.
use std::{collections::VecDeque, time::Duration};

/// How many of the latest images the fit is taken from: enough to hold every size a client mixes, few enough to
/// follow a change in the machine's speed within a second of traffic.
const WINDOW: usize = 64;

/// Keeps the normal equations solvable when the recent images do not tell the parts apart (all the same
/// image, say); far below any real feature's weight.
const RIDGE: f64 = 1e-9;

/// One image's features: megabytes compressed, megapixels, and 1 for the fixed part.
type Features = [f64; 3];

/// The subsets of features the fit tries, fewest first, pixels before bytes: with a single image (the start-up
/// sample) several fit exactly, and the first wins, so a lone sample scales by pixels.
const SUBSETS: [&[usize]; 7] = [&[1], &[0], &[2], &[1, 2], &[0, 2], &[0, 1], &[0, 1, 2]];

#[derive(Debug, Clone, Default)]
pub struct DecodeCost {
    /// The latest images' features and decoding time in seconds, oldest first.
    recent: VecDeque<(Features, f64)>,
    /// Seconds per megabyte, per megapixel, and fixed; `None` until an image was observed.
    fit: Option<Features>,
}

impl DecodeCost {
    /// An image of `bytes` compressed and `pixels` took `took` to prepare (decoding, resizing, normalising;
    /// not the wait for a thread).
    pub fn observe(&mut self, bytes: usize, pixels: u64, took: Duration) {
        if pixels == 0 {
            return;
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent
            .push_back((features(bytes, pixels), took.as_secs_f64()));
        self.fit = fit(&self.recent);
    }

    /// Expected preparation time of an image of `bytes` and `pixels`: zero until an image was observed.
    pub fn predict(&self, bytes: usize, pixels: u64) -> Duration {
        let Some(fit) = self.fit else {
            return Duration::ZERO;
        };
        if pixels == 0 {
            return Duration::ZERO;
        }
        let seconds: f64 = fit
            .iter()
            .zip(features(bytes, pixels))
            .map(|(c, x)| c * x)
            .sum();
        Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
    }
}

fn features(bytes: usize, pixels: u64) -> Features {
    [bytes as f64 / 1e6, pixels as f64 / 1e6, 1.0]
}

/// Least squares with every coefficient at zero or above: the best exact solution over each subset of the
/// features whose coefficients all come out non-negative (with three features, trying all seven subsets is
/// the whole of the non-negative least-squares problem's active-set search).
fn fit(samples: &VecDeque<(Features, f64)>) -> Option<Features> {
    let total: f64 = samples.iter().map(|(_, y)| y * y).sum();
    let mut best: Option<(f64, Features)> = None;
    for subset in SUBSETS {
        let Some(coefficients) = solve(samples, subset) else {
            continue;
        };
        if coefficients.iter().any(|&c| c < 0.0) {
            continue;
        }
        let mut full = [0.0; 3];
        for (&i, c) in subset.iter().zip(coefficients) {
            full[i] = c;
        }
        let error: f64 = samples
            .iter()
            .map(|(x, y)| {
                let predicted: f64 = x.iter().zip(full).map(|(x, c)| x * c).sum();
                (y - predicted).powi(2)
            })
            .sum();
        // Strictly better by more than rounding: ties go to the subset tried first (fewer features).
        if best.is_none_or(|(e, _)| error < e - 1e-9 * total) {
            best = Some((error, full));
        }
    }
    best.map(|(_, full)| full)
}

/// The least-squares coefficients of the features in `subset` (normal equations, Gaussian elimination);
/// `None` when they are singular.
fn solve(samples: &VecDeque<(Features, f64)>, subset: &[usize]) -> Option<Vec<f64>> {
    let n = subset.len();
    // The augmented matrix [XᵀX + ridge | Xᵀy].
    let mut m = vec![vec![0.0; n + 1]; n];
    for (x, y) in samples {
        for (r, &i) in subset.iter().enumerate() {
            for (c, &j) in subset.iter().enumerate() {
                m[r][c] += x[i] * x[j];
            }
            m[r][n] += x[i] * y;
        }
    }
    for (r, row) in m.iter_mut().enumerate() {
        row[r] += RIDGE;
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-15 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (value, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *value -= factor * p;
                }
            }
        }
    }
    Some((0..n).map(|r| m[r][n] / m[r][r]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    fn predicted_ms(cost: &DecodeCost, bytes: usize, pixels: u64) -> f64 {
        cost.predict(bytes, pixels).as_secs_f64() * 1e3
    }

    #[test]
    fn nothing_observed_predicts_nothing_and_a_lone_image_scales_by_pixels() {
        let mut cost = DecodeCost::default();
        assert_eq!(cost.predict(100_000, 1_000_000), Duration::ZERO);
        cost.observe(300_000, 1_000_000, ms(4.0));
        assert!((predicted_ms(&cost, 300_000, 2_000_000) - 8.0).abs() < 1e-6);
        assert_eq!(cost.predict(300_000, 0), Duration::ZERO);
    }

    /// Images whose time is 6 ms per MB + 2 ms per MP + 0.3 ms: the fit finds the three parts, and so tells a
    /// small heavy image from a large light one, which a per-pixel rate cannot.
    #[test]
    fn bytes_pixels_and_a_fixed_part_are_told_apart() {
        let truth =
            |bytes: usize, pixels: u64| 6.0 * bytes as f64 / 1e6 + 2.0 * pixels as f64 / 1e6 + 0.3;
        let images = [
            (30_300, 156_000),
            (104_837, 921_600),
            (54_472, 720_000),
            (596_977, 475_648),
            (16_741, 66_049),
        ];
        let mut cost = DecodeCost::default();
        for _ in 0..10 {
            for (bytes, pixels) in images {
                cost.observe(bytes, pixels, ms(truth(bytes, pixels)));
            }
        }
        for (bytes, pixels) in images {
            let p = predicted_ms(&cost, bytes, pixels);
            assert!(
                (p - truth(bytes, pixels)).abs() < 1e-3,
                "{bytes} B, {pixels} px: {p}"
            );
        }
        // The parrot (0.5 MP, 597 KB) costs more than the 720p cat (0.9 MP, 105 KB).
        assert!(predicted_ms(&cost, 596_977, 475_648) > predicted_ms(&cost, 104_837, 921_600));
    }

    #[test]
    fn no_part_is_negative() {
        // Bigger files decoding faster (noise in reverse): a plain fit would give bytes a negative weight.
        let mut cost = DecodeCost::default();
        cost.observe(100_000, 1_000_000, ms(4.0));
        cost.observe(500_000, 1_000_000, ms(3.0));
        cost.observe(100_000, 200_000, ms(1.0));
        assert!(
            cost.fit.unwrap().iter().all(|&c| c >= 0.0),
            "{:?}",
            cost.fit
        );
        assert!(predicted_ms(&cost, 5_000_000, 1_000) >= 0.0);
    }

    #[test]
    fn only_the_latest_images_count_and_empty_ones_are_ignored() {
        let mut cost = DecodeCost::default();
        for _ in 0..WINDOW {
            cost.observe(100_000, 1_000_000, ms(10.0));
        }
        // The machine got twice as fast: a window later, the old images are forgotten.
        for _ in 0..WINDOW {
            cost.observe(100_000, 1_000_000, ms(5.0));
        }
        assert!((predicted_ms(&cost, 100_000, 1_000_000) - 5.0).abs() < 1e-6);
        cost.observe(100_000, 0, ms(100.0));
        assert!((predicted_ms(&cost, 100_000, 1_000_000) - 5.0).abs() < 1e-6);
    }
}
