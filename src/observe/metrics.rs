//! One telemetry vocabulary for every component (names from DESIGN.md), labelled by
//! `component_id` and `component_type`. Counters are registered once per component, so the hot
//! path only adds to an atomic.

use metrics::{counter, gauge, Counter, Gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    /// The name in logs and taps (`sink.dead_letter` for a sink's dead-letter output).
    id: String,
    kind: &'static str,
    /// `component_id`, `component_type` and, for a named output, `output`.
    labels: Arc<[(&'static str, String)]>,
    received_events: Counter,
    received_bytes: Counter,
    sent_events: Counter,
    sent_bytes: Counter,
    discard_warnings: Arc<DiscardWarnings>,
}

impl ComponentMetrics {
    pub fn new(id: &str, kind: &'static str) -> Self {
        Self::labelled(
            id.to_string(),
            kind,
            vec![
                ("component_id", id.to_string()),
                ("component_type", kind.to_string()),
            ],
        )
    }

    /// The metrics of a component's named output (a sink's `dead_letter`): what leaves
    /// through it, counted under the component's own labels and `output` (as Vector labels
    /// named outputs), so `/metrics` lists no component that is not in the config. An output
    /// receives nothing: its received counters are not registered.
    pub fn for_output(id: &str, kind: &'static str, output: &str) -> Self {
        let labels = vec![
            ("component_id", id.to_string()),
            ("component_type", kind.to_string()),
            ("output", output.to_string()),
        ];
        ComponentMetrics {
            id: format!("{id}.{output}"),
            kind,
            received_events: Counter::noop(),
            received_bytes: Counter::noop(),
            sent_events: counter!("component_sent_events_total", &labels),
            sent_bytes: counter!("component_sent_bytes_total", &labels),
            labels: labels.into(),
            discard_warnings: Arc::default(),
        }
    }

    /// The metrics of a part of the agent that is not a configured component (the api
    /// server): `component_type="internal"`, which `sluice top` leaves out.
    pub fn internal(id: &str) -> Self {
        Self::labelled(
            id.to_string(),
            INTERNAL,
            vec![
                ("component_id", id.to_string()),
                ("component_type", INTERNAL.to_string()),
            ],
        )
    }

    fn labelled(id: String, kind: &'static str, labels: Vec<(&'static str, String)>) -> Self {
        ComponentMetrics {
            id,
            kind,
            received_events: counter!("component_received_events_total", &labels),
            received_bytes: counter!("component_received_bytes_total", &labels),
            sent_events: counter!("component_sent_events_total", &labels),
            sent_bytes: counter!("component_sent_bytes_total", &labels),
            labels: labels.into(),
            discard_warnings: Arc::default(),
        }
    }

    /// This component's labels and one more.
    fn labels_and(&self, key: &'static str, value: &'static str) -> Vec<(&'static str, String)> {
        let mut labels = self.labels.to_vec();
        labels.push((key, value.to_string()));
        labels
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
        counter!(
            "component_errors_total",
            &self.labels_and("error_type", error_type)
        )
        .increment(count);
    }

    /// Counts events dropped for a reason (`component_discarded_events_total{reason}`) and,
    /// unless dropping is what the component is for ([`INTENDED_DISCARDS`]), warns: at the
    /// first discard for the reason, then at most once per [`DISCARD_WARNING_INTERVAL`] with the
    /// count since the last warning.
    pub fn discarded(&self, reason: &'static str, count: usize) {
        self.discarded_with(reason, count, || None);
    }

    /// [`ComponentMetrics::discarded`] with one example of what was dropped (a value, an
    /// error), made only when a warning is logged.
    pub fn discarded_with(
        &self,
        reason: &'static str,
        count: usize,
        example: impl FnOnce() -> Option<String>,
    ) {
        if count == 0 {
            return;
        }
        counter!(
            "component_discarded_events_total",
            &self.labels_and("reason", reason)
        )
        .increment(count as u64);
        if INTENDED_DISCARDS.contains(&reason) {
            return;
        }
        let Some(summary) = self.discard_warnings.record(reason, count as u64) else {
            return;
        };
        let example = example().map(|e| truncate_example(&e));
        let example = example.as_deref().unwrap_or("-");
        match summary {
            DiscardSummary::First => tracing::warn!(
                component_id = %self.id,
                reason,
                events = count,
                example,
                "events discarded (counted in component_discarded_events_total; further discards for this reason are summarised every {} s)",
                DISCARD_WARNING_INTERVAL.as_secs()
            ),
            DiscardSummary::Since(events) => tracing::warn!(
                component_id = %self.id,
                reason,
                events,
                example,
                "events discarded since the last warning"
            ),
        }
    }

    /// The `open_connections` gauge of a server component (http_server, the api).
    pub fn open_connections(&self) -> Gauge {
        gauge!("open_connections", &self.labels[..])
    }

    /// A component-specific counter under this component's labels.
    pub fn counter(&self, name: &'static str) -> Counter {
        counter!(name, &self.labels[..])
    }

    /// A component-specific gauge under this component's labels.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        gauge!(name, &self.labels[..])
    }

    /// A component-specific gauge under this component's labels and one more (a shard).
    pub fn gauge_with(&self, name: &'static str, key: &'static str, value: &str) -> Gauge {
        let mut labels = self.labels.to_vec();
        labels.push((key, value.to_string()));
        gauge!(name, &labels)
    }

    /// The `buffer_events` and `buffer_bytes` gauges of this component's input.
    pub fn buffer_gauges(&self) -> (Gauge, Gauge) {
        (
            gauge!("buffer_events", &self.labels[..]),
            gauge!("buffer_bytes", &self.labels[..]),
        )
    }
}

