//! Request bodies are admitted by their bytes and read against a clock, on both transports: a tower layer
//! that wraps every request body.
//!
//! - **Byte admission.** One process-wide budget of buffered request-body bytes, a semaphore counting KiB.
//!   A request that declares its length (`Content-Length`) reserves it when its head arrives, before any
//!   of the body is read; others reserve as their frames arrive. A request that would push the buffered
//!   bytes past the budget is refused (429 / RESOURCE_EXHAUSTED, kind `body_budget_full`): its body reads
//!   fail at once, so the handler answers without buffering it. The bytes stay counted until the
//!   response is produced, because the image lives in memory that long (the queue then counts bytes, not
//!   only requests).
//! - **Read timeout.** The whole body must arrive within the body read timeout of the request head (408 /
//!   DEADLINE_EXCEEDED, kind `body_timeout`): a client trickling 1 KB/s cannot hold a connection and a
//!   growing buffer for minutes.
//!
//! Both refusals surface as a body read error ([`Refused`]). The HTTP extractor finds it in the error's
//! source chain; tonic maps a body error whose source chain holds a [`tonic::Status`] to that status, so
//! [`Refused`] carries one as its source.
//!
//! A declared length over `--max-body-bytes` reserves nothing up front: the transport's own limit refuses
//! such a request (413) before reading it.
use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{Request, header::CONTENT_LENGTH};
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tower_service::Service;

use crate::error::Error;

type BoxError = Box<dyn StdError + Send + Sync>;

const KIB: u64 = 1024;

/// The limits every request body is read under, shared by the HTTP and gRPC layers.
#[derive(Debug)]
pub struct BodyLimits {
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    read_timeout: Duration,
    max_body_bytes: u64,
}

impl BodyLimits {
    /// `budget_bytes` is rounded down to whole KiB (at least one).
    pub fn new(budget_bytes: u64, read_timeout: Duration, max_body_bytes: u64) -> Arc<BodyLimits> {
        let kib = (budget_bytes / KIB).clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(BodyLimits {
            budget: Arc::new(Semaphore::new(kib as usize)),
            budget_bytes,
            read_timeout,
            max_body_bytes,
        })
    }

    pub fn layer(self: &Arc<Self>) -> BodyLimitLayer {
        BodyLimitLayer(self.clone())
    }

    /// Takes `kib` more KiB of the budget into `charge`, or says why not.
    fn reserve(&self, charge: &Charge, kib: u64) -> Result<(), Refused> {
        let refused = Refused::Budget {
            budget_bytes: self.budget_bytes,
        };
        let kib = u32::try_from(kib).map_err(|_| refused.clone())?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| refused)?;
        charge.add(permit);
        Ok(())
    }

    /// Bytes of the budget in use now (for tests and metrics).
    pub fn buffered_bytes(&self) -> u64 {
        let total = (self.budget_bytes / KIB).max(1);
        (total - self.budget.available_permits() as u64) * KIB
    }
}

/// The budget a request holds: released when the last holder (its body or its response future) is gone.
#[derive(Default)]
struct Charge(Mutex<Option<OwnedSemaphorePermit>>);

impl Charge {
    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
    }
}

/// Why a body was refused; carries the [`tonic::Status`] gRPC answers with.
#[derive(Debug, Clone)]
pub enum Refused {
    Budget { budget_bytes: u64 },
    Timeout { timeout: Duration },
}

impl Refused {
    pub fn to_error(&self) -> Error {
        match *self {
            Refused::Budget { budget_bytes } => Error::BodyBudgetFull { budget_bytes },
            Refused::Timeout { timeout } => Error::BodyTimeout {
                timeout_ms: timeout.as_millis() as u64,
            },
        }
    }

    /// The refusal in `error`'s source chain, if any.
    pub fn find(error: &(dyn StdError + 'static)) -> Option<Refused> {
        let mut source = Some(error);
        while let Some(err) = source {
            if let Some(refused) = err.downcast_ref::<RefusedError>() {
                return Some(refused.reason.clone());
            }
            source = err.source();
        }
        None
    }
}

/// The body read error: [`Refused`] with its status as the source, for tonic to find.
#[derive(Debug)]
struct RefusedError {
    reason: Refused,
    status: tonic::Status,
}

impl From<Refused> for RefusedError {
    fn from(reason: Refused) -> RefusedError {
        let status: tonic::Status = reason.to_error().into();
        RefusedError { reason, status }
    }
}

impl fmt::Display for RefusedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.to_error().fmt(f)
    }
}

impl StdError for RefusedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

/// Puts a wrapped body back into the transport's body type.
pub trait Rebox: Sized {
    fn rebox(body: Metered<Self>) -> Self;
}

