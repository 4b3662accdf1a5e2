//! Detection: SSD box decoding against anchors (both codings of REPOSITORY.md), per-class greedy NMS, and
//! the pass-through for graphs that already ran NMS.
use super::{BoxXyxy, RawDetection, Row, TaskOptions, bad_output, classify::sigmoid};
use crate::{
    error::Result,
    repository::{Activation, BoxCoding, OutputSpec},
};

/// Decodes raw SSD outputs `[scores [A,C], boxes [A,4], anchors [A,4]]` into final detections.
pub fn decode_anchors(
    spec: &OutputSpec,
    outputs: &[Row<'_>],
    options: TaskOptions,
) -> Result<Vec<RawDetection>> {
    let OutputSpec::SsdAnchors {
        score_activation,
        box_coding,
        box_scales,
        background_index,
        ..
    } = spec
    else {
        return Err(bad_output("not an ssd_anchors model"));
    };
    let TaskOptions::Detect {
        score_threshold,
        iou_threshold,
        max_detections,
    } = options
    else {
        return Err(bad_output("not detection options"));
    };
    let [scores, boxes, anchors] = outputs else {
        return Err(bad_output("ssd_anchors needs three outputs"));
    };
    let (num_anchors, num_classes) = (scores.dim(0), scores.dim(1));
    let scores = scores
        .as_f32()
        .ok_or_else(|| bad_output("scores are not float32"))?;
    let boxes = boxes
        .as_f32()
        .ok_or_else(|| bad_output("boxes are not float32"))?;
    let anchors = anchors
        .as_f32()
        .ok_or_else(|| bad_output("anchors are not float32"))?;
    if scores.len() != num_anchors * num_classes
        || boxes.len() < num_anchors * 4
        || anchors.len() < num_anchors * 4
    {
        return Err(bad_output(
            "scores, boxes and anchors disagree on the anchor count",
        ));
    }
    let mut candidates = Vec::new();
    let mut probabilities = vec![0f32; num_classes];
    for a in 0..num_anchors {
        let row = &scores[a * num_classes..(a + 1) * num_classes];
        match score_activation {
            Activation::None => probabilities.copy_from_slice(row),
            Activation::Sigmoid => probabilities
                .iter_mut()
                .zip(row)
                .for_each(|(p, &x)| *p = sigmoid(x)),
            Activation::Softmax => probabilities = super::classify::softmax(row),
        }
        let mut decoded = None;
        for (c, &score) in probabilities.iter().enumerate() {
            if Some(c) == *background_index || score < score_threshold {
                continue;
            }
            let bbox = *decoded.get_or_insert_with(|| {
                let enc: [f32; 4] = boxes[a * 4..a * 4 + 4].try_into().unwrap_or_default();
                let anc: [f32; 4] = anchors[a * 4..a * 4 + 4].try_into().unwrap_or_default();
                decode_box(*box_coding, enc, anc, *box_scales)
            });
            candidates.push(RawDetection {
                class_index: c as u32,
                score,
                bbox,
            });
        }
    }
    Ok(nms_per_class(candidates, iou_threshold, max_detections))
}

/// Decodes one box to normalised corners, clipped to the image.
pub fn decode_box(coding: BoxCoding, enc: [f32; 4], anchor: [f32; 4], scales: [f32; 4]) -> BoxXyxy {
    let b = match coding {
        BoxCoding::CornerOffset => {
            // anchors [x1, y1, x2, y2]; encodings are corner offsets in units of the anchor's size.
            let (w, h) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
            BoxXyxy {
                x1: enc[0] * w + anchor[0],
                y1: enc[1] * h + anchor[1],
                x2: enc[2] * w + anchor[2],
                y2: enc[3] * h + anchor[3],
            }
        }
        BoxCoding::CenterSize => {
            // anchors [yc, xc, h, w]; encodings [ty, tx, th, tw] (TF object detection API).
            let [yca, xca, ha, wa] = anchor;
            let yc = enc[0] / scales[0] * ha + yca;
            let xc = enc[1] / scales[1] * wa + xca;
            let h = (enc[2] / scales[2]).exp() * ha;
            let w = (enc[3] / scales[3]).exp() * wa;
            BoxXyxy {
                x1: xc - w / 2.0,
                y1: yc - h / 2.0,
                x2: xc + w / 2.0,
                y2: yc + h / 2.0,
            }
        }
    };
    clip(b)
}

fn clip(b: BoxXyxy) -> BoxXyxy {
    let c = |v: f32| v.clamp(0.0, 1.0);
    BoxXyxy {
        x1: c(b.x1),
        y1: c(b.y1),
        x2: c(b.x2),
        y2: c(b.y2),
    }
}

pub fn iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let area = |r: &BoxXyxy| (r.x2 - r.x1).max(0.0) * (r.y2 - r.y1).max(0.0);
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Greedy NMS within each class; the survivors of all classes, best first, at most `max`.
pub fn nms_per_class(
    mut candidates: Vec<RawDetection>,
    iou_threshold: f32,
    max: usize,
) -> Vec<RawDetection> {
    candidates.sort_by(|a, b| {
        a.class_index
            .cmp(&b.class_index)
            .then(b.score.total_cmp(&a.score))
    });
    let mut kept: Vec<RawDetection> = Vec::new();
    let mut class_start = 0;
    for candidate in candidates {
        if kept
            .last()
            .is_some_and(|k| k.class_index != candidate.class_index)
        {
            class_start = kept.len();
        }
        if kept[class_start..]
            .iter()
            .all(|k| iou(&k.bbox, &candidate.bbox) <= iou_threshold)
        {
            kept.push(candidate);
        }
    }
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    kept.truncate(max);
    kept
}

/// Graph-side NMS outputs `[boxes [K,4] y1x1y2x2, classes [K], scores [K], count?]` → detections.
pub fn pass_through(outputs: &[Row<'_>], score_threshold: f32, max: usize) -> Vec<RawDetection> {
    let (boxes, classes, scores) = (&outputs[0].values, &outputs[1].values, &outputs[2].values);
    let mut k = scores.len().min(classes.len()).min(boxes.len() / 4);
    if let Some(count) = outputs.get(3) {
        k = k.min(count.values.f32_at(0).max(0.0) as usize);
    }
    let mut out: Vec<RawDetection> = (0..k)
        .filter(|&i| scores.f32_at(i) >= score_threshold)
        .map(|i| RawDetection {
            class_index: classes.f32_at(i).max(0.0) as u32,
            score: scores.f32_at(i),
            bbox: clip(BoxXyxy {
                y1: boxes.f32_at(i * 4),
                x1: boxes.f32_at(i * 4 + 1),
                y2: boxes.f32_at(i * 4 + 2),
                x2: boxes.f32_at(i * 4 + 3),
            }),
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_index: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> RawDetection {
        RawDetection {
            class_index,
            score,
            bbox: BoxXyxy { x1, y1, x2, y2 },
        }
    }

    #[test]
    fn corner_offset_matches_the_reference_model() {
        // Offsets are in anchor widths/heights: x1 = 0.1 + 0.5 * 0.4, y1 = 0.2 - 0.25 * 0.4, ...
        let anchor = [0.1, 0.2, 0.5, 0.6];
        let b = decode_box(
            BoxCoding::CornerOffset,
            [0.5, -0.25, 0.25, 0.0],
            anchor,
            [10.0, 10.0, 5.0, 5.0],
        );
        assert!((b.x1 - 0.3).abs() < 1e-6 && (b.y1 - 0.1).abs() < 1e-6);
        assert!((b.x2 - 0.6).abs() < 1e-6 && (b.y2 - 0.6).abs() < 1e-6);
    }

    #[test]
    fn center_size_decodes_and_zero_encoding_is_the_anchor() {
        let anchor = [0.5, 0.4, 0.2, 0.4]; // yc, xc, h, w
        let b = decode_box(
            BoxCoding::CenterSize,
            [0.0; 4],
            anchor,
            [10.0, 10.0, 5.0, 5.0],
        );
        assert!((b.x1 - 0.2).abs() < 1e-6 && (b.x2 - 0.6).abs() < 1e-6);
        assert!((b.y1 - 0.4).abs() < 1e-6 && (b.y2 - 0.6).abs() < 1e-6);
        // th = 5 * ln 2 doubles the height; ty = 10 * 0.5 moves the centre half an anchor height.
        let b = decode_box(
            BoxCoding::CenterSize,
            [5.0, 0.0, 5.0 * 2f32.ln(), 0.0],
            anchor,
            [10.0, 10.0, 5.0, 5.0],
        );
        assert!(
            (b.y1 - 0.4).abs() < 1e-5 && (b.y2 - 0.8).abs() < 1e-5,
            "{b:?}"
        );
    }

    #[test]
    fn boxes_are_clipped_to_the_image() {
        let b = decode_box(
            BoxCoding::CornerOffset,
            [-1.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0, 1.0],
            [1.0; 4],
        );
        assert_eq!((b.x1, b.x2), (0.0, 1.0));
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BoxXyxy {
            x1: 0.0,
            y1: 0.0,
            x2: 1.0,
            y2: 1.0,
        };
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(
            iou(
                &a,
                &BoxXyxy {
                    x1: 2.0,
                    y1: 2.0,
                    x2: 3.0,
                    y2: 3.0
                }
            ),
            0.0
        );
        let half = BoxXyxy {
            x1: 0.5,
            y1: 0.0,
            x2: 1.5,
            y2: 1.0,
        };
        assert!((iou(&a, &half) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let out = nms_per_class(
            vec![
                det(1, 0.9, 0.0, 0.0, 1.0, 1.0),
                det(1, 0.8, 0.05, 0.0, 1.0, 1.0), // same class, overlaps: suppressed
                det(2, 0.7, 0.05, 0.0, 1.0, 1.0), // other class: kept
                det(1, 0.6, 2.0, 2.0, 3.0, 3.0),  // same class, far: kept
            ],
            0.5,
            10,
        );
        let scores: Vec<f32> = out.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7, 0.6]);
    }

    #[test]
    fn nms_caps_the_count_keeping_the_best() {
        let many = (0..10)
            .map(|i| det(i, i as f32 / 10.0, 0.0, 0.0, 1.0, 1.0))
            .collect();
        let out = nms_per_class(many, 0.5, 3);
        assert_eq!(
            out.iter().map(|d| d.class_index).collect::<Vec<_>>(),
            vec![9, 8, 7]
        );
    }
}
