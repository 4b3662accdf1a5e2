//! Lingering close for HTTP/1: when the server closes a connection whose client may still be sending (a 413
//! answered before a 16 MiB body was read, say), it first shuts down its own sending side, then reads and
//! discards what still arrives, for a bounded time and number of bytes, and only then closes.
//!
//! Closing a socket with unread data in its receive buffer makes Linux send a reset, and a reset makes the
//! client's kernel drop the answer it had received but not yet read: the client sees "broken pipe" or
//! "connection reset" instead of the 413 (the abuse suite's `big-bodies` case saw this on 2 of 8 bodies). RFC 9112
//! section 9.6 asks servers to close this way; nginx does it by default (`lingering_close`). hyper shuts the
//! connection down through [`AsyncWrite::poll_shutdown`], so that is where the lingering happens.
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// How long a closing connection keeps discarding what its client sends (nginx's `lingering_timeout`).
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much it discards at most: above the largest body the server accepts, so the client can finish
/// sending one and read the answer; past it the client is not reading answers anyway.
const LINGER_BYTES: u64 = 32 << 20;

/// An HTTP/1 socket whose shutdown lingers (see the module header).
pub struct Lingering<IO> {
    io: IO,
    linger_time: Duration,
    state: Linger,
}

enum Linger {
    Open,
    /// Our side is shut down; discarding until EOF, an error, the byte cap or the timer.
    Draining {
        timer: Pin<Box<Sleep>>,
        discarded: u64,
    },
    Done,
}

impl<IO> Lingering<IO> {
    /// Lingers at most `linger_time` ([`LINGER_TIME`] in the server).
    pub fn new(io: IO, linger_time: Duration) -> Lingering<IO> {
        Lingering {
            io,
            linger_time,
            state: Linger::Open,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Lingering<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<IO> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                Linger::Open => {
                    // The answer is flushed and the client gets our FIN; a client that has read everything
                    // closes its side at once, which ends the draining below at its first read.
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    this.state = Linger::Draining {
                        timer: Box::pin(tokio::time::sleep(this.linger_time)),
                        discarded: 0,
                    };
                }
                Linger::Draining { timer, discarded } => {
                    if timer.as_mut().poll(cx).is_ready() || *discarded >= LINGER_BYTES {
                        this.state = Linger::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *discarded += buf.filled().len() as u64;
                        }
                        // EOF or an error: the client is done, nothing is left to protect.
                        _ => this.state = Linger::Done,
                    }
                }
                Linger::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_drains_what_the_peer_still_sends_until_it_closes() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = Lingering::new(server, LINGER_TIME);
        server.write_all(b"413").await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        // The client keeps sending more than the pipe holds; without draining, these writes would block.
        client.write_all(&[7u8; 10_000]).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"413", "the answer arrives whole, then EOF");
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_never_closes_is_let_go_after_the_linger_time() {
        let linger = Duration::from_millis(100);
        let (server, _client) = tokio::io::duplex(64);
        let mut server = Lingering::new(server, linger);
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        // A lower bound only: a timer never fires early.
        assert!(started.elapsed() >= linger);
    }
}
