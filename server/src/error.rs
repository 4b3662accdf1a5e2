//! The one error type of the service, and the one place that maps it to an HTTP status, a gRPC code, a
//! metric/JSON `kind` label and a message that is safe to show to the client.
//!
//! Client errors (4xx) carry a message naming the problem. Server errors (5xx) answer with a terse message;
//! their real cause is logged once, here, when the error is turned into a response.
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no image: send a multipart field `image` or a raw body with an image content type")]
    MissingImage,
    #[error("the image is empty")]
    EmptyImage,
    #[error(
        "unsupported content type {0:?}: use multipart/form-data or image/jpeg, image/png, image/bmp"
    )]
    UnsupportedMediaType(String),
    #[error("unsupported image format: JPEG, PNG and BMP are accepted")]
    UnsupportedFormat,
    #[error("the image could not be decoded: {0}")]
    InvalidImage(String),
    #[error("the image has {pixels} pixels, over the limit of {limit}")]
    ImageTooLarge { pixels: u64, limit: u64 },
    #[error("the image's shape is refused: {0}")]
    ImageShape(String),
    #[error("{}", image_memory_message(*.bytes, *.limit))]
    ImageMemory { bytes: Option<u64>, limit: u64 },
    #[error("the server is short of memory for this image; retry shortly")]
    InsufficientMemory,
    #[error("the request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("unknown model {0:?}; GET /v1/models (gRPC: ListModels) lists them")]
    UnknownModel(String),
    #[error("model {model:?} does {actual}, not {expected}")]
    WrongTask {
        model: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("no {task} variant matches {wanted}")]
    NoMatchingVariant { task: &'static str, wanted: String },
    #[error("bad option {name}: {reason}")]
    BadOption { name: &'static str, reason: String },
    #[error("model {model} is at capacity, retry later")]
    QueueFull { model: String },
    #[error("{}", overloaded_message(model, *expected_wait_ms, *limit_ms, *deadline))]
    Overloaded {
        model: String,
        expected_wait_ms: u64,
        /// The queue-wait limit, or with `deadline` the time the request had left.
        limit_ms: u64,
        deadline: bool,
    },
    #[error("{}", over_budget_message(task, fastest, *predicted_ms, *budget_ms))]
    OverBudget {
        task: &'static str,
        /// The variant predicted fastest, and its prediction.
        fastest: String,
        predicted_ms: u64,
        budget_ms: u64,
    },
    #[error("the request deadline passed before it could be served")]
    DeadlineExceeded,
    #[error(
        "the server is buffering its limit of request bodies ({budget_bytes} bytes); retry shortly"
    )]
    BodyBudgetFull { budget_bytes: u64 },
    #[error("the request body did not arrive within {timeout_ms} ms")]
    BodyTimeout { timeout_ms: u64 },
    #[error("the models are still loading; retry shortly")]
    NotReady,
    #[error(
        "no such endpoint: {method} {path} (see README: /v1/classify, /v1/detect, /v1/segment, /v1/models)"
    )]
    UnknownRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("internal error")]
    Internal(String),
}

/// Everything a transport needs to answer an error.
pub struct ErrorParts {
    pub status: StatusCode,
    pub code: tonic::Code,
    /// Stable machine-readable label, used in JSON bodies and metric labels.
    pub kind: &'static str,
}

impl Error {
    pub fn internal(cause: impl std::fmt::Display) -> Error {
        Error::Internal(cause.to_string())
    }

