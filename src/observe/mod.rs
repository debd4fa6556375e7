//! Observability: the shared metric vocabulary, logging setup and the api server
//! (`/health`, `/metrics`).

pub mod api;
pub mod logging;
pub mod metrics;
pub mod tap;

pub use self::metrics::ComponentMetrics;
