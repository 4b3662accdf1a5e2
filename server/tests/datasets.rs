//! Classifiers for other label sets, and the second int8 ImageNet classifier, over both protocols:
//!
//! - each agrees with the TFLite interpreter's own answers (`models/repository/tflite_reference.json`,
//!   written by `make models`): the same top class wherever the interpreter's top class leads its second by
//!   more than the tolerance, and the same score for it within the tolerance;
//! - routing by attributes stays within the default's dataset (ImageNet) unless `dataset` names another, and
//!   `/v1/models` and `ListModels` say each variant's dataset.
//!
//! The tolerance: the interpreter ran on Pillow's pixels, the server on its own decode and resize, which
//! differ from Pillow's by at most one level on a few values (docs/preprocessing.md). Through these uint8
//! models that moves a score by up to 17 quantisation steps (1/256): measured on the established int8
//! variant, bit-exact with the interpreter on the same pixels (2026-12-02, `cats_and_dogs.jpg`; the
//! per-channel model moved 12, the insect model 9). So 24 steps are allowed, and the top class is compared
//! only where the interpreter's leads its second by more than twice that. A conversion that loses a bias
//! (what tf2onnx did to the iNat models: up to 217 steps) or labels that do not line up still fail.

mod common;

use std::sync::OnceLock;

use common::*;
use mobilenet_proto::v1 as pb;
use serde_json::Value;

const IMAGENET: &str = "mobilenet_v2_1.0_224";
const INT8: &str = "mobilenet_v2_1.0_224_int8";
const PER_CHANNEL: &str = "mobilenet_v2_1.0_224_int8_per_channel";
const BIRDS: &str = "mobilenet_v2_1.0_224_inat_bird";
const INSECTS: &str = "mobilenet_v2_1.0_224_inat_insect";
/// The int8 variant first: how close the established conversion comes is the yardstick for the others.
const CHECKED: [&str; 4] = [INT8, PER_CHANNEL, BIRDS, INSECTS];
const TOLERANCE: f64 = 24.0 / 256.0;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start(&[IMAGENET, INT8, PER_CHANNEL, BIRDS, INSECTS], &[]))
}

fn tflite_reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let path = repository().join("tflite_reference.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `make models`)", path.display()));
        serde_json::from_str(&text).expect("tflite_reference.json")
    })
}

/// One answer: (class index, label, score), best first.
type Classes = Vec<(u64, String, f64)>;

/// Compares the server's answer for `model` on `image` with the interpreter's; the error says how it differs.
fn agrees(model: &str, image: &str, ours: &Classes) -> Result<(), String> {
    let reference = tflite_reference()[model][image]["top5"]
        .as_array()
        .ok_or_else(|| format!("no interpreter answer for {model} on {image}"))?;
    let Some(best) = reference.first() else {
        // Every class but the background scored zero in the interpreter: ours must not be far from it.
        return match ours.first() {
            Some((_, _, score)) if *score > TOLERANCE => {
                Err(format!("the interpreter gave nothing, we gave {ours:?}"))
            }
            _ => Ok(()),
        };
    };
    let (index, label, score) = (
        best[0].as_u64().unwrap_or(u64::MAX),
        best[1].as_str().unwrap_or_default(),
        best[2].as_f64().unwrap_or(f64::NAN),
    );
    let second = reference.get(1).and_then(|c| c[2].as_f64()).unwrap_or(0.0);
    let tol = TOLERANCE;
    if score - second > 2.0 * tol {
        let Some((our_index, our_label, _)) = ours.first() else {
            return Err("no classes".into());
        };
        if (*our_index, our_label.as_str()) != (index, label) {
            return Err(format!(
                "top class {our_index} {our_label:?}, interpreter {index} {label:?}"
            ));
        }
    }
    if let Some((_, _, our_score)) = ours.iter().find(|(i, _, _)| *i == index) {
        if (our_score - score).abs() > tol {
            return Err(format!("{label:?}: score {our_score}, interpreter {score}"));
        }
    } else if score > tol {
        return Err(format!(
            "{label:?} (interpreter {score}) missing from {ours:?}"
        ));
    }
    Ok(())
}

