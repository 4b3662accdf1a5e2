//! The Open Inference Protocol (KServe V2), whatever the transport: which models and tensors there are, the
//! request's options and images checked, the images run through the same [`Service`] as the native API (so they
//! are batched, limited and recorded alike), and the answers turned into output tensors. The HTTP front end
//! (`http::oip`) and the gRPC one (`grpc::oip`) only convert their wire forms to and from these.
//!
//! - **Input**, one of two:
//!   - `image`: a `BYTES` tensor of shape `[N]` or `[N, 1]`, each element an encoded JPEG, PNG or BMP, which the
//!     server decodes and prepares as the native API does;
//!   - the model's own input tensor, as its `config.json` describes it (`input`, `UINT8` or `FP32`, `[N, H, W,
//!     3]` or `[N, 3, H, W]`), already prepared: each row is batched with the native requests as is, and
//!     boxes and masks are in its pixels.
//! - **Outputs**, finished as the native API finishes them: classification `classification` (`BYTES`
//!   `[N, k]`, `score:index:label` as Triton's classification extension gives); detection `boxes` (`FP32`
//!   `[N, D, 4]`, pixels), `scores` (`FP32 [N, D]`), `classes` (`INT32 [N, D]`) and `num_detections`
//!   (`INT32 [N]`), rows past an image's count padded with zeros and class -1; segmentation `class_map`
//!   (`UINT8 [N, H, W]`, the images all of one size).
//! - **The model's own outputs**, asked for by name with `raw_` before it (`raw_scores`, `raw_logits`, ...;
//!   the model's metadata lists them): `[N, ...]` as the model gives them, copied out of the batch only when
//!   a request names one.
//! - **Options** as request `parameters`: `top_k`, `score_threshold`, `iou_threshold`, `max_detections`; an
//!   output's `classification` parameter sets `top_k` as in Triton.
use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use crate::{
    error::{Error, Result},
    imaging::{InputData, Prepared},
    options::{self, RequestOptions},
    postprocess::{
        RAW_PREFIX, RawData, RawTensor,
        finish::{Detection, Mask},
    },
    repository::{InputDtype, InputSpec, Task},
    routing::Selector,
    service::{InferRequest, Input, Protocol, Service},
};

/// The name of the one input every model takes here.
pub const IMAGE_INPUT: &str = "image";
/// Models have one version, "1": the repository holds one build of each variant.
pub const VERSION: &str = "1";
pub const SERVER_NAME: &str = "mobilenet-serve";
pub const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "classification"];

/// A loaded variant, as the protocol sees it: its task, its input tensor, and its own outputs (name, datatype,
/// shape without the batch dimension), which a request may ask for by name.
pub struct ModelRef {
    pub task: Task,
    pub input: InputSpec,
    pub raw_outputs: Vec<(String, &'static str, Vec<usize>)>,
}

/// The loaded variant `name` (at `version`, if given): an unknown name or version is a 404.
pub fn model(service: &Service, name: &str, version: Option<&str>) -> Result<ModelRef> {
    let router = service.router().ok_or(Error::NotReady)?;
    router
        .models()
        .iter()
        .find(|m| m.variant.config.name == name)
        .filter(|_| version.is_none_or(|v| v == VERSION))
        .map(|m| ModelRef {
            task: m.variant.config.task,
            input: m.variant.config.input.clone(),
            raw_outputs: m.variant.raw_outputs.get().cloned().unwrap_or_default(),
        })
        .ok_or_else(|| Error::UnknownModel(name.to_string()))
}

/// The protocol's name of the model's input datatype.
fn datatype(input: &InputSpec) -> &'static str {
    match input.dtype {
        InputDtype::Uint8 => "UINT8",
        InputDtype::Float32 => "FP32",
    }
}

