//! The Open Inference Protocol (KServe V2) over HTTP, on the same port as the native API: health, server and
//! model metadata, and inference on encoded images, with JSON tensors or Triton's binary tensor extension
//! (`Inference-Header-Content-Length`). Requests go through the same [`Service`](crate::service::Service) as
//! the native API, so they are batched, limited and recorded alike; this module only converts tensors.
//!
//! - **Input:** one `BYTES` tensor of shape `[N]` or `[N, 1]`, each element an encoded JPEG, PNG or BMP. In
//!   binary form each element is a 4-byte little-endian length and the bytes; in JSON, a base64 string.
//! - **Outputs**, finished as the native API finishes them: classification `classification` (`BYTES`
//!   `[N, k]`, `score:index:label` as Triton's classification extension gives); detection `boxes` (`FP32`
//!   `[N, D, 4]`, pixels), `scores` (`FP32 [N, D]`), `classes` (`INT32 [N, D]`) and `num_detections`
//!   (`INT32 [N]`), rows past an image's count padded with zeros and class -1; segmentation `class_map`
//!   (`UINT8 [N, H, W]`, the images all of one size).
//! - **Options** as request `parameters`: `top_k`, `score_threshold`, `iou_threshold`, `max_detections`; an
//!   output's `classification` parameter sets `top_k` as in Triton.
//! - **Errors** are `{"error": ...}` (with our `kind`), with the native API's statuses.
use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, extract};
use crate::{
    error::{Error, Result},
    model_info::{self, ModelInfo},
    options::{self, RequestOptions},
    postprocess::finish::{Detection, Mask},
    repository::Task,
    routing::Selector,
    service::{self, InferRequest, Protocol},
};

/// The header that says how long the JSON part of a binary request or answer is.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// The name of the one input every model takes here.
const IMAGE_INPUT: &str = "image";
/// Models have one version, "1": the repository holds one build of each variant.
const VERSION: &str = "1";

pub async fn live() -> StatusCode {
    StatusCode::OK
}

pub async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.service.is_ready() && crate::health::unhealthy(&state.service).is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "mobilenet-serve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
}

/// `{name}` or `{name, version}` from the path; a version other than [`VERSION`] is unknown.
fn model(state: &AppState, name: &str, version: Option<&str>) -> Result<ModelInfo> {
    let router = state.service.router().ok_or(Error::NotReady)?;
    let unknown = || Error::UnknownModel(name.to_string());
    if version.is_some_and(|v| v != VERSION) {
        return Err(unknown());
    }
    model_info::list(router)
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(unknown)
}

fn path_parts(params: &HashMap<String, String>) -> (&str, Option<&str>) {
    let name = params.get("name").map_or("", String::as_str);
    (name, params.get("version").map(String::as_str))
}

pub async fn model_metadata(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Value>> {
    let (name, version) = path_parts(&params);
    let info = model(&state, name, version)?;
    let outputs: Vec<Value> = outputs_of(task_of(&info))
        .iter()
        .map(|(name, datatype, shape)| json!({"name": name, "datatype": datatype, "shape": shape}))
        .collect();
    Ok(Json(json!({
        "name": info.name,
        "versions": [VERSION],
        "platform": "mobilenet-serve",
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs,
    })))
}

pub async fn model_ready(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode> {
    let (name, version) = path_parts(&params);
    model(&state, name, version)?;
    Ok(if state.service.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    })
}

fn task_of(info: &ModelInfo) -> Task {
    match info.task {
        "detection" => Task::Detection,
        "segmentation" => Task::Segmentation,
        _ => Task::Classification,
    }
}

/// Each task's outputs: name, datatype and shape (-1 where it varies).
fn outputs_of(task: Task) -> &'static [(&'static str, &'static str, &'static [i64])] {
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

#[derive(Deserialize)]
struct InferBody {
    id: Option<String>,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    inputs: Vec<InputTensor>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    data: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: HashMap<String, Value>,
}

fn bad(message: impl Into<String>) -> Error {
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
fn task_options(task: Task, body: &InferBody) -> Result<RequestOptions> {
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

/// Splits a request body into its JSON header and the binary tensor data after it.
fn split_body(headers: &axum::http::HeaderMap, body: &Bytes) -> Result<(Bytes, Bytes)> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body.clone(), Bytes::new()));
    };
    let length: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            bad(format!(
                "{HEADER_LENGTH} must be a byte count within the body"
            ))
        })?;
    Ok((body.slice(..length), body.slice(length..)))
}

