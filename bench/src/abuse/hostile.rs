//! Sends one hostile image to every task over both protocols, one request at a time (so that the memory
//! measured is one image's, which is what a per-image bound promises), and sorts the answers: served,
//! refused with a 4xx and a `kind` (what issue 14 asks for an image that costs too much), or bad (a 5xx, a
//! broken connection, a timeout: the server did not handle it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mobilenet_client::error::ServerStatus;
use mobilenet_client::{ClassifyOptions, Client, ClientError, DetectOptions, Selector};

/// A decode that takes longer than this is as bad as no answer to its client.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// One line per request: "classify/HTTP 422 image_too_large 3 ms".
    pub answers: Vec<String>,
    pub bad: Vec<String>,
}

impl Sent {
    pub fn absorb(&mut self, other: Sent) {
        self.answers.extend(other.answers);
        self.bad.extend(other.bad);
    }

    /// "6 sent: 200 x2, 422 x4" with the bad ones named.
    pub fn describe(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for a in &self.answers {
            let key = a.split_whitespace().nth(1).unwrap_or("?").to_owned();
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        format!("{} sent: {}", self.answers.len(), counts.join(", "))
    }
}

/// The label of an answer, and whether it is acceptable (served, or refused with a 4xx / the matching gRPC
/// code).
fn judge(result: &Result<(), ClientError>) -> (String, bool) {
    match result {
        Ok(()) => ("200".to_owned(), true),
        Err(ClientError::Server { status, kind, .. }) => {
            let kind = kind.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
            match status {
                ServerStatus::Http(code) => (format!("{code}{kind}"), (400..500).contains(code)),
                ServerStatus::Grpc(code) => {
                    use tonic::Code as C;
                    let fine = matches!(
                        code,
                        C::InvalidArgument
                            | C::OutOfRange
                            | C::ResourceExhausted
                            | C::FailedPrecondition
                    );
                    (format!("{code:?}"), fine)
                }
            }
        }
        Err(e) => (format!("lost ({e})"), false),
    }
}

/// Sends `image` to classify, detect and segment over each client in turn.
pub async fn send_everywhere(clients: &[(&'static str, Client); 2], image: Bytes) -> Sent {
    let mut sent = Sent::default();
    for task in ["classify", "detect", "segment"] {
        for (protocol, client) in clients {
            let started = Instant::now();
            let s = Selector::default();
            let call = async {
                match task {
                    "classify" => client
                        .classify(image.clone(), &s, &ClassifyOptions::default())
                        .await
                        .map(drop),
                    "detect" => client
                        .detect(image.clone(), &s, &DetectOptions::default())
                        .await
                        .map(drop),
                    _ => client.segment(image.clone(), &s).await.map(drop),
                }
            };
            let result = tokio::time::timeout(ANSWER_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Transport {
                        url: String::new(),
                        detail: format!("no answer in {ANSWER_TIMEOUT:?}"),
                    })
                });
            let (label, fine) = judge(&result);
            let line = format!(
                "{task}/{protocol} {label} {} ms",
                started.elapsed().as_millis()
            );
            eprintln!("    {line}");
            if !fine {
                sent.bad.push(line.clone());
            }
            sent.answers.push(line);
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: ServerStatus, kind: Option<&str>) -> Result<(), ClientError> {
        Err(ClientError::Server {
            status,
            kind: kind.map(str::to_owned),
            message: String::new(),
        })
    }

    #[test]
    fn refusals_with_a_4xx_are_fine_and_5xx_are_not() {
        assert_eq!(judge(&Ok(())), ("200".to_owned(), true));
        assert_eq!(
            judge(&server(ServerStatus::Http(422), Some("image_too_large"))),
            ("422 image_too_large".to_owned(), true)
        );
        assert!(!judge(&server(ServerStatus::Http(500), None)).1);
        assert!(
            judge(&server(
                ServerStatus::Grpc(tonic::Code::InvalidArgument),
                None
            ))
            .1
        );
        assert!(!judge(&server(ServerStatus::Grpc(tonic::Code::Internal), None)).1);
        assert!(!judge(&server(ServerStatus::Grpc(tonic::Code::Unavailable), None)).1);
    }

    #[test]
    fn description_counts_by_status() {
        let sent = Sent {
            answers: vec![
                "classify/HTTP 200 5 ms".into(),
                "classify/gRPC 200 5 ms".into(),
                "detect/HTTP 422 1 ms".into(),
            ],
            bad: vec![],
        };
        assert_eq!(sent.describe(), "3 sent: 200 x2, 422 x1");
    }
}
