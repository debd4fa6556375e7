//! The `http` sink: POSTs (or PUTs) batches of events to a URL.
//!
//! Retries with exponential backoff and jitter on connection errors, timeouts, 408, 429 and
//! 5xx, honouring `Retry-After`; by default it retries until delivered, so a down endpoint
//! applies backpressure instead of losing data. Any other 4xx is permanent: the batch is
//! rejected, counted, and its source told. Requests are sent one at a time, in order.

use super::batch::{drive, BatchConfig, Flush};
use super::retry::{with_retries, Attempt, RequestConfig};
use super::{BufferConfig, SinkContext};
use crate::codec::encoding::EncodingCodec;
use crate::codec::{Compression, Encoder, EncodingConfig};
use crate::event::{BatchStatus, Event, Finalizers};
use crate::observe::ComponentMetrics;
use crate::tls::TlsConfig;
use crate::topology::{BuildError, ComponentError, RunFuture};
use indexmap::IndexMap;
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
    /// TLS for `https://` endpoints: `ca_file` (extra trusted CAs), `crt_file` + `key_file`
    /// (a client certificate for mutual TLS), `verify_certificate` (default true).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
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
        request
            .check()
            .map_err(|(field, message)| BuildError::new(field, message))?;
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
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(request.timeout_secs))
            .default_headers(headers);
        if let Some(tls) = &self.tls {
            client = tls
                .client(client)
                .map_err(|(field, message)| BuildError::new(field, message))?;
        }
        let client = client
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
        let failure =
            match with_retries(&self.request, &self.metrics, || self.send(body.clone())).await {
                Ok(()) => {
                    self.metrics.sent(count, body.len());
                    return;
                }
                Err(failure) => failure,
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
    async fn send(&self, body: bytes::Bytes) -> Attempt<()> {
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(error_chain(&error), None),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Done(());
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
            Attempt::Retry(reason, retry_after)
        } else {
            Attempt::Permanent(reason)
        }
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