/// The two inputs a model takes, for its metadata: name, datatype and shape (-1 where it varies).
pub fn inputs_of(input: &InputSpec) -> [(String, &'static str, Vec<i64>); 2] {
    let raw_shape = std::iter::once(-1)
        .chain(input.row_shape().map(|d| d as i64))
        .collect();
    [
        (IMAGE_INPUT.to_string(), "BYTES", vec![-1]),
        (input.name.clone(), datatype(input), raw_shape),
    ]
}

/// Every output a model gives, for its metadata: the task's finished outputs ([`finished_outputs`]), then the
/// model's own (`raw_...`), each as name, datatype and shape (-1 where it varies).
pub fn outputs_of(model: &ModelRef) -> Vec<(String, &'static str, Vec<i64>)> {
    let finished = finished_outputs(model.task)
        .iter()
        .map(|(name, datatype, shape)| (name.to_string(), *datatype, shape.to_vec()));
    let raw = model.raw_outputs.iter().map(|(name, datatype, shape)| {
        let shape = std::iter::once(-1).chain(shape.iter().map(|&d| d as i64));
        (name.clone(), *datatype, shape.collect())
    });
    finished.chain(raw).collect()
}

/// Bytes per element of a numeric datatype of the protocol.
fn element_bytes(datatype: &str) -> usize {
    match datatype {
        "UINT8" | "INT8" | "BOOL" => 1,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => 4,
    }
}

/// Most bytes of the model's own outputs one answer may carry. The 513 segmenter's logits are 22 MB an image,
/// so a request for them holds two images; a classifier's scores are 4 KB.
pub const MAX_RAW_OUTPUT_BYTES: usize = 64 << 20;

/// Whether the request names one of the model's own outputs, which are then copied out of the batch for each
/// of its `images`; refused when they would take more than [`MAX_RAW_OUTPUT_BYTES`].
pub fn wants_raw(body: &InferBody, model: &ModelRef, images: usize) -> Result<bool> {
    let wanted = body
        .outputs
        .iter()
        .flatten()
        .any(|o| o.name.starts_with(RAW_PREFIX));
    if !wanted {
        return Ok(false);
    }
    let per_image: usize = model
        .raw_outputs
        .iter()
        .map(|(_, datatype, shape)| shape.iter().product::<usize>() * element_bytes(datatype))
        .sum();
    let bytes = per_image.saturating_mul(images);
    if bytes > MAX_RAW_OUTPUT_BYTES {
        return Err(bad(format!(
            "the model's own outputs of {images} images take {} MB, over the {} MB one answer may carry: \
             send fewer images per request",
            bytes >> 20,
            MAX_RAW_OUTPUT_BYTES >> 20
        )));
    }
    Ok(true)
}

/// Each task's finished outputs: name, datatype and shape (-1 where it varies).
pub fn finished_outputs(task: Task) -> &'static [(&'static str, &'static str, &'static [i64])] {
    match task {
        Task::Classification => &[("classification", "BYTES", &[-1, -1])],
        Task::Detection => &[
            ("boxes", "FP32", &[-1, -1, 4]),
            ("scores", "FP32", &[-1, -1]),
            ("classes", "INT32", &[-1, -1]),
            ("num_detections", "INT32", &[-1]),
        ],
        Task::Segmentation => &[("class_map", "UINT8", &[-1, -1, -1])],
    }
}

/// An inference request, as the JSON form gives it; the gRPC form is converted to it.
#[derive(Deserialize)]
pub struct InferBody {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: HashMap<String, Value>,
    pub inputs: Vec<InputTensor>,
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: HashMap<String, Value>,
    /// JSON only: the elements, kept as text until the input's kind is known. A raw tensor's numbers are then
    /// read straight into the model's dtype ([`tensor_rows`]): as `Value`s, 16 MB of small numbers would
    /// take some 250 MB.
    pub data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: HashMap<String, Value>,
}

pub fn bad(message: impl Into<String>) -> Error {
    Error::BadRequest(message.into())
}

/// A request parameter as an integer or a number, if present.
fn number(parameters: &HashMap<String, Value>, name: &str) -> Result<Option<f64>> {
    parameters
        .get(name)
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| bad(format!("parameter {name} must be a number")))
        })
        .transpose()
}

