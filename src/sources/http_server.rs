//! The `http_server` source: accepts POST (or PUT) bodies on an address and path.
//!
//! Status codes tell clients exactly what happened to their data:
//! - 200: every event was accepted into the topology (with acknowledgements on: delivered by
//!   every sink, or durably buffered).
//! - 400: the body could not be decoded; nothing was accepted. The reason is in the body.
//! - 413: the body (or its decompressed form) exceeds `max_body_bytes`; nothing was accepted.
//! - 401: `auth` is configured and the request's credentials are missing or wrong (the answer
//!   does not say which part was wrong).
//! - 415: an unsupported `Content-Encoding`.
//! - 431: request headers larger than `max_header_bytes`.
//! - 503 + `Retry-After`: the pipeline is full (backpressure) or shutting down; nothing was
//!   accepted, retry later. With acknowledgements on, also when delivery failed or took longer
//!   than `ack_timeout_secs` (the events may still arrive: at-least-once).

use super::SourceContext;
use crate::codec::compression::{decompress, DecompressError};
use crate::codec::decoding::{decode_frame, OnDecodeError};
use crate::codec::{Decoder, DecodingConfig};
use crate::event::{BatchNotifier, BatchStatus, Event, EventBatch, Finalizers};
use crate::http_serve::{self, ServeLimits};
use crate::observe::ComponentMetrics;
use crate::tls::TlsConfig;
use crate::topology::{BuildError, ComponentError, Fanout, RunFuture};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How a request body is split into frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFraming {
    /// One frame per line; empty lines are skipped (default).
    #[default]
    NewlineDelimited,
    /// The whole body is one frame (with `decoding.codec: json`, a single JSON value or a JSON
    /// array of events).
    Bytes,
}

/// Receive events over HTTP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub address: SocketAddr,
    /// URL path that accepts events (default `/`). Other paths answer 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// `newline_delimited` (default) or `bytes` (whole body).
    #[serde(default)]
    pub framing: HttpFraming,
    /// How each frame becomes events. `on_error` defaults to `reject` (400, nothing accepted).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Largest body accepted, before and after decompression, in bytes (default 10 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request may wait for room in the pipeline before it is answered 503, in
    /// milliseconds (default 1000).
    #[serde(default = "default_accept_timeout_ms")]
    pub accept_timeout_ms: u64,
    /// Wait for delivery before answering 200. Defaults to the global `acknowledgements`.
    #[serde(default)]
    pub acknowledgements: Option<bool>,
    /// With acknowledgements, how long a request waits for delivery before it is answered 503
    /// (default 60).
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// TLS (`crt_file`, `key_file`; with `ca_file`, clients must present a certificate it
    /// signed: mutual TLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Credentials a request must carry (any one of them). Without `auth`, anyone who can
    /// reach the address may send.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Largest total size of a request's headers, in bytes (default 16384); larger is 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most open connections (default 256); one more is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has for the TLS handshake and each request's headers, in seconds
    /// (default 10); slower connections are closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: f64,
}

/// Accepted credentials: `Authorization: Bearer <token>` or `Authorization: Basic ...`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// Accepted bearer tokens (use `${VAR}` or a secret file, not a literal).
    #[serde(default)]
    pub bearer_tokens: Vec<String>,
    /// Accepted basic-auth users.
    #[serde(default)]
    pub basic: Vec<BasicCredential>,
}

/// One basic-auth user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// The user name the client sends.
    pub username: String,
    /// Its password (use `${VAR}` or `${file:...}`, not a literal: it is a secret).
    pub password: String,
}

impl HttpAuth {
    /// Whether the `Authorization` header matches one credential. Every candidate is
    /// compared, each in constant time, so the time taken tells nothing about how close a
    /// guess was.
    fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else {
            return false;
        };
        let mut allowed = false;
        for token in &self.bearer_tokens {
            let expected = [b"Bearer ", token.as_bytes()].concat();
            allowed |= constant_time_eq(header, &expected);
        }
        for user in &self.basic {
            use base64::Engine;
            let pair = format!("{}:{}", user.username, user.password);
            let expected = [
                b"Basic ".as_slice(),
                base64::engine::general_purpose::STANDARD
                    .encode(pair)
                    .as_bytes(),
            ]
            .concat();
            allowed |= constant_time_eq(header, &expected);
        }
        allowed
    }
}

