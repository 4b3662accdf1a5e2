//! The Open Inference Protocol (KServe V2) over HTTP, on the same port as the native API: health, server and
//! model metadata, and inference with JSON tensors or Triton's binary tensor extension
//! (`Inference-Header-Content-Length`). What the protocol means here is in [`crate::oip`]; this module
//! converts its HTTP form. In JSON, each image is a base64 string; in binary form, the `BYTES` tensor's raw
//! elements follow the JSON. Errors are `{"error": ...}` (with our `kind`), with the native API's statuses.
use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde_json::{Value, json};

use super::{AppState, extract, handlers};
use crate::{
    error::{Error, Result},
    oip::{self, InferBody, InputKind, ModelRef, Tensor, TensorValues, bad},
    routing::Selector,
    service::{self, Input, Protocol},
};

/// The header that says how long the JSON part of a binary request or answer is.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// The answer is in the status (200 or 503), as Triton's clients read it, and in the JSON body the protocol
/// defines, as KServe's read it.
fn readiness(ready: bool, mut body: Value) -> (StatusCode, Json<Value>) {
    body["ready"] = json!(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    readiness(crate::health::serving(&state.service), json!({}))
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": oip::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": oip::EXTENSIONS,
    }))
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
    let model = oip::model(&state.service, name, version)?;
    let tensor = |name: &str, datatype: &str, shape: &[i64]| json!({"name": name, "datatype": datatype, "shape": shape});
    let inputs: Vec<Value> = oip::inputs_of(&model.input)
        .iter()
        .map(|(name, datatype, shape)| tensor(name, datatype, shape))
        .collect();
    let outputs: Vec<Value> = oip::outputs_of(&model)
        .iter()
        .map(|(name, datatype, shape)| tensor(name, datatype, shape))
        .collect();
    Ok(Json(json!({
        "name": name,
        "versions": [oip::VERSION],
        "platform": oip::SERVER_NAME,
        "inputs": inputs,
        "outputs": outputs,
    })))
}

pub async fn model_ready(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>)> {
    let (name, version) = path_parts(&params);
    oip::model(&state.service, name, version)?;
    Ok(readiness(state.service.is_ready(), json!({"name": name})))
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

/// The service's inputs from the request's one input, in binary data after the JSON or in its `data`:
/// encoded images (base64 strings in JSON), or rows of the model's own input tensor.
fn inputs(body: &InferBody, mut binary: Bytes, model: &ModelRef) -> Result<Vec<Input>> {
    let kind = oip::input_kind(body, &model.input)?;
    let input = &body.inputs[0];
    let binary = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size
                .as_u64()
                .filter(|&s| s as usize <= binary.len())
                .ok_or_else(|| bad("binary_data_size must be within the body"))?;
            Some(binary.split_to(size as usize))
        }
        None => None,
    };
    let data = || {
        input
            .data
            .as_deref()
            .ok_or_else(|| bad("the input has neither data nor binary_data_size"))
    };
    let count = match kind {
        InputKind::Images(count) => count,
        InputKind::Tensor(rows) => {
            let values = match &binary {
                Some(raw) => TensorValues::Raw(raw),
                None => TensorValues::Json(data()?),
            };
            let rows = oip::tensor_rows(values, rows, &model.input)?;
            return Ok(rows.into_iter().map(Input::Tensor).collect());
        }
    };
    let images = match binary {
        Some(raw) => oip::split_elements(raw)?,
        None => serde_json::from_str::<Vec<Value>>(data()?.get())
            .map_err(|e| {
                bad(format!(
                    "the input's data must be an array of base64 strings: {e}"
                ))
            })?
            .iter()
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
            .collect::<Result<Vec<_>>>()?,
    };
    oip::check_count(images, count)
}

pub async fn infer(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let start = std::time::Instant::now();
    let (name, version) = path_parts(&params);
    let model = match oip::model(&state.service, name, version) {
        Ok(model) => model,
        Err(error) => {
            service::record_refused(None, Protocol::Http, &error, start.elapsed());
            return error.into_response();
        }
    };
    let deadline = match extract::deadline(request.headers(), start) {
        Ok(deadline) => deadline,
        Err(error) => {
            service::record_refused(Some(model.task), Protocol::Http, &error, start.elapsed());
            return error.into_response();
        }
    };
    // The path names the model: a request it would refuse now is answered before its body is read.
    let selector = Selector {
        model: Some(name.to_string()),
        ..Selector::default()
    };
    let request = match handlers::judge_head(&state, model.task, &selector, deadline, request) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let parsed = async {
        let headers = request.headers().clone();
        let body = extract::body(request, state.max_body_bytes).await?;
        let (header, binary) = split_body(&headers, &body)?;
        let parsed: InferBody = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("the inference request is not valid JSON: {e}")))?;
        let options = oip::task_options(model.task, &parsed)?;
        let images = inputs(&parsed, binary, &model)?;
        let raw_outputs = oip::wants_raw(&parsed, &model, images.len())?;
        Ok::<_, Error>((parsed, options, images, raw_outputs))
    };
    let (parsed, options, images, raw_outputs) = match parsed.await {
        Ok(parts) => parts,
        Err(error) => {
            service::record_refused(Some(model.task), Protocol::Http, &error, start.elapsed());
            return error.into_response();
        }
    };
    let call = oip::Call {
        model: name,
        task: model.task,
        options,
        deadline,
        received: start,
        protocol: Protocol::Http,
        raw_outputs,
    };
    let run = oip::run(&state.service, call, images);
    match run.await {
        Ok(tensors) => respond(name, &parsed, &tensors).unwrap_or_else(IntoResponse::into_response),
        Err(error) => error.into_response(),
    }
}

