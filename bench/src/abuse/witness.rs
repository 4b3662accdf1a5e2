//! Legitimate traffic alongside each attack, to check that nothing the server accepted is lost: every
//! `period` one real request, in turn classify / detect / segment over HTTP and over gRPC, with real images.
//! Each must be answered: served, or refused at admission (429 / RESOURCE_EXHAUSTED, i.e. never accepted).
//! A broken connection, a 5xx or a hang past [`WITNESS_TIMEOUT`] is a lost request. Their latency is not
//! judged here (that is the probe's job).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mobilenet_client::error::ServerStatus;
use mobilenet_client::{ClassifyOptions, Client, ClientError, DetectOptions, Selector};
use tokio::sync::watch;

/// Past this a request counts as lost: a segmentation on a busy two-core machine takes well under a second.
pub const WITNESS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct Witnessed {
    pub sent: usize,
    pub served: usize,
    pub refused: usize,
    pub lost: usize,
    pub first_loss: Option<String>,
}

impl Witnessed {
    fn record(&mut self, what: &str, result: Result<(), ClientError>) {
        self.sent += 1;
        match result {
            Ok(()) => self.served += 1,
            Err(e) if is_refusal(&e) => self.refused += 1,
            Err(e) => {
                self.lost += 1;
                self.first_loss.get_or_insert(format!("{what}: {e}"));
            }
        }
    }
}

/// 429 over HTTP, RESOURCE_EXHAUSTED over gRPC: refused at admission, before the server took it on.
pub fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e.server_status(),
        Some(ServerStatus::Http(429)) | Some(ServerStatus::Grpc(tonic::Code::ResourceExhausted))
    )
}

/// Sends witnesses every `period` until `stop`, waits for all of them, and counts.
pub fn during(
    clients: [Client; 2],
    images: Arc<Vec<Bytes>>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Witnessed> {
    tokio::spawn(async move {
        let mut sent = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(period);
        for i in 0usize.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let client = clients[i % 2].clone();
            let image = images[i % images.len()].clone();
            let task = (i / 2) % 3;
            sent.spawn(async move {
                let what = ["classify", "detect", "segment"][task];
                let protocol = if i % 2 == 0 { "HTTP" } else { "gRPC" };
                let call = async {
                    let s = Selector::default();
                    match task {
                        0 => client
                            .classify(image, &s, &ClassifyOptions::default())
                            .await
                            .map(drop),
                        1 => client
                            .detect(image, &s, &DetectOptions::default())
                            .await
                            .map(drop),
                        _ => client.segment(image, &s).await.map(drop),
                    }
                };
                let result = match tokio::time::timeout(WITNESS_TIMEOUT, call).await {
                    Ok(r) => r,
                    Err(_) => Err(ClientError::Transport {
                        url: String::new(),
                        detail: format!("no answer in {WITNESS_TIMEOUT:?}"),
                    }),
                };
                (format!("{what} over {protocol}"), result)
            });
        }
        let mut w = Witnessed::default();
        while let Some(done) = sent.join_next().await {
            match done {
                Ok((what, result)) => w.record(&what, result),
                Err(e) => w.record("witness task", Err(ClientError::Protocol(e.to_string()))),
            }
        }
        w
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_not_losses() {
        let mut w = Witnessed::default();
        let server = |status| ClientError::Server {
            status,
            kind: None,
            message: String::new(),
        };
        w.record("a", Ok(()));
        w.record("b", Err(server(ServerStatus::Http(429))));
        w.record(
            "c",
            Err(server(ServerStatus::Grpc(tonic::Code::ResourceExhausted))),
        );
        w.record("d", Err(server(ServerStatus::Http(500))));
        w.record(
            "e",
            Err(ClientError::Transport {
                url: "u".into(),
                detail: "reset".into(),
            }),
        );
        assert_eq!((w.sent, w.served, w.refused, w.lost), (5, 1, 2, 2));
        assert!(w.first_loss.unwrap().starts_with("d: "));
    }
}
