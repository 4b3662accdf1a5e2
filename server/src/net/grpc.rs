//! The connections tonic serves gRPC on: taken from an [`Acceptor`] (the connection cap, TCP_NODELAY and
//! TCP keepalive, which tonic does not apply to an incoming stream it did not bind), each holding its slot
//! until tonic drops it.
//!
//! HTTP/2 has no header read timeout of its own, so a client that connects and sends nothing would hold
//! its slot forever (HTTP/2 pings start only once the connection is established). A connection whose first
//! bytes (the HTTP/2 preface) do not arrive within the header read timeout fails its reads, and hyper
//! closes it.
use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::accept::{Accepted, Acceptor, Slot};

/// Connections from `acceptor`, for `serve_with_incoming_shutdown`; never yields an error (accept errors
/// are retried inside the acceptor).
pub fn incoming(
    acceptor: Acceptor,
    preface_timeout: Duration,
) -> impl tokio_stream::Stream<Item = std::io::Result<GrpcConnection>> {
    futures_util::stream::unfold(acceptor, move |acceptor| async move {
        let Accepted { stream, slot } = acceptor.accept().await;
        let connection = GrpcConnection {
            stream,
            _slot: slot,
            preface_timer: Some(Box::pin(tokio::time::sleep(preface_timeout))),
        };
        Some((Ok(connection), acceptor))
    })
}

pub struct GrpcConnection {
    stream: TcpStream,
    _slot: Slot,
    /// Until the first bytes arrive.
    preface_timer: Option<Pin<Box<Sleep>>>,
}

impl Connected for GrpcConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let this = &mut *self;
        if let Some(timer) = this.preface_timer.as_mut() {
            match polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => this.preface_timer = None,
                Poll::Pending if timer.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the header read timeout",
                    )));
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