    /// The single mapping from error to status, code and kind.
    pub fn parts(&self) -> ErrorParts {
        use tonic::Code as C;
        let (status, code, kind) = match self {
            Error::MissingImage => (StatusCode::BAD_REQUEST, C::InvalidArgument, "missing_image"),
            Error::EmptyImage => (StatusCode::BAD_REQUEST, C::InvalidArgument, "empty_image"),
            Error::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                C::InvalidArgument,
                "unsupported_media_type",
            ),
            Error::UnsupportedFormat => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                C::InvalidArgument,
                "unsupported_format",
            ),
            Error::InvalidImage(_) => {
                (StatusCode::BAD_REQUEST, C::InvalidArgument, "invalid_image")
            }
            Error::ImageTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                C::InvalidArgument,
                "image_too_large",
            ),
            // 422: the image is well formed, but its shape is not one the server decodes.
            Error::ImageShape(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::InvalidArgument,
                "image_shape",
            ),
            Error::ImageMemory { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                C::InvalidArgument,
                "image_memory",
            ),
            // Transient: the allocator refused a buffer the limits allowed; the same image may pass later.
            Error::InsufficientMemory => (
                StatusCode::SERVICE_UNAVAILABLE,
                C::Unavailable,
                "insufficient_memory",
            ),
            // OUT_OF_RANGE is what tonic itself answers for a message over `max_decoding_message_size`, so
            // an oversized body gets the same code whichever layer notices it.
            Error::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                C::OutOfRange,
                "body_too_large",
            ),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, C::InvalidArgument, "bad_request"),
            Error::UnknownModel(_) => (StatusCode::NOT_FOUND, C::NotFound, "unknown_model"),
            Error::WrongTask { .. } => (StatusCode::BAD_REQUEST, C::InvalidArgument, "wrong_task"),
            Error::NoMatchingVariant { .. } => {
                (StatusCode::NOT_FOUND, C::NotFound, "no_matching_variant")
            }
            Error::BadOption { .. } => (StatusCode::BAD_REQUEST, C::InvalidArgument, "bad_option"),
            Error::QueueFull { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                C::ResourceExhausted,
                "queue_full",
            ),
            // Refused before queueing, so the client may retry at once elsewhere; nothing was spent on it.
            Error::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                C::ResourceExhausted,
                "overloaded",
            ),
            // Refused before queueing, like `Overloaded`: no variant of the task would answer within the budget.
            Error::OverBudget { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                C::ResourceExhausted,
                "over_budget",
            ),
            Error::DeadlineExceeded => (
                StatusCode::GATEWAY_TIMEOUT,
                C::DeadlineExceeded,
                "deadline_exceeded",
            ),
            Error::BodyBudgetFull { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                C::ResourceExhausted,
                "body_budget_full",
            ),
            Error::BodyTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                C::DeadlineExceeded,
                "body_timeout",
            ),
            Error::NotReady => (StatusCode::SERVICE_UNAVAILABLE, C::Unavailable, "not_ready"),
            Error::UnknownRoute { .. } => {
                (StatusCode::NOT_FOUND, C::Unimplemented, "unknown_route")
            }
            Error::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                C::Unimplemented,
                "method_not_allowed",
            ),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, C::Internal, "internal"),
        };
        ErrorParts { status, code, kind }
    }

    /// The client-facing message; for 5xx the cause is logged here, once, and not sent.
    fn client_message(&self) -> String {
        if let Error::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        self.to_string()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let parts = self.parts();
        let body = json!({"error": self.client_message(), "kind": parts.kind});
        let mut response = (parts.status, Json(body)).into_response();
        if parts.status == StatusCode::TOO_MANY_REQUESTS
            || parts.status == StatusCode::SERVICE_UNAVAILABLE
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let parts = error.parts();
        tonic::Status::new(parts.code, error.client_message())
    }
}

fn image_memory_message(bytes: Option<u64>, limit: u64) -> String {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    match bytes {
        Some(bytes) => format!(
            "decoding and resizing this image needs an estimated {:.0} MiB, over the per-image limit of {:.0} MiB",
            mib(bytes),
            mib(limit)
        ),
        None => format!(
            "the decoder needs more than the per-image limit of {:.0} MiB",
            mib(limit)
        ),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn overloaded_message(model: &str, expected_ms: u64, limit_ms: u64, deadline: bool) -> String {
    if deadline {
        format!(
            "model {model} is busy: this request would wait about {expected_ms} ms in its queue and could not be \
             answered within its deadline ({limit_ms} ms left); retry later or pick a smaller variant"
        )
    } else {
        format!(
            "model {model} is busy: this request would wait about {expected_ms} ms in its queue, over the limit \
             of {limit_ms} ms; retry later or pick a smaller variant"
        )
    }
}

fn over_budget_message(task: &str, fastest: &str, predicted_ms: u64, budget_ms: u64) -> String {
    format!(
        "model=auto: no {task} variant would answer within the {budget_ms} ms budget now (the fastest, {fastest}, \
         is predicted to take {predicted_ms} ms); retry later or allow a larger budget"
    )
}
