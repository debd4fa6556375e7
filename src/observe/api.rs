//! The api server: `GET /health` (200 while the topology runs) and `GET /metrics`
//! (Prometheus text format), `GET /tap?component=ID&limit=N` (a live sample of the events
//! leaving a component, as JSON lines; see `observe::tap`).

use axum::body::Body;
use axum::extract::Query;
use axum::{http::StatusCode, response::IntoResponse, routing::get, Router};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Binds the api address and serves until `stop` fires (over TLS when `tls` is set). Returns
/// the bound address.
pub async fn serve(
    address: SocketAddr,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    components: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let handle = super::metrics::prometheus();
    let app = Router::new()
        .route(
            "/tap",
            get(move |query: Query<TapQuery>| tap(query, components.clone())),
        )
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
                        Some(h) => {
                            crate::topology::channel::refresh_buffer_gauges();
                            (StatusCode::OK, h.render()).into_response()
                        }
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
    let metrics = crate::observe::ComponentMetrics::internal("api");
    tokio::spawn(crate::http_serve::serve(
        listener, app, tls, limits, metrics, stop,
    ));
    Ok(bound)
}

#[derive(serde::Deserialize)]
struct TapQuery {
    component: String,
    /// Stop after this many events (default: until the client goes away).
    limit: Option<usize>,
}

async fn tap(
    Query(query): Query<TapQuery>,
    components: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
) -> axum::response::Response {
    let components = components.read().unwrap_or_else(|p| p.into_inner()).clone();
    if !components.contains(&query.component) {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no component `{}`; components: {}\n",
                query.component,
                components.join(", ")
            ),
        )
            .into_response();
    }
    let rx = super::tap::open(&query.component);
    let limit = query.limit.unwrap_or(usize::MAX);
    let lines = futures::stream::unfold((rx, 0usize), move |(mut rx, sent)| async move {
        if sent >= limit {
            return None;
        }
        let mut line = rx.recv().await?;
        line.push('\n');
        Some((Ok::<_, std::convert::Infallible>(line), (rx, sent + 1)))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}
