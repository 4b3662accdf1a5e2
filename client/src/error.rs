//! Client errors. A refusal by the server (a 4xx/5xx answer or a non-OK gRPC status) is kept apart from failing
//! to reach it, so the CLI can print the server's own status and message verbatim.

use std::fmt;

/// The status a server refusal came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    Http(u16),
    Grpc(tonic::Code),
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerStatus::Http(code) => {
                let reason = reqwest::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "HTTP {code} {reason}")
            }
            ServerStatus::Grpc(code) => write!(f, "gRPC {code:?}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered, and refused. `kind` is the HTTP body's machine-readable `kind`, when it had one.
    #[error("server answered {status}: {message}{}", kind.as_deref().map(|k| format!(" [{k}]")).unwrap_or_default())]
    Server {
        status: ServerStatus,
        kind: Option<String>,
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot talk to the server at {url}: {detail}")]
    Transport { url: String, detail: String },
    /// The server answered something this client does not understand (wrong service on that port?).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("invalid server URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
}

impl ClientError {
    /// The server's status, when the server itself refused the request.
    pub fn server_status(&self) -> Option<&ServerStatus> {
        match self {
            ClientError::Server { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Flattens an error and its sources into one line: hyper and tonic hide the useful part ("connection refused")
/// several levels down.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
