//! Every bad input gets its 4xx (HTTP, JSON `{error, kind}`) or matching gRPC code, names the problem, and
//! leaves the server healthy for the next request.
mod common;

use std::sync::OnceLock;

use common::*;
use mobilenet_proto::v1 as pb;
use tonic::Code;

const CLASSIFIER: &str = "mobilenet_v2_1.0_96";
const SEGMENTER: &str = "deeplabv3_mnv2_257";

/// Small limits so that the test images can exceed them: cat_720p.jpg has 921,600 pixels,
/// grace_hopper.bmp is 921,738 bytes, and a 700 x 700 16-bit RGBA PNG needs an estimated 10 MiB to decode
/// and resize (parrot.jpg, the largest test photo under the pixel limit, about 7). The classifier's model thread decodes its images itself and the
/// segmenter's come from the decode pool, so every error below is checked on both paths.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let classifier_decodes = format!("{CLASSIFIER}:decode_in_model_thread=1");
        let segmenter_does_not = format!("{SEGMENTER}:decode_in_model_thread=0");
        start(
            &[CLASSIFIER, SEGMENTER],
            &[
                "--max-image-pixels",
                "500000",
                "--max-body-bytes",
                "800000",
                "--max-image-memory-mib",
                "8",
                "--model-override",
                &classifier_decodes,
                "--model-override",
                &segmenter_does_not,
            ],
        )
    })
}

async fn expect(request: reqwest::RequestBuilder, status: u16, kind: &str) {
    let r = request.send().await.unwrap();
    assert_eq!(r.status().as_u16(), status, "expected {status} {kind}");
    let body: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["kind"], kind, "{body}");
    assert!(!body["error"].as_str().unwrap().is_empty());
}

