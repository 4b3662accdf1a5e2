//! The Open Inference Protocol (KServe V2) over HTTP: health, metadata, and inference on encoded images in
//! JSON (base64) and in Triton's binary tensor form, and on the model's own input tensor, each answer equal
//! to the native API's on the same image.
mod common;

use std::sync::OnceLock;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const CLASSIFIER: &str = "mobilenet_v2_1.0_96";
const DETECTOR: &str = "ssd_mobilenet_v2_fpnlite_256";
const SEGMENTER: &str = "deeplabv3_mnv2_257";

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start(&[CLASSIFIER, DETECTOR, SEGMENTER], &[]))
}

async fn get(path: &str) -> (u16, String) {
    let r = reqwest::get(server().url(path)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn native(path: &str, image_name: &str) -> Value {
    let r = reqwest::Client::new()
        .post(server().url(path))
        .multipart(form(image(image_name), image_name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// An OIP request with the images as base64 JSON strings.
fn json_request(images: &[&str], extra: Value) -> Value {
    let encoded: Vec<String> = images
        .iter()
        .map(|name| base64::engine::general_purpose::STANDARD.encode(image(name)))
        .collect();
    let mut request = json!({"inputs": [{"name": "image", "shape": [images.len()], "datatype": "BYTES",
        "data": encoded}]});
    if let (Value::Object(request), Value::Object(extra)) = (&mut request, extra) {
        request.extend(extra);
    }
    request
}

async fn infer_json(model: &str, request: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server().url(&format!("/v2/models/{model}/infer")))
        .json(request)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn output<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name}: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata() {
    let (status, body) = get("/v2/health/live").await;
    assert_eq!((status, body.as_str()), (200, r#"{"live":true}"#));
    let (status, body) = get("/v2/health/ready").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
    let (status, body) = get("/v2").await;
    assert_eq!(status, 200);
    let meta: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["name"], "mobilenet-serve");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );

    for path in [
        format!("/v2/models/{CLASSIFIER}"),
        format!("/v2/models/{CLASSIFIER}/versions/1"),
    ] {
        let (status, body) = get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let meta: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(meta["name"], CLASSIFIER);
        assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
        assert_eq!(meta["outputs"][0]["name"], "classification");
    }
    let (status, body) = get(&format!("/v2/models/{DETECTOR}/ready")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"name": DETECTOR, "ready": true})
    );
    assert_eq!(
        get(&format!("/v2/models/{DETECTOR}/versions/1/ready"))
            .await
            .0,
        200
    );
    let (status, body) = get("/v2/models/nope").await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("nope"), "{error}");
    assert_eq!(
        get(&format!("/v2/models/{CLASSIFIER}/versions/2")).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_equals_the_native_answer() {
    let images = ["parrot.jpg", "cat_720p.jpg"];
    let request = json_request(
        &images,
        json!({"id": "42", "outputs": [{"name": "classification", "parameters": {"classification": 3}}]}),
    );
    let (status, answer) = infer_json(CLASSIFIER, &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], CLASSIFIER);
    assert_eq!(answer["id"], "42");
    let classes = output(&answer, "classification");
    assert_eq!(classes["datatype"], "BYTES");
    // Rows are as long as the longest top-k; a shorter one (classes with no probability are not listed) is
    // padded with empty strings.
    let k = classes["shape"][1].as_u64().unwrap() as usize;
    assert_eq!(classes["shape"][0], 2);
    assert!((1..=3).contains(&k), "{answer}");
    for (i, name) in images.iter().enumerate() {
        let native = native(&format!("/v1/classify?model={CLASSIFIER}&top_k=3"), name).await;
        let expected: Vec<String> = native["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let (score, index) = (c["score"].as_f64().unwrap(), &c["index"]);
                format!("{score:.6}:{index}:{}", c["label"].as_str().unwrap())
            })
            .chain(std::iter::repeat(String::new()))
            .take(k)
            .collect();
        let ours: Vec<&str> = (0..k)
            .map(|j| classes["data"][i * k + j].as_str().unwrap())
            .collect();
        assert_eq!(ours, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_in_binary_form_equals_the_native_answer() {
    let name = "cats_and_dogs.jpg";
    let bytes = image(name);
    let mut tensor = (bytes.len() as u32).to_le_bytes().to_vec();
    tensor.extend(&bytes);
    let header = json!({
        "inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
            "parameters": {"binary_data_size": tensor.len()}}],
        "outputs": [{"name": "boxes", "parameters": {"binary_data": true}},
            {"name": "num_detections"}, {"name": "classes"}],
    });
    let header = serde_json::to_vec(&header).unwrap();
    let mut body = header.clone();
    body.extend(tensor);
    let r = reqwest::Client::new()
        .post(server().url(&format!("/v2/models/{DETECTOR}/infer")))
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let length: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body[..length]).unwrap();
    let boxes = output(&answer, "boxes");
    assert!(boxes.get("data").is_none(), "asked for in binary: {answer}");
    let size = boxes["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert_eq!(body.len(), length + size, "only the boxes are binary");
    let floats: Vec<f32> = body[length..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let count = output(&answer, "num_detections")["data"][0]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 3);

    let native = native(&format!("/v1/detect?model={DETECTOR}"), name).await;
    let detections = native["detections"].as_array().unwrap();
    assert!(count > 0);
    assert_eq!(count, detections.len());
    for (j, d) in detections.iter().enumerate() {
        assert_eq!(output(&answer, "classes")["data"][j], d["class_index"]);
        for (k, corner) in ["x1", "y1", "x2", "y2"].iter().enumerate() {
            let expected = d["box"][corner].as_f64().unwrap() as f32;
            assert_eq!(floats[j * 4 + k], expected, "detection {j} {corner}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmentation_equals_the_native_mask() {
    let name = "segmentation_input_rotation0.jpg";
    let (status, answer) = infer_json(SEGMENTER, &json_request(&[name], json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    let map = output(&answer, "class_map");
    let native = native(&format!("/v1/segment?model={SEGMENTER}"), name).await;
    let (w, h) = (
        native["mask"]["width"].as_u64().unwrap(),
        native["mask"]["height"].as_u64().unwrap(),
    );
    assert_eq!(map["shape"], json!([1, h, w]));
    let values: Vec<u32> = serde_json::from_value(native["mask"]["values"].clone()).unwrap();
    let lengths: Vec<u32> = serde_json::from_value(native["mask"]["lengths"].clone()).unwrap();
    let expected = expand_rle(&values, &lengths);
    let ours: Vec<u8> = serde_json::from_value(map["data"].clone()).unwrap();
    assert_eq!(ours, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_oip_form_and_the_native_statuses() {
    let cases = [
        (json!({"inputs": []}), 400),
        (
            json_request(&["parrot.jpg"], json!({"outputs": [{"name": "logits"}]})),
            400,
        ),
        (
            json_request(&["parrot.jpg"], json!({"parameters": {"top_k": 0}})),
            400,
        ),
    ];
    for (request, status) in cases {
        let (got, body) = infer_json(CLASSIFIER, &request).await;
        assert_eq!(got, status, "{body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    }
    let not_an_image = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
        "data": [base64::engine::general_purpose::STANDARD.encode(b"hello")]}]});
    let (got, body) = infer_json(CLASSIFIER, &not_an_image).await;
    assert_eq!(got, 415, "{body}");
    let (got, _) = infer_json("nope", &json_request(&["parrot.jpg"], json!({}))).await;
    assert_eq!(got, 404);
    let r = reqwest::Client::new()
        .post(server().url(&format!("/v2/models/{CLASSIFIER}/infer")))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// `name` resized to `side` x `side` (any resize: what matters is that both forms carry the same pixels), as
/// RGB8 pixels and as a PNG of them.
fn model_sized(name: &str, side: u32) -> (Vec<u8>, Vec<u8>) {
    let decoded = image::load_from_memory(&image(name)).unwrap().to_rgb8();
    let resized =
        image::imageops::resize(&decoded, side, side, image::imageops::FilterType::Triangle);
    let mut png = Vec::new();
    resized
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    (resized.into_raw(), png)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_input_tensor_answers_as_the_same_pixels_sent_as_an_image() {
    let (_, metadata) = get(&format!("/v2/models/{CLASSIFIER}")).await;
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(
        metadata["inputs"][1],
        json!({"name": "input", "datatype": "UINT8", "shape": [-1, 96, 96, 3]}),
        "{metadata}"
    );
    let (pixels, png) = model_sized("parrot.jpg", 96);
    let r = reqwest::Client::new()
        .post(server().url(&format!("/v1/classify?model={CLASSIFIER}&top_k=3")))
        .multipart(form(png, "parrot.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let native: Value = r.json().await.unwrap();
    let expected: Vec<String> = native["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{:.6}:{}:{}",
                c["score"].as_f64().unwrap(),
                c["index"],
                c["label"].as_str().unwrap()
            )
        })
        .collect();
    // Two rows of the same pixels, nested as [N, H, W, C] in JSON.
    let row: Vec<Vec<Vec<u8>>> = pixels
        .chunks(96 * 3)
        .map(|line| line.chunks(3).map(<[u8]>::to_vec).collect())
        .collect();
    let request = json!({"inputs": [{"name": "input", "shape": [2, 96, 96, 3], "datatype": "UINT8",
        "data": [row, row]}], "parameters": {"top_k": 3}});
    let (status, answer) = infer_json(CLASSIFIER, &request).await;
    assert_eq!(status, 200, "{answer}");
    let classes = output(&answer, "classification");
    let k = classes["shape"][1].as_u64().unwrap() as usize;
    for i in 0..2 {
        let ours: Vec<&str> = (0..k)
            .map(|j| classes["data"][i * k + j].as_str().unwrap())
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(ours, expected, "row {i}");
    }
    // Values the model's input cannot hold, and a shape that is not its input's.
    let cases = [
        json!({"inputs": [{"name": "input", "shape": [1, 96, 96, 3], "datatype": "UINT8", "data": [300]}]}),
        json!({"inputs": [{"name": "input", "shape": [1, 96, 96, 3], "datatype": "FP32", "data": [0.5]}]}),
        json!({"inputs": [{"name": "input", "shape": [1, 224, 224, 3], "datatype": "UINT8", "data": [0]}]}),
        json!({"inputs": [{"name": "input", "shape": [1, 96, 96, 3], "datatype": "UINT8", "data": [0, 1]}]}),
    ];
    for request in cases {
        let (status, body) = infer_json(CLASSIFIER, &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_own_outputs_come_when_asked_for_by_name() {
    let (_, metadata) = get(&format!("/v2/models/{CLASSIFIER}")).await;
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    let raw = metadata["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "raw_scores")
        .unwrap_or_else(|| panic!("no raw_scores in {metadata}"));
    let classes = raw["shape"][1].as_u64().unwrap() as usize;
    assert_eq!(raw["shape"][0], -1, "{raw}");
    let request = json_request(
        &["parrot.jpg", "cat_720p.jpg"],
        json!({"parameters": {"top_k": 1},
            "outputs": [{"name": "classification"}, {"name": "raw_scores", "parameters": {"binary_data": false}}]}),
    );
    let (status, answer) = infer_json(CLASSIFIER, &request).await;
    assert_eq!(status, 200, "{answer}");
    let scores = output(&answer, "raw_scores");
    assert_eq!(scores["shape"], json!([2, classes]), "{scores}");
    let values: Vec<f64> = serde_json::from_value(scores["data"].clone()).unwrap();
    let top = output(&answer, "classification");
    for i in 0..2 {
        // The finished top-1 is the best of the model's own scores (the label index skips no column here:
        // the classifier's column 0 is its background class, which the finished answer never lists).
        let row = &values[i * classes..(i + 1) * classes];
        let best = (0..classes)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        let finished = top["data"][i].as_str().unwrap();
        let index: usize = finished.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(best, index, "image {i}: {finished}");
    }
    // Without asking, none comes; an unknown raw name is a 400 naming what there is.
    let (_, plain) = infer_json(CLASSIFIER, &json_request(&["parrot.jpg"], json!({}))).await;
    assert!(
        plain["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["name"] != "raw_scores"),
        "{plain}"
    );
    let (status, body) = infer_json(
        CLASSIFIER,
        &json_request(&["parrot.jpg"], json!({"outputs": [{"name": "raw_nope"}]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("raw_scores"),
        "{body}"
    );
    // The segmenter's logits are 5.5 MB an image: sixteen of them are over the 64 MiB one answer may carry,
    // and the request is refused before anything runs.
    let many = json_request(
        &["segmentation_input_rotation0.jpg"; 16],
        json!({"outputs": [{"name": "raw_logits"}]}),
    );
    let (status, body) = infer_json(SEGMENTER, &many).await;
    assert_eq!(
        status,
        400,
        "an answer of {} outputs",
        body["outputs"].as_array().map_or(0, Vec::len)
    );
    assert!(
        body["error"].as_str().unwrap().contains("fewer images"),
        "{body}"
    );
    let one = json_request(
        &["segmentation_input_rotation0.jpg"],
        json!({"outputs": [{"name": "raw_logits"}]}),
    );
    let (status, body) = infer_json(SEGMENTER, &one).await;
    assert_eq!(status, 200, "{}", body["error"]);
    assert_eq!(
        output(&body, "raw_logits")["shape"],
        json!([1, 257, 257, 21])
    );
}
