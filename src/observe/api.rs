//! The api server: `GET /health` (200 while the topology runs) and `GET /metrics`
//! (Prometheus text format).

use axum::{http::StatusCode, response::IntoResponse, routing::get, Router};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Binds the api address and serves until `stop` fires (over TLS when `tls` is set). Returns
/// the bound address.
pub async fn serve(
    address: SocketAddr,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let handle = super::metrics::prometheus();
    let app = Router::new()
        .route(
            "/health",
            get(|| async { (StatusCode::OK, "{\"status\":\"ok\"}\n") }),
        )
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    match handle {
                        Some(h) => (StatusCode::OK, h.render()).into_response(),
                        None => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "metrics recorder unavailable\n",
                        )
                            .into_response(),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let limits = crate::http_serve::ServeLimits {
        max_connections: 64,
        header_timeout: std::time::Duration::from_secs(10),
        max_head_bytes: 16 << 10,
    };
    let metrics = crate::observe::ComponentMetrics::new("api", "api");
    tokio::spawn(crate::http_serve::serve(
        listener, app, tls, limits, metrics, stop,
    ));
    Ok(bound)
}
