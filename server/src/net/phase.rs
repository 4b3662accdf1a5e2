//! Where an HTTP/1 connection is in its life, and when that phase has lasted too long.
//!
//! A connection is in one of three phases:
//! - `Head`: reading a request head. It starts when the connection opens and when the first byte of the
//!   next request arrives on an idle one; it may last the header read timeout (a slowloris client sending
//!   half a header, or nothing, is cut off).
//! - `Busy`: a request is being served, from its parsed head until its response body is dropped. Its body
//!   upload is bounded by the body read timeout (see [`super::body`]) and its processing by the request
//!   deadline, so this phase has no timer of its own.
//! - `Idle`: kept alive between requests; it may last the keep-alive timeout.
//!
//! On drain, a connection that is quiet (idle, or in `Head` with no byte of it received yet) closes at once;
//! any other finishes its request first.
//!
//! hyper has a `header_read_timeout`, but it restarts it whenever a connection goes idle, so the
//! keep-alive time could never be longer than the header time (a keep-alive timeout shorter than a load
//! balancer's idle timeout makes the balancer send requests on closing connections). Keeping both here
//! makes them independent.
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Head,
    Busy,
    Idle,
}

/// The timers of the `Head` and `Idle` phases.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    since: Instant,
    in_flight: usize,
    /// Some bytes of the current request head have arrived.
    heard: bool,
}

/// One connection's phase, updated by its I/O ([`Watched`]) and its requests ([`Activity::request`]).
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                phase: Phase::Head,
                since: Instant::now(),
                in_flight: 0,
                heard: false,
            }),
            changed: Notify::new(),
        })
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        // A poisoned lock only means another thread panicked mid-update; the state is still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut state);
        drop(state);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, a new request head has begun.
    fn bytes_read(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.phase {
            Phase::Idle => {
                state.phase = Phase::Head;
                state.since = Instant::now();
                state.heard = true;
                drop(state);
                self.changed.notify_one();
            }
            Phase::Head => state.heard = true,
            Phase::Busy => {}
        }
    }

    /// No request is in flight and none has begun arriving: closing the connection loses nothing.
    pub fn is_quiet(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.phase == Phase::Idle || (state.phase == Phase::Head && !state.heard)
    }

    /// A request head was parsed; the connection is busy until the returned guard is dropped (with the
    /// response body, once it is written).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.update(|s| {
            s.in_flight += 1;
            s.phase = Phase::Busy;
            s.heard = false;
        });
        InFlight(self.clone())
    }

    /// The phase that ran out of time (`Head` or `Idle`). Never resolves while a request is in flight.
    pub async fn expired(&self, timeouts: Timeouts) -> Phase {
        loop {
            let (phase, since) = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                (state.phase, state.since)
            };
            let deadline = match phase {
                Phase::Head => since + timeouts.header,
                Phase::Idle => since + timeouts.idle,
                Phase::Busy => {
                    self.changed.notified().await;
                    continue;
                }
            };
            if deadline <= Instant::now() {
                return phase;
            }
            // `notify_one` stores a wake-up when nobody waits, so a change between reading the state and
            // waiting here is not missed: the loop just reads the state again.
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Keeps its connection `Busy`; the last one dropped makes it `Idle`.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.phase = Phase::Idle;
                s.since = Instant::now();
            }
        });
    }
}

/// A socket that reports the bytes it reads to its connection's [`Activity`].
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: Arc<Activity>) -> Watched<IO> {
        Watched { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, short timers: each check is a lower bound (a timer never fires early) or a wide margin.
    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_millis(50),
        idle: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn a_new_connection_gets_the_header_timeout() {
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(activity.expired(TIMEOUTS).await, Phase::Head);
        assert!(start.elapsed() >= TIMEOUTS.header);
    }

    #[tokio::test]
    async fn idle_after_a_response_then_head_again_on_new_bytes() {
        let activity = Activity::new();
        drop(activity.request());
        let start = Instant::now();
        assert_eq!(activity.expired(TIMEOUTS).await, Phase::Idle);
        assert!(
            start.elapsed() >= TIMEOUTS.idle,
            "the keep-alive timer, not the header one"
        );

        let activity = Activity::new();
        drop(activity.request());
        activity.bytes_read();
        let head_start = Instant::now();
        assert_eq!(activity.expired(TIMEOUTS).await, Phase::Head);
        let elapsed = head_start.elapsed();
        assert!(
            elapsed >= TIMEOUTS.header && elapsed < TIMEOUTS.idle,
            "{elapsed:?}"
        );
    }

    #[test]
    fn quiet_until_bytes_arrive_or_while_idle() {
        let activity = Activity::new();
        assert!(activity.is_quiet(), "a new connection that sent nothing");
        activity.bytes_read();
        assert!(!activity.is_quiet(), "half a head");
        let request = activity.request();
        assert!(!activity.is_quiet(), "a request in flight");
        drop(request);
        assert!(activity.is_quiet(), "idle between requests");
    }

    #[tokio::test]
    async fn no_timer_while_a_request_is_in_flight() {
        let activity = Activity::new();
        let request = activity.request();
        let waiting = tokio::time::timeout(3 * TIMEOUTS.idle, activity.expired(TIMEOUTS));
        assert!(waiting.await.is_err(), "expired while busy");
        drop(request);
        assert_eq!(activity.expired(TIMEOUTS).await, Phase::Idle);
    }
}
