//! Refusing a gRPC inference call from its head, before its message is read: a tower layer in front of the
//! `Inference` service and the Open Inference Protocol's.
//!
//! tonic calls a unary method only once the whole message is decoded, so a call refused at admission would
//! first take in its image (600 KB for a photo, over several HTTP/2 flow-control windows). The head has the
//! method, so the task, and `grpc-timeout`; the model selector is in the message. The call is refused here
//! when every model of the task would refuse it ([`Service::refuse_from_head`]): whichever one it names
//! would refuse it too. The answer is a trailers-only response with the status `infer` would have given.
//!
//! An admitted call is followed back: what tonic refuses before the method runs is counted by
//! [`unreached`].
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::http::{Request, Response};
use tower_service::Service as TowerService;

use super::{
    deadline_from_timeout,
    unreached::{self, Reached},
};
use crate::{
    repository::Task,
    service::{Protocol, Service},
};

/// When an admitted call's head arrived, before tonic read its message: a deadline and a `model=auto` budget
/// count from here, so that the time taken to receive the image counts against them.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

/// Which models a method that takes an image may be sent to: those of one task, or (the Open Inference
/// Protocol's `ModelInfer`, whose model is named in the message) any.
#[derive(Debug, PartialEq)]
enum Target {
    Task(Task),
    AnyModel,
}

impl Target {
    fn task(&self) -> Option<Task> {
        match self {
            Target::Task(task) => Some(*task),
            Target::AnyModel => None,
        }
    }
}

/// The models an image method may be sent to; `None` for every other method.
fn target_of(path: &str) -> Option<Target> {
    if path == "/inference.GRPCInferenceService/ModelInfer" {
        return Some(Target::AnyModel);
    }
    match path.strip_prefix("/mobilenet.v1.Inference/")? {
        "Classify" => Some(Target::Task(Task::Classification)),
        "Detect" => Some(Target::Task(Task::Detection)),
        "Segment" => Some(Target::Task(Task::Segmentation)),
        _ => None,
    }
}

#[derive(Clone)]
pub struct HeadAdmissionLayer {
    pub service: Arc<Service>,
}

impl<S> tower_layer::Layer<S> for HeadAdmissionLayer {
    type Service = HeadAdmission<S>;

    fn layer(&self, inner: S) -> HeadAdmission<S> {
        HeadAdmission {
            inner,
            service: self.service.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HeadAdmission<S> {
    inner: S,
    service: Arc<Service>,
}

/// gRPC routes a service by its name; the wrapper answers under the name of the service it wraps.
impl<S: tonic::server::NamedService> tonic::server::NamedService for HeadAdmission<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> TowerService<Request<B>> for HeadAdmission<S>
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
        let task = target.task();
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(deadline_from_timeout);
        let judged = self
            .service
            .refuse_from_head(task, None, deadline, Protocol::Grpc);
        if let Err(error) = judged {
            let status: tonic::Status = error.into();
            return Box::pin(async move { Ok(status.into_http()) });
        }
        // Admitted: whatever tonic refuses before the method runs is counted on the way back.
        let reached = Reached::default();
        request.extensions_mut().insert(reached.clone());
        let start = Instant::now();
        request.extensions_mut().insert(Received(start));
        let answer = inner.call(request);
        Box::pin(async move { Ok(unreached::answer(task, &reached, start, answer.await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_image_methods_are_judged() {
        assert_eq!(
            target_of("/mobilenet.v1.Inference/Classify"),
            Some(Target::Task(Task::Classification))
        );
        assert_eq!(
            target_of("/mobilenet.v1.Inference/Segment"),
            Some(Target::Task(Task::Segmentation))
        );
        assert_eq!(
            target_of("/inference.GRPCInferenceService/ModelInfer"),
            Some(Target::AnyModel)
        );
        assert_eq!(target_of("/mobilenet.v1.Inference/ListModels"), None);
        assert_eq!(
            target_of("/inference.GRPCInferenceService/ModelMetadata"),
            None
        );
        assert_eq!(target_of("/grpc.health.v1.Health/Check"), None);
    }
}
