//! One telemetry vocabulary for every component (names from DESIGN.md), labelled by
//! `component_id` and `component_type`. Counters are registered once per component, so the hot
//! path only adds to an atomic.

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle for rendering.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// The counters a component updates, with its labels baked in.
#[derive(Clone)]
pub struct ComponentMetrics {
    id: String,
    kind: &'static str,
    received_events: Counter,
    received_bytes: Counter,
    sent_events: Counter,
    sent_bytes: Counter,
}

impl ComponentMetrics {
    pub fn new(id: &str, kind: &'static str) -> Self {
        let labels = [
            ("component_id", id.to_string()),
            ("component_type", kind.to_string()),
        ];
        ComponentMetrics {
            id: id.to_string(),
            kind,
            received_events: counter!("component_received_events_total", &labels),
            received_bytes: counter!("component_received_bytes_total", &labels),
            sent_events: counter!("component_sent_events_total", &labels),
            sent_bytes: counter!("component_sent_bytes_total", &labels),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn received(&self, events: usize, bytes: usize) {
        self.received_events.increment(events as u64);
        self.received_bytes.increment(bytes as u64);
    }

    pub fn sent(&self, events: usize, bytes: usize) {
        self.sent_events.increment(events as u64);
        self.sent_bytes.increment(bytes as u64);
    }

    /// Counts an error of the given type (`component_errors_total{error_type}`).
    pub fn error(&self, error_type: &'static str) {
        self.errors(error_type, 1);
    }

    pub fn errors(&self, error_type: &'static str, count: u64) {
        counter!("component_errors_total", "component_id" => self.id.clone(),
            "component_type" => self.kind, "error_type" => error_type)
        .increment(count);
    }

    /// Counts events dropped for a reason (`component_discarded_events_total{reason}`).
    pub fn discarded(&self, reason: &'static str, count: usize) {
        if count == 0 {
            return;
        }
        counter!("component_discarded_events_total", "component_id" => self.id.clone(),
            "component_type" => self.kind, "reason" => reason)
        .increment(count as u64);
    }

    /// The `open_connections` gauge of a server component (http_server, the api).
    pub fn open_connections(&self) -> Gauge {
        gauge!("open_connections", "component_id" => self.id.clone(),
            "component_type" => self.kind)
    }

    /// The `buffer_events` and `buffer_bytes` gauges of this component's input.
    pub fn buffer_gauges(&self) -> (Gauge, Gauge) {
        let labels = [
            ("component_id", self.id.clone()),
            ("component_type", self.kind.to_string()),
        ];
        (
            gauge!("buffer_events", &labels),
            gauge!("buffer_bytes", &labels),
        )
    }
}