fn post(path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(server().url(path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_empty_image() {
    let other_field = reqwest::multipart::Form::new().text("picture", "x");
    expect(
        post("/v1/classify").multipart(other_field),
        400,
        "missing_image",
    )
    .await;
    expect(
        post("/v1/classify")
            .header("content-type", "image/jpeg")
            .body(Vec::<u8>::new()),
        400,
        "missing_image",
    )
    .await;
    expect(
        post("/v1/classify").multipart(form(Vec::new(), "empty.jpg")),
        400,
        "empty_image",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_an_image_corrupt_or_unsupported() {
    // The classifier decodes on its model thread, the segmenter on the decode pool.
    for path in ["/v1/classify", "/v1/segment"] {
        expect(
            post(path).multipart(form(b"hello, not an image".to_vec(), "x.jpg")),
            415,
            "unsupported_format",
        )
        .await;
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
        expect(
            post(path).header("content-type", "image/gif").body(gif),
            415,
            "unsupported_format",
        )
        .await;
        let jpeg = image("burger.jpg");
        expect(
            post(path).multipart(form(jpeg[..jpeg.len() / 3].to_vec(), "cut.jpg")),
            400,
            "invalid_image",
        )
        .await;
        let mut corrupt = image("burger.jpg");
        corrupt[4..400].fill(0x55); // keeps the JPEG magic, destroys the headers
        expect(
            post(path).multipart(form(corrupt, "bad.jpg")),
            400,
            "invalid_image",
        )
        .await;
    }
    expect(
        post("/v1/classify")
            .header("content-type", "text/plain")
            .body("hello"),
        415,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits() {
    for path in ["/v1/classify", "/v1/segment"] {
        expect(
            post(path).multipart(form(image("cat_720p.jpg"), "big.jpg")),
            413,
            "image_too_large",
        )
        .await;
    }
    expect(
        post("/v1/classify").multipart(form(image("grace_hopper.bmp"), "huge.bmp")),
        413,
        "body_too_large",
    )
    .await;
    expect(
        post("/v1/classify")
            .header("content-type", "image/bmp")
            .body(image("grace_hopper.bmp")),
        413,
        "body_too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_wrong_task_bad_options() {
    let cat = || form(image("cat.bmp"), "cat.bmp");
    expect(
        post("/v1/classify?model=nope").multipart(cat()),
        404,
        "unknown_model",
    )
    .await;
    expect(
        post(&format!("/v1/classify?model={SEGMENTER}")).multipart(cat()),
        400,
        "wrong_task",
    )
    .await;
    expect(
        post("/v1/classify?resolution=1000").multipart(cat()),
        404,
        "no_matching_variant",
    )
    .await;
    expect(
        post("/v1/classify?top_k=0").multipart(cat()),
        400,
        "bad_option",
    )
    .await;
    expect(
        post("/v1/classify?top_k=abc").multipart(cat()),
        400,
        "bad_option",
    )
    .await;
    expect(
        post("/v1/classify?precision=fp16").multipart(cat()),
        400,
        "bad_option",
    )
    .await;
    expect(
        post("/v1/segment?format=gif").multipart(cat()),
        400,
        "bad_option",
    )
    .await;
    for timeout in ["soon", "0", "-5"] {
        expect(
            post("/v1/classify")
                .header("x-request-timeout-ms", timeout)
                .multipart(cat()),
            400,
            "bad_option",
        )
        .await;
    }
    expect(
        post("/v1/classify?topk=3").multipart(cat()),
        400,
        "bad_request",
    )
    .await;
    // And the server still answers normally afterwards.
    let r = post("/v1/classify?top_k=2")
        .multipart(cat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let classes = body["classes"].as_array().unwrap();
    assert!((1..=2).contains(&classes.len()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_paths_and_methods_get_json_errors() {
    expect(post("/v1/classifyy"), 404, "unknown_route").await;
    let get = reqwest::Client::new().get(server().url("/v1/classify"));
    expect(get, 405, "method_not_allowed").await;
}

/// Requests refused before they reach the service (no such route, a wrong method, a media type, an option,
/// over either protocol) are counted in `mobilenet_requests_total` like every other, with model `none` and
/// the error's kind. The other tests of this file share the server and may add to the same counters, so each
/// is checked to have grown by at least what this test sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_service_are_counted() {
    let counted = |text: &str, task: &str, protocol: &str, outcome: &str| {
        metric_value(
            text,
            "mobilenet_requests_total",
            &[
                ("model", "none"),
                ("task", task),
                ("protocol", protocol),
                ("outcome", outcome),
            ],
        )
    };
    let cases = [
        ("none", "http", "unknown_route"),
        ("classification", "http", "method_not_allowed"),
        ("classification", "http", "unsupported_media_type"),
        ("detection", "http", "bad_request"),
        ("segmentation", "grpc", "bad_option"),
        ("classification", "grpc", "body_too_large"),
        ("classification", "grpc", "bad_request"),
    ];
    let before = server().metrics().await;
    expect(post("/nowhere"), 404, "unknown_route").await;
    let get = reqwest::Client::new().get(server().url("/v1/classify"));
    expect(get, 405, "method_not_allowed").await;
    let text = post("/v1/classify")
        .header("content-type", "text/plain")
        .body("hello");
    expect(text, 415, "unsupported_media_type").await;
    expect(post("/v1/detect?top_k=3"), 400, "bad_request").await;
    let mut client = server().grpc_client().await;
    let bad_format = pb::SegmentRequest {
        image: image("cat.bmp").into(),
        format: 7,
        ..Default::default()
    };
    let status = client.segment(bad_format).await.expect_err("must fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Refused by tonic before any method of ours runs: a message over --max-body-bytes, and bytes that are
    // not protobuf (which tonic alone would answer as INTERNAL).
    let oversized = pb::ClassifyRequest {
        image: image("grace_hopper.bmp").into(),
        ..Default::default()
    };
    let status = client.classify(oversized).await.expect_err("must fail");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = raw_grpc_call("/mobilenet.v1.Inference/Classify", &[0xff, 0xff, 0xff]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let after = server().metrics().await;
    for (task, protocol, outcome) in cases {
        let grew =
            counted(&after, task, protocol, outcome) - counted(&before, task, protocol, outcome);
        assert!(grew >= 1.0, "{task} {protocol} {outcome}: {grew}\n{after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_maps_the_same_errors() {
    let mut client = server().grpc_client().await;
    let classify = |image: Vec<u8>, model: &str, top_k: Option<u32>| pb::ClassifyRequest {
        image: image.into(),
        model: Some(pb::ModelSelector {
            model: model.into(),
            ..Default::default()
        }),
        top_k,
    };
    let cases = [
        (classify(Vec::new(), "", None), Code::InvalidArgument),
        (
            classify(b"not an image".to_vec(), "", None),
            Code::InvalidArgument,
        ),
        (
            classify(image("cat_720p.jpg"), "", None),
            Code::InvalidArgument,
        ),
        (classify(image("cat.bmp"), "nope", None), Code::NotFound),
        (
            classify(image("cat.bmp"), SEGMENTER, None),
            Code::InvalidArgument,
        ),
        (
            classify(image("cat.bmp"), "", Some(0)),
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        let status = client.classify(request).await.expect_err("must fail");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(!status.message().is_empty());
    }
    let bad_format = pb::SegmentRequest {
        image: image("cat.bmp").into(),
        model: None,
        format: 7,
    };
    assert_eq!(
        client.segment(bad_format).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Over --max-body-bytes: tonic refuses the message before it reaches the service, with the code that
    // Error::BodyTooLarge maps to.
    let status = client
        .classify(classify(image("grace_hopper.bmp"), "", None))
        .await
        .expect_err("must fail");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let ok = client
        .classify(classify(image("cat.bmp"), "", Some(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.classes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_grpc_health() {
    let server = server();
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(server.url("/readyz")).await.unwrap().status(),
        200
    );
    let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "mobilenet.v1.Inference".into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reflection_lists_the_services() {
    let channel = tonic::transport::Endpoint::from_shared(server().grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // v1, and v1alpha for older clients: the same services through both. The two versions' messages are the
    // same but for their module, hence a macro.
    macro_rules! list_services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect(concat!(stringify!($version), " is served"))
                .into_inner();
            let response = responses.message().await.unwrap().expect("one response");
            let Some(MessageResponse::ListServicesResponse(list)) = response.message_response
            else {
                panic!("{response:?}")
            };
            list.service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>()
        }};
    }
    let (v1, v1alpha) = (list_services!(v1), list_services!(v1alpha));
    for names in [&v1, &v1alpha] {
        assert!(
            names.iter().any(|n| n == "mobilenet.v1.Inference"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "inference.GRPCInferenceService"),
            "{names:?}"
        );
    }
}

/// A PNG of `image`, 8 or 16 bits, any colour type.
fn png(image: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Odd but valid images are served, not refused or crashed on: 1x1, 1-pixel-wide strips, grey, grey+alpha,
/// RGBA, 16-bit and a CMYK JPEG, for classification and for segmentation (whose mask is resized back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_but_valid_images_are_served() {
    use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};
    let images = [
        (
            "1x1",
            png(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(
                1,
                1,
                Rgb([255, 0, 0]),
            ))),
        ),
        (
            "1x32, at the aspect ratio limit",
            png(DynamicImage::ImageRgb8(ImageBuffer::from_pixel(
                1,
                32,
                Rgb([9, 9, 9]),
            ))),
        ),
        (
            "grey",
            png(DynamicImage::ImageLuma8(ImageBuffer::from_pixel(
                40,
                30,
                Luma([128]),
            ))),
        ),
        (
            "grey+alpha",
            png(DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(
                40,
                30,
                LumaA([128, 7]),
            ))),
        ),
        (
            "rgba",
            png(DynamicImage::ImageRgba8(ImageBuffer::from_pixel(
                40,
                30,
                Rgba([1, 2, 3, 4]),
            ))),
        ),
        (
            "grey16",
            png(DynamicImage::ImageLuma16(ImageBuffer::from_pixel(
                40,
                30,
                Luma([40_000]),
            ))),
        ),
        (
            "rgb16",
            png(DynamicImage::ImageRgb16(ImageBuffer::from_pixel(
                40,
                30,
                Rgb([60_000, 1, 300]),
            ))),
        ),
        ("cmyk", include_bytes!("data/cmyk.jpg").to_vec()),
    ];
    for (name, bytes) in images {
        for path in ["/v1/classify", "/v1/segment"] {
            let r = post(path)
                .multipart(form(bytes.clone(), "x"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                200,
                "{name} on {path}: {}",
                r.text().await.unwrap()
            );
        }
    }
}

/// A PNG whose IHDR claims `width` x `height` (CRC fixed), with one pixel of data behind it.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bomb = png(image::DynamicImage::ImageRgb8(
        image::ImageBuffer::from_pixel(1, 1, image::Rgb([0, 0, 0])),
    ));
    // IHDR: width and height at bytes 16..24, the chunk's CRC over bytes 12..29 at 29..33.
    bomb[16..20].copy_from_slice(&width.to_be_bytes());
    bomb[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    bomb
}

/// Images refused from their header, before any pixel buffer exists: over the pixel count (413
/// `image_too_large`), over the aspect ratio (422 `image_shape`), over the decode memory estimate (413
/// `image_memory`), each with gRPC INVALID_ARGUMENT, on both decode paths. A 2^31-1 x 1 header is over the
/// pixel limit, not an "out of memory" decode error; a 20,000 x 1 strip, the shape of the 39,000,000 x 1
/// PNG that once aborted the server, is refused by its shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_over_the_limits_are_refused_from_their_header() {
    use image::{DynamicImage, ImageBuffer, Rgba};
    let rgba16 = png(DynamicImage::ImageRgba16(ImageBuffer::from_pixel(
        700,
        700,
        Rgba([1u16, 2, 3, 4]),
    )));
    let cases = [
        (
            png_claiming(i32::MAX as u32, 1),
            413,
            "image_too_large",
            "over the limit",
        ),
        (png_claiming(20_000, 1), 422, "image_shape", "aspect ratio"),
        (png_claiming(1, 20_000), 422, "image_shape", "aspect ratio"),
        (rgba16, 413, "image_memory", "MiB"),
    ];
    for (bytes, status, kind, message) in cases {
        for path in ["/v1/classify", "/v1/segment"] {
            expect(
                post(path).multipart(form(bytes.clone(), "x.png")),
                status,
                kind,
            )
            .await;
        }
        let mut client = server().grpc_client().await;
        let error = client
            .classify(pb::ClassifyRequest {
                image: bytes.clone().into(),
                model: None,
                top_k: None,
            })
            .await
            .expect_err("must fail");
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert!(error.message().contains(message), "{error:?}");
        let error = client
            .segment(pb::SegmentRequest {
                image: bytes.into(),
                ..Default::default()
            })
            .await
            .expect_err("must fail");
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    }
    // And the server still serves.
    let r = post("/v1/classify")
        .multipart(form(image("parrot.jpg"), "parrot.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends `message` as the request message of `path`, bytes as they are, and returns the error status.
async fn raw_grpc_call(path: &'static str, message: &[u8]) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(server().grpc.clone())
        .expect("gRPC address")
        .connect()
        .await
        .expect("gRPC connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = tonic::Request::new(bytes::Bytes::copy_from_slice(message));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary::<_, bytes::Bytes, _>(request, path, RawBytes)
        .await
        .expect_err("must fail")
}

/// A codec that sends and receives messages as raw bytes.
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len)))
    }
}
