//! The `window` transform: event-time windows (tumbling, hopping, session) with watermarks,
//! allowed lateness, a late-data output, idle progress, bounded keys, and aggregations.
//!
//! Time: an event's time is `time_field` (a timestamp, an RFC 3339 string, or Unix seconds as
//! a number), or its arrival time when `time_field` is unset (processing time). The
//! **watermark** is the largest event time seen minus `max_out_of_orderness_secs`; a window
//! emits its result when the watermark passes its end. Events for a window that already
//! emitted, but within `allowed_lateness_secs` of its end, update it and re-emit the changed
//! keys with `window_update: true`; later events go to `<id>.late` and are counted
//! (`window_late_events_total`). When no event arrives for `idle_timeout_secs`, the watermark
//! moves on with the wall clock, so a quiet input cannot hold windows open forever.
//!
//! Acknowledgements: a window keeps the handles of the batches that fed it and hands them to
//! what it emits, so sources checkpoint only events whose results were delivered.

mod aggregate;

pub use aggregate::{AggregationConfig, Op};

use super::support::{optional_path, path_list, Clock};
use super::{Emitted, StatefulTransform};
use crate::event::{Event, EventBatch, Finalizers, ObjectMap, Value};
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use aggregate::{Acc, Aggregation};
use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use vrl::path::OwnedValuePath;

/// The shape of the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size_secs`, aligned to the Unix epoch.
    Tumbling,
    /// Windows of `size_secs` starting every `hop_secs` (an event is in size/hop windows).
    Hopping,
    /// Per key: a window that stays open while events keep arriving within `gap_secs`.
    Session,
}

/// What happens to windows still open when the input ends (shutdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnShutdown {
    /// Emit them as they are (default).
    #[default]
    Flush,
    /// Discard them (counted in `component_discarded_events_total{reason="window_dropped"}`).
    Drop,
}

/// Aggregate events over event-time windows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// `tumbling`, `hopping` or `session`.
    pub kind: WindowKind,
    /// Window length (tumbling, hopping), seconds.
    #[serde(default)]
    pub size_secs: Option<f64>,
    /// Distance between window starts (hopping), seconds.
    #[serde(default)]
    pub hop_secs: Option<f64>,
    /// Inactivity that ends a session, seconds.
    #[serde(default)]
    pub gap_secs: Option<f64>,
    /// Field holding the event time. Unset: processing time (arrival).
    #[serde(default)]
    pub time_field: Option<String>,
    /// Fields whose values make the key: one result per window and key.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Output field name -> aggregation, e.g. `p99: {op: percentile, field: latency_ms, quantile: 0.99}`.
    pub aggregations: IndexMap<String, AggregationConfig>,
    /// How far behind the newest event time others may arrive and still count as on time
    /// (default 0).
    #[serde(default)]
    pub max_out_of_orderness_secs: f64,
    /// How long after emitting a window still accepts (and re-emits) late events (default 0).
    #[serde(default)]
    pub allowed_lateness_secs: f64,
    /// After this long without events, the watermark advances with the wall clock (default 10).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
    /// Most keys per window (per transform for sessions); events of further keys are dropped
    /// and counted (`component_discarded_events_total{reason="max_keys"}`). Default 10000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// `flush` (default) or `drop` the windows still open at shutdown.
    #[serde(default)]
    pub on_shutdown: OnShutdown,
}

fn default_idle_timeout() -> f64 {
    10.0
}
fn default_max_keys() -> usize {
    10_000
}

/// The named output for events too late for any window.
pub const LATE: &str = "late";

fn millis(field: &'static str, secs: Option<f64>, required: bool) -> Result<i64, BuildError> {
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok((s * 1000.0).round().max(1.0) as i64),
        Some(_) => Err(BuildError::new(field, "must be a number of seconds > 0")),
        None if required => Err(BuildError::new(field, "is required for this window kind")),
        None => Ok(0),
    }
}

fn non_negative_millis(field: &'static str, secs: f64) -> Result<i64, BuildError> {
    if secs.is_finite() && secs >= 0.0 {
        Ok((secs * 1000.0).round() as i64)
    } else {
        Err(BuildError::new(field, "must be a number of seconds >= 0"))
    }
}

impl WindowConfig {
    pub fn outputs(&self) -> Vec<Option<String>> {
        vec![None, Some(LATE.to_string())]
    }

