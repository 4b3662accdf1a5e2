//! Request options and their validation, shared by HTTP (query strings) and gRPC (message fields), so both
//! protocols accept and refuse exactly the same values with the same messages.
use std::time::Duration;

use crate::{
    error::{Error, Result},
    postprocess::TaskOptions,
    routing::{AUTO, Selector},
};

pub const DEFAULT_TOP_K: u32 = 5;
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.4;
pub const DEFAULT_IOU_THRESHOLD: f32 = 0.5;
pub const DEFAULT_MAX_DETECTIONS: u32 = 100;
const MAX_TOP_K: u32 = 1000;
const MAX_DETECTIONS: u32 = 1000;
/// The longest latency budget `model=auto` takes: ten minutes, past any deadline a client would set.
const MAX_LATENCY_BUDGET_MS: u32 = 600_000;
/// Dataset names are short identifiers (`imagenet`, `inat_birds`); longer ones are refused, not echoed.
const MAX_DATASET_CHARS: usize = 64;

/// A request's options once validated, from a query string or a gRPC message: which variant, the task's
/// options, and (segmentation) whether the mask is wanted as PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOptions {
    pub selector: Selector,
    pub task: TaskOptions,
    pub png: bool,
}

fn bad(name: &'static str, reason: impl Into<String>) -> Error {
    Error::BadOption {
        name,
        reason: reason.into(),
    }
}

pub fn classify(top_k: Option<u32>) -> Result<TaskOptions> {
    let top_k = top_k.unwrap_or(DEFAULT_TOP_K);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(bad("top_k", format!("{top_k} is not in 1..={MAX_TOP_K}")));
    }
    Ok(TaskOptions::Classify {
        top_k: top_k as usize,
    })
}

pub fn detect(
    score_threshold: Option<f32>,
    iou_threshold: Option<f32>,
    max_detections: Option<u32>,
) -> Result<TaskOptions> {
    let unit = |name: &'static str, v: f32| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(bad(name, format!("{v} is not in 0..=1")))
        }
    };
    let max = max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS);
    if !(1..=MAX_DETECTIONS).contains(&max) {
        return Err(bad(
            "max_detections",
            format!("{max} is not in 1..={MAX_DETECTIONS}"),
        ));
    }
    Ok(TaskOptions::Detect {
        score_threshold: unit(
            "score_threshold",
            score_threshold.unwrap_or(DEFAULT_SCORE_THRESHOLD),
        )?,
        iou_threshold: unit(
            "iou_threshold",
            iou_threshold.unwrap_or(DEFAULT_IOU_THRESHOLD),
        )?,
        max_detections: max as usize,
    })
}

/// The segmentation mask's encoding, by name: `json` (HTTP's name) or `rle` (gRPC's) for run lengths, or
/// `png`. Returns whether it is PNG.
pub fn mask_format(name: &str) -> Result<bool> {
    match name.to_ascii_lowercase().as_str() {
        "json" | "rle" => Ok(false),
        "png" => Ok(true),
        _ => Err(bad("format", format!("{name:?} is not json, rle or png"))),
    }
}

/// Checks the routing attributes; an empty model name, precision or dataset means "not set". A latency
/// budget is read only with `model=auto`, which picks the variant by it.
pub fn selector(
    model: Option<String>,
    width: Option<f32>,
    resolution: Option<u32>,
    precision: Option<String>,
    dataset: Option<String>,
    latency_budget_ms: Option<u32>,
) -> Result<Selector> {
    if let Some(w) = width.filter(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(bad(
            "width",
            format!("{w} is not a positive width multiplier"),
        ));
    }
    if resolution == Some(0) {
        return Err(bad("resolution", "must be positive"));
    }
    let precision = precision.filter(|p| !p.is_empty());
    if let Some(p) = precision
        .as_deref()
        .filter(|p| !matches!(p.to_ascii_lowercase().as_str(), "float32" | "int8"))
    {
        return Err(bad("precision", format!("{p:?} is not float32 or int8")));
    }
    let dataset = dataset.filter(|d| !d.is_empty());
    if let Some(d) = dataset.as_deref().filter(|d| {
        d.len() > MAX_DATASET_CHARS
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        let shown: String = d.chars().take(MAX_DATASET_CHARS).collect();
        return Err(bad(
            "dataset",
            format!(
                "{shown:?} is not a dataset name (letters, digits, _ and -, at most {MAX_DATASET_CHARS})"
            ),
        ));
    }
    let model = model.filter(|m| !m.is_empty());
    if let Some(budget) = latency_budget_ms {
        if model.as_deref() != Some(AUTO) {
            return Err(bad(
                "latency_budget_ms",
                "is read only with model=auto, which picks the variant that fits it",
            ));
        }
        if !(1..=MAX_LATENCY_BUDGET_MS).contains(&budget) {
            return Err(bad(
                "latency_budget_ms",
                format!("{budget} is not in 1..={MAX_LATENCY_BUDGET_MS}"),
            ));
        }
    }
    Ok(Selector {
        model,
        width,
        resolution,
        precision,
        dataset,
        latency_budget: latency_budget_ms.map(|ms| Duration::from_millis(ms.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(classify(None).unwrap(), TaskOptions::Classify { top_k: 5 });
        assert_eq!(
            detect(None, None, None).unwrap(),
            TaskOptions::Detect {
                score_threshold: 0.4,
                iou_threshold: 0.5,
                max_detections: 100
            }
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(classify(Some(0)).is_err());
        assert!(detect(Some(1.5), None, None).is_err());
        assert!(detect(None, Some(f32::NAN), None).is_err());
        assert!(detect(None, None, Some(0)).is_err());
        assert!(selector(None, Some(-1.0), None, None, None, None).is_err());
        assert!(selector(None, None, None, Some("fp16".into()), None, None).is_err());
        assert!(selector(None, None, None, None, Some("in at".into()), None).is_err());
        assert!(selector(None, None, None, None, Some("x".repeat(65)), None).is_err());
        assert!(mask_format("svg").is_err());
        assert!(mask_format("7").is_err());
    }

    #[test]
    fn an_empty_dataset_is_unset() {
        let named = selector(None, None, None, None, Some("inat_birds".into()), None).unwrap();
        assert_eq!(named.dataset.as_deref(), Some("inat_birds"));
        let empty = selector(None, None, None, None, Some(String::new()), None).unwrap();
        assert_eq!(empty.dataset, None);
    }

    #[test]
    fn mask_formats_by_either_protocols_name() {
        assert!(!mask_format("json").unwrap());
        assert!(!mask_format("rle").unwrap());
        assert!(mask_format("png").unwrap());
        assert!(mask_format("PNG").unwrap());
    }

    #[test]
    fn a_latency_budget_goes_with_auto_only() {
        let auto = || Some(AUTO.to_string());
        let s = selector(auto(), None, None, None, None, Some(40)).unwrap();
        assert_eq!(s.latency_budget, Some(Duration::from_millis(40)));
        assert!(s.is_auto());
        assert!(selector(auto(), None, None, None, None, Some(0)).is_err());
        assert!(selector(auto(), None, None, None, None, Some(600_001)).is_err());
        assert!(selector(None, None, None, None, None, Some(40)).is_err());
        assert!(
            selector(
                Some("mobilenet_v2_1.0_224".into()),
                None,
                None,
                None,
                None,
                Some(40)
            )
            .is_err()
        );
        assert_eq!(
            selector(auto(), None, None, None, None, None)
                .unwrap()
                .latency_budget,
            None
        );
    }
}