fn whole(parameters: &HashMap<String, Value>, name: &str) -> Result<Option<u32>> {
    number(parameters, name)?
        .map(|v| {
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                Ok(v as u32)
            } else {
                Err(bad(format!("parameter {name} must be a whole number")))
            }
        })
        .transpose()
}

/// The task options from the request's parameters, validated by [`options`] as every protocol's are.
pub fn task_options(task: Task, body: &InferBody) -> Result<RequestOptions> {
    let p = &body.parameters;
    let requested_k = body
        .outputs
        .iter()
        .flatten()
        .find_map(|o| whole(&o.parameters, "classification").transpose())
        .transpose()?;
    let task_options = match task {
        Task::Classification => options::classify(requested_k.or(whole(p, "top_k")?))?,
        Task::Detection => options::detect(
            number(p, "score_threshold")?.map(|v| v as f32),
            number(p, "iou_threshold")?.map(|v| v as f32),
            whole(p, "max_detections")?,
        )?,
        Task::Segmentation => crate::postprocess::TaskOptions::Segment,
    };
    Ok(RequestOptions {
        selector: Selector::default(),
        task: task_options,
        png: false,
    })
}

/// Which of the two inputs a request's one input is, and how many images it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// `count` encoded images.
    Images(usize),
    /// `rows` rows of the model's own input tensor.
    Tensor(usize),
}

/// The request's one input, once its name, datatype and shape are checked against the model's `input`.
pub fn input_kind(body: &InferBody, input: &InputSpec) -> Result<InputKind> {
    let [given] = body.inputs.as_slice() else {
        return Err(bad(format!(
            "one input is expected, {IMAGE_INPUT:?} or {:?}, not {}",
            input.name,
            body.inputs.len()
        )));
    };
    if given.name == IMAGE_INPUT && given.datatype == "BYTES" {
        return match given.shape.as_slice() {
            [n] | [n, 1] if *n >= 1 => Ok(InputKind::Images(*n as usize)),
            other => Err(bad(format!(
                "the input's shape must be [N] or [N, 1] with N >= 1, not {other:?}"
            ))),
        };
    }
    let row = input.row_shape().map(|d| d as i64);
    if given.name == input.name && given.datatype == datatype(input) {
        return match given.shape.as_slice() {
            [n, rest @ ..] if *n >= 1 && rest == row => Ok(InputKind::Tensor(*n as usize)),
            other => Err(bad(format!(
                "the input {:?} must have the shape [N, {}, {}, {}] with N >= 1, not {other:?}",
                input.name, row[0], row[1], row[2]
            ))),
        };
    }
    Err(bad(format!(
        "the input must be {IMAGE_INPUT:?} of datatype BYTES or {:?} of datatype {}, not {:?} of {}",
        input.name,
        datatype(input),
        given.name,
        given.datatype
    )))
}