fn from_json(body: &Value) -> Classes {
    body["classes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["index"].as_u64().unwrap_or(u64::MAX),
                c["label"].as_str().unwrap_or_default().to_string(),
                c["score"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

async fn classify_http(query: &str, name: &str) -> (String, Value) {
    let r = reqwest::Client::new()
        .post(server().url(&format!("/v1/classify?{query}")))
        .multipart(form(image(name), name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let model = r.headers()["x-model-variant"].to_str().unwrap().to_string();
    (model, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_and_other_label_set_classifiers_agree_with_the_interpreter_over_http() {
    let mut failures = Vec::new();
    for model in CHECKED {
        for name in reference_images() {
            let (served, body) = classify_http(&format!("model={model}&top_k=5"), &name).await;
            assert_eq!(served, model);
            if let Err(e) = agrees(model, &name, &from_json(&body)) {
                failures.push(format!("{model} on {name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_and_other_label_set_classifiers_agree_with_the_interpreter_over_grpc() {
    let mut client = server().grpc_client().await;
    let mut failures = Vec::new();
    for model in CHECKED {
        for name in reference_images() {
            let request = pb::ClassifyRequest {
                image: image(&name).into(),
                model: Some(pb::ModelSelector {
                    model: model.into(),
                    ..Default::default()
                }),
                top_k: Some(5),
            };
            let answer = client.classify(request).await.unwrap().into_inner();
            assert_eq!(answer.model, model);
            let ours: Classes = answer
                .classes
                .into_iter()
                .map(|c| (u64::from(c.index), c.label, f64::from(c.score)))
                .collect();
            if let Err(e) = agrees(model, &name, &ours) {
                failures.push(format!("{model} on {name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The parrot is a bird: the bird classifier names a parrot species (an ara, as the ImageNet classifiers
/// answer "macaw"), which also shows that its labels line up with its outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bird_classifier_knows_the_parrot() {
    let (_, body) = classify_http("dataset=inat_birds&top_k=1", "parrot.jpg").await;
    let label = body["classes"][0]["label"].as_str().unwrap_or_default();
    assert!(label.starts_with("Ara "), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_stay_within_imagenet_unless_a_dataset_is_named() {
    let cases = [
        ("", IMAGENET),
        ("precision=int8", INT8),
        ("precision=int8&resolution=224&width=1.0", INT8),
        ("dataset=imagenet&precision=int8", INT8),
        ("dataset=inat_birds", BIRDS),
        ("dataset=INAT_INSECTS&precision=int8", INSECTS),
        ("model=mobilenet_v2_1.0_224_inat_bird", BIRDS),
    ];
    for (query, expected) in cases {
        let (served, _) = classify_http(query, "cat.bmp").await;
        assert_eq!(served, expected, "{query}");
    }
    let mut client = server().grpc_client().await;
    for (dataset, precision, expected) in [
        ("", "int8", INT8),
        ("inat_birds", "", BIRDS),
        ("inat_insects", "int8", INSECTS),
    ] {
        let request = pb::ClassifyRequest {
            image: image("cat.bmp").into(),
            model: Some(pb::ModelSelector {
                dataset: dataset.into(),
                precision: precision.into(),
                ..Default::default()
            }),
            top_k: Some(1),
        };
        let answer = client.classify(request).await.unwrap().into_inner();
        assert_eq!(
            answer.model, expected,
            "dataset={dataset} precision={precision}"
        );
    }
    // A dataset no variant has, one that contradicts the named model, and one that is not a name.
    for (query, status, kind) in [
        ("dataset=inat_fungi", 404, "no_matching_variant"),
        (
            "dataset=imagenet&model=mobilenet_v2_1.0_224_inat_bird",
            404,
            "no_matching_variant",
        ),
        ("dataset=inat%20birds", 400, "bad_option"),
        (
            "dataset=inat_birds&precision=float32",
            404,
            "no_matching_variant",
        ),
    ] {
        let r = reqwest::Client::new()
            .post(server().url(&format!("/v1/classify?{query}")))
            .multipart(form(image("cat.bmp"), "cat.bmp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["kind"], kind, "{query}: {body}");
    }
    let request = pb::ClassifyRequest {
        image: image("cat.bmp").into(),
        model: Some(pb::ModelSelector {
            dataset: "inat_fungi".into(),
            ..Default::default()
        }),
        top_k: None,
    };
    let status = client.classify(request).await.expect_err("no such dataset");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_list_names_each_dataset() {
    let expected = [
        (IMAGENET, "imagenet"),
        (INT8, "imagenet"),
        (PER_CHANNEL, "imagenet"),
        (BIRDS, "inat_birds"),
        (INSECTS, "inat_insects"),
    ];
    let listed: Value = reqwest::get(server().url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed["models"].as_array().cloned().unwrap_or_default();
    let grpc = server()
        .grpc_client()
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models;
    for (name, dataset) in expected {
        let http = listed.iter().find(|m| m["name"] == name);
        assert_eq!(
            http.map(|m| m["dataset"].clone()),
            Some(dataset.into()),
            "{name}"
        );
        let over_grpc = grpc.iter().find(|m| m.name == name);
        assert_eq!(
            over_grpc.map(|m| m.dataset.as_str()),
            Some(dataset),
            "{name}"
        );
    }
    let birds = listed.iter().find(|m| m["name"] == BIRDS);
    assert_eq!(
        birds.map(|m| m["num_classes"].clone()),
        Some(964.into()),
        "964 species; the background is not a class"
    );
}
