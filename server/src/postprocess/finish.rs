//! Finishing an answer: what the model thread decoded, turned into the client's terms. Labels on detections,
//! boxes in the client's pixels, and the class map at the client's size with its class shares and its
//! encoding. Every front end gets these types from here and only converts them to its wire format.
use serde::Serialize;

use super::{BoxXyxy, ClassMap, RawDetection, label, segment};
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub class_index: u32,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BoxXyxy,
    pub box_normalized: BoxXyxy,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassFraction {
    pub index: u32,
    pub label: String,
    pub fraction: f32,
}

#[derive(Debug, Clone)]
pub enum Mask {
    Rle {
        width: u32,
        height: u32,
        values: Vec<u32>,
        lengths: Vec<u32>,
    },
    Png(Vec<u8>),
}

/// A segmentation answer: each class's share of the image, and the mask.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub classes: Vec<ClassFraction>,
    pub mask: Mask,
}

/// Labels the detections and scales their normalised boxes to the client's `width` x `height` image.
pub fn detections(
    raw: Vec<RawDetection>,
    width: u32,
    height: u32,
    labels: &[String],
) -> Vec<Detection> {
    let (w, h) = (width as f32, height as f32);
    raw.into_iter()
        .map(|d| Detection {
            class_index: d.class_index,
            label: label(labels, d.class_index as usize),
            score: d.score,
            bbox: BoxXyxy {
                x1: d.bbox.x1 * w,
                y1: d.bbox.y1 * h,
                x2: d.bbox.x2 * w,
                y2: d.bbox.y2 * h,
            },
            box_normalized: d.bbox,
        })
        .collect()
}

/// The bytes [`segmentation`] allocates for a `width` x `height` image: the caller reserves them first.
pub fn segmentation_cost(map: &ClassMap, width: u32, height: u32) -> u64 {
    segment::finish_cost(map, width, height)
}

/// The class map resized to the client's `width` x `height` image, its class shares, and the mask as PNG
/// or run lengths.
pub fn segmentation(
    map: &ClassMap,
    width: u32,
    height: u32,
    png: bool,
    labels: &[String],
) -> Result<Segmentation> {
    let full = segment::resize_nearest(map, width, height);
    let classes = segment::fractions(&full.classes)
        .into_iter()
        .map(|(index, fraction)| ClassFraction {
            index,
            label: label(labels, index as usize),
            fraction,
        })
        .collect();
    let mask = if png {
        Mask::Png(segment::to_png(&full)?)
    } else {
        let (values, lengths) = segment::run_length(&full.classes);
        Mask::Rle {
            width,
            height,
            values,
            lengths,
        }
    };
    Ok(Segmentation { classes, mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_scaled_to_the_clients_pixels_and_labelled() {
        let raw = vec![RawDetection {
            class_index: 1,
            score: 0.9,
            bbox: BoxXyxy {
                x1: 0.25,
                y1: 0.5,
                x2: 0.75,
                y2: 1.0,
            },
        }];
        let labels = vec!["background".to_string(), "person".to_string()];
        let d = &detections(raw, 640, 480, &labels)[0];
        assert_eq!(d.label, "person");
        assert_eq!(
            (d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2),
            (160.0, 240.0, 480.0, 480.0)
        );
        assert_eq!(d.box_normalized.x2, 0.75);
    }

    #[test]
    fn a_segmentation_is_at_the_clients_size() {
        let map = ClassMap {
            width: 2,
            height: 1,
            classes: vec![0, 15],
        };
        let labels: Vec<String> = (0..21).map(|i| format!("c{i}")).collect();
        let s = segmentation(&map, 4, 2, false, &labels).unwrap();
        let Mask::Rle {
            width,
            height,
            values,
            lengths,
        } = s.mask
        else {
            panic!("RLE asked for");
        };
        assert_eq!((width, height), (4, 2));
        assert_eq!(lengths.iter().sum::<u32>(), 8);
        assert_eq!(values, vec![0, 15, 0, 15]);
        assert_eq!(s.classes.len(), 2);
        assert_eq!(s.classes.iter().map(|c| c.fraction).sum::<f32>(), 1.0);
        assert!(matches!(
            segmentation(&map, 4, 2, true, &labels).unwrap().mask,
            Mask::Png(_)
        ));
    }
}
