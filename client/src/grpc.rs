//! The gRPC protocol (`mobilenet.v1.Inference`), converting the protobuf answers into [`crate::types`].

use bytes::Bytes;
use mobilenet_proto::v1 as pb;
use pb::inference_client::InferenceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, ServerStatus, chain};
use crate::types::*;

/// Answers (a segmentation mask of a large photo) can exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Clone)]
pub struct GrpcClient {
    url: String,
    inner: InferenceClient<Channel>,
}

impl GrpcClient {
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| ClientError::BadUrl {
            url: url.to_owned(),
            detail: chain(&e),
        })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.to_owned(),
                detail: chain(&e),
            })?;
        let inner = InferenceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            url: url.to_owned(),
            inner,
        })
    }

    pub async fn classify(
        &self,
        image: Bytes,
        selector: &Selector,
        options: &ClassifyOptions,
    ) -> Result<ClassifyResult, ClientError> {
        let request = pb::ClassifyRequest {
            image,
            model: Some(to_selector(selector)),
            top_k: options.top_k,
        };
        // The generated client needs `&mut`; cloning it only clones the channel handle.
        let r = self
            .inner
            .clone()
            .classify(request)
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(ClassifyResult {
            model: r.model,
            image_width: r.image_width,
            image_height: r.image_height,
            classes: r
                .classes
                .into_iter()
                .map(|c| Classification {
                    index: c.index,
                    label: c.label,
                    score: c.score,
                })
                .collect(),
            timings: timings(r.timings),
            auto: r.auto.map(auto_routing),
        })
    }

    pub async fn detect(
        &self,
        image: Bytes,
        selector: &Selector,
        options: &DetectOptions,
    ) -> Result<DetectResult, ClientError> {
        let request = pb::DetectRequest {
            image,
            model: Some(to_selector(selector)),
            score_threshold: options.score_threshold,
            iou_threshold: options.iou_threshold,
            max_detections: options.max_detections,
        };
        let r = self
            .inner
            .clone()
            .detect(request)
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(DetectResult {
            model: r.model,
            image_width: r.image_width,
            image_height: r.image_height,
            detections: r
                .detections
                .into_iter()
                .map(|d| Detection {
                    class_index: d.class_index,
                    label: d.label,
                    score: d.score,
                    bbox: corners(d.r#box),
                    box_normalized: corners(d.box_normalized),
                })
                .collect(),
            timings: timings(r.timings),
            auto: r.auto.map(auto_routing),
        })
    }

    pub async fn segment(
        &self,
        image: Bytes,
        selector: &Selector,
    ) -> Result<SegmentResult, ClientError> {
        let request = pb::SegmentRequest {
            image,
            model: Some(to_selector(selector)),
            format: pb::MaskFormat::Rle as i32,
        };
        let r = self
            .inner
            .clone()
            .segment(request)
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let mask = match r.mask {
            Some(pb::segment_response::Mask::Rle(m)) => RleMask {
                encoding: "rle".to_owned(),
                width: m.width,
                height: m.height,
                values: m.values,
                lengths: m.lengths,
            },
            Some(pb::segment_response::Mask::Png(_)) | None => {
                return Err(ClientError::Protocol(
                    "asked for an RLE mask, got none".to_owned(),
                ));
            }
        };
        Ok(SegmentResult {
            model: r.model,
            image_width: r.image_width,
            image_height: r.image_height,
            classes: r
                .classes
                .into_iter()
                .map(|c| ClassFraction {
                    index: c.index,
                    label: c.label,
                    fraction: c.fraction,
                })
                .collect(),
            mask,
            timings: timings(r.timings),
            auto: r.auto.map(auto_routing),
        })
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let r = self
            .inner
            .clone()
            .list_models(pb::ListModelsRequest {})
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(r.models
            .into_iter()
            .map(|m| ModelInfo {
                name: m.name,
                task: m.task,
                width: m.width,
                resolution: m.resolution,
                precision: m.precision,
                dataset: m.dataset,
                parameters: m.parameters,
                multiply_adds: m.multiply_adds,
                is_default: m.is_default,
                num_classes: m.num_classes,
                description: m.description,
            })
            .collect())
    }

    /// `Unavailable` is tonic's way of saying "no connection"; everything else is the server's answer.
    fn status(&self, status: tonic::Status) -> ClientError {
        match status.code() {
            tonic::Code::Unavailable if status.message().contains("transport") => {
                ClientError::Transport {
                    url: self.url.clone(),
                    detail: chain(&status),
                }
            }
            code => ClientError::Server {
                status: ServerStatus::Grpc(code),
                kind: None,
                message: status.message().to_owned(),
            },
        }
    }
}

fn to_selector(selector: &Selector) -> pb::ModelSelector {
    pb::ModelSelector {
        model: selector.model.clone().unwrap_or_default(),
        width: selector.width,
        resolution: selector.resolution,
        precision: selector.precision.clone().unwrap_or_default(),
        dataset: selector.dataset.clone().unwrap_or_default(),
        latency_budget_ms: selector.latency_budget_ms,
    }
}

fn auto_routing(a: pb::AutoRouting) -> AutoRouting {
    AutoRouting {
        budget_ms: a.budget_ms,
        // The message carries 0 for "not predicted yet".
        predicted_ms: (a.predicted_ms > 0.0).then_some(a.predicted_ms),
    }
}

fn timings(t: Option<pb::Timings>) -> Timings {
    let t = t.unwrap_or_default();
    Timings {
        decode_ms: t.decode_ms,
        queue_ms: t.queue_ms,
        inference_ms: t.inference_ms,
        postprocess_ms: t.postprocess_ms,
        total_ms: t.total_ms,
    }
}

fn corners(b: Option<pb::Box>) -> BoxCorners {
    let b = b.unwrap_or_default();
    BoxCorners {
        x1: b.x1,
        y1: b.y1,
        x2: b.x2,
        y2: b.y2,
    }
}