impl Rebox for axum::body::Body {
    fn rebox(body: Metered<Self>) -> Self {
        axum::body::Body::new(body)
    }
}

impl Rebox for tonic::body::Body {
    fn rebox(body: Metered<Self>) -> Self {
        tonic::body::Body::new(body)
    }
}

#[derive(Clone)]
pub struct BodyLimitLayer(Arc<BodyLimits>);

impl<S> tower_layer::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            limits: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limits: Arc<BodyLimits>,
}

/// gRPC routes a service by its name; the wrapper answers under the name of the service it wraps.
impl<S: tonic::server::NamedService> tonic::server::NamedService for BodyLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Rebox + HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limits = self.limits.clone();
        let charge = Arc::new(Charge::default());
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&len| len > 0 && len <= limits.max_body_bytes);
        let mut reserved = 0;
        let mut refused = None;
        if let Some(len) = declared {
            let kib = len.div_ceil(KIB);
            match limits.reserve(&charge, kib) {
                Ok(()) => reserved = kib * KIB,
                Err(why) => refused = Some(why),
            }
        }
        let request = request.map(|body| {
            B::rebox(Metered {
                body,
                limits: limits.clone(),
                charge: charge.clone(),
                counted: 0,
                reserved,
                refused,
                deadline: Instant::now() + limits.read_timeout,
                timer: None,
                done: false,
            })
        });
        // The service that was polled ready serves this request; a clone takes its place (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await;
            // The response is produced: this request's bytes no longer count (once its body is gone too).
            drop(charge);
            response
        })
    }
}

/// A request body that charges its bytes to the budget and fails if it is refused or arrives too late.
pub struct Metered<B> {
    body: B,
    limits: Arc<BodyLimits>,
    charge: Arc<Charge>,
    /// Bytes seen so far, and bytes of budget held for them (whole KiB).
    counted: u64,
    reserved: u64,
    /// Refused when the head arrived: fails on the first read, before any byte is read.
    refused: Option<Refused>,
    deadline: Instant,
    /// Created on the first wait only, so bodies that are already complete cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<B> Metered<B> {
    fn fail(&mut self, why: Refused) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(Box::new(RefusedError::from(why)))))
    }
}

impl<B> HttpBody for Metered<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(why) = this.refused.take() {
            return this.fail(why);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counted += data.remaining() as u64;
                    if this.counted > this.reserved {
                        let more = this.counted.div_ceil(KIB) - this.reserved / KIB;
                        if let Err(why) = this.limits.reserve(&this.charge, more) {
                            return this.fail(why);
                        }
                        this.reserved += more * KIB;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    let timeout = this.limits.read_timeout;
                    return this.fail(Refused::Timeout { timeout });
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.refused.is_none() && self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn limits(budget_kib: u64) -> Arc<BodyLimits> {
        BodyLimits::new(budget_kib * KIB, Duration::from_secs(5), 1 << 20)
    }

    fn metered(
        limits: &Arc<BodyLimits>,
        body: axum::body::Body,
        reserved: u64,
    ) -> Metered<axum::body::Body> {
        Metered {
            body,
            limits: limits.clone(),
            charge: Arc::new(Charge::default()),
            counted: 0,
            reserved,
            refused: None,
            deadline: Instant::now() + limits.read_timeout,
            timer: None,
            done: false,
        }
    }

    #[tokio::test]
    async fn frames_are_charged_as_they_arrive_and_released_with_the_body() {
        let limits = limits(4);
        let body = axum::body::Body::new(Full::new(Bytes::from(vec![0u8; 2500])));
        let mut body = metered(&limits, body, 0);
        let collected = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 2500);
        assert_eq!(limits.buffered_bytes(), 3 * KIB, "2500 bytes hold 3 KiB");
        drop(body);
        assert_eq!(limits.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_budget_fails_with_its_status() {
        let limits = limits(2);
        let body = axum::body::Body::new(Full::new(Bytes::from(vec![0u8; 3000])));
        let error = metered(&limits, body, 0).collect().await.unwrap_err();
        assert!(matches!(
            Refused::find(&*error),
            Some(Refused::Budget { .. })
        ));
        assert_eq!(
            tonic::Status::from_error(error).code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(limits.buffered_bytes(), 0, "nothing stays charged");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_fails() {
        let limits = BodyLimits::new(4 * KIB, Duration::from_millis(50), 1 << 20);
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, std::io::Error>>();
        let body = axum::body::Body::new(StreamBody::new(never));
        let error = metered(&limits, body, 0).collect().await.unwrap_err();
        assert!(matches!(
            Refused::find(&*error),
            Some(Refused::Timeout { .. })
        ));
        assert_eq!(
            tonic::Status::from_error(error).code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
