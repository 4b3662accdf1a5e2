//! Post-processing: one request's slice of the batch outputs → the answer, per the variant's `output.kind`.
//!
//! Work is split in two: [`decode`] runs on the model thread while the output tensors are borrowed (top-k,
//! box decoding + NMS, argmax — each shrinks the data a lot, so nothing big is copied out), and [`finish`]
//! runs later, off the model thread (labels, boxes in the client's pixels, the class map resized to the
//! original image and encoded as RLE or PNG on the decode pool), so it does not hold up the next batch.
pub mod classify;
pub mod detect;
pub mod finish;
pub mod segment;

use serde::Serialize;

use crate::repository::OutputSpec;

/// Options of one request, validated by the service before it is queued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskOptions {
    Classify {
        top_k: usize,
    },
    Detect {
        score_threshold: f32,
        iou_threshold: f32,
        max_detections: usize,
    },
    Segment,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    pub index: u32,
    pub label: String,
    pub score: f32,
}

/// Box corners, (x1, y1) top left and (x2, y2) bottom right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoxXyxy {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

/// A detection with its box normalised to 0..1 of the image; pixels are derived once the size is known.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    pub class_index: u32,
    pub score: f32,
    pub bbox: BoxXyxy,
}

/// A class map: one class index per pixel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMap {
    pub width: u32,
    pub height: u32,
    pub classes: Vec<u8>,
}

/// What the model thread hands back for one request.
#[derive(Debug, Clone)]
pub enum Decoded {
    Classes(Vec<Class>),
    Detections(Vec<RawDetection>),
    ClassMap(ClassMap),
}

/// Element data of one output, borrowed from ONNX Runtime.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    U8(&'a [u8]),
}

impl<'a> Values<'a> {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn f32_at(&self, i: usize) -> f32 {
        match self {
            Values::F32(v) => v[i],
            Values::I64(v) => v[i] as f32,
            Values::I32(v) => v[i] as f32,
            Values::U8(v) => f32::from(v[i]),
        }
    }

    /// The sub-range for batch row `row` of `rows`.
    pub fn row(&self, row: usize, rows: usize) -> Values<'a> {
        let n = self.len() / rows.max(1);
        let r = row * n..(row + 1) * n;
        match *self {
            Values::F32(v) => Values::F32(&v[r]),
            Values::I64(v) => Values::I64(&v[r]),
            Values::I32(v) => Values::I32(&v[r]),
            Values::U8(v) => Values::U8(&v[r]),
        }
    }
}

/// One output of one request: its shape without the batch dimension, and its values.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub shape: &'a [i64],
    pub values: Values<'a>,
}

impl Row<'_> {
    fn dim(&self, i: usize) -> usize {
        self.shape.get(i).copied().unwrap_or(1).max(0) as usize
    }

    fn as_f32(&self) -> Option<&[f32]> {
        match self.values {
            Values::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// One of the model's own output tensors, for one request: what the Open Inference Protocol answers when an
/// output is asked for by its name (`raw_` and the model's name for it), copied only then.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    /// Without the batch dimension.
    pub shape: Vec<usize>,
    pub data: RawData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RawData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

impl RawData {
    /// The protocol's name of its datatype.
    pub fn datatype(&self) -> &'static str {
        match self {
            RawData::F32(_) => "FP32",
            RawData::I64(_) => "INT64",
            RawData::I32(_) => "INT32",
            RawData::U8(_) => "UINT8",
        }
    }
}

/// The prefix that keeps the model's output names apart from the finished outputs' (a detector's own `scores`
/// are per anchor, the finished `scores` per detection).
pub const RAW_PREFIX: &str = "raw_";

/// Copies one request's rows of the model's outputs, in `spec`'s order.
pub fn raw_tensors(spec: &OutputSpec, rows: &[Row<'_>]) -> Vec<RawTensor> {
    spec.output_names()
        .into_iter()
        .zip(rows)
        .map(|(name, row)| RawTensor {
            name: format!("{RAW_PREFIX}{name}"),
            shape: row.shape.iter().map(|&d| d.max(0) as usize).collect(),
            data: match row.values {
                Values::F32(v) => RawData::F32(v.to_vec()),
                Values::I64(v) => RawData::I64(v.to_vec()),
                Values::I32(v) => RawData::I32(v.to_vec()),
                Values::U8(v) => RawData::U8(v.to_vec()),
            },
        })
        .collect()
}

/// Error text for an output that does not look as config.json promised: a repository bug, so a 5xx.
fn bad_output(what: &str) -> crate::error::Error {
    crate::error::Error::internal(format!("model output does not match config.json: {what}"))
}

/// Decodes one request's outputs (in [`OutputSpec::output_names`] order).
pub fn decode(
    spec: &OutputSpec,
    labels: &[String],
    outputs: &[Row<'_>],
    options: TaskOptions,
) -> crate::error::Result<Decoded> {
    match (spec, options) {
        (
            OutputSpec::Classification {
                activation,
                background_index,
                ..
            },
            TaskOptions::Classify { top_k },
        ) => {
            // The repository contract serves every score output as float32 (REPOSITORY.md).
            let Values::F32(scores) = outputs[0].values else {
                return Err(bad_output("classification scores are not float32"));
            };
            Ok(Decoded::Classes(classify::top_k(
                scores,
                *activation,
                *background_index,
                top_k,
                labels,
            )))
        }
        (OutputSpec::SsdAnchors { .. }, TaskOptions::Detect { .. }) => {
            detect::decode_anchors(spec, outputs, options).map(Decoded::Detections)
        }
        (
            OutputSpec::SsdPostprocessed { .. },
            TaskOptions::Detect {
                score_threshold,
                max_detections,
                ..
            },
        ) => Ok(Decoded::Detections(detect::pass_through(
            outputs,
            score_threshold,
            max_detections,
        ))),
        (OutputSpec::ClassMap { .. }, TaskOptions::Segment) => {
            Ok(Decoded::ClassMap(segment::from_map(&outputs[0])?))
        }
        (OutputSpec::SegmentationLogits { layout, .. }, TaskOptions::Segment) => {
            Ok(Decoded::ClassMap(segment::argmax(&outputs[0], *layout)?))
        }
        _ => Err(crate::error::Error::internal(
            "options do not match the model's task",
        )),
    }
}

/// The label for class `index`, or its number when the label file is short.
pub fn label(labels: &[String], index: usize) -> String {
    labels
        .get(index)
        .cloned()
        .unwrap_or_else(|| index.to_string())
}