/// The values of a raw input tensor, before they are split into rows.
pub enum TensorValues<'a> {
    /// Little-endian, row major (the binary tensor extension, gRPC's raw contents).
    Raw(&'a [u8]),
    /// JSON numbers, flat or nested in arrays.
    Json(&'a RawValue),
    /// gRPC's typed contents.
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// `rows` batch rows of the model's input from `values`, each ready for the batcher: every value checked
/// (a whole number within 0..=255 for `UINT8`, a finite number for `FP32`) and the count exactly `rows`
/// rows.
pub fn tensor_rows(values: TensorValues, rows: usize, input: &InputSpec) -> Result<Vec<Prepared>> {
    let row = input.elements();
    let expected = rows
        .checked_mul(row)
        .ok_or_else(|| bad("the input's shape is too large"))?;
    let data = match (input.dtype, values) {
        (InputDtype::Uint8, TensorValues::Raw(bytes)) => InputData::U8(bytes.to_vec()),
        (InputDtype::Float32, TensorValues::Raw(bytes)) => {
            if bytes.len() % 4 != 0 {
                return Err(bad("FP32 data must be a whole number of 4-byte values"));
            }
            InputData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        }
        (InputDtype::Uint8, TensorValues::U32(v)) => InputData::U8(
            v.into_iter()
                .map(|x| u8::try_from(x).map_err(|_| bad("UINT8 values must be within 0..=255")))
                .collect::<Result<_>>()?,
        ),
        (InputDtype::Float32, TensorValues::F32(v)) => InputData::F32(v),
        (InputDtype::Uint8, TensorValues::Json(text)) => InputData::U8(json_numbers(
            text,
            expected,
            "UINT8 values must be whole numbers within 0..=255",
            |v| (v.fract() == 0.0 && (0.0..=255.0).contains(&v)).then_some(v as u8),
        )?),
        (InputDtype::Float32, TensorValues::Json(text)) => InputData::F32(json_numbers(
            text,
            expected,
            "FP32 values must be finite numbers",
            |v| Some(v as f32).filter(|x| x.is_finite()),
        )?),
        _ => {
            return Err(bad(format!(
                "the contents are not of the input's datatype {}",
                datatype(input)
            )));
        }
    };
    if let InputData::F32(v) = &data
        && v.iter().any(|x| !x.is_finite())
    {
        return Err(bad("FP32 values must be finite"));
    }
    if data.len() != expected {
        return Err(bad(format!(
            "the input's shape says {rows} rows of {row} values, its data holds {} values",
            data.len()
        )));
    }
    let prepared = |data| Prepared {
        data,
        width: input.width,
        height: input.height,
    };
    Ok(match data {
        InputData::U8(v) => v
            .chunks_exact(row)
            .map(|r| prepared(InputData::U8(r.to_vec())))
            .collect(),
        InputData::F32(v) => v
            .chunks_exact(row)
            .map(|r| prepared(InputData::F32(r.to_vec())))
            .collect(),
    })
}

/// The numbers of a JSON tensor, flat or nested in arrays (row major either way), each converted by
/// `convert` (`None`: refused with `invalid`), read straight from the text. More than `limit` of them is
/// refused as soon as it is seen; serde_json's nesting limit bounds the arrays' depth.
fn json_numbers<T>(
    text: &RawValue,
    limit: usize,
    invalid: &'static str,
    convert: fn(f64) -> Option<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let seed = Numbers {
        out: &mut out,
        limit,
        invalid,
        convert,
    };
    let mut reader = serde_json::Deserializer::from_str(text.get());
    serde::de::DeserializeSeed::deserialize(seed, &mut reader)
        .map_err(|e| bad(format!("the input's data: {e}")))?;
    Ok(out)
}

/// [`json_numbers`]'s visitor: numbers go to `out`, arrays are walked into.
struct Numbers<'a, T> {
    out: &'a mut Vec<T>,
    limit: usize,
    invalid: &'static str,
    convert: fn(f64) -> Option<T>,
}

impl<T> Numbers<'_, T> {
    fn push<E: serde::de::Error>(self, value: f64) -> std::result::Result<(), E> {
        if self.out.len() == self.limit {
            return Err(E::custom("more values than the input's shape says"));
        }
        let value = (self.convert)(value).ok_or_else(|| E::custom(self.invalid))?;
        self.out.push(value);
        Ok(())
    }
}