/// The `component_type` of parts of the agent that are not configured components.
pub const INTERNAL: &str = "internal";

/// Discard reasons that are a component's purpose (a filter filters) or the user's explicit
/// choice: counted, never warned.
pub const INTENDED_DISCARDS: &[&str] = &[
    "filtered",
    "sampled",
    "duplicate",
    "throttled",
    // A remap program's own `abort`, with drop_on_abort.
    "aborted",
];

/// The least time between two discard warnings of one component and reason.
pub const DISCARD_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The longest example quoted in a discard warning.
const MAX_EXAMPLE_CHARS: usize = 200;

fn truncate_example(example: &str) -> String {
    match example.char_indices().nth(MAX_EXAMPLE_CHARS) {
        Some((end, _)) => format!("{}...", &example[..end]),
        None => example.to_string(),
    }
}

/// Per reason: when a discard warning was last logged, and the events discarded since.
#[derive(Default)]
struct DiscardWarnings {
    by_reason: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

/// What a discard warning reports.
#[derive(Debug, PartialEq)]
enum DiscardSummary {
    /// The first discard for the reason.
    First,
    /// This many events since the last warning.
    Since(u64),
}

impl DiscardWarnings {
    /// Records `count` discards; says what to warn about now, if anything.
    fn record(&self, reason: &'static str, count: u64) -> Option<DiscardSummary> {
        self.record_at(reason, count, Instant::now())
    }

    fn record_at(&self, reason: &'static str, count: u64, now: Instant) -> Option<DiscardSummary> {
        let mut by_reason = self.by_reason.lock().unwrap_or_else(|e| e.into_inner());
        match by_reason.get_mut(reason) {
            None => {
                by_reason.insert(reason, (now, 0));
                Some(DiscardSummary::First)
            }
            Some((last, since)) => {
                *since += count;
                if now.duration_since(*last) < DISCARD_WARNING_INTERVAL {
                    return None;
                }
                let events = std::mem::take(since);
                *last = now;
                Some(DiscardSummary::Since(events))
            }
        }
    }
}

#[cfg(test)]
mod discard_warning_tests {
    use super::*;

    #[test]
    fn warns_at_the_first_discard_then_once_per_interval_with_the_count_since() {
        let warnings = DiscardWarnings::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(
            warnings.record_at("decode_failed", 3, at(0)),
            Some(DiscardSummary::First)
        );
        assert_eq!(warnings.record_at("decode_failed", 5, at(1)), None);
        assert_eq!(warnings.record_at("decode_failed", 7, at(9)), None);
        assert_eq!(
            warnings.record_at("decode_failed", 1, at(10)),
            Some(DiscardSummary::Since(13))
        );
        assert_eq!(warnings.record_at("decode_failed", 2, at(11)), None);
        assert_eq!(
            warnings.record_at("oversize", 1, at(11)),
            Some(DiscardSummary::First),
            "each reason has its own warnings"
        );
    }

    #[test]
    fn examples_are_cut_to_a_readable_length() {
        assert_eq!(truncate_example("short"), "short");
        let long = "é".repeat(500);
        let cut = truncate_example(&long);
        assert_eq!(cut.chars().count(), MAX_EXAMPLE_CHARS + 3);
    }
}
