//! Generates the gRPC code from `proto/mobilenet/v1/inference.proto` (our API) and
//! `proto/inference/grpc_service.proto` (the Open Inference Protocol) with protox (pure Rust, no protoc), and
//! writes the file descriptor set that the server's reflection service publishes.
use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mobilenet/v1/inference.proto",
        "proto/inference/grpc_service.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("mobilenet_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // `bytes` fields as `bytes::Bytes`: an uploaded image is then a slice of the received message, not a
    // copy of it, and a client can send the same image many times without copying it per request.
    tonic_prost_build::configure()
        .bytes(".mobilenet.v1")
        .bytes(".inference")
        .compile_fds(descriptors)?;
    Ok(())
}