impl<'de, T> serde::de::DeserializeSeed<'de> for Numbers<'_, T> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T> serde::de::Visitor<'de> for Numbers<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, or arrays of them")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.push(v as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.push(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<(), E> {
        self.push(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        let Numbers {
            out,
            limit,
            invalid,
            convert,
        } = self;
        while seq
            .next_element_seed(Numbers {
                out: &mut *out,
                limit,
                invalid,
                convert,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// The elements of a `BYTES` tensor in raw form: each a 4-byte little-endian length and its bytes.
pub fn split_elements(mut data: Bytes) -> Result<Vec<Bytes>> {
    let mut elements = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(bad("a BYTES element is cut short"));
        }
        let length = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if data.len() - 4 < length {
            return Err(bad("a BYTES element is longer than the data"));
        }
        let mut element = data.split_to(4 + length);
        elements.push(element.split_off(4));
    }
    Ok(elements)
}

/// `images` as the service's inputs, if they are as many as the input's shape says.
pub fn check_count(images: Vec<Bytes>, count: usize) -> Result<Vec<Input>> {
    if images.len() == count {
        Ok(images.into_iter().map(Input::Image).collect())
    } else {
        Err(bad(format!(
            "the input's shape says {count} images, its data holds {}",
            images.len()
        )))
    }
}

/// The outputs to answer with, in order, each with whether it goes as binary data: those the request names
/// (an unknown name is an error), else all of the task's. `binary_data_output` (request) and `binary_data`
/// (output) are the binary tensor extension's parameters.
pub fn select<'t>(request: &InferBody, tensors: &'t [Tensor]) -> Result<Vec<(&'t Tensor, bool)>> {
    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(outputs) = &request.outputs else {
        return Ok(tensors.iter().map(|t| (t, all_binary)).collect());
    };
    outputs
        .iter()
        .map(|o| {
            let binary = o
                .parameters
                .get("binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(all_binary);
            tensors
                .iter()
                .find(|t| t.name == o.name)
                .map(|t| (t, binary))
                .ok_or_else(|| {
                    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
                    bad(format!(
                        "unknown output {:?}; this model gives {}",
                        o.name,
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// One output tensor of the answer.
pub struct Tensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bytes(Vec<String>),
}

impl TensorData {
    pub fn json(&self) -> Value {
        match self {
            TensorData::F32(v) => json!(v),
            TensorData::I64(v) => json!(v),
            TensorData::I32(v) => json!(v),
            TensorData::U8(v) => json!(v),
            TensorData::Bytes(v) => json!(v),
        }
    }

    /// Little-endian, row major; a `BYTES` element as its 4-byte length and its bytes.
    pub fn binary(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::Bytes(v) => v
                .iter()
                .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
                .collect(),
        }
    }
}

fn classification(answers: &[Vec<crate::postprocess::Class>]) -> Vec<Tensor> {
    let k = answers.iter().map(Vec::len).max().unwrap_or(0);
    let mut data = Vec::with_capacity(answers.len() * k);
    for classes in answers {
        data.extend(
            classes
                .iter()
                .map(|c| format!("{:.6}:{}:{}", c.score, c.index, c.label)),
        );
        // An image's top-k is shorter than the longest when its other classes have no probability at all
        // (they are not listed): its row is padded with empty strings.
        data.extend(std::iter::repeat_n(String::new(), k - classes.len()));
    }
    vec![Tensor {
        name: "classification".into(),
        datatype: "BYTES",
        shape: vec![answers.len(), k],
        data: TensorData::Bytes(data),
    }]
}

fn detection(answers: &[Vec<Detection>]) -> Vec<Tensor> {
    let (n, d) = (
        answers.len(),
        answers.iter().map(Vec::len).max().unwrap_or(0),
    );
    let (mut boxes, mut scores, mut classes) =
        (vec![0f32; n * d * 4], vec![0f32; n * d], vec![-1i32; n * d]);
    for (i, detections) in answers.iter().enumerate() {
        for (j, det) in detections.iter().enumerate() {
            let at = i * d + j;
            boxes[at * 4..at * 4 + 4].copy_from_slice(&[
                det.bbox.x1,
                det.bbox.y1,
                det.bbox.x2,
                det.bbox.y2,
            ]);
            scores[at] = det.score;
            classes[at] = det.class_index as i32;
        }
    }
    let counts = answers.iter().map(|a| a.len() as i32).collect();
    vec![
        Tensor {
            name: "boxes".into(),
            datatype: "FP32",
            shape: vec![n, d, 4],
            data: TensorData::F32(boxes),
        },
        Tensor {
            name: "scores".into(),
            datatype: "FP32",
            shape: vec![n, d],
            data: TensorData::F32(scores),
        },
        Tensor {
            name: "classes".into(),
            datatype: "INT32",
            shape: vec![n, d],
            data: TensorData::I32(classes),
        },
        Tensor {
            name: "num_detections".into(),
            datatype: "INT32",
            shape: vec![n],
            data: TensorData::I32(counts),
        },
    ]
}

/// The class maps, at the client's image size; they must all be of one size to make one tensor.
fn segmentation(maps: Vec<(u32, u32, Vec<u8>)>) -> Result<Vec<Tensor>> {
    let (w, h) = maps.first().map_or((0, 0), |(w, h, _)| (*w, *h));
    if maps.iter().any(|(mw, mh, _)| (*mw, *mh) != (w, h)) {
        return Err(bad(
            "the images of one segmentation request must all be of one size: class_map is one tensor",
        ));
    }
    let n = maps.len();
    let data = maps.into_iter().flat_map(|(_, _, m)| m).collect();
    Ok(vec![Tensor {
        name: "class_map".into(),
        datatype: "UINT8",
        shape: vec![n, h as usize, w as usize],
        data: TensorData::U8(data),
    }])
}

/// Expands a run-length mask into one class per pixel.
fn expand(mask: &Mask) -> Result<(u32, u32, Vec<u8>)> {
    let Mask::Rle {
        width,
        height,
        values,
        lengths,
    } = mask
    else {
        return Err(Error::internal("a run-length mask was asked for"));
    };
    let mut map = Vec::with_capacity(*width as usize * *height as usize);
    for (&value, &length) in values.iter().zip(lengths) {
        map.extend(std::iter::repeat_n(value as u8, length as usize));
    }
    Ok((*width, *height, map))
}

/// What an inference request asks of [`run`], besides its images.
pub struct Call<'a> {
    pub model: &'a str,
    pub task: Task,
    pub options: RequestOptions,
    pub deadline: Option<std::time::Instant>,
    /// When the request's head arrived ([`InferRequest::received`]).
    pub received: std::time::Instant,
    pub protocol: Protocol,
    /// Whether the model's own outputs are asked for too ([`wants_raw`]).
    pub raw_outputs: bool,
}

/// Runs every image of the request through the service (its batcher batches them together) and builds the
/// task's output tensors, then the model's own when they were asked for.
pub async fn run(service: &Service, call: Call<'_>, images: Vec<Input>) -> Result<Vec<Tensor>> {
    let request = |input: Input| InferRequest {
        input,
        selector: Selector {
            model: Some(call.model.to_string()),
            ..call.options.selector.clone()
        },
        options: call.options.task,
        png: false,
        deadline: call.deadline,
        received: call.received,
        protocol: call.protocol,
        raw_outputs: call.raw_outputs,
    };
    let (mut tensors, raw) = match call.task {
        Task::Classification => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.classify(request(i))),
            )
            .await?;
            let (bodies, raw): (Vec<_>, Vec<_>) =
                answers.into_iter().map(|a| (a.body, a.raw)).unzip();
            (classification(&bodies), raw)
        }
        Task::Detection => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.detect(request(i))),
            )
            .await?;
            let (bodies, raw): (Vec<_>, Vec<_>) =
                answers.into_iter().map(|a| (a.body, a.raw)).unzip();
            (detection(&bodies), raw)
        }
        Task::Segmentation => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.segment(request(i))),
            )
            .await?;
            let maps = answers
                .iter()
                .map(|a| expand(&a.body.mask))
                .collect::<Result<_>>()?;
            let raw = answers.into_iter().map(|a| a.raw).collect();
            (segmentation(maps)?, raw)
        }
    };
    if call.raw_outputs {
        tensors.extend(stack_raw(raw)?);
    }
    Ok(tensors)
}

