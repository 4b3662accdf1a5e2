//! Classification: optional softmax/sigmoid over the scores, then top-k with labels.
use super::{Class, label};
use crate::repository::Activation;

/// Top `k` classes by score, best first, skipping `background`.
pub fn top_k(
    scores: &[f32],
    activation: Activation,
    background: Option<usize>,
    k: usize,
    labels: &[String],
) -> Vec<Class> {
    let probabilities = match activation {
        Activation::None => std::borrow::Cow::Borrowed(scores),
        Activation::Softmax => std::borrow::Cow::Owned(softmax(scores)),
        Activation::Sigmoid => {
            std::borrow::Cow::Owned(scores.iter().map(|&x| sigmoid(x)).collect())
        }
    };
    let mut order: Vec<usize> = (0..probabilities.len())
        .filter(|&i| Some(i) != background)
        .collect();
    let k = k.min(order.len());
    // Partial selection first: O(n) to find the k best, then sort only those.
    let by_score = |a: &usize, b: &usize| {
        probabilities[*b]
            .total_cmp(&probabilities[*a])
            .then(a.cmp(b))
    };
    if k > 0 && k < order.len() {
        order.select_nth_unstable_by(k - 1, by_score);
    }
    order.truncate(k);
    order.sort_by(by_score);
    // A class with no probability at all is not a guess: listing it would rank it (in index order, among the
    // ties at zero) as if it were one. The quantised softmax of the uint8 graphs gives many exact zeros.
    order.retain(|&i| probabilities[i] > 0.0);
    order
        .into_iter()
        .map(|i| Class {
            index: i as u32,
            label: label(labels, i),
            score: probabilities[i],
        })
        .collect()
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 2.0, 3.0, 10.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[3] > 0.99 && softmax(&[0.0, 1000.0])[1] == 1.0 && p[0] < p[1] && p[1] < p[2]);
    }

    #[test]
    fn top_k_is_sorted_and_labelled() {
        let out = top_k(
            &[0.1, 0.5, 0.2, 0.9, 0.0],
            Activation::None,
            None,
            3,
            &labels(5),
        );
        let idx: Vec<u32> = out.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![3, 1, 2]);
        assert_eq!(out[0].label, "c3");
        assert_eq!(out[0].score, 0.9);
    }

    #[test]
    fn background_is_skipped_and_k_is_capped() {
        let out = top_k(
            &[0.9, 0.05, 0.05],
            Activation::None,
            Some(0),
            10,
            &labels(3),
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|c| c.index != 0));
    }

    #[test]
    fn classes_with_no_probability_are_not_guesses() {
        // A quantised softmax: one sure class, the rest exactly zero.
        let out = top_k(
            &[0.0, 0.0, 0.99609375, 0.0],
            Activation::None,
            None,
            3,
            &labels(4),
        );
        let idx: Vec<u32> = out.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![2]);
    }

    #[test]
    fn softmax_activation_applies() {
        let out = top_k(&[0.0, 0.0], Activation::Softmax, None, 1, &labels(2));
        assert!((out[0].score - 0.5).abs() < 1e-6);
    }
}
