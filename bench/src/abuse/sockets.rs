//! Connection attacks over raw TCP, byte by byte, because an HTTP client library would not misbehave on
//! purpose: half-sent headers, bodies trickled at 1 KB/s, keep-alive connections left idle.
//!
//! Each connection ends in one [`Fate`], timed from the attack's start, so the report can say how many the
//! server refused, answered or closed, and when.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::stats::Samples;

/// Connects in flight at once: opening thousands at the same instant would overflow the listen backlog
/// (`somaxconn`) and measure the kernel, not the server.
const CONNECTING_AT_ONCE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// The connection could not be opened (refused, reset, or no SYN-ACK in [`CONNECT_TIMEOUT`]).
    Refused { at: Duration },
    /// The server answered with this status (and may have closed afterwards).
    Answered { at: Duration, status: u16 },
    /// The server closed (or reset) the connection without a status line.
    Closed { at: Duration },
    /// Still open when the attack's window ended; closed by us then.
    Open,
}

/// How a set of connections ended.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub total: usize,
    pub refused: usize,
    /// Status → count, for connections the server answered.
    pub answered: Vec<(u16, usize)>,
    pub closed: usize,
    pub open: usize,
    /// When the server ended connections (answered or closed), in seconds from the start.
    pub ended_at: Samples,
}

impl Tally {
    pub fn of(fates: &[Fate]) -> Tally {
        let mut t = Tally {
            total: fates.len(),
            ..Tally::default()
        };
        for f in fates {
            match f {
                Fate::Refused { .. } => t.refused += 1,
                Fate::Answered { at, status } => {
                    match t.answered.iter_mut().find(|(s, _)| s == status) {
                        Some((_, n)) => *n += 1,
                        None => t.answered.push((*status, 1)),
                    }
                    t.ended_at.push(*at);
                }
                Fate::Closed { at } => {
                    t.closed += 1;
                    t.ended_at.push(*at);
                }
                Fate::Open => t.open += 1,
            }
        }
        t.answered.sort();
        t
    }

    pub fn answered_with(&self, pred: impl Fn(u16) -> bool) -> usize {
        self.answered
            .iter()
            .filter(|(s, _)| pred(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// "5000: 0 refused, 4990 ended by the server (408 x4990; first 30.0 s, median 30.1 s, last 31.0 s),
    /// 10 still open at the end".
    pub fn describe(&self) -> String {
        let ended = self.ended_at.len();
        let mut out = format!(
            "{}: {} refused, {ended} ended by the server",
            self.total, self.refused
        );
        if ended > 0 {
            let statuses: Vec<String> = self
                .answered
                .iter()
                .map(|(s, n)| format!("{s} x{n}"))
                .chain((self.closed > 0).then(|| format!("closed x{}", self.closed)))
                .collect();
            out.push_str(&format!(
                " ({}; first {:.1} s, median {:.1} s, last {:.1} s)",
                statuses.join(", "),
                self.ended_at.quantile(0.0) / 1e3,
                self.ended_at.p50() / 1e3,
                self.ended_at.quantile(1.0) / 1e3
            ));
        }
        out.push_str(&format!(", {} still open at the end", self.open));
        out
    }
}

/// Opens `n` connections, the k-th `spread * k / n` after the start, each running `script` on its socket
/// until `window` has passed since the start.
async fn many<F, Fut>(
    addr: SocketAddr,
    n: usize,
    spread: Duration,
    window: Duration,
    script: F,
) -> Vec<Fate>
where
    F: Fn(TcpStream, Instant) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Fate> + Send,
{
    let begin = Instant::now();
    let end = begin + window;
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let script = Arc::new(script);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let (connecting, script) = (connecting.clone(), script.clone());
        let start = begin + spread.mul_f64(k as f64 / n as f64);
        tasks.spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let connected = {
                let _slot = connecting.acquire().await;
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
            };
            let stream = match connected {
                Ok(Ok(s)) => s,
                _ => {
                    return Fate::Refused {
                        at: begin.elapsed(),
                    };
                }
            };
            match tokio::time::timeout_at(end.into(), script(stream, begin)).await {
                Ok(fate) => fate,
                Err(_) => Fate::Open,
            }
        });
    }
    let mut fates = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        // A panicking script is a bug here, not the server's doing; it is recorded as still open.
        fates.push(done.unwrap_or(Fate::Open));
    }
    fates
}

/// Reads until the server closes; the fate says whether it answered first.
async fn until_closed(mut stream: TcpStream, begin: Instant) -> Fate {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Only the status line matters; keep a bounded prefix.
                if got.len() < 64 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    ended(&got, begin)
}

fn ended(got: &[u8], begin: Instant) -> Fate {
    match status_of(got) {
        Some(status) => Fate::Answered {
            at: begin.elapsed(),
            status,
        },
        None => Fate::Closed {
            at: begin.elapsed(),
        },
    }
}

