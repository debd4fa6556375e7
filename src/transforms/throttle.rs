//! The `throttle` transform: limits events per key to `threshold` per `window_secs`, with a
//! token bucket per key (refilled continuously, bursts up to `threshold`).

use super::support::{optional_path, Clock};
use super::Transform;
use crate::event::{Event, Value};
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use indexmap::IndexMap;
use serde::Deserialize;
use vrl::path::OwnedValuePath;

/// Rate-limit events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// Events allowed per key in each `window_secs`.
    pub threshold: u32,
    /// The period of the limit, in seconds.
    pub window_secs: f64,
    /// Limit per value of this field (e.g. `service`); unset: one limit for all events.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Send excess events to `<id>.dropped` instead of discarding them (discards are counted
    /// as `component_discarded_events_total{reason="throttled"}`).
    #[serde(default)]
    pub reroute_dropped: bool,
    /// Most keys tracked; beyond it the least recently seen key is forgotten (default 10000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    10_000
}

impl ThrottleConfig {
    pub fn outputs(&self) -> Vec<Option<String>> {
        let mut outputs = vec![None];
        if self.reroute_dropped {
            outputs.push(Some("dropped".into()));
        }
        outputs
    }

    pub fn build(&self, id: &str) -> Result<Throttle, BuildError> {
        if self.threshold == 0 {
            return Err(BuildError::new("threshold", "must be at least 1"));
        }
        if !self.window_secs.is_finite() || self.window_secs <= 0.0 {
            return Err(BuildError::new("window_secs", "must be a number > 0"));
        }
        let key = optional_path("key_field", self.key_field.as_deref())?;
        Ok(Throttle {
            capacity: f64::from(self.threshold),
            per_ms: f64::from(self.threshold) / (self.window_secs * 1000.0),
            key,
            buckets: IndexMap::new(),
            max_keys: self.max_keys.max(1),
            clock: Clock::system(),
            metrics: ComponentMetrics::new(id, "throttle"),
        })
    }
}

pub struct Throttle {
    capacity: f64,
    /// Tokens added per millisecond.
    per_ms: f64,
    key: Option<OwnedValuePath>,
    /// Key -> (tokens, last refill in ms), least recently used first.
    buckets: IndexMap<Value, (f64, i64)>,
    max_keys: usize,
    clock: Clock,
    metrics: ComponentMetrics,
}

impl Throttle {
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl Transform for Throttle {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let now = self.clock.now();
        let mut throttled = 0;
        for event in events {
            let key = self
                .key
                .as_ref()
                .and_then(|p| event.at(p).cloned())
                .unwrap_or(Value::Null);
            let (mut tokens, last) = self
                .buckets
                .shift_remove(&key)
                .unwrap_or((self.capacity, now));
            tokens = (tokens + (now - last).max(0) as f64 * self.per_ms).min(self.capacity);
            let allowed = tokens >= 1.0;
            if allowed {
                tokens -= 1.0;
            }
            if self.buckets.len() >= self.max_keys {
                self.buckets.shift_remove_index(0);
            }
            self.buckets.insert(key, (tokens, now));
            if allowed {
                outputs[0].push(event);
            } else if let Some(dropped) = outputs.get_mut(1) {
                dropped.push(event);
            } else {
                throttled += 1;
            }
        }
        self.metrics.discarded("throttled", throttled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn limits_each_key_and_refills_over_time() {
        let config: ThrottleConfig = serde_yaml::from_str(
            "inputs: [x]\nthreshold: 3\nwindow_secs: 1\nkey_field: k\nreroute_dropped: true\n",
        )
        .unwrap();
        let now = Arc::new(AtomicI64::new(0));
        let reading = now.clone();
        let mut t = config
            .build("t")
            .unwrap()
            .with_clock(Clock::from_fn(move || reading.load(Ordering::SeqCst)));
        let batch = |k: &str, n: usize| -> Vec<Event> {
            (0..n)
                .map(|_| {
                    let mut e = Event::from_message("m".into());
                    e.insert("k", k);
                    e
                })
                .collect()
        };
        let mut out = vec![Vec::new(), Vec::new()];
        t.transform([batch("a", 5), batch("b", 2)].concat(), &mut out);
        assert_eq!(
            (out[0].len(), out[1].len()),
            (5, 2),
            "a: 3 pass, 2 over; b: 2 pass"
        );
        let mut out = vec![Vec::new(), Vec::new()];
        now.store(1_000, Ordering::SeqCst); // a full window later: the bucket is full again
        t.transform(batch("a", 4), &mut out);
        assert_eq!((out[0].len(), out[1].len()), (3, 1));
    }
}
