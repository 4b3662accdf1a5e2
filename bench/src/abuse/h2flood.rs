//! One HTTP/2 connection opening thousands of gRPC streams that send their headers and never finish, written
//! frame by frame. A real HTTP/2 client (the h2 crate, tonic) obeys the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and would wait politely; an attacker does not, so this client sends
//! every HEADERS frame at once and counts what the server does about it: refuses streams (RST_STREAM
//! REFUSED_STREAM), answers them, or ends the connection (GOAWAY).
//!
//! The frames follow RFC 9113 §4 and the header block RFC 7541 (static-table indices for `:method: POST`
//! and `:scheme: http`, literals without indexing for the rest, no Huffman coding).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

/// What the server did with the streams.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    pub sent: u32,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it announced one.
    pub advertised_max: Option<u32>,
    /// RST_STREAM frames, by error code REFUSED_STREAM and any other.
    pub refused: u32,
    pub reset_other: u32,
    /// Streams the server answered (a HEADERS frame: a response or trailers-only status).
    pub answered: u32,
    /// GOAWAY: (seconds from the start, last stream id the server processed, error code).
    pub goaway: Option<(f64, u32, u32)>,
    /// The connection ended (seconds from the start), by GOAWAY or by a close.
    pub closed_at: Option<f64>,
    /// Writing the frames failed (the server stopped reading or closed).
    pub write_error: Option<String>,
}

impl Flood {
    /// Streams the server took on and still held at the end: those it processed (up to the GOAWAY's last
    /// stream id) minus those it refused or answered. Every stream id sent is odd, from 1.
    pub fn held(&self) -> u32 {
        let processed = match self.goaway {
            Some((_, last, _)) => last.div_ceil(2).min(self.sent),
            None => self.sent,
        };
        processed.saturating_sub(self.refused + self.reset_other + self.answered)
    }

    pub fn describe(&self) -> String {
        let max = self
            .advertised_max
            .map_or("no SETTINGS_MAX_CONCURRENT_STREAMS".to_owned(), |m| {
                format!("SETTINGS_MAX_CONCURRENT_STREAMS {m}")
            });
        let mut out = format!(
            "{max}; {} streams sent: {} refused, {} reset otherwise, {} answered, {} held",
            self.sent,
            self.refused,
            self.reset_other,
            self.answered,
            self.held()
        );
        if let Some((at, last, code)) = self.goaway {
            out.push_str(&format!(
                ", GOAWAY (code {code}, last stream {last}) at {at:.1} s"
            ));
        } else if let Some(at) = self.closed_at {
            out.push_str(&format!(", connection closed at {at:.1} s"));
        }
        if let Some(e) = &self.write_error {
            out.push_str(&format!(", write failed: {e}"));
        }
        out
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7FFF_FFFF).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The request headers of a unary gRPC call to `Classify`, HPACK-encoded without the dynamic table.
fn header_block(authority: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http (static table 3 and 6)
    for (name, value) in [
        (":path", "/mobilenet.v1.Inference/Classify"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // Literal header field without indexing, new name; every length here is under 127.
        b.push(0x00);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Opens `streams` streams on one connection to `addr`, then watches the connection for `window`.
pub async fn flood(addr: SocketAddr, streams: u32, window: Duration) -> anyhow::Result<Flood> {
    let begin = Instant::now();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rx, mut tx) = stream.into_split();
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let block = header_block(&addr.to_string());
    for i in 0..streams {
        frame(&mut out, HEADERS, END_HEADERS, 2 * i + 1, &block);
    }
    // The writer runs apart from the reader: a server that stops reading must not stop us from counting
    // what it sent back. Acknowledgements go through a channel to the same writer.
    let (acks, mut to_ack) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        tx.write_all(&out).await?;
        while let Some(bytes) = to_ack.recv().await {
            tx.write_all(&bytes).await?;
        }
        std::io::Result::Ok(())
    });

    let mut f = Flood {
        sent: streams,
        ..Flood::default()
    };
    let end = begin + window;
    let mut answered = std::collections::HashSet::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout_at(end.into(), rx.read(&mut chunk)).await;
        let n = match read {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                f.closed_at = Some(begin.elapsed().as_secs_f64());
                break;
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream_id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7FFF_FFFF;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]])
                            == SETTINGS_MAX_CONCURRENT_STREAMS
                        {
                            f.advertised_max = Some(u32::from_be_bytes([
                                setting[2], setting[3], setting[4], setting[5],
                            ]));
                        }
                    }
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    let _ = acks.send(ack);
                }
                PING if flags & ACK == 0 => {
                    let mut pong = Vec::new();
                    frame(&mut pong, PING, ACK, 0, &payload);
                    let _ = acks.send(pong);
                }
                RST_STREAM if payload.len() == 4 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    if code == REFUSED_STREAM {
                        f.refused += 1;
                    } else {
                        f.reset_other += 1;
                    }
                }
                // A response's headers, and for a response with a body its trailers too: a stream is
                // counted once.
                HEADERS if answered.insert(stream_id) => f.answered += 1,
                GOAWAY if payload.len() >= 8 => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7FFF_FFFF;
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    f.goaway = Some((begin.elapsed().as_secs_f64(), last, code));
                }
                DATA => {}
                _ => {}
            }
        }
    }
    drop(acks);
    writer.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(10), writer).await {
        f.write_error = Some(e.to_string());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let mut out = Vec::new();
        frame(&mut out, HEADERS, END_HEADERS, 3, &[1, 2]);
        assert_eq!(out, vec![0, 0, 2, 1, 4, 0, 0, 0, 3, 1, 2]);
    }

    #[test]
    fn held_streams_stop_at_the_goaway() {
        let mut f = Flood {
            sent: 10_000,
            refused: 900,
            ..Flood::default()
        };
        assert_eq!(f.held(), 9_100);
        // Streams 1..=1999 (1000 of them) processed, 900 refused: 100 held.
        f.goaway = Some((0.5, 1999, 11));
        assert_eq!(f.held(), 100);
    }

    /// The h2 crate's server, with a stream limit, reads our frames and refuses what is over the limit.
    #[tokio::test]
    async fn a_limited_h2_server_refuses_the_excess() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::Builder::new()
                .max_concurrent_streams(10)
                .handshake::<_, bytes::Bytes>(socket)
                .await
                .unwrap();
            let mut held = Vec::new();
            while let Some(Ok(request)) = conn.accept().await {
                held.push(request);
            }
        });
        let f = flood(addr, 50, Duration::from_millis(500)).await.unwrap();
        assert_eq!(f.advertised_max, Some(10));
        assert_eq!(f.refused, 40, "{f:?}");
        assert_eq!(f.held(), 10);
        server.abort();
    }
}
