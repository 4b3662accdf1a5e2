//! The HTTP/JSON protocol: images go up as the multipart field `image`, options in the query string.

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, ServerStatus, chain};
use crate::types::*;

#[derive(Clone)]
pub struct HttpClient {
    base: String,
    http: reqwest::Client,
}

/// The server's error body: `{"error": "...", "kind": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    models: Vec<ModelInfo>,
}

impl HttpClient {
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let parsed = reqwest::Url::parse(base).map_err(|e| ClientError::BadUrl {
            url: base.to_owned(),
            detail: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http") {
            return Err(ClientError::BadUrl {
                url: base.to_owned(),
                detail: "only http:// is supported".to_owned(),
            });
        }
        // No proxy: a system proxy would otherwise intercept requests meant for a local server.
        let http =
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| ClientError::Transport {
                    url: base.to_owned(),
                    detail: chain(&e),
                })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub async fn classify(
        &self,
        image: Bytes,
        selector: &Selector,
        options: &ClassifyOptions,
    ) -> Result<ClassifyResult, ClientError> {
        let mut query = selector_query(selector);
        push(&mut query, "top_k", options.top_k);
        self.infer("classify", image, query).await
    }

    pub async fn detect(
        &self,
        image: Bytes,
        selector: &Selector,
        options: &DetectOptions,
    ) -> Result<DetectResult, ClientError> {
        let mut query = selector_query(selector);
        push(&mut query, "score_threshold", options.score_threshold);
        push(&mut query, "iou_threshold", options.iou_threshold);
        push(&mut query, "max_detections", options.max_detections);
        self.infer("detect", image, query).await
    }

    pub async fn segment(
        &self,
        image: Bytes,
        selector: &Selector,
    ) -> Result<SegmentResult, ClientError> {
        let mut query = selector_query(selector);
        query.push(("format", "json".to_owned()));
        self.infer("segment", image, query).await
    }

    pub async fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let url = format!("{}/v1/models", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let list: ModelList = self.decode(response).await?;
        Ok(list.models)
    }

    async fn infer<T: DeserializeOwned>(
        &self,
        task: &str,
        image: Bytes,
        query: Vec<(&'static str, String)>,
    ) -> Result<T, ClientError> {
        let media_type = sniff_media_type(&image);
        // A stream part of known length: the image is sent from the caller's buffer, and the form still has a
        // Content-Length.
        let length = image.len() as u64;
        let part = Part::stream_with_length(image, length)
            .file_name("image")
            .mime_str(media_type)
            .map_err(|e| ClientError::Protocol(chain(&e)))?;
        let url = format!("{}/v1/{task}", self.base);
        let response = self
            .http
            .post(&url)
            .query(&query)
            .multipart(Form::new().part("image", part))
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        self.decode(response).await
    }

    /// Turns an answer into `T`, or into [`ClientError::Server`] with the server's own message.
    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() {
            let (message, kind) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(err) => (err.error, err.kind),
                // Not our server's error shape (a proxy, another service): show what came back, shortened.
                Err(_) => (
                    String::from_utf8_lossy(&body).chars().take(300).collect(),
                    None,
                ),
            };
            return Err(ClientError::Server {
                status: ServerStatus::Http(status.as_u16()),
                kind,
                message,
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("bad JSON answer: {e}")))
    }

    fn transport(&self, err: &reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            detail: chain(err),
        }
    }
}

fn selector_query(selector: &Selector) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    push(&mut query, "model", selector.model.as_ref());
    push(&mut query, "width", selector.width);
    push(&mut query, "resolution", selector.resolution);
    push(&mut query, "precision", selector.precision.as_ref());
    push(&mut query, "dataset", selector.dataset.as_ref());
    push(&mut query, "latency_budget_ms", selector.latency_budget_ms);
    query
}

fn push<T: ToString>(query: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<T>) {
    if let Some(v) = value {
        query.push((key, v.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_query_sends_only_what_is_set() {
        let selector = Selector {
            resolution: Some(224),
            precision: Some("int8".into()),
            ..Default::default()
        };
        assert_eq!(
            selector_query(&selector),
            vec![
                ("resolution", "224".to_owned()),
                ("precision", "int8".to_owned())
            ]
        );
    }

    #[test]
    fn rejects_https_and_garbage_urls() {
        assert!(matches!(
            HttpClient::new("https://x"),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            HttpClient::new("not a url"),
            Err(ClientError::BadUrl { .. })
        ));
    }
}