/// The answer: the outputs [`oip::select`] chooses, each in JSON or as binary data after the JSON.
fn respond(model: &str, request: &InferBody, tensors: &[Tensor]) -> Result<Response> {
    let mut binary = Vec::new();
    let mut outputs = Vec::new();
    for (tensor, as_binary) in oip::select(request, tensors)? {
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
    let mut answer =
        json!({"model_name": model, "model_version": oip::VERSION, "outputs": outputs});
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
    use crate::{
        imaging::InputData,
        repository::{InputDtype, InputSpec, Layout, ResizeMode, Task},
    };

    fn body(json: Value) -> InferBody {
        serde_json::from_value(json).unwrap()
    }

    /// A classifier whose input is 1x2 uint8 NHWC: six values an image.
    fn model() -> ModelRef {
        ModelRef {
            raw_outputs: Vec::new(),
            task: Task::Classification,
            input: InputSpec {
                name: "input".into(),
                layout: Layout::Nhwc,
                dtype: InputDtype::Uint8,
                height: 1,
                width: 2,
                mean: [0.0; 3],
                std: [1.0; 3],
                resize: ResizeMode::Stretch,
            },
        }
    }

    fn images(request: &InferBody, binary: Bytes) -> Result<Vec<Bytes>> {
        Ok(inputs(request, binary, &model())?
            .into_iter()
            .map(|input| match input {
                Input::Image(bytes) => bytes,
                Input::Tensor(_) => panic!("an image was expected"),
            })
            .collect())
    }

    fn rows(request: &InferBody, binary: Bytes) -> Result<Vec<InputData>> {
        Ok(inputs(request, binary, &model())?
            .into_iter()
            .map(|input| match input {
                Input::Tensor(prepared) => prepared.data,
                Input::Image(_) => panic!("a tensor was expected"),
            })
            .collect())
    }

    #[test]
    fn binary_images_stop_at_their_size_and_json_ones_are_base64() {
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
        let got = images(&request, Bytes::from(binary)).unwrap();
        assert_eq!(got, vec![Bytes::from("abc"), Bytes::from("hello")]);
        let json_form = body(
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
            "data": ["aGk="]}]}),
        );
        assert_eq!(
            images(&json_form, Bytes::new()).unwrap(),
            vec![Bytes::from("hi")]
        );
    }

    #[test]
    fn raw_tensors_split_into_rows_from_binary_or_json() {
        let binary = body(
            json!({"inputs": [{"name": "input", "shape": [2, 1, 2, 3], "datatype": "UINT8",
            "parameters": {"binary_data_size": 12}}]}),
        );
        let got = rows(&binary, Bytes::from((0u8..13).collect::<Vec<_>>())).unwrap();
        assert_eq!(
            got,
            vec![
                InputData::U8(vec![0, 1, 2, 3, 4, 5]),
                InputData::U8(vec![6, 7, 8, 9, 10, 11])
            ]
        );
        let nested = body(
            json!({"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "UINT8",
            "data": [[[1, 2, 3], [4, 5, 255]]]}]}),
        );
        assert_eq!(
            rows(&nested, Bytes::new()).unwrap(),
            vec![InputData::U8(vec![1, 2, 3, 4, 5, 255])]
        );
    }

    #[test]
    fn bad_data_is_refused_with_a_reason() {
        let cases = [
            json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AA=="]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [7]}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}),
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                "parameters": {"binary_data_size": 30}}]}),
            // Raw tensors: a value out of UINT8's range, too few values, another datatype, another shape.
            json!({"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "UINT8",
                "data": [1, 2, 3, 4, 5, 256]}]}),
            json!({"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "UINT8",
                "data": [1, 2, 3, 4, 5]}]}),
            json!({"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "FP32",
                "data": [1, 2, 3, 4, 5, 6]}]}),
            json!({"inputs": [{"name": "input", "shape": [1, 2, 1, 3], "datatype": "UINT8",
                "data": [1, 2, 3, 4, 5, 6]}]}),
            json!({"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "UINT8",
                "parameters": {"binary_data_size": 3}}]}),
        ];
        for case in cases {
            let error = inputs(
                &body(case.clone()),
                Bytes::from_static(b"\x05\0\0"),
                &model(),
            )
            .err()
            .unwrap_or_else(|| panic!("{case} was accepted"));
            assert!(matches!(error, Error::BadRequest(_)), "{case}: {error:?}");
        }
    }
}
