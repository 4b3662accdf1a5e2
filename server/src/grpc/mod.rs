//! The gRPC API (`mobilenet.v1.Inference`), a thin layer over the same [`Service`] as HTTP, plus
//! `grpc.health.v1` and server reflection. `grpc-timeout` becomes the request's deadline in the batcher.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mobilenet_proto::v1::{self as pb, inference_server::Inference};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::{
    error::Error,
    options::{self, RequestOptions},
    postprocess::TaskOptions,
    repository::Task,
    service::{Answer, AnswerBody, InferRequest, Mask, Protocol, Service},
};

pub mod head;

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

fn deadline<T>(request: &Request<T>) -> Option<Instant> {
    deadline_from_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
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
    let png = match pb::MaskFormat::try_from(r.format) {
        Ok(pb::MaskFormat::Rle) => false,
        Ok(pb::MaskFormat::Png) => true,
        Err(_) => {
            return Err(Error::BadOption {
                name: "format",
                reason: format!("{} is not a MaskFormat", r.format),
            });
        }
    };
    Ok(RequestOptions {
        selector: selector(&r.model)?,
        task: TaskOptions::Segment,
        png,
    })
}

fn auto_routing(answer: &Answer) -> Option<pb::AutoRouting> {
    answer.auto.map(|a| pb::AutoRouting {
        budget_ms: a.budget_ms,
        predicted_ms: a.predicted_ms.unwrap_or_default(),
        margin_ms: a.margin_ms,
    })
}

fn timings(answer: &Answer) -> Option<pb::Timings> {
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

impl GrpcService {
    async fn infer(
        &self,
        task: Task,
        image: bytes::Bytes,
        request: InferRequest,
    ) -> Result<Answer, Status> {
        let request = InferRequest { image, ..request };
        Ok(self.service.infer(task, request).await?)
    }
}

fn base(options: RequestOptions, deadline: Option<Instant>) -> InferRequest {
    InferRequest {
        image: Default::default(),
        selector: options.selector,
        options: options.task,
        png: options.png,
        deadline,
        protocol: Protocol::Grpc,
    }
}

#[tonic::async_trait]
impl Inference for GrpcService {
    async fn classify(
        &self,
        request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        let deadline = deadline(&request);
        let r = request.into_inner();
        let base = base(classify_options(&r)?, deadline);
        let answer = self.infer(Task::Classification, r.image, base).await?;
        let classes = match &answer.body {
            AnswerBody::Classes(c) => c
                .iter()
                .map(|c| pb::Classification {
                    index: c.index,
                    label: c.label.clone(),
                    score: c.score,
                })
                .collect(),
            _ => Vec::new(),
        };
        let message = pb::ClassifyResponse {
            model: answer.model.clone(),
            classes,
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
        let deadline = deadline(&request);
        let r = request.into_inner();
        let base = base(detect_options(&r)?, deadline);
        let answer = self.infer(Task::Detection, r.image, base).await?;
        let detections = match &answer.body {
            AnswerBody::Detections(d) => d
                .iter()
                .map(|d| pb::Detection {
                    class_index: d.class_index,
                    label: d.label.clone(),
                    score: d.score,
                    r#box: Some(pb_box(d.bbox)),
                    box_normalized: Some(pb_box(d.box_normalized)),
                })
                .collect(),
            _ => Vec::new(),
        };
        let message = pb::DetectResponse {
            model: answer.model.clone(),
            detections,
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
        let deadline = deadline(&request);
        let r = request.into_inner();
        let base = base(segment_options(&r)?, deadline);
        let answer = self.infer(Task::Segmentation, r.image, base).await?;
        let (classes, mask) = match answer.body.clone() {
            AnswerBody::Segmentation { classes, mask } => (classes, mask),
            _ => return Err(Error::internal("segmentation answer expected").into()),
        };
        let message = pb::SegmentResponse {
            model: answer.model.clone(),
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
            timings: timings(&answer),
            image_width: answer.image_width,
            image_height: answer.image_height,
            auto: auto_routing(&answer),
        };
        Ok(respond(&answer.model, message))
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let router = self.service.router().ok_or(Error::NotReady)?;
        let models = router
            .models()
            .iter()
            .map(|m| {
                let c = &m.variant.config;
                pb::ModelInfo {
                    name: c.name.clone(),
                    task: c.task.as_str().into(),
                    width: c.attributes.width,
                    resolution: c.attributes.resolution,
                    precision: c.attributes.precision.clone(),
                    parameters: c.attributes.parameters,
                    multiply_adds: c.attributes.multiply_adds,
                    is_default: router.is_default(c),
                    num_classes: m.num_classes(),
                    description: c.description.clone(),
                    quality: c.quality.as_ref().map(|q| pb::Quality {
                        metric: q.metric.clone(),
                        value: q.value,
                        source: q.source.clone(),
                    }),
                    auto_rank: router.auto_rank(c).map(|r| r as u32),
                }
            })
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
