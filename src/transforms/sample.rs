//! The `sample` transform: keeps one event in `rate`.

use super::support::{hash_fields, optional_path};
use super::Transform;
use crate::event::Event;
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use serde::Deserialize;
use vrl::path::OwnedValuePath;

/// Keep a fraction of events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// Keep one event in this many (e.g. 10 keeps 10%).
    pub rate: u64,
    /// Decide by this field's hash instead of a counter, so every event with the same value
    /// (a trace id, a user) is kept or dropped together, on every agent.
    #[serde(default)]
    pub key_field: Option<String>,
}

impl SampleConfig {
    pub fn build(&self, id: &str) -> Result<Sample, BuildError> {
        if self.rate == 0 {
            return Err(BuildError::new("rate", "must be at least 1"));
        }
        let key = optional_path("key_field", self.key_field.as_deref())?;
        Ok(Sample {
            rate: self.rate,
            key,
            counter: 0,
            metrics: ComponentMetrics::new(id, "sample"),
        })
    }
}

pub struct Sample {
    rate: u64,
    key: Option<OwnedValuePath>,
    counter: u64,
    metrics: ComponentMetrics,
}

impl Transform for Sample {
    fn transform(&mut self, events: Vec<Event>, outputs: &mut [Vec<Event>]) {
        let total = events.len();
        for event in events {
            let keep = match &self.key {
                Some(path) => {
                    hash_fields(&event, std::slice::from_ref(path)).is_multiple_of(self.rate)
                }
                None => {
                    self.counter += 1;
                    self.counter % self.rate == 1 % self.rate
                }
            };
            if keep {
                outputs[0].push(event);
            }
        }
        let kept = outputs[0].len();
        self.metrics
            .discarded("sampled", total.saturating_sub(kept));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str, events: Vec<Event>) -> Vec<Event> {
        let config: SampleConfig = serde_yaml::from_str(&format!("inputs: [x]\n{yaml}")).unwrap();
        let mut out = vec![Vec::new()];
        config.build("s").unwrap().transform(events, &mut out);
        out.pop().unwrap()
    }

    #[test]
    fn keeps_one_in_rate_by_counter() {
        let events = (0..100)
            .map(|i| Event::from_message(format!("{i}").into()))
            .collect();
        let kept = run("rate: 10\n", events);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0], Event::from_message("0".into()));
    }

    #[test]
    fn by_key_keeps_or_drops_all_events_of_a_key_together() {
        let events: Vec<Event> = (0..3000)
            .map(|i| {
                let mut e = Event::from_message("x".into());
                e.insert("trace", (i % 300) as i64);
                e
            })
            .collect();
        let kept = run("rate: 3\nkey_field: trace\n", events);
        let traces: std::collections::BTreeSet<String> = kept
            .iter()
            .map(|e| format!("{:?}", e.get("trace")))
            .collect();
        assert_eq!(
            kept.len(),
            traces.len() * 10,
            "each kept trace keeps all 10 of its events"
        );
        assert!(
            (60..=140).contains(&traces.len()),
            "about a third of 300 traces: {}",
            traces.len()
        );
    }
}