/// Compares without stopping at the first difference (time depends on the lengths only).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

fn default_max_header_bytes() -> usize {
    16 << 10
}
fn default_max_connections() -> usize {
    256
}
fn default_header_timeout() -> f64 {
    10.0
}

fn default_path() -> String {
    "/".into()
}
fn default_max_body_bytes() -> usize {
    10 << 20
}
fn default_accept_timeout_ms() -> u64 {
    1000
}
fn default_ack_timeout_secs() -> u64 {
    60
}

struct Shared {
    id: String,
    out: Mutex<Fanout>,
    decoder: Decoder,
    on_error: OnDecodeError,
    framing: HttpFraming,
    max_body_bytes: usize,
    accept_timeout: Duration,
    acknowledgements: bool,
    ack_timeout: Duration,
    auth: Option<HttpAuth>,
    max_header_bytes: usize,
    metrics: ComponentMetrics,
}

impl HttpServerConfig {
    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if !self.path.starts_with('/') {
            return Err(BuildError::new("path", "must start with `/`"));
        }
        if self.max_body_bytes == 0 {
            return Err(BuildError::new("max_body_bytes", "must be greater than 0"));
        }
        if self.max_connections == 0 {
            return Err(BuildError::new("max_connections", "must be greater than 0"));
        }
        if !self.header_timeout_secs.is_finite() || self.header_timeout_secs <= 0.0 {
            return Err(BuildError::new(
                "header_timeout_secs",
                "must be a number > 0",
            ));
        }
        if let Some(auth) = &self.auth {
            if auth.bearer_tokens.is_empty() && auth.basic.is_empty() {
                return Err(BuildError::new(
                    "auth",
                    "lists no bearer_tokens and no basic users: nobody could send",
                ));
            }
            if auth.bearer_tokens.iter().any(String::is_empty) {
                return Err(BuildError::new("auth.bearer_tokens", "a token is empty"));
            }
        }
        let tls = match &self.tls {
            Some(tls) => Some(
                tls.server()
                    .map_err(|(field, m)| BuildError::new(field, m))?,
            ),
            None => None,
        };
        let config = self.clone();
        Ok(Box::pin(serve(config, tls, cx)))
    }
}

