//! Fuzz target: the gRPC request conversion. The input is a protobuf message, decoded as each of
//! `ClassifyRequest`, `DetectRequest` and `SegmentRequest` (they share field numbers 1-3, so one seed
//! reaches all three), as tonic's codec does, then converted by the functions the handlers call
//! (`grpc::{classify,detect,segment}_options`: selector, task options, mask format).
use mobilenet_fuzz::{assert_client_error, assert_valid};
use mobilenet_proto::v1 as pb;
use mobilenet_serve::{error::Error, grpc, options::RequestOptions, repository::Task};
use prost::Message;

fn check(task: Task, converted: Result<RequestOptions, Error>) {
    match converted {
        Ok(options) => assert_valid(task, &options),
        Err(error) => assert_client_error(&error),
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(r) = pb::ClassifyRequest::decode(data) {
            check(Task::Classification, grpc::classify_options(&r));
        }
        if let Ok(r) = pb::DetectRequest::decode(data) {
            check(Task::Detection, grpc::detect_options(&r));
        }
        if let Ok(r) = pb::SegmentRequest::decode(data) {
            check(Task::Segmentation, grpc::segment_options(&r));
        }
    });
}
