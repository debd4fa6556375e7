//! The api server: `GET /health` (200 while the topology runs) and `GET /metrics`
//! (Prometheus text format).

use axum::{http::StatusCode, response::IntoResponse, routing::get, Router};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Binds the api address and serves until `stop` fires. Returns the bound address.
pub async fn serve(address: SocketAddr, stop: CancellationToken) -> std::io::Result<SocketAddr> {
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
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "api server failed");
        }
    });
    Ok(bound)
}
