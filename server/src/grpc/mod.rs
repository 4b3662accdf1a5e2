//! The gRPC API (`mobilenet.v1.Inference`), a thin layer over the same [`Service`] as HTTP, plus the Open
//! Inference Protocol ([`oip`]), `grpc.health.v1` and server reflection. `grpc-timeout` becomes the request's
//! deadline in the batcher.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mobilenet_proto::v1::{self as pb, inference_server::Inference};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::{
    error::Error,
    model_info::{self, ModelInfo},
    options::{self, RequestOptions},
    postprocess::TaskOptions,
    postprocess::finish::Mask,
    repository::Task,
    service::{self, Answer, InferRequest, Input, Protocol, Service},
};

pub mod head;
pub mod oip;
pub mod unreached;

pub use pb::inference_server::InferenceServer;

pub struct GrpcService {
    pub service: Arc<Service>,
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When the call's head arrived ([`head::Received`]), and the deadline its `grpc-timeout` sets from then. A
/// call that did not pass the head layer (none in service) counts from now.
pub(crate) fn arrival<T>(request: &Request<T>) -> (Instant, Option<Instant>) {
    let received = request
        .extensions()
        .get::<head::Received>()
        .map_or_else(Instant::now, |r| r.0);
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    (received, timeout.map(|t| received + t))
}

/// The deadline a `grpc-timeout` value sets, from now.
pub fn deadline_from_timeout(value: &str) -> Option<Instant> {
    parse_grpc_timeout(value).map(|t| Instant::now() + t)
}

fn selector(selector: &Option<pb::ModelSelector>) -> Result<crate::routing::Selector, Error> {
    let s = selector.clone().unwrap_or_default();
    options::selector(
        Some(s.model),
        s.width,
        s.resolution,
        Some(s.precision),
        Some(s.dataset),
        s.latency_budget_ms,
    )
}

// The request conversions, validated as HTTP validates its query string. Pure (no server needed), so the
// fuzz target fuzz/src/bin/grpc_request.rs runs exactly what the handlers run.

pub fn classify_options(r: &pb::ClassifyRequest) -> Result<RequestOptions, Error> {
    Ok(RequestOptions {
        selector: selector(&r.model)?,
        task: options::classify(r.top_k)?,
        png: false,
    })
}

pub fn detect_options(r: &pb::DetectRequest) -> Result<RequestOptions, Error> {
    Ok(RequestOptions {
        task: options::detect(r.score_threshold, r.iou_threshold, r.max_detections)?,
        selector: selector(&r.model)?,
        png: false,
    })
}

pub fn segment_options(r: &pb::SegmentRequest) -> Result<RequestOptions, Error> {
    let png = options::mask_format(
        match pb::MaskFormat::try_from(r.format) {
            Ok(pb::MaskFormat::Rle) => "rle".into(),
            Ok(pb::MaskFormat::Png) => "png".into(),
            Err(_) => r.format.to_string(),
        }
        .as_str(),
    )?;
    Ok(RequestOptions {
        selector: selector(&r.model)?,
        task: TaskOptions::Segment,
        png,
    })
}

fn auto_routing<B>(answer: &Answer<B>) -> Option<pb::AutoRouting> {
    answer.auto.map(|a| pb::AutoRouting {
        budget_ms: a.budget_ms,
        predicted_ms: a.predicted_ms.unwrap_or_default(),
        margin_ms: a.margin_ms,
    })
}

fn timings<B>(answer: &Answer<B>) -> Option<pb::Timings> {
    let t = &answer.timings;
    Some(pb::Timings {
        decode_ms: t.decode_ms,
        queue_ms: t.queue_ms,
        inference_ms: t.inference_ms,
        postprocess_ms: t.postprocess_ms,
        total_ms: t.total_ms,
    })
}

/// Wraps a reply with the `x-model-variant` metadata.
fn respond<T>(model: &str, message: T) -> Response<T> {
    let mut response = Response::new(message);
    if let Ok(value) = MetadataValue::try_from(model) {
        response.metadata_mut().insert("x-model-variant", value);
    }
    response
}

fn pb_box(b: crate::postprocess::BoxXyxy) -> pb::Box {
    pb::Box {
        x1: b.x1,
        y1: b.y1,
        x2: b.x2,
        y2: b.y2,
    }
}

/// The service's request from a gRPC one's options, or the error that refuses it before the service sees it
/// (then recorded here, as the service records everything after).
fn infer_request(
    task: Task,
    options: Result<RequestOptions, Error>,
    image: bytes::Bytes,
    deadline: Option<Instant>,
    start: Instant,
) -> Result<InferRequest, Status> {
    let options = options.inspect_err(|error| {
        service::record_refused(Some(task), Protocol::Grpc, error, start.elapsed());
    })?;
    Ok(InferRequest {
        input: Input::Image(image),
        selector: options.selector,
        options: options.task,
        png: options.png,
        deadline,
        received: start,
        raw_outputs: false,
        protocol: Protocol::Grpc,
    })
}

fn model_info(m: ModelInfo) -> pb::ModelInfo {
    pb::ModelInfo {
        name: m.name,
        task: m.task.into(),
        width: m.width,
        resolution: m.resolution,
        precision: m.precision,
        dataset: m.dataset,
        parameters: m.parameters,
        multiply_adds: m.multiply_adds,
        is_default: m.is_default,
        num_classes: m.num_classes,
        description: m.description,
        quality: m.quality.map(|q| pb::Quality {
            metric: q.metric,
            value: q.value,
            source: q.source,
        }),
        auto_rank: m.auto_rank.map(|r| r as u32),
        auto_passed_over: m.auto_passed_over.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Inference for GrpcService {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        unreached::reached(&request);
        let (start, deadline) = arrival(&request);
        let r = request.into_inner();
        let options = classify_options(&r);
        let request = infer_request(Task::Classification, options, r.image, deadline, start)?;
        let answer = self.service.classify(request).await?;
        let message = pb::ClassifyResponse {
            model: answer.model.clone(),
            classes: answer
                .body
                .iter()
                .map(|c| pb::Classification {
                    index: c.index,
                    label: c.label.clone(),
                    score: c.score,
                })
                .collect(),
            timings: timings(&answer),
            image_width: answer.image_width,
            image_height: answer.image_height,
            auto: auto_routing(&answer),
        };
        Ok(respond(&answer.model, message))
    }

    async fn detect(
        &self,
        request: Request<pb::DetectRequest>,
    ) -> Result<Response<pb::DetectResponse>, Status> {
        unreached::reached(&request);
        let (start, deadline) = arrival(&request);
        let r = request.into_inner();
        let options = detect_options(&r);
        let request = infer_request(Task::Detection, options, r.image, deadline, start)?;
        let answer = self.service.detect(request).await?;
        let message = pb::DetectResponse {
            model: answer.model.clone(),
            detections: answer
                .body
                .iter()
                .map(|d| pb::Detection {
                    class_index: d.class_index,
                    label: d.label.clone(),
                    score: d.score,
                    r#box: Some(pb_box(d.bbox)),
                    box_normalized: Some(pb_box(d.box_normalized)),
                })
                .collect(),
            timings: timings(&answer),
            image_width: answer.image_width,
            image_height: answer.image_height,
            auto: auto_routing(&answer),
        };
        Ok(respond(&answer.model, message))
    }

    async fn segment(
        &self,
        request: Request<pb::SegmentRequest>,
    ) -> Result<Response<pb::SegmentResponse>, Status> {
        unreached::reached(&request);
        let (start, deadline) = arrival(&request);
        let r = request.into_inner();
        let options = segment_options(&r);
        let request = infer_request(Task::Segmentation, options, r.image, deadline, start)?;
        let answer = self.service.segment(request).await?;
        let (model, timings, auto) = (
            answer.model.clone(),
            timings(&answer),
            auto_routing(&answer),
        );
        let (classes, mask) = (answer.body.classes, answer.body.mask);
        let message = pb::SegmentResponse {
            model: model.clone(),
            classes: classes
                .into_iter()
                .map(|c| pb::ClassFraction {
                    index: c.index,
                    label: c.label,
                    fraction: c.fraction,
                })
                .collect(),
            mask: Some(match mask {
                Mask::Rle {
                    width,
                    height,
                    values,
                    lengths,
                } => pb::segment_response::Mask::Rle(pb::RunLengthMask {
                    width,
                    height,
                    values,
                    lengths,
                }),
                Mask::Png(png) => pb::segment_response::Mask::Png(png.into()),
            }),
            timings,
            image_width: answer.image_width,
            image_height: answer.image_height,
            auto,
        };
        Ok(respond(&model, message))
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let router = self.service.router().ok_or(Error::NotReady)?;
        let models = model_info::list(router)
            .into_iter()
            .map(model_info)
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}