/// The encoded images of the one `BYTES` input, from the binary data or from base64 JSON strings.
fn images(body: &InferBody, mut binary: Bytes) -> Result<Vec<Bytes>> {
    let [input] = body.inputs.as_slice() else {
        return Err(bad(format!(
            "one input is expected, {IMAGE_INPUT:?}, not {}",
            body.inputs.len()
        )));
    };
    if input.name != IMAGE_INPUT || input.datatype != "BYTES" {
        return Err(bad(format!(
            "the input must be {IMAGE_INPUT:?} of datatype BYTES, not {:?} of {}",
            input.name, input.datatype
        )));
    }
    let count = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 1 => *n as usize,
        other => {
            return Err(bad(format!(
                "the input's shape must be [N] or [N, 1] with N >= 1, not {other:?}"
            )));
        }
    };
    let images = if let Some(size) = input.parameters.get("binary_data_size") {
        let size = size
            .as_u64()
            .filter(|&s| s as usize <= binary.len())
            .ok_or_else(|| bad("binary_data_size must be within the body"))?
            as usize;
        let mut data = binary.split_to(size);
        let mut images = Vec::with_capacity(count.min(1024));
        while !data.is_empty() {
            if data.len() < 4 {
                return Err(bad("a BYTES element is cut short"));
            }
            let length = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
            if data.len() - 4 < length {
                return Err(bad("a BYTES element is longer than the data"));
            }
            let mut element = data.split_to(4 + length);
            images.push(element.split_off(4));
        }
        images
    } else {
        let data = input
            .data
            .as_ref()
            .ok_or_else(|| bad("the input has neither data nor binary_data_size"))?;
        data.iter()
            .flat_map(|v| match v {
                Value::Array(inner) => inner.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .map(|v| {
                let text = v
                    .as_str()
                    .ok_or_else(|| bad("each image must be a base64 string"))?;
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(Bytes::from)
                    .map_err(|e| bad(format!("an image is not valid base64: {e}")))
            })
            .collect::<Result<Vec<_>>>()?
    };
    if images.len() != count {
        return Err(bad(format!(
            "the input's shape says {count} images, its data holds {}",
            images.len()
        )));
    }
    Ok(images)
}

/// One output tensor of the answer.
struct Tensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: TensorData,
}

enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bytes(Vec<String>),
}

impl TensorData {
    fn json(&self) -> Value {
        match self {
            TensorData::F32(v) => json!(v),
            TensorData::I32(v) => json!(v),
            TensorData::U8(v) => json!(v),
            TensorData::Bytes(v) => json!(v),
        }
    }

    /// Little-endian, row major; a `BYTES` element as its 4-byte length and its bytes.
    fn binary(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
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
        // Top-k is shorter only when the model has fewer classes: never, with one model per request.
        data.extend(std::iter::repeat_n(String::new(), k - classes.len()));
    }
    vec![Tensor {
        name: "classification",
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
            name: "boxes",
            datatype: "FP32",
            shape: vec![n, d, 4],
            data: TensorData::F32(boxes),
        },
        Tensor {
            name: "scores",
            datatype: "FP32",
            shape: vec![n, d],
            data: TensorData::F32(scores),
        },
        Tensor {
            name: "classes",
            datatype: "INT32",
            shape: vec![n, d],
            data: TensorData::I32(classes),
        },
        Tensor {
            name: "num_detections",
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
        name: "class_map",
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

/// Runs every image of the request through the service (its batcher batches them together) and builds the
/// task's output tensors.
async fn run(
    state: &AppState,
    task: Task,
    name: &str,
    options: RequestOptions,
    images: Vec<Bytes>,
    deadline: Option<std::time::Instant>,
) -> Result<Vec<Tensor>> {
    let request = |image: Bytes| InferRequest {
        image,
        selector: Selector {
            model: Some(name.to_string()),
            ..options.selector.clone()
        },
        options: options.task,
        png: false,
        deadline,
        protocol: Protocol::Http,
    };
    let service = &state.service;
    match task {
        Task::Classification => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.classify(request(i))),
            )
            .await?;
            Ok(classification(
                &answers.into_iter().map(|a| a.body).collect::<Vec<_>>(),
            ))
        }
        Task::Detection => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.detect(request(i))),
            )
            .await?;
            Ok(detection(
                &answers.into_iter().map(|a| a.body).collect::<Vec<_>>(),
            ))
        }
        Task::Segmentation => {
            let answers = futures_util::future::try_join_all(
                images.into_iter().map(|i| service.segment(request(i))),
            )
            .await?;
            segmentation(
                answers
                    .iter()
                    .map(|a| expand(&a.body.mask))
                    .collect::<Result<_>>()?,
            )
        }
    }
}

