//! The `http` sink: POSTs (or PUTs) batches of events to a URL.
//!
//! Retries with exponential backoff and jitter on connection errors, timeouts, 408, 429 and
//! 5xx, honouring `Retry-After`; by default it retries until delivered, so a down endpoint
//! applies backpressure instead of losing data. Any other 4xx is permanent: the batch is
//! rejected, counted, and its source told. Requests are sent one at a time, in order.

use super::batch::{drive, BatchConfig, Flush};
use super::{BufferConfig, SinkContext};
use crate::codec::encoding::EncodingCodec;
use crate::codec::{Compression, Encoder, EncodingConfig};
use crate::event::{BatchStatus, Event, Finalizers};
use crate::observe::ComponentMetrics;
use crate::topology::{BuildError, ComponentError, RunFuture};
use indexmap::IndexMap;
use rand::Rng;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use serde::Deserialize;
use std::time::Duration;

/// HTTP method of the requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// POST (default).
    #[default]
    Post,
    Put,
}

/// Timeouts and retries of requests.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Time allowed for one request, in seconds (default 30).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Retries before a batch is rejected (default: unlimited, so nothing is lost while the
    /// endpoint is down; backpressure builds up instead).
    #[serde(default)]
    pub retry_attempts: Option<u32>,
    /// First backoff, in milliseconds (default 200); doubles each retry, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// Longest backoff, in seconds (default 10).
    #[serde(default = "default_max_backoff_secs")]
    pub retry_max_backoff_secs: f64,
}

fn default_timeout_secs() -> f64 {
    30.0
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_secs() -> f64 {
    10.0
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            timeout_secs: default_timeout_secs(),
            retry_attempts: None,
            retry_initial_backoff_ms: default_initial_backoff_ms(),
            retry_max_backoff_secs: default_max_backoff_secs(),
        }
    }
}

/// Send batches of events to an HTTP endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// The endpoint, e.g. `https://logs.example.com/ingest`.
    pub uri: String,
    /// `post` (default) or `put`.
    #[serde(default)]
    pub method: Method,
    /// `ndjson` (default: one object per line), `json` (a JSON array) or `text`.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// `none` (default), `gzip` or `zstd`; sets `Content-Encoding`.
    #[serde(default)]
    pub compression: Compression,
    /// Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Batching of requests.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Timeouts and retries.
    #[serde(default)]
    pub request: RequestConfig,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl HttpSinkConfig {
    fn url(&self) -> Result<reqwest::Url, BuildError> {
        let url = reqwest::Url::parse(&self.uri)
            .map_err(|e| BuildError::new("uri", format!("invalid URL `{}`: {e}", self.uri)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::new("uri", "must be an http:// or https:// URL"));
        }
        Ok(url)
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        let url = self.url()?;
        self.batch
            .check()
            .map_err(|m| BuildError::new("batch", m))?;
        let request = self.request;
        if !request.timeout_secs.is_finite() || request.timeout_secs <= 0.0 {
            return Err(BuildError::new(
                "request",
                "timeout_secs must be a number > 0",
            ));
        }
        if !request.retry_max_backoff_secs.is_finite() || request.retry_max_backoff_secs < 0.0 {
            return Err(BuildError::new(
                "request",
                "retry_max_backoff_secs must be a number >= 0",
            ));
        }
        let mut headers = HeaderMap::new();
        let content_type = match self.encoding.codec {
            EncodingCodec::Json => "application/json",
            EncodingCodec::Ndjson => "application/x-ndjson",
            EncodingCodec::Text => "text/plain; charset=utf-8",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(encoding) = self.compression.content_encoding() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::new("headers", format!("`{name}` is not a valid header name"))
            })?;
            // The value may be a secret: never echo it.
            let value = HeaderValue::from_str(value).map_err(|_| {
                BuildError::new(
                    "headers",
                    format!("the value of `{name}` is not a valid header value"),
                )
            })?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(request.timeout_secs))
            .default_headers(headers)
            .build()
            .map_err(|e| BuildError::new("uri", format!("cannot build HTTP client: {e}")))?;
        let SinkContext {
            input,
            metrics,
            dead_letter,
            ..
        } = cx;
        let mut sink = HttpSink {
            dead_letter,
            client,
            url,
            method: match self.method {
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
            },
            encoder: Encoder::new(&self.encoding),
            compression: self.compression,
            request,
            metrics: metrics.clone(),
        };
        let batch = self.batch;
        Ok(Box::pin(async move {
            drive(input, batch, &metrics, &mut sink).await;
            Ok::<(), ComponentError>(())
        }))
    }

    /// Can the endpoint's host and port be reached?
    pub async fn healthcheck(&self) -> Result<(), String> {
        let url = self.url().map_err(|e| e.message)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
            Err(_) => Err(format!(
                "cannot connect to {host}:{port}: timed out after 3s"
            )),
        }
    }
}

struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    encoder: Encoder,
    compression: Compression,
    request: RequestConfig,
    metrics: ComponentMetrics,
    dead_letter: crate::topology::Fanout,
}

enum Outcome {
    Delivered,
    Retry(String, Option<Duration>),
    Permanent(String),
}

impl Flush for HttpSink {
    async fn flush(&mut self, events: Vec<Event>, _byte_size: usize, finalizers: Finalizers) {
        let mut body = Vec::new();
        let failed = self.encoder.encode_body(&events, &mut body);
        if failed > 0 {
            self.metrics.errors("encode_failed", failed as u64);
            self.metrics.discarded("encode_failed", failed);
        }
        let count = events.len() - failed;
        if count == 0 {
            return;
        }
        let body = match self.compression.compress(&body) {
            Ok(packed) => bytes::Bytes::from(packed.into_owned()),
            Err(error) => {
                self.metrics.error("compress_failed");
                tracing::error!(component_id = self.metrics.id(), %error, "cannot compress request body; batch rejected");
                finalizers.update_status(BatchStatus::Rejected);
                return;
            }
        };
        let mut attempt = 0u32;
        let failure = loop {
            match self.send(body.clone()).await {
                Outcome::Delivered => {
                    self.metrics.sent(count, body.len());
                    return;
                }
                Outcome::Permanent(reason) => {
                    self.metrics.error("request_rejected");
                    tracing::error!(component_id = self.metrics.id(), %reason, events = count, "endpoint rejected the batch; not retrying");
                    break reason;
                }
                Outcome::Retry(reason, retry_after) => {
                    self.metrics.error("request_failed");
                    attempt += 1;
                    if self.request.retry_attempts.is_some_and(|max| attempt > max) {
                        tracing::error!(component_id = self.metrics.id(), %reason, attempts = attempt, "retries exhausted; giving up on batch");
                        break format!("retries exhausted: {reason}");
                    }
                    let wait = retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(Duration::from_secs_f64(self.request.retry_max_backoff_secs));
                    tracing::warn!(component_id = self.metrics.id(), %reason, attempt, wait_ms = wait.as_millis() as u64, "request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        super::reject(
            &mut self.dead_letter,
            &self.metrics,
            events,
            finalizers,
            &failure,
        )
        .await;
    }
}

impl HttpSink {
    async fn send(&self, body: bytes::Bytes) -> Outcome {
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Outcome::Retry(error_chain(&error), None),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let reason = format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>().trim()
        );
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Outcome::Retry(reason, retry_after)
        } else {
            Outcome::Permanent(reason)
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.request.retry_initial_backoff_ms as f64
            * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
        let capped = base.min(self.request.retry_max_backoff_secs * 1000.0);
        let jittered = capped * rand::rng().random_range(0.5..1.0);
        Duration::from_millis(jittered as u64)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
