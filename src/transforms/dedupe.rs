//! The `dedupe` transform: drops events whose key fields were seen recently.

use super::support::{hash_fields, path_list, Clock};
use super::Transform;
use crate::event::Event;
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use vrl::path::OwnedValuePath;

/// What the transform remembers.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeCache {
    /// Keys remembered; the oldest is forgotten first (default 5000).
    #[serde(default = "default_cache_events")]
    pub max_events: usize,
    /// Forget a key after this many seconds (default: only by count).
    #[serde(default)]
    pub ttl_secs: Option<f64>,
}

fn default_cache_events() -> usize {
    5000
}

impl Default for DedupeCache {
    fn default() -> Self {
        DedupeCache {
            max_events: default_cache_events(),
            ttl_secs: None,
        }
    }
}

/// Drop repeated events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// Fields that identify an event (e.g. `[request_id]`); empty: the whole event. Keys are
    /// compared by a 64-bit hash.
    #[serde(default)]
    pub fields: Vec<String>,
    /// How many keys, and for how long, are remembered.
    #[serde(default)]
    pub cache: DedupeCache,
}

impl DedupeConfig {
    pub fn build(&self, id: &str) -> Result<Dedupe, BuildError> {
        let fields = path_list("fields", &self.fields)?;
        if self.cache.max_events == 0 {
            return Err(BuildError::new(
                "cache",
                "max_events must be greater than 0",
            ));
        }
        let ttl = match self.cache.ttl_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some((s * 1000.0) as i64),
            Some(_) => return Err(BuildError::new("cache", "ttl_secs must be a number > 0")),
            None => None,
        };
        Ok(Dedupe {
            fields,
            max: self.cache.max_events,
            ttl,
            seen: HashMap::new(),
            order: VecDeque::new(),
            clock: Clock::system(),
            metrics: ComponentMetrics::new(id, "dedupe"),
        })
    }
}

pub struct Dedupe {
    fields: Vec<OwnedValuePath>,
    max: usize,
    ttl: Option<i64>,
    /// Key hash -> when it was last remembered.
    seen: HashMap<u64, i64>,
    /// Keys in the order they were remembered, for eviction.
    order: VecDeque<(u64, i64)>,
    clock: Clock,
    metrics: ComponentMetrics,
}

impl Dedupe {
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn forget_old(&mut self, now: i64) {
        while let Some(&(key, at)) = self.order.front() {
            let expired = self.ttl.is_some_and(|ttl| now - at >= ttl);
            if self.order.len() <= self.max && !expired {
                break;
            }
            self.order.pop_front();
            // Only forget the key if this queue entry is its latest.
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
    }
}

impl Transform for Dedupe {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let now = self.clock.now();
        let mut duplicates = 0;
        for event in events {
            self.forget_old(now);
            let key = hash_fields(&event, &self.fields);
            if self.seen.contains_key(&key) {
                duplicates += 1;
                continue;
            }
            self.seen.insert(key, now);
            self.order.push_back((key, now));
            outputs[0].push(event);
        }
        self.forget_old(now);
        self.metrics.discarded("duplicate", duplicates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn events(ids: &[i64]) -> Vec<Event> {
        ids.iter()
            .map(|i| {
                Event::from(
                    serde_json::from_str::<crate::event::Value>(&format!(
                        "{{\"id\":{i},\"n\":{}}}",
                        i * 7 + 1
                    ))
                    .unwrap(),
                )
            })
            .collect()
    }

    fn ids(out: &[Event]) -> Vec<i64> {
        out.iter()
            .map(|e| match e.get("id") {
                Some(crate::event::Value::Integer(i)) => *i,
                _ => -1,
            })
            .collect()
    }

    #[test]
    fn drops_repeats_within_the_cache_and_forgets_the_oldest() {
        let config: DedupeConfig =
            serde_yaml::from_str("inputs: [x]\nfields: [id]\ncache:\n  max_events: 3\n").unwrap();
        let mut d = config.build("d").unwrap();
        let mut out = vec![Vec::new()];
        d.transform(events(&[1, 2, 1, 3, 2]), &mut out);
        assert_eq!(ids(&out[0]), vec![1, 2, 3]);
        out[0].clear();
        d.transform(events(&[4, 1]), &mut out); // 4 pushes 1 out of a 3-key cache
        assert_eq!(ids(&out[0]), vec![4, 1]);
    }

    #[test]
    fn forgets_keys_after_the_ttl() {
        let config: DedupeConfig =
            serde_yaml::from_str("inputs: [x]\nfields: [id]\ncache:\n  ttl_secs: 10\n").unwrap();
        let now = Arc::new(AtomicI64::new(0));
        let reading = now.clone();
        let mut d = config
            .build("d")
            .unwrap()
            .with_clock(Clock::from_fn(move || reading.load(Ordering::SeqCst)));
        let mut out = vec![Vec::new()];
        d.transform(events(&[1]), &mut out);
        now.store(5_000, Ordering::SeqCst);
        d.transform(events(&[1]), &mut out);
        now.store(10_001, Ordering::SeqCst);
        d.transform(events(&[1]), &mut out);
        assert_eq!(
            ids(&out[0]),
            vec![1, 1],
            "dropped at 5 s, kept again after 10 s"
        );
    }
}