    pub fn build(&self, id: &str) -> Result<Window, BuildError> {
        let (size, hop, gap) = match self.kind {
            WindowKind::Tumbling => {
                let size = millis("size_secs", self.size_secs, true)?;
                (size, size, 0)
            }
            WindowKind::Hopping => {
                let size = millis("size_secs", self.size_secs, true)?;
                let hop = millis("hop_secs", self.hop_secs, true)?;
                if hop > size {
                    return Err(BuildError::new("hop_secs", "must not exceed size_secs"));
                }
                (size, hop, 0)
            }
            WindowKind::Session => (0, 0, millis("gap_secs", self.gap_secs, true)?),
        };
        if self.aggregations.is_empty() {
            return Err(BuildError::new(
                "aggregations",
                "needs at least one aggregation",
            ));
        }
        let aggregations = self
            .aggregations
            .iter()
            .map(|(name, c)| Aggregation::new(name, c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| BuildError::new("aggregations", m))?;
        let group_by = path_list("group_by", &self.group_by)?;
        let time_field = optional_path("time_field", self.time_field.as_deref())?;
        if self.max_keys == 0 {
            return Err(BuildError::new("max_keys", "must be greater than 0"));
        }
        Ok(Window {
            kind: self.kind,
            size,
            hop,
            gap,
            out_of_orderness: non_negative_millis(
                "max_out_of_orderness_secs",
                self.max_out_of_orderness_secs,
            )?,
            lateness: non_negative_millis("allowed_lateness_secs", self.allowed_lateness_secs)?,
            idle_timeout: non_negative_millis("idle_timeout_secs", self.idle_timeout_secs)?,
            max_keys: self.max_keys,
            on_shutdown: self.on_shutdown,
            time_field,
            group_by,
            aggregations,
            windows: BTreeMap::new(),
            sessions: IndexMap::new(),
            session_count: 0,
            watermark: i64::MIN,
            max_time: i64::MIN,
            last_arrival: i64::MIN,
            clock: Clock::system(),
            metrics: ComponentMetrics::new(id, "window"),
            late_counter: metrics::counter!("window_late_events_total", "component_id" => id.to_string()),
        })
    }
}

/// One key's accumulators in one window.
struct KeyState {
    accs: Vec<Acc>,
    /// Changed after the window emitted (a late update to re-emit).
    dirty: bool,
}

/// A time window and its keys.
struct WindowState {
    start: i64,
    end: i64,
    keys: IndexMap<Vec<Value>, KeyState>,
    finalizers: Finalizers,
    fired: bool,
}

impl WindowState {
    fn new(start: i64, end: i64) -> Self {
        WindowState {
            start,
            end,
            keys: IndexMap::new(),
            finalizers: Finalizers::default(),
            fired: false,
        }
    }
}

/// The running window transform.
pub struct Window {
    kind: WindowKind,
    size: i64,
    hop: i64,
    gap: i64,
    out_of_orderness: i64,
    lateness: i64,
    idle_timeout: i64,
    max_keys: usize,
    on_shutdown: OnShutdown,
    time_field: Option<OwnedValuePath>,
    group_by: Vec<OwnedValuePath>,
    aggregations: Vec<Aggregation>,
    /// Tumbling and hopping windows by start.
    windows: BTreeMap<i64, WindowState>,
    /// Session windows per key (each key's sessions in start order; one key set per session).
    sessions: IndexMap<Vec<Value>, Vec<WindowState>>,
    session_count: usize,
    watermark: i64,
    max_time: i64,
    /// Wall-clock milliseconds of the last batch.
    last_arrival: i64,
    clock: Clock,
    metrics: ComponentMetrics,
    late_counter: metrics::Counter,
}

impl Window {
    /// Replaces the wall clock (milliseconds since the epoch), for deterministic tests.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn event_time(&self, event: &Event, now: i64) -> Option<i64> {
        let Some(path) = &self.time_field else {
            return Some(now);
        };
        match event.at(path)? {
            Value::Timestamp(t) => Some(t.timestamp_millis()),
            Value::Integer(secs) => secs.checked_mul(1000),
            Value::Float(secs) => Some((secs.into_inner() * 1000.0) as i64),
            v @ (Value::Bytes(_) | Value::String(_)) => {
                DateTime::parse_from_rfc3339(&v.to_str_lossy()?)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            _ => None,
        }
    }

    /// What an event without a usable event time holds at `time_field`, for a warning.
    fn time_field_example(&self, event: &Event) -> String {
        let Some(path) = &self.time_field else {
            return String::new();
        };
        match event.at(path) {
            Some(value) => format!("time_field {path} is {value}"),
            None => format!("time_field {path} is missing"),
        }
    }

