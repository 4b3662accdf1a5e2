//! The image calls tonic refuses before their method runs: a message over `--max-body-bytes`, a body the
//! byte budget or the read timeout refused ([`crate::net::body`]), a message that is not valid protobuf, a
//! compression tonic does not speak. tonic answers these from its decoding, so no handler of ours sees them;
//! this module counts them in `mobilenet_requests_total` as every other refusal is counted, with model
//! `none` and the kind the same refusal has over HTTP.
//!
//! tonic answers a message it cannot decode as protobuf with INTERNAL, which reads as the server's fault;
//! the server answers INVALID_ARGUMENT instead, since the client sent the bytes.
//!
//! How it knows: the head admission layer ([`super::head`]) puts a [`Reached`] flag in an admitted call's
//! extensions, which tonic hands to the method; each image method sets it first thing ([`reached`]). A call
//! that comes back with an error status and the flag unset never reached a method ([`answer`]). Calls
//! refused from their head are counted by the head admission itself.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::http::Response;

use crate::{metrics, repository::Task, service::Protocol};

/// Set by an image method when it starts: the call got past tonic's decoding.
#[derive(Clone, Default)]
pub struct Reached(Arc<AtomicBool>);

/// Marks the call as having reached its method; every image method calls it first.
pub fn reached<T>(request: &tonic::Request<T>) {
    if let Some(flag) = request.extensions().get::<Reached>() {
        flag.0.store(true, Ordering::Relaxed);
    }
}

/// The kind a refusal before the method has over HTTP, from the status tonic answered with; `None` for a
/// status that is not one of those refusals.
fn kind_of(code: tonic::Code) -> Option<&'static str> {
    use tonic::Code as C;
    Some(match code {
        C::OutOfRange => "body_too_large",
        C::ResourceExhausted => "body_budget_full",
        C::DeadlineExceeded => "body_timeout",
        // Not valid protobuf (answered as INVALID_ARGUMENT, below) or an unknown compression.
        C::Internal | C::Unimplemented => "bad_request",
        _ => return None,
    })
}

/// The answer to an admitted image call of `task`, started at `start`: as it is, and counted in
/// `mobilenet_requests_total` when it is an error tonic gave before the method ran (`reached` unset).
pub(super) fn answer<RB: Default>(
    task: Option<Task>,
    reached: &Reached,
    start: Instant,
    response: Response<RB>,
) -> Response<RB> {
    if reached.0.load(Ordering::Relaxed) {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let Some(kind) = kind_of(status.code()) else {
        return response;
    };
    metrics::record_request(
        "none",
        task.map_or("none", Task::as_str),
        Protocol::Grpc.as_str(),
        kind,
        start.elapsed(),
        None,
    );
    if status.code() == tonic::Code::Internal {
        let invalid = tonic::Status::invalid_argument(format!(
            "the request message could not be read: {}",
            status.message()
        ));
        return invalid.into_http();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_the_method_have_a_kind() {
        assert_eq!(kind_of(tonic::Code::OutOfRange), Some("body_too_large"));
        assert_eq!(kind_of(tonic::Code::Internal), Some("bad_request"));
        assert_eq!(kind_of(tonic::Code::Ok), None);
        assert_eq!(kind_of(tonic::Code::NotFound), None);
    }
}
