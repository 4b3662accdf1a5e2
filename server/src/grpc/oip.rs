//! The Open Inference Protocol (KServe V2) over gRPC, `inference.GRPCInferenceService`, on the same port as
//! our own service: health, metadata and inference. What the protocol means here is in [`crate::oip`]; this
//! module converts its gRPC form. Images arrive as the `image` input's `bytes_contents`, or as its raw
//! contents (each element a 4-byte length and its bytes, what tritonclient sends); a raw input tensor as
//! `uint_contents` / `fp32_contents` or raw contents; outputs leave as raw contents, one entry per output, as
//! Triton answers.
use std::{collections::HashMap, sync::Arc};

use mobilenet_proto::inference::{
    self as pb, grpc_inference_service_server::GrpcInferenceService,
    infer_parameter::ParameterChoice,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::{
    error::Error,
    oip::{self, InferBody, InputKind, InputTensor, RequestedOutput, TensorValues},
    repository::InputDtype,
    service::{self, Input, Protocol, Service},
};

pub use pb::grpc_inference_service_server::GrpcInferenceServiceServer;

pub struct OipService {
    pub service: Arc<Service>,
}

/// An empty version is the server's choice (the only one, "1").
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn parameters(map: HashMap<String, pb::InferParameter>) -> HashMap<String, Value> {
    map.into_iter()
        .filter_map(|(name, p)| {
            let value = match p.parameter_choice? {
                ParameterChoice::BoolParam(b) => Value::from(b),
                ParameterChoice::Int64Param(i) => Value::from(i),
                ParameterChoice::StringParam(s) => Value::from(s),
                ParameterChoice::DoubleParam(d) => Value::from(d),
                ParameterChoice::Uint64Param(u) => Value::from(u),
            };
            Some((name, value))
        })
        .collect()
}

fn tensor_metadata(
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = crate::health::serving(&self.service);
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        oip::model(&self.service, &r.name, version(&r.version))?;
        let ready = self.service.is_ready();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let model = oip::model(&self.service, &r.name, version(&r.version))?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: r.name.clone(),
            versions: vec![oip::VERSION.into()],
            platform: oip::SERVER_NAME.into(),
            inputs: oip::inputs_of(&model.input)
                .iter()
                .map(|(name, datatype, shape)| tensor_metadata(name, datatype, shape))
                .collect(),
            outputs: oip::outputs_of(&model)
                .iter()
                .map(|(name, datatype, shape)| tensor_metadata(name, datatype, shape))
                .collect(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        super::unreached::reached(&request);
        let (start, deadline) = super::arrival(&request);
        let r = request.into_inner();
        let model = oip::model(&self.service, &r.model_name, version(&r.model_version))
            .inspect_err(|error| {
                service::record_refused(None, Protocol::Grpc, error, start.elapsed());
            })?;
        let body = InferBody {
            id: (!r.id.is_empty()).then(|| r.id.clone()),
            parameters: parameters(r.parameters),
            inputs: r
                .inputs
                .iter()
                .map(|i| InputTensor {
                    name: i.name.clone(),
                    shape: i.shape.clone(),
                    datatype: i.datatype.clone(),
                    parameters: parameters(i.parameters.clone()),
                    data: None,
                })
                .collect(),
            outputs: (!r.outputs.is_empty()).then(|| {
                r.outputs
                    .into_iter()
                    .map(|o| RequestedOutput {
                        name: o.name,
                        parameters: parameters(o.parameters),
                    })
                    .collect()
            }),
        };
        let inputs = (|| {
            let options = oip::task_options(model.task, &body)?;
            let kind = oip::input_kind(&body, &model.input)?;
            let raw = r.raw_input_contents.into_iter().next();
            let contents = r.inputs.into_iter().next().and_then(|i| i.contents);
            let inputs = match kind {
                InputKind::Images(count) => {
                    let images = match (raw, contents) {
                        (Some(raw), _) => oip::split_elements(raw)?,
                        (None, Some(contents)) => contents.bytes_contents,
                        (None, None) => Vec::new(),
                    };
                    oip::check_count(images, count)?
                }
                InputKind::Tensor(rows) => {
                    let values = match (&raw, contents) {
                        (Some(raw), _) => TensorValues::Raw(raw),
                        (None, Some(contents)) => match model.input.dtype {
                            InputDtype::Uint8 => TensorValues::U32(contents.uint_contents),
                            InputDtype::Float32 => TensorValues::F32(contents.fp32_contents),
                        },
                        (None, None) => TensorValues::Raw(&[]),
                    };
                    let rows = oip::tensor_rows(values, rows, &model.input)?;
                    rows.into_iter().map(Input::Tensor).collect()
                }
            };
            let raw_outputs = oip::wants_raw(&body, &model, inputs.len())?;
            Ok::<_, Error>((options, inputs, raw_outputs))
        })();
        let (options, images, raw_outputs) = inputs.inspect_err(|error| {
            service::record_refused(Some(model.task), Protocol::Grpc, error, start.elapsed());
        })?;
        let call = oip::Call {
            model: &r.model_name,
            task: model.task,
            options,
            deadline,
            received: start,
            protocol: Protocol::Grpc,
            raw_outputs,
        };
        let tensors = oip::run(&self.service, call, images).await?;
        let selected = oip::select(&body, &tensors)?;
        let mut outputs = Vec::with_capacity(selected.len());
        let mut raw = Vec::with_capacity(selected.len());
        for (tensor, _) in selected {
            outputs.push(pb::model_infer_response::InferOutputTensor {
                name: tensor.name.clone(),
                datatype: tensor.datatype.into(),
                shape: tensor.shape.iter().map(|&d| d as i64).collect(),
                parameters: HashMap::new(),
                contents: None,
            });
            raw.push(tensor.data.binary().into());
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            model_version: oip::VERSION.into(),
            id: body.id.unwrap_or_default(),
            parameters: HashMap::new(),
            outputs,
            raw_output_contents: raw,
        }))
    }
}