    fn key(&self, event: &Event) -> Vec<Value> {
        self.group_by
            .iter()
            .map(|path| event.at(path).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// Adds an event to a window; false when the window is full of other keys.
    fn accumulate(
        window: &mut WindowState,
        aggregations: &[Aggregation],
        key: &[Value],
        event: &Event,
        time: i64,
        max_keys: usize,
    ) -> bool {
        let state = match window.keys.get_mut(key) {
            Some(state) => state,
            None => {
                if window.keys.len() >= max_keys {
                    return false;
                }
                let accs = aggregations.iter().map(Aggregation::start).collect();
                window
                    .keys
                    .entry(key.to_vec())
                    .or_insert(KeyState { accs, dirty: false })
            }
        };
        for (aggregation, acc) in aggregations.iter().zip(state.accs.iter_mut()) {
            aggregation.add(acc, event, time);
        }
        if window.fired {
            state.dirty = true;
        }
        true
    }

    fn result(&self, window: &WindowState, key: &[Value], state: &KeyState, update: bool) -> Event {
        let mut event = Event::from(Value::Object(ObjectMap::new()));
        event.insert("window_start", Value::Timestamp(to_time(window.start)));
        event.insert("window_end", Value::Timestamp(to_time(window.end)));
        for (path, value) in self.group_by.iter().zip(key) {
            event.value_mut().insert(path, value.clone());
        }
        for (aggregation, acc) in self.aggregations.iter().zip(&state.accs) {
            event.insert(&aggregation.name, aggregation.result(acc));
        }
        if update {
            event.insert("window_update", true);
        }
        event
    }

    /// Emits every key of a window (or, for `only_dirty`, the keys changed since it emitted).
    fn emit(&self, window: &mut WindowState, only_dirty: bool, out: &mut Emitted) {
        for (key, state) in window.keys.iter_mut() {
            if only_dirty && !state.dirty {
                continue;
            }
            state.dirty = false;
            out.events
                .push(self.result_of(window.start, window.end, key, state, only_dirty));
        }
        out.finalizers.merge(std::mem::take(&mut window.finalizers));
    }

    fn result_of(
        &self,
        start: i64,
        end: i64,
        key: &[Value],
        state: &KeyState,
        update: bool,
    ) -> Event {
        let shell = WindowState::new(start, end);
        self.result(&shell, key, state, update)
    }

    fn add_fixed(
        &mut self,
        event: &Event,
        time: i64,
        key: &[Value],
        touched: &mut Vec<i64>,
    ) -> Placement {
        // Windows [s, s + size) containing `time`, s a multiple of hop.
        let last_start = time.div_euclid(self.hop) * self.hop;
        let mut placed = Placement::Late;
        let mut start = last_start;
        while start > time - self.size {
            let end = start + self.size;
            if end + self.lateness > self.watermark {
                let window = self
                    .windows
                    .entry(start)
                    .or_insert_with(|| WindowState::new(start, end));
                if end <= self.watermark {
                    window.fired = true; // a late window seen for the first time: updates only
                }
                if Self::accumulate(window, &self.aggregations, key, event, time, self.max_keys) {
                    placed = Placement::Placed;
                    if !touched.contains(&start) {
                        touched.push(start);
                    }
                } else if placed == Placement::Late {
                    placed = Placement::Full;
                }
            }
            start -= self.hop;
        }
        placed
    }

    fn add_session(
        &mut self,
        event: &Event,
        time: i64,
        key: Vec<Value>,
        finalizers: &Finalizers,
    ) -> Placement {
        let gap = self.gap;
        let known = self.sessions.contains_key(&key);
        if !known && self.sessions.len() >= self.max_keys {
            return Placement::Full;
        }
        let sessions = self.sessions.entry(key.clone()).or_default();
        // Sessions this event touches: [start - gap, end] around it, end = last event + gap.
        let overlapping: Vec<usize> = (0..sessions.len())
            .filter(|i| sessions[*i].start - gap <= time && time <= sessions[*i].end)
            .collect();
        if overlapping.is_empty() && time + gap + self.lateness <= self.watermark {
            if sessions.is_empty() {
                self.sessions.swap_remove(&key);
            }
            return Placement::Late;
        }
        let mut session = match overlapping.first() {
            None => {
                self.session_count += 1;
                WindowState::new(time, time + gap)
            }
            Some(first) => sessions.remove(*first),
        };
        // Merge every other overlapping session into the first (indices shift after removal).
        for (shift, index) in overlapping.iter().skip(1).enumerate() {
            let other = sessions.remove(index - shift - 1);
            self.session_count -= 1;
            merge_sessions(&mut session, other, &self.aggregations);
        }
        session.start = session.start.min(time);
        session.end = session.end.max(time + gap);
        if session.end <= self.watermark {
            session.fired = true;
        }
        Self::accumulate(
            &mut session,
            &self.aggregations,
            &key,
            event,
            time,
            usize::MAX,
        );
        session.finalizers.merge(finalizers.clone());
        let position = sessions.partition_point(|s| s.start < session.start);
        sessions.insert(position, session);
        Placement::Placed
    }

    /// Emits windows the watermark has passed, re-emits late updates, forgets expired windows.
    fn advance(&mut self, out: &mut [Emitted]) {
        let watermark = self.watermark;
        let lateness = self.lateness;
        let mut fixed = std::mem::take(&mut self.windows);
        for window in fixed.values_mut() {
            if !window.fired && window.end <= watermark {
                self.emit(window, false, &mut out[0]);
                window.fired = true;
            } else if window.fired && window.keys.values().any(|k| k.dirty) {
                self.emit(window, true, &mut out[0]);
            }
        }
        fixed.retain(|_, w| w.end + lateness > watermark);
        self.windows = fixed;

        let mut sessions = std::mem::take(&mut self.sessions);
        for list in sessions.values_mut() {
            for session in list.iter_mut() {
                if !session.fired && session.end <= watermark {
                    self.emit(session, false, &mut out[0]);
                    session.fired = true;
                } else if session.fired && session.keys.values().any(|k| k.dirty) {
                    self.emit(session, true, &mut out[0]);
                }
            }
            let before = list.len();
            list.retain(|s| s.end + lateness > watermark);
            self.session_count -= before - list.len();
        }
        sessions.retain(|_, list| !list.is_empty());
        self.sessions = sessions;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Placed,
    Late,
    Full,
}

fn merge_sessions(into: &mut WindowState, other: WindowState, aggregations: &[Aggregation]) {
    // An out-of-order event can bridge two sessions of a key: their accumulators combine.
    into.start = into.start.min(other.start);
    into.end = into.end.max(other.end);
    into.finalizers.merge(other.finalizers);
    for (key, state) in other.keys {
        match into.keys.get_mut(&key) {
            Some(target) => {
                for ((aggregation, a), b) in aggregations
                    .iter()
                    .zip(target.accs.iter_mut())
                    .zip(state.accs)
                {
                    aggregation.merge(a, b);
                }
                target.dirty |= state.dirty;
            }
            None => {
                into.keys.insert(key, state);
            }
        }
    }
}

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl StatefulTransform for Window {
    fn transform(&mut self, batch: EventBatch, out: &mut [Emitted]) {
        let now = self.clock.now();
        self.last_arrival = now;
        let EventBatch {
            events, finalizers, ..
        } = batch;
        let mut touched: Vec<i64> = Vec::new();
        let (mut late, mut full, mut invalid) = (0, 0, 0);
        let mut invalid_example = None;
        for event in events {
            let Some(time) = self.event_time(&event, now) else {
                invalid += 1;
                invalid_example.get_or_insert_with(|| self.time_field_example(&event));
                continue;
            };
            let key = self.key(&event);
            let placement = match self.kind {
                WindowKind::Session => self.add_session(&event, time, key, &finalizers),
                _ => self.add_fixed(&event, time, &key, &mut touched),
            };
            match placement {
                Placement::Placed => self.max_time = self.max_time.max(time),
                Placement::Full => full += 1,
                Placement::Late => {
                    late += 1;
                    out[1].events.push(event);
                }
            }
        }
        for start in touched {
            if let Some(window) = self.windows.get_mut(&start) {
                window.finalizers.merge(finalizers.clone());
            }
        }
        if late > 0 {
            self.late_counter.increment(late as u64);
            out[1].finalizers.merge(finalizers.clone());
        }
        if invalid > 0 {
            self.metrics.errors("invalid_event_time", invalid as u64);
            self.metrics
                .discarded_with("invalid_event_time", invalid, || invalid_example);
        }
        self.metrics.discarded("max_keys", full);
        if self.max_time != i64::MIN {
            self.watermark = self.watermark.max(self.max_time - self.out_of_orderness);
        }
        self.advance(out);
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_millis(250)
    }

    fn tick(&mut self, out: &mut [Emitted]) {
        let now = self.clock.now();
        let progressed = if self.time_field.is_none() {
            // Processing time: the wall clock is the event clock.
            Some(now - self.out_of_orderness)
        } else if self.last_arrival != i64::MIN
            && self.max_time != i64::MIN
            && now - self.last_arrival >= self.idle_timeout
        {
            // Idle: let event time move on with the wall clock since the last arrival.
            Some(self.max_time + (now - self.last_arrival) - self.out_of_orderness)
        } else {
            None
        };
        if let Some(watermark) = progressed {
            self.watermark = self.watermark.max(watermark);
            self.advance(out);
        }
    }

    fn finish(&mut self, out: &mut [Emitted]) {
        match self.on_shutdown {
            OnShutdown::Flush => {
                self.watermark = i64::MAX - self.lateness.max(1);
                self.advance(out);
            }
            OnShutdown::Drop => {
                let open: usize = self
                    .windows
                    .values()
                    .filter(|w| !w.fired)
                    .map(|w| w.keys.len())
                    .sum::<usize>()
                    + self
                        .sessions
                        .values()
                        .flatten()
                        .filter(|s| !s.fired)
                        .count();
                self.metrics.discarded("window_dropped", open);
                self.windows.clear();
                self.sessions.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests;
