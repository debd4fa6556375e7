//! Serves an axum router on a TCP listener: optional TLS (rustls; mutual TLS when the config
//! asks), a connection limit (the connection over it is answered 503 and closed), and a
//! deadline for the request head and the TLS handshake, so idle or slowloris connections
//! are dropped instead of holding a slot. Shared by http_server and the api.

use crate::observe::ComponentMetrics;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Most open connections; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and for each request's head (request line and
    /// headers) to arrive.
    pub header_timeout: Duration,
    /// Largest request head hyper buffers (bigger heads are answered 431).
    pub max_head_bytes: usize,
}

const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 25\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many open connections";

/// Serves until `stop`; then stops accepting and lets open connections finish their
/// requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
    metrics: ComponentMetrics,
    stop: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let open_connections = metrics.open_connections();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    metrics.error("accept_failed");
                    tracing::warn!(component_id = metrics.id(), %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.error("connection_limit");
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tcp.write_all(OVER_LIMIT).await;
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_head_bytes.max(8192));
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        let slot = Slot::take(permit, open_connections.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(tcp), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(error)) => {
                            metrics.error("tls_handshake_failed");
                            tracing::debug!(component_id = metrics.id(), %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.error("tls_handshake_timeout");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = result {
                if error.is_timeout() {
                    metrics.error("header_timeout");
                }
                tracing::debug!(component_id = metrics.id(), %error, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// One of the `max_connections` slots, counted in the `open_connections` gauge while held.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Slot {
    fn take(permit: tokio::sync::OwnedSemaphorePermit, gauge: metrics::Gauge) -> Slot {
        gauge.increment(1.0);
        Slot {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}
