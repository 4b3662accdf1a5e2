//! Bodies one byte over the limit, over both protocols. Over HTTP they go on a raw socket, once with a
//! `Content-Length` (the server can refuse from the header alone) and once chunked (it must count while
//! reading), and the answer is read while the body is still being written: a client library would report
//! the server's early 413 as a broken pipe. Over gRPC the image field alone is over the limit.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use mobilenet_client::error::ServerStatus;
use mobilenet_client::{ClassifyOptions, Client, ClientError, Selector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sockets::status_of;

/// How long one oversized request may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    Chunked,
}

/// One oversized request's answer: an HTTP status, a gRPC code, or how it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Http(u16),
    Grpc(tonic::Code),
    /// Served as if it were fine (gRPC OK): the limit was not applied.
    Served,
    Lost(String),
}

impl Answer {
    /// 413 over HTTP; OUT_OF_RANGE (tonic's code for a message over the limit) or RESOURCE_EXHAUSTED over
    /// gRPC.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Answer::Http(413)
                | Answer::Grpc(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
        )
    }

    pub fn label(&self) -> String {
        match self {
            Answer::Http(s) => format!("HTTP {s}"),
            Answer::Grpc(c) => format!("gRPC {c:?}"),
            Answer::Served => "served".to_owned(),
            Answer::Lost(why) => format!("no answer ({why})"),
        }
    }
}

/// POSTs `size` bytes of zeros as `image/jpeg` to `/v1/classify`.
pub async fn http(addr: SocketAddr, size: usize, framing: Framing) -> Answer {
    match tokio::time::timeout(ANSWER_TIMEOUT, http_inner(addr, size, framing)).await {
        Ok(a) => a,
        Err(_) => Answer::Lost(format!("none in {ANSWER_TIMEOUT:?}")),
    }
}

async fn http_inner(addr: SocketAddr, size: usize, framing: Framing) -> Answer {
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Answer::Lost(format!("connect: {e}")),
    };
    let (mut rx, mut tx) = stream.into_split();
    let length = match framing {
        Framing::ContentLength => format!("Content-Length: {size}"),
        Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
    };
    let header = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n{length}\r\n\r\n"
    );
    let send = async move {
        tx.write_all(header.as_bytes()).await?;
        let piece = vec![0u8; 256 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(piece.len());
            match framing {
                Framing::ContentLength => tx.write_all(&piece[..n]).await?,
                Framing::Chunked => {
                    tx.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    tx.write_all(&piece[..n]).await?;
                    tx.write_all(b"\r\n").await?;
                }
            }
            left -= n;
        }
        if framing == Framing::Chunked {
            tx.write_all(b"0\r\n\r\n").await?;
        }
        // Keep the connection open until the answer is read.
        std::future::pending::<()>().await;
        std::io::Result::Ok(tx)
    };
    let receive = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < 12 {
            match rx.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Answer::Lost(format!("read: {e}")),
            }
        }
        match status_of(&got) {
            Some(s) => Answer::Http(s),
            None => Answer::Lost("closed without a status".to_owned()),
        }
    };
    tokio::pin!(send);
    tokio::select! {
        answer = receive => answer,
        Err(e) = &mut send => Answer::Lost(format!("write: {e}")),
    }
}

/// A `Classify` call whose image field holds `size` bytes.
pub async fn grpc(client: &Client, size: usize) -> Answer {
    let image = Bytes::from(vec![0u8; size]);
    let (selector, options) = (Selector::default(), ClassifyOptions::default());
    let call = client.classify(image, &selector, &options);
    match tokio::time::timeout(ANSWER_TIMEOUT, call).await {
        Err(_) => Answer::Lost(format!("none in {ANSWER_TIMEOUT:?}")),
        Ok(Ok(_)) => Answer::Served,
        Ok(Err(ClientError::Server {
            status: ServerStatus::Grpc(code),
            ..
        })) => Answer::Grpc(code),
        Ok(Err(e)) => Answer::Lost(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_limit_answers_are_expected() {
        assert!(Answer::Http(413).is_expected());
        assert!(Answer::Grpc(tonic::Code::OutOfRange).is_expected());
        assert!(Answer::Grpc(tonic::Code::ResourceExhausted).is_expected());
        assert!(!Answer::Http(400).is_expected());
        assert!(!Answer::Http(500).is_expected());
        assert!(!Answer::Grpc(tonic::Code::Internal).is_expected());
        assert!(!Answer::Served.is_expected());
        assert!(!Answer::Lost("reset".into()).is_expected());
    }
}
