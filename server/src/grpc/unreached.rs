//! The image calls tonic refuses before their method runs: a message over `--max-body-bytes`, a body the
//! byte budget or the read timeout refused ([`crate::net::body`]), a message that is not valid protobuf, a
//! compression tonic does not speak. tonic answers these from its decoding, so no handler of ours sees them;
//! this layer counts them in `mobilenet_requests_total` as every other refusal is counted, with model
//! `none` and the kind the same refusal has over HTTP.
//!
//! tonic answers a message it cannot decode as protobuf with INTERNAL, which reads as the server's fault;
//! the layer answers INVALID_ARGUMENT instead, since the client sent the bytes.
//!
//! How it knows: it puts a [`Reached`] flag in the request's extensions, which tonic hands to the method;
//! each image method sets it first thing ([`reached`]). A call that comes back with an error status and the
//! flag unset never reached a method. Calls refused from their head ([`super::head`]) are counted there and
//! never enter this layer, which sits inside it.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::http::{Request, Response};
use tower_service::Service as TowerService;

use super::head::target_of;
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

#[derive(Clone, Copy)]
pub struct UnreachedLayer;

impl<S> tower_layer::Layer<S> for UnreachedLayer {
    type Service = Unreached<S>;

    fn layer(&self, inner: S) -> Unreached<S> {
        Unreached { inner }
    }
}

#[derive(Clone)]
pub struct Unreached<S> {
    inner: S,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Unreached<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> TowerService<Request<B>> for Unreached<S>
where
    S: TowerService<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The service that was polled ready serves this request; a clone takes its place (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(target) = target_of(request.uri().path()) else {
            return Box::pin(inner.call(request));
        };
        let flag = Reached::default();
        request.extensions_mut().insert(flag.clone());
        let start = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await?;
            if flag.0.load(Ordering::Relaxed) {
                return Ok(response);
            }
            let Some(status) = tonic::Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            let Some(kind) = kind_of(status.code()) else {
                return Ok(response);
            };
            metrics::record_request(
                "none",
                target.task().map_or("none", Task::as_str),
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
                return Ok(invalid.into_http());
            }
            Ok(response)
        })
    }
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
