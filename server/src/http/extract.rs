//! Getting the image and the options out of an HTTP request, with errors that say what was wrong.
use std::time::{Duration, Instant};

use axum::{
    extract::{FromRequest, Multipart, Request},
    http::{HeaderMap, header::CONTENT_TYPE},
};
use bytes::Bytes;

use crate::{
    error::{Error, Result},
    net::body::Refused,
    options::{self, RequestOptions},
    postprocess::TaskOptions,
    repository::Task,
};

/// Content types accepted as a raw image body.
const RAW_TYPES: &[&str] = &[
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/bmp",
    "image/x-ms-bmp",
    "application/octet-stream",
];

/// The image bytes: the multipart field `image`, or the whole body for an image content type.
pub async fn image(request: Request, limit: usize) -> Result<Bytes> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if content_type == "multipart/form-data" {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| multipart_error(e, limit))?
        {
            if field.name() == Some("image") {
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
                return if bytes.is_empty() {
                    Err(Error::EmptyImage)
                } else {
                    Ok(bytes)
                };
            }
        }
        return Err(Error::MissingImage);
    }
    let raw_type = RAW_TYPES.contains(&content_type.as_str()) || content_type.starts_with("image/");
    if !raw_type && !content_type.is_empty() {
        return Err(Error::UnsupportedMediaType(content_type));
    }
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| body_error(e, limit))?;
    // A body without a content type is let through: the decoder judges it by its magic bytes.
    if bytes.is_empty() {
        Err(Error::MissingImage)
    } else {
        Ok(bytes)
    }
}

/// The whole body, up to `limit` bytes, with the same errors as an image body.
pub async fn body(request: Request, limit: usize) -> Result<Bytes> {
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| body_error(e, limit))
}

/// The header that gives an HTTP request a deadline, as `grpc-timeout` does for gRPC: milliseconds from when
/// the request's head arrived.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// The request's deadline from [`TIMEOUT_HEADER`], if it sets one, counted from `received` (its head's arrival).
pub fn deadline(headers: &HeaderMap, received: Instant) -> Result<Option<Instant>> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let bad = |reason: &str| Error::BadOption {
        name: TIMEOUT_HEADER,
        reason: reason.to_owned(),
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad("must be a whole number of milliseconds"))?;
    if ms == 0 {
        return Err(bad("must be at least 1"));
    }
    // Far-future deadlines are as good as none; capping keeps `Instant` arithmetic from overflowing.
    let ms = ms.min(24 * 3600 * 1000);
    Ok(Some(received + Duration::from_millis(ms)))
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: usize) -> Error {
    if let Some(refused) = Refused::find(&e) {
        refused.to_error()
    } else if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        Error::BodyTooLarge { limit }
    } else {
        Error::BadRequest(e.body_text())
    }
}

fn body_error(e: axum::Error, limit: usize) -> Error {
    if let Some(refused) = Refused::find(&e) {
        return refused.to_error();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return Error::BodyTooLarge { limit };
        }
        source = err.source();
    }
    Error::BadRequest(format!("could not read the body: {e}"))
}

const SELECTOR_KEYS: [&str; 6] = [
    "model",
    "width",
    "resolution",
    "precision",
    "dataset",
    "latency_budget_ms",
];

/// The endpoint's options from its query string: unknown keys and out-of-range values are refused by name.
/// Pure, so the fuzz targets (fuzz/) run exactly what the handlers run.
pub fn options(task: Task, query: Option<&str>) -> Result<RequestOptions> {
    let task_keys: &[&str] = match task {
        Task::Classification => &["top_k"],
        Task::Detection => &["score_threshold", "iou_threshold", "max_detections"],
        Task::Segmentation => &["format"],
    };
    let allowed: Vec<&str> = SELECTOR_KEYS.iter().chain(task_keys).copied().collect();
    let q = QueryOptions::parse(query, &allowed)?;
    let selector = options::selector(
        q.string("model"),
        q.parsed("width")?,
        q.parsed("resolution")?,
        q.string("precision"),
        q.string("dataset"),
        q.parsed("latency_budget_ms")?,
    )?;
    let (task, png) = match task {
        Task::Classification => (options::classify(q.parsed("top_k")?)?, false),
        Task::Detection => (
            options::detect(
                q.parsed("score_threshold")?,
                q.parsed("iou_threshold")?,
                q.parsed("max_detections")?,
            )?,
            false,
        ),
        Task::Segmentation => {
            let format = q.string("format");
            let png = format.as_deref().map_or(Ok(false), options::mask_format)?;
            (TaskOptions::Segment, png)
        }
    };
    Ok(RequestOptions {
        selector,
        task,
        png,
    })
}

/// Query-string options, parsed leniently into strings and then strictly into typed values.
pub struct QueryOptions(Vec<(String, String)>);

impl QueryOptions {
    /// Parses the query and refuses parameters that the endpoint does not know (typos would otherwise be
    /// silently ignored).
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<QueryOptions> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| Error::BadRequest(format!("query string: {e}")))?;
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(Error::BadRequest(format!(
                "unknown option {key:?}; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
        Ok(QueryOptions(pairs))
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn parsed<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>> {
        self.string(name)
            .map(|v| {
                v.trim().parse::<T>().map_err(|_| Error::BadOption {
                    name,
                    reason: format!("{v:?} is not a valid value"),
                })
            })
            .transpose()
    }
}
