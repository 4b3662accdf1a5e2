//! Result types, spelled as the HTTP API's JSON (README "HTTP API"). The gRPC client converts the protobuf
//! messages into these, so the rest of the client never cares which protocol answered.

use serde::{Deserialize, Serialize};

/// Which variant serves a request: `model` names one exactly, otherwise the server picks among the task's
/// variants those matching every attribute that is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selector {
    pub model: Option<String>,
    pub width: Option<f32>,
    pub resolution: Option<u32>,
    pub precision: Option<String>,
    /// The label set, e.g. "imagenet" or "inat_birds"; unset: the task default's.
    pub dataset: Option<String>,
    /// With `model = "auto"`: the time the answer should take; the server picks the best variant that fits.
    pub latency_budget_ms: Option<u32>,
}

/// How `model=auto` chose the variant that answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoRouting {
    pub budget_ms: f64,
    pub predicted_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifyOptions {
    pub top_k: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectOptions {
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<u32>,
}

/// Server-side phase timings of one request, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    pub decode_ms: f64,
    pub queue_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub index: u32,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResult {
    pub model: String,
    pub image_width: u32,
    pub image_height: u32,
    pub classes: Vec<Classification>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRouting>,
}

/// Box corners: (x1, y1) top left, (x2, y2) bottom right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BoxCorners {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_index: u32,
    pub label: String,
    pub score: f32,
    /// In pixels of the original image.
    #[serde(rename = "box")]
    pub bbox: BoxCorners,
    /// In 0..1 of the original image.
    pub box_normalized: BoxCorners,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectResult {
    pub model: String,
    pub image_width: u32,
    pub image_height: u32,
    pub detections: Vec<Detection>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRouting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassFraction {
    pub index: u32,
    pub label: String,
    pub fraction: f32,
}

/// Row-major run-length encoding of the class map at the original image size: run `i` covers `lengths[i]`
/// consecutive pixels of class `values[i]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RleMask {
    #[serde(default = "rle")]
    pub encoding: String,
    pub width: u32,
    pub height: u32,
    pub values: Vec<u32>,
    pub lengths: Vec<u32>,
}

fn rle() -> String {
    "rle".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentResult {
    pub model: String,
    pub image_width: u32,
    pub image_height: u32,
    pub classes: Vec<ClassFraction>,
    pub mask: RleMask,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRouting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub task: String,
    pub width: f32,
    pub resolution: u32,
    pub precision: String,
    #[serde(default)]
    pub dataset: String,
    pub parameters: u64,
    pub multiply_adds: u64,
    pub is_default: bool,
    pub num_classes: u32,
    #[serde(default)]
    pub description: String,
}

/// Guesses an encoded image's media type from its magic bytes, which is what the server decodes by anyway;
/// file extensions lie more often.
pub fn sniff_media_type(image: &[u8]) -> &'static str {
    match image {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'B', b'M', ..] => "image/bmp",
        _ => "application/octet-stream",
    }
}
