//! The HTTP/1.1 server: our own accept loop on hyper, in place of `axum::serve`, which has no connection
//! cap and no timers (hyper's header read timeout only runs with a timer, which `axum::serve` does not set).
//!
//! Each connection runs in its own task with its slot under the cap ([`Acceptor`]) and its phase timers
//! ([`super::phase`]): a connection whose request head takes longer than the header timeout, or that stays
//! idle longer than the keep-alive timeout, is closed. On drain, the loop stops accepting (the listener
//! is closed), every connection is asked to finish its current request and close, and `serve` returns
//! once they all have.
use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, body::Body};
use bytes::Bytes;
use http_body::Frame;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::{
    accept::{Accepted, Acceptor},
    linger::{LINGER_TIME, Lingering},
    phase::{Activity, InFlight, Phase, Timeouts, Watched},
};
use crate::shutdown::Drain;

/// Serves `app` on every connection `acceptor` hands out, until `drain` is triggered and the connections
/// have finished.
pub async fn serve(acceptor: Acceptor, app: Router, timeouts: Timeouts, drain: Drain) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our phase timers replace hyper's header timer (see `phase`). Turned off explicitly: left at its
    // default with no hyper timer set, hyper logs a warning for every connection.
    builder.header_read_timeout(None);
    let stop = drain.wait();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = &mut stop => break,
        };
        tokio::spawn(connection(
            accepted,
            app.clone(),
            builder.clone(),
            timeouts,
            drain.clone(),
        ));
    }
    acceptor.closed().await;
}

async fn connection(
    accepted: Accepted,
    app: Router,
    builder: hyper::server::conn::http1::Builder,
    timeouts: Timeouts,
    drain: Drain,
) {
    let Accepted {
        stream,
        slot: _slot,
    } = accepted;
    let activity = Activity::new();
    let io = TokioIo::new(Lingering::new(
        Watched::new(stream, activity.clone()),
        LINGER_TIME,
    ));
    let service = Tracked {
        app,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stop = drain.wait();
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = &mut stop, if !stopping => {
                // A connection with nothing in flight and no request arriving closes at once (hyper would
                // keep a fresh one waiting for its first head); any other finishes its request, then closes.
                if activity.is_quiet() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            phase = activity.expired(timeouts) => {
                // Nothing is in flight (`expired` never resolves while a request is), so dropping the
                // connection loses no answer.
                match phase {
                    Phase::Head => tracing::debug!("closing a connection whose request head timed out"),
                    _ => tracing::debug!("closing an idle keep-alive connection"),
                }
                return;
            }
        }
    }
}

/// The app, with each request marking its connection busy until its response body is dropped.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request();
        let mut app = self.app.clone();
        Box::pin(async move {
            let response = app.call(request.map(Body::new)).await?;
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that holds its connection's [`InFlight`] guard until hyper has written and dropped it.
struct Guarded {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