/// The model's own outputs of every image of the request, each stacked into one `[N, ...]` tensor.
fn stack_raw(per_image: Vec<Vec<RawTensor>>) -> Result<Vec<Tensor>> {
    let Some(first) = per_image.first() else {
        return Ok(Vec::new());
    };
    let mismatch = || Error::internal("the images' raw outputs differ in shape or datatype");
    let mut stacked = Vec::with_capacity(first.len());
    for (j, head) in first.iter().enumerate() {
        let mut data = match head.data {
            RawData::F32(_) => TensorData::F32(Vec::new()),
            RawData::I64(_) => TensorData::I64(Vec::new()),
            RawData::I32(_) => TensorData::I32(Vec::new()),
            RawData::U8(_) => TensorData::U8(Vec::new()),
        };
        for image in &per_image {
            let tensor = image
                .get(j)
                .filter(|t| t.shape == head.shape)
                .ok_or_else(mismatch)?;
            match (&mut data, &tensor.data) {
                (TensorData::F32(all), RawData::F32(v)) => all.extend_from_slice(v),
                (TensorData::I64(all), RawData::I64(v)) => all.extend_from_slice(v),
                (TensorData::I32(all), RawData::I32(v)) => all.extend_from_slice(v),
                (TensorData::U8(all), RawData::U8(v)) => all.extend_from_slice(v),
                _ => return Err(mismatch()),
            }
        }
        stacked.push(Tensor {
            name: head.name.clone(),
            datatype: head.data.datatype(),
            shape: std::iter::once(per_image.len())
                .chain(head.shape.iter().copied())
                .collect(),
            data,
        });
    }
    Ok(stacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: Value) -> InferBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn raw_bytes_elements_are_split_by_their_lengths() {
        let mut raw = Vec::new();
        for element in [&b"abc"[..], &b""[..], &b"hello"[..]] {
            raw.extend((element.len() as u32).to_le_bytes());
            raw.extend(element);
        }
        let elements = split_elements(Bytes::from(raw.clone())).unwrap();
        assert_eq!(
            elements,
            vec![Bytes::from("abc"), Bytes::new(), Bytes::from("hello")]
        );
        assert!(split_elements(Bytes::from(raw[..raw.len() - 1].to_vec())).is_err());
        assert!(split_elements(Bytes::from_static(b"\x05\0\0")).is_err());
    }

    /// A float NCHW input of 2x2: twelve values an image.
    fn float_nchw() -> InputSpec {
        InputSpec {
            name: "pixels".into(),
            layout: crate::repository::Layout::Nchw,
            dtype: InputDtype::Float32,
            height: 2,
            width: 2,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: crate::repository::ResizeMode::Stretch,
        }
    }

    #[test]
    fn the_input_is_one_bytes_image_tensor_or_the_models_own() {
        let spec = float_nchw();
        let images =
            body(json!({"inputs": [{"name": "image", "shape": [2, 1], "datatype": "BYTES"}]}));
        assert_eq!(input_kind(&images, &spec).unwrap(), InputKind::Images(2));
        let raw = body(
            json!({"inputs": [{"name": "pixels", "shape": [3, 3, 2, 2], "datatype": "FP32"}]}),
        );
        assert_eq!(input_kind(&raw, &spec).unwrap(), InputKind::Tensor(3));
        let cases = [
            json!({"inputs": []}),
            json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES"}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32"}]}),
            json!({"inputs": [{"name": "image", "shape": [0], "datatype": "BYTES"}]}),
            json!({"inputs": [{"name": "image", "shape": [1, 2], "datatype": "BYTES"}]}),
            json!({"inputs": [{"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "FP32"}]}),
            json!({"inputs": [{"name": "pixels", "shape": [0, 3, 2, 2], "datatype": "FP32"}]}),
            json!({"inputs": [{"name": "pixels", "shape": [1, 3, 2, 2], "datatype": "UINT8"}]}),
        ];
        for case in cases {
            let error = input_kind(&body(case.clone()), &spec).unwrap_err();
            assert!(matches!(error, Error::BadRequest(_)), "{case}: {error:?}");
        }
        assert!(check_count(vec![Bytes::new()], 2).is_err());
    }

    #[test]
    fn raw_float_rows_are_checked_and_split() {
        let spec = float_nchw();
        let values: Vec<f32> = (0..24).map(|v| v as f32 / 2.0).collect();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = tensor_rows(TensorValues::Raw(&raw), 2, &spec).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].data, InputData::F32(values[12..].to_vec()));
        assert_eq!((rows[0].width, rows[0].height), (2, 2));
        let typed = tensor_rows(TensorValues::F32(values.clone()), 2, &spec).unwrap();
        assert_eq!(typed[0].data, InputData::F32(values[..12].to_vec()));
        let mut nan = values.clone();
        nan[5] = f32::NAN;
        let json =
            RawValue::from_string(format!("{:?}", [values.clone(), values.clone()])).unwrap();
        assert_eq!(
            tensor_rows(TensorValues::Json(&json), 4, &spec).unwrap()[3].data,
            InputData::F32(values[12..].to_vec()),
            "JSON numbers, nested"
        );
        let too_many =
            RawValue::from_string(format!("{:?}", [values.clone(), values.clone()])).unwrap();
        let error = tensor_rows(TensorValues::Json(&too_many), 2, &spec)
            .err()
            .unwrap();
        assert!(format!("{error:?}").contains("more values"), "{error:?}");
        let not_numbers = RawValue::from_string(r#"[1, "2"]"#.into()).unwrap();
        assert!(tensor_rows(TensorValues::Json(&not_numbers), 1, &spec).is_err());
        for bad_values in [
            TensorValues::F32(nan),
            TensorValues::F32(values[..23].to_vec()),
            TensorValues::Raw(&raw[..95]),
            TensorValues::U32(vec![0; 24]),
        ] {
            let error = tensor_rows(bad_values, 2, &spec).err().unwrap();
            assert!(matches!(error, Error::BadRequest(_)), "{error:?}");
        }
    }

    #[test]
    fn options_come_from_parameters_and_the_classification_extension() {
        let request = body(json!({"inputs": [], "parameters": {"top_k": 3},
            "outputs": [{"name": "classification", "parameters": {"classification": 2}}]}));
        let options = task_options(Task::Classification, &request).unwrap();
        assert_eq!(
            options.task,
            crate::postprocess::TaskOptions::Classify { top_k: 2 }
        );
        let bad_k = body(json!({"inputs": [], "parameters": {"top_k": 0}}));
        assert!(task_options(Task::Classification, &bad_k).is_err());
        let fraction = body(json!({"inputs": [], "parameters": {"max_detections": 2.5}}));
        assert!(task_options(Task::Detection, &fraction).is_err());
    }

    #[test]
    fn outputs_are_selected_by_name_and_form() {
        let tensors = detection(&[Vec::new()]);
        let all = body(json!({"inputs": [], "parameters": {"binary_data_output": true}}));
        let chosen = select(&all, &tensors).unwrap();
        assert_eq!(chosen.len(), 4);
        assert!(chosen.iter().all(|(_, binary)| *binary));
        let named = body(json!({"inputs": [], "outputs": [{"name": "scores"},
            {"name": "boxes", "parameters": {"binary_data": true}}]}));
        let chosen: Vec<_> = select(&named, &tensors)
            .unwrap()
            .into_iter()
            .map(|(t, b)| (t.name.as_str(), b))
            .collect();
        assert_eq!(chosen, vec![("scores", false), ("boxes", true)]);
        let unknown = body(json!({"inputs": [], "outputs": [{"name": "logits"}]}));
        assert!(select(&unknown, &tensors).is_err());
    }

    #[test]
    fn bytes_tensors_serialise_with_length_prefixes() {
        let data = TensorData::Bytes(vec!["ab".into(), String::new()]);
        assert_eq!(data.binary(), vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(TensorData::I32(vec![-1]).binary(), vec![255; 4]);
    }
}
