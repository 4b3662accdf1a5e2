//! The `mobilenet.v1` gRPC API, generated from `proto/mobilenet/v1/inference.proto`, and the Open Inference
//! Protocol's `inference` package, from `proto/inference/grpc_service.proto`.
//!
//! Server and client both depend on this crate, so the wire types exist once.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("mobilenet.v1");
}

/// The Open Inference Protocol (KServe V2) over gRPC.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mobilenet_descriptor.bin"));