async fn serve(
    config: HttpServerConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    cx: SourceContext,
) -> Result<(), ComponentError> {
    let SourceContext {
        id,
        out,
        shutdown,
        acknowledgements,
        metrics,
        values,
        ..
    } = cx;
    let shared = Arc::new(Shared {
        id: id.clone(),
        out: Mutex::new(out),
        decoder: Decoder::new(&config.decoding, values),
        on_error: config.decoding.on_error.unwrap_or(OnDecodeError::Reject),
        framing: config.framing,
        max_body_bytes: config.max_body_bytes,
        accept_timeout: Duration::from_millis(config.accept_timeout_ms),
        acknowledgements: config.acknowledgements.unwrap_or(acknowledgements),
        ack_timeout: Duration::from_secs(config.ack_timeout_secs),
        auth: config.auth.clone(),
        max_header_bytes: config.max_header_bytes,
        metrics: metrics.clone(),
    });
    let app = Router::new()
        .route(&config.path, post(handle).put(handle))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.address))?;
    tracing::info!(component_id = %id, address = %listener.local_addr()?, path = %config.path, tls = tls.is_some(), "http_server listening");
    let limits = ServeLimits {
        max_connections: config.max_connections,
        header_timeout: Duration::from_secs_f64(config.header_timeout_secs),
        max_head_bytes: config.max_header_bytes.saturating_mul(2),
    };
    let server = http_serve::serve(listener, app, tls, limits, metrics, shutdown.stop.clone());
    tokio::select! {
        _ = server => {}
        _ = shutdown.force.cancelled() => {
            tracing::warn!(component_id = %id, "shutdown forced while requests were waiting for delivery");
        }
    }
    Ok(())
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    let mut response = (status, message).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let metrics = &shared.metrics;
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > shared.max_header_bytes {
        metrics.error("headers_too_large");
        return reply(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers of {header_bytes} bytes exceed max_header_bytes ({})",
                shared.max_header_bytes
            ),
        );
    }
    if let Some(auth) = &shared.auth {
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if !auth.allows(given) {
            metrics.error("unauthorized");
            let mut response = reply(StatusCode::UNAUTHORIZED, "unauthorized");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer, Basic realm=\"sluice\""),
            );
            return response;
        }
    }
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if length > shared.max_body_bytes {
            metrics.error("body_too_large");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body of {length} bytes exceeds max_body_bytes ({})",
                    shared.max_body_bytes
                ),
            );
        }
    }
    let body = match read_limited(body, shared.max_body_bytes).await {
        Ok(body) => body,
        Err(Some(status)) => {
            metrics.error("body_too_large");
            return reply(
                status,
                format!("body exceeds max_body_bytes ({})", shared.max_body_bytes),
            );
        }
        Err(None) => {
            metrics.error("body_read_failed");
            return reply(StatusCode::BAD_REQUEST, "cannot read request body");
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let body = match decompress(encoding, body, shared.max_body_bytes) {
        Ok(body) => body,
        Err(error @ DecompressError::TooLarge(_)) => {
            metrics.error("body_too_large");
            return reply(StatusCode::PAYLOAD_TOO_LARGE, error.to_string());
        }
        Err(error @ DecompressError::Unsupported(_)) => {
            metrics.error("unsupported_encoding");
            return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.to_string());
        }
        Err(error) => {
            metrics.error("decompress_failed");
            return reply(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let byte_size = body.len();
    let events = match decode_body(&shared, body) {
        Ok(events) => events,
        Err(reason) => {
            metrics.error("decode_failed");
            tracing::debug!(component_id = %shared.id, %reason, "rejected request");
            return reply(StatusCode::BAD_REQUEST, reason);
        }
    };
    if events.is_empty() {
        return reply(StatusCode::OK, "accepted 0 events");
    }
    let count = events.len();
    metrics.received(count, byte_size);
    let mut batch = EventBatch::new(events, byte_size);
    let ack = if shared.acknowledgements {
        let (notifier, rx) = BatchNotifier::new();
        batch.finalizers = Finalizers::new(notifier);
        Some(rx)
    } else {
        None
    };
    let accepted = tokio::time::timeout(shared.accept_timeout, async {
        let mut out = shared.out.lock().await;
        out.send(batch).await
    })
    .await;
    match accepted {
        Err(_) => {
            metrics.error("backpressure");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "pipeline is full; retry later",
            );
        }
        Ok(Err(_)) => return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        Ok(Ok(())) => {}
    }
    let Some(rx) = ack else {
        return reply(StatusCode::OK, format!("accepted {count} events"));
    };
    match tokio::time::timeout(shared.ack_timeout, rx).await {
        Ok(Ok(BatchStatus::Delivered)) => {
            reply(StatusCode::OK, format!("delivered {count} events"))
        }
        Ok(Ok(BatchStatus::Rejected)) | Ok(Err(_)) => {
            metrics.error("delivery_rejected");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "delivery failed downstream; retry later",
            )
        }
        Err(_) => {
            metrics.error("ack_timeout");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "delivery not confirmed in time; retry later (events may arrive twice)",
            )
        }
    }
}

/// Reads a body, stopping at `limit` bytes. `Err(Some(413))` when too large.
async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, Option<StatusCode>> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| None)?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(Some(StatusCode::PAYLOAD_TOO_LARGE));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

fn decode_body(shared: &Shared, body: Bytes) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let frames: Vec<Bytes> = match shared.framing {
        HttpFraming::Bytes => vec![body],
        HttpFraming::NewlineDelimited => {
            let mut frames = Vec::new();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &body).chain(std::iter::once(body.len())) {
                let mut line = body.slice(start..end);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                if !line.is_empty() {
                    frames.push(line);
                }
                start = end + 1;
                if start > body.len() {
                    break;
                }
            }
            frames
        }
    };
    for (index, frame) in frames.into_iter().enumerate() {
        if shared.on_error != OnDecodeError::Reject {
            decode_frame(
                &shared.decoder,
                shared.on_error,
                frame,
                &mut events,
                &shared.metrics,
            );
        } else if let Err(error) = shared.decoder.decode(&frame, &mut events) {
            return Err(format!("frame {}: {error}", index + 1));
        }
    }
    Ok(events)
}