/// The status of an HTTP/1 status line at the start of `bytes`.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `n` connections that each send the start of a request header and then nothing.
pub async fn half_open(addr: SocketAddr, n: usize, window: Duration) -> Vec<Fate> {
    many(
        addr,
        n,
        Duration::ZERO,
        window,
        |mut stream, begin| async move {
            if stream
                .write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_err()
            {
                return Fate::Closed {
                    at: begin.elapsed(),
                };
            }
            until_closed(stream, begin).await
        },
    )
    .await
}

/// Slow clients arrive over this long rather than all at once: started together, they would also finish
/// together, and `n` requests landing in the same instant are a burst, which is another case.
const SLOW_ARRIVALS: Duration = Duration::from_secs(5);

/// `n` uploads of `body` (a real JPEG) at `bytes_per_s`, each reading the answer as it comes.
pub async fn slow_uploads(
    addr: SocketAddr,
    n: usize,
    body: Bytes,
    bytes_per_s: usize,
    window: Duration,
) -> Vec<Fate> {
    many(addr, n, SLOW_ARRIVALS, window, move |stream, begin| {
        let body = body.clone();
        async move {
            let (mut rx, mut tx) = stream.into_split();
            let header = format!(
                "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            // Eight writes a second: a steady trickle rather than one burst per second.
            let step = (bytes_per_s / 8).max(1);
            let send = async move {
                tx.write_all(header.as_bytes()).await?;
                let mut tick = tokio::time::interval(Duration::from_millis(125));
                for piece in body.chunks(step) {
                    tick.tick().await;
                    tx.write_all(piece).await?;
                }
                // Keep the write half open: closing it would end the connection before the answer.
                std::future::pending::<()>().await;
                std::io::Result::Ok(tx)
            };
            let receive = async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return ended(&got, begin),
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if got.len() >= 12 {
                                return ended(&got, begin);
                            }
                        }
                    }
                }
            };
            tokio::select! {
                fate = receive => fate,
                // The server stopped reading and reset the connection mid-body.
                Err(_) = send => Fate::Closed { at: begin.elapsed() },
            }
        }
    })
    .await
}

/// `n` keep-alive connections that each get one answer to `GET /healthz` and then stay idle. A fate of
/// `Answered` means the server closed after answering; a failed health check is `Answered` with its status.
pub async fn idle_keepalive(addr: SocketAddr, n: usize, window: Duration) -> Vec<Fate> {
    many(
        addr,
        n,
        Duration::ZERO,
        window,
        |mut stream, begin| async move {
            if stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .is_err()
            {
                return Fate::Closed {
                    at: begin.elapsed(),
                };
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The answer is small: its status line arrives in the first read.
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => {
                    return Fate::Closed {
                        at: begin.elapsed(),
                    };
                }
            }
            match status_of(&got) {
                Some(200) => {}
                Some(status) => {
                    return Fate::Answered {
                        at: begin.elapsed(),
                        status,
                    };
                }
                None => {
                    return Fate::Closed {
                        at: begin.elapsed(),
                    };
                }
            }
            // Idle from here on: whatever ends the connection now is the server's idle policy.
            match until_closed(stream, begin).await {
                Fate::Answered { at, .. } | Fate::Closed { at } => Fate::Closed { at },
                other => other,
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 408 Request Timeout\r\n"), Some(408));
        assert_eq!(status_of(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(status_of(b"HTTP/1.1 2"), None);
        assert_eq!(status_of(b""), None);
    }

    #[test]
    fn tallies_count_each_fate() {
        let s = |ms| Duration::from_millis(ms);
        let t = Tally::of(&[
            Fate::Refused { at: s(1) },
            Fate::Answered {
                at: s(30_000),
                status: 408,
            },
            Fate::Answered {
                at: s(31_000),
                status: 408,
            },
            Fate::Closed { at: s(32_000) },
            Fate::Open,
        ]);
        assert_eq!((t.total, t.refused, t.closed, t.open), (5, 1, 1, 1));
        assert_eq!(t.answered, vec![(408, 2)]);
        assert_eq!(t.answered_with(|s| s >= 500), 0);
        assert_eq!(
            t.describe(),
            "5: 1 refused, 3 ended by the server (408 x2, closed x1; first 30.0 s, median 31.0 s, last 32.0 s), 1 still open at the end"
        );
    }

    /// A listener that accepts and never answers: every half-open connection stays open for the window.
    #[tokio::test]
    async fn a_server_that_never_times_out_keeps_them_all() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                kept.push(s);
            }
        });
        let fates = half_open(addr, 20, Duration::from_millis(300)).await;
        assert_eq!(Tally::of(&fates).open, 20);
        held.abort();
    }

    /// A listener that answers 408 and closes at once: every connection ends, answered.
    #[tokio::test]
    async fn a_server_that_times_out_ends_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                // Read the half header first, so that closing sends a FIN rather than a reset.
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await;
            }
        });
        let fates = half_open(addr, 20, Duration::from_secs(5)).await;
        let t = Tally::of(&fates);
        assert_eq!((t.open, t.answered), (0, vec![(408, 20)]));
        server.abort();
    }
}
