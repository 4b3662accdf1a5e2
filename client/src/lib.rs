//! Client library for mobilenet-serve: one API over both of the server's protocols.
//!
//! # Layout
//! - [`types`]: the results (classification, detection, segmentation, model list) as the HTTP API spells them in
//!   JSON; gRPC answers are converted into the same types, so callers and `--output json` see one shape.
//! - [`Client`]: picks the protocol once ([`http::HttpClient`] or [`grpc::GrpcClient`]) and forwards each call.
//! - [`error::ClientError`]: a server refusal (status + message + kind) kept apart from transport failures.
//! - [`mask`]: run-length mask → class map → indexed PNG with the PASCAL VOC palette.
//! - [`overlay`] and [`font`]: detection boxes and labels drawn on the image with a built-in bitmap font.
//! - [`output`]: the CLI's table rendering.
//! - [`inputs`]: a file or a folder of images → the list of files to send.

pub mod error;
pub mod font;
pub mod grpc;
pub mod http;
pub mod inputs;
pub mod mask;
pub mod output;
pub mod overlay;
pub mod types;

pub use error::ClientError;

use bytes::Bytes;
pub use types::*;

/// The wire protocol a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    /// Where the server listens by default (see the README: HTTP :8080, gRPC :50051).
    pub fn default_url(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://127.0.0.1:50051",
            Protocol::Http => "http://127.0.0.1:8080",
        }
    }
}

/// A connection to one server over one protocol. Cheap to clone: both inner clients share their connection pool.
#[derive(Clone)]
pub enum Client {
    Http(http::HttpClient),
    Grpc(grpc::GrpcClient),
}

impl Client {
    /// Connects to `url` (or the protocol's default URL). gRPC connects eagerly, so a wrong address fails here
    /// with a clear message instead of at the first call.
    pub async fn connect(protocol: Protocol, url: Option<&str>) -> Result<Self, ClientError> {
        let url = url.unwrap_or(protocol.default_url());
        Ok(match protocol {
            Protocol::Http => Client::Http(http::HttpClient::new(url)?),
            Protocol::Grpc => Client::Grpc(grpc::GrpcClient::connect(url).await?),
        })
    }

    pub async fn classify(
        &self,
        image: impl Into<Bytes>,
        selector: &Selector,
        options: &ClassifyOptions,
    ) -> Result<ClassifyResult, ClientError> {
        match self {
            Client::Http(c) => c.classify(image.into(), selector, options).await,
            Client::Grpc(c) => c.classify(image.into(), selector, options).await,
        }
    }

    pub async fn detect(
        &self,
        image: impl Into<Bytes>,
        selector: &Selector,
        options: &DetectOptions,
    ) -> Result<DetectResult, ClientError> {
        match self {
            Client::Http(c) => c.detect(image.into(), selector, options).await,
            Client::Grpc(c) => c.detect(image.into(), selector, options).await,
        }
    }

    /// Segments an image; the mask always comes back run-length encoded so that both protocols also return the
    /// class fractions (HTTP's `format=png` answer is a bare PNG). [`mask`] turns it into a PNG locally.
    pub async fn segment(
        &self,
        image: impl Into<Bytes>,
        selector: &Selector,
    ) -> Result<SegmentResult, ClientError> {
        match self {
            Client::Http(c) => c.segment(image.into(), selector).await,
            Client::Grpc(c) => c.segment(image.into(), selector).await,
        }
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        match self {
            Client::Http(c) => c.models().await,
            Client::Grpc(c) => c.models().await,
        }
    }
}
