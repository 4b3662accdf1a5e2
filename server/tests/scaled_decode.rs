//! The scaled JPEG decode (`--jpeg-scaled-decode`, the default) gives the answers of a full decode (issue 15):
//! the same top-1 class, boxes at IoU >= 0.8, and every segmentation class's share of the image within 1
//! point.
//!
//! The photos of `../shared/images` are too small to be reduced (the server keeps twice the model's input
//! size), so each JPEG is enlarged 4x and encoded again here, as a phone photo would be (a 1280x720 photo
//! becomes 5120x2880, 15 MP): every model then decodes it at 1/2, 1/4 or 1/8. Two servers answer for the
//! same images, one decoding in full.
mod common;

use std::io::Cursor;

use common::*;
use serde_json::Value;

const CLASSIFIER: &str = "mobilenet_v2_1.0_224";
const DETECTOR: &str = "ssd_mobilenet_v2_fpnlite_256";
const SEGMENTERS: [&str; 2] = ["deeplabv3_mnv2_513", "deeplabv3_mnv2_257"];
const ENLARGE: u32 = 4;

/// Every reference JPEG, enlarged [`ENLARGE`] times (bilinear) and encoded at quality 92.
fn large_jpegs() -> Vec<(String, Vec<u8>)> {
    reference_images()
        .into_iter()
        .filter(|name| name.ends_with(".jpg"))
        .map(|name| {
            let small = image::load_from_memory(&image(&name)).unwrap().to_rgb8();
            let large = image::imageops::resize(
                &small,
                small.width() * ENLARGE,
                small.height() * ENLARGE,
                image::imageops::FilterType::Triangle,
            );
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 92)
                .encode_image(&large)
                .unwrap();
            (name, jpeg)
        })
        .collect()
}

async fn answer(server: &TestServer, route: &str, model: &str, jpeg: &[u8]) -> Value {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/{route}?model={model}")))
        .header("content-type", "image/jpeg")
        .body(jpeg.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{model}");
    response.json().await.unwrap()
}

fn boxes(answer: &Value) -> Vec<(String, [f64; 4])> {
    answer["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["score"].as_f64().unwrap() >= 0.6)
        .map(|d| {
            let b = &d["box_normalized"];
            let c = |k: &str| b[k].as_f64().unwrap();
            (
                d["label"].as_str().unwrap().to_owned(),
                [c("x1"), c("y1"), c("x2"), c("y2")],
            )
        })
        .collect()
}

fn fractions(answer: &Value) -> Vec<(String, f64)> {
    answer["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_owned(),
                c["fraction"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_decode_gives_the_answers_of_a_full_decode() {
    let mut models = vec![CLASSIFIER, DETECTOR];
    models.extend(SEGMENTERS);
    let scaled = start(&models, &[]);
    let full = start(&models, &["--jpeg-scaled-decode", "false"]);
    for (name, jpeg) in large_jpegs() {
        let top1 = |a: &Value| a["classes"][0]["label"].as_str().unwrap().to_owned();
        let (s, f) = (
            answer(&scaled, "classify", CLASSIFIER, &jpeg).await,
            answer(&full, "classify", CLASSIFIER, &jpeg).await,
        );
        assert_eq!(top1(&s), top1(&f), "{name}: top-1");

        let (s, f) = (
            answer(&scaled, "detect", DETECTOR, &jpeg).await,
            answer(&full, "detect", DETECTOR, &jpeg).await,
        );
        let (ours, theirs) = (boxes(&s), boxes(&f));
        for (label, b) in &theirs {
            assert!(
                ours.iter().any(|(l, o)| l == label && iou(*o, *b) >= 0.8),
                "{name}: {label} {b:?} of the full decode not found in {ours:?}"
            );
        }

        for model in SEGMENTERS {
            let (s, f) = (
                fractions(&answer(&scaled, "segment", model, &jpeg).await),
                fractions(&answer(&full, "segment", model, &jpeg).await),
            );
            let share = |list: &[(String, f64)], label: &str| {
                list.iter().find(|(l, _)| l == label).map_or(0.0, |c| c.1)
            };
            for (label, _) in s.iter().chain(&f) {
                let gap = (share(&s, label) - share(&f, label)).abs();
                assert!(
                    gap <= 0.01,
                    "{model} on {name} x{ENLARGE}: {label} {:.2}% scaled, {:.2}% full",
                    share(&s, label) * 100.0,
                    share(&f, label) * 100.0
                );
            }
        }
    }
    scaled.shutdown();
    full.shutdown();
}