pub async fn infer(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let start = std::time::Instant::now();
    let (name, version) = path_parts(&params);
    let info = match model(&state, name, version) {
        Ok(info) => info,
        Err(error) => {
            service::record_refused(None, Protocol::Http, &error, start.elapsed());
            return error.into_response();
        }
    };
    let task = task_of(&info);
    let refused = |error: Error| {
        service::record_refused(Some(task), Protocol::Http, &error, start.elapsed());
        error
    };
    let parsed = async {
        let deadline = extract::deadline(request.headers())?;
        let headers = request.headers().clone();
        let body = extract::body(request, state.max_body_bytes).await?;
        let (header, binary) = split_body(&headers, &body)?;
        let parsed: InferBody = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("the inference request is not valid JSON: {e}")))?;
        let options = task_options(task, &parsed)?;
        let images = images(&parsed, binary)?;
        Ok((parsed, options, images, deadline))
    };
    let (parsed, options, images, deadline) = match parsed.await {
        Ok(parts) => parts,
        Err(error) => return refused(error).into_response(),
    };
    let tensors = match run(&state, task, &info.name, options, images, deadline).await {
        Ok(tensors) => tensors,
        Err(error) => return error.into_response(),
    };
    respond(&info.name, &parsed, tensors).unwrap_or_else(IntoResponse::into_response)
}

/// The answer: the outputs asked for (all when none are named), each in JSON or, when asked, as binary data
/// after the JSON.
fn respond(model: &str, request: &InferBody, tensors: Vec<Tensor>) -> Result<Response> {
    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(&'static str, bool)> = match &request.outputs {
        None => tensors.iter().map(|t| (t.name, all_binary)).collect(),
        Some(outputs) => outputs
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
                    .map(|t| (t.name, binary))
                    .ok_or_else(|| {
                        let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
                        bad(format!(
                            "unknown output {:?}; this model gives {}",
                            o.name,
                            names.join(", ")
                        ))
                    })
            })
            .collect::<Result<_>>()?,
    };
    let mut binary = Vec::new();
    let mut outputs = Vec::new();
    for (name, as_binary) in wanted {
        let Some(tensor) = tensors.iter().find(|t| t.name == name) else {
            continue;
        };
        let mut output =
            json!({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape});
        if as_binary {
            let bytes = tensor.data.binary();
            output["parameters"] = json!({"binary_data_size": bytes.len()});
            binary.extend(bytes);
        } else {
            output["data"] = tensor.data.json();
        }
        outputs.push(output);
    }
    let mut answer = json!({"model_name": model, "model_version": VERSION, "outputs": outputs});
    if let Some(id) = &request.id {
        answer["id"] = json!(id);
    }
    if binary.is_empty() {
        return Ok(Json(answer).into_response());
    }
    let mut body = serde_json::to_vec(&answer).map_err(Error::internal)?;
    let length = body.len();
    body.extend(binary);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(length));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: Value) -> InferBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn binary_bytes_elements_are_split_by_their_lengths() {
        let request = body(
            json!({"inputs": [{"name": "image", "shape": [2, 1], "datatype": "BYTES",
            "parameters": {"binary_data_size": 16}}]}),
        );
        let mut binary = Vec::new();
        for element in [&b"abc"[..], &b"hello"[..]] {
            binary.extend((element.len() as u32).to_le_bytes());
            binary.extend(element);
        }
        binary.push(0); // after the tensor: not part of it
        let images = images(&request, Bytes::from(binary)).unwrap();
        assert_eq!(images, vec![Bytes::from("abc"), Bytes::from("hello")]);
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        let cases = [
            json!({"inputs": []}),
            json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AA=="]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                "parameters": {"binary_data_size": 3}}]}),
        ];
        for case in cases {
            let error = images(&body(case.clone()), Bytes::from_static(b"\x05\0\0")).unwrap_err();
            assert!(matches!(error, Error::BadRequest(_)), "{case}: {error:?}");
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
    fn bytes_tensors_serialise_with_length_prefixes() {
        let data = TensorData::Bytes(vec!["ab".into(), String::new()]);
        assert_eq!(data.binary(), vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(TensorData::I32(vec![-1]).binary(), vec![255; 4]);
    }
}
