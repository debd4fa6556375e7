//! The `reduce` transform: merges consecutive events of a key into one, e.g. the lines of a
//! multi-line stack trace, until a condition, a size or a quiet period ends the group.

use super::support::{parse_path, path_list, Clock};
use super::vrl_program::{compile, Runner};
use super::{Emitted, StatefulTransform};
use crate::event::{Event, EventBatch, Finalizers, Value};
use crate::observe::ComponentMetrics;
use crate::topology::BuildError;
use bytes::{BufMut, BytesMut};
use indexmap::IndexMap;
use serde::Deserialize;
use std::time::Duration;
use vrl::compiler::Program;
use vrl::path::OwnedValuePath;

/// How a field's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Keep the first value (the default for every field).
    Discard,
    /// Keep the last value.
    Retain,
    /// Add numbers.
    Sum,
    Max,
    Min,
    /// Collect every value into an array.
    Array,
    /// Join strings with a space.
    Concat,
    /// Join strings with a newline (stack traces).
    ConcatNewline,
}

/// Merge events by key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReduceConfig {
    /// Components whose events this transform reads.
    pub inputs: Vec<String>,
    /// Fields whose values make the key (e.g. `[host, pid]`); events of a key merge together.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// VRL condition: an event for which it is true starts a new group (the current one is
    /// emitted first). Typical for stack traces: `!match(string!(.message), r'^\s')`.
    #[serde(default)]
    pub starts_when: Option<String>,
    /// VRL condition: an event for which it is true ends its group (and is included).
    #[serde(default)]
    pub ends_when: Option<String>,
    /// Emit a group after this long without a new event, in seconds (default 30).
    #[serde(default = "default_expire")]
    pub expire_after_secs: f64,
    /// Emit a group once it holds this many events (default 1000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Field -> strategy; every other field keeps its first value.
    #[serde(default)]
    pub merge_strategies: IndexMap<String, Strategy>,
    /// Most open groups; the oldest is emitted to make room (default 10000).
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
}

fn default_expire() -> f64 {
    30.0
}
fn default_max_events() -> usize {
    1000
}
fn default_max_groups() -> usize {
    10_000
}

impl ReduceConfig {
    pub fn build(&self, id: &str) -> Result<Reduce, BuildError> {
        let group_by = path_list("group_by", &self.group_by)?;
        let starts_when = self
            .starts_when
            .as_deref()
            .map(|c| compile(id, c))
            .transpose()
            .map_err(|m| BuildError::new("starts_when", m))?;
        let ends_when = self
            .ends_when
            .as_deref()
            .map(|c| compile(id, c))
            .transpose()
            .map_err(|m| BuildError::new("ends_when", m))?;
        if !self.expire_after_secs.is_finite() || self.expire_after_secs <= 0.0 {
            return Err(BuildError::new("expire_after_secs", "must be a number > 0"));
        }
        let strategies = self
            .merge_strategies
            .iter()
            .map(|(f, s)| parse_path(f).map(|p| (p, *s)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| BuildError::new("merge_strategies", m))?;
        Ok(Reduce {
            group_by,
            starts_when,
            ends_when,
            expire_after: (self.expire_after_secs * 1000.0) as i64,
            max_events: self.max_events.max(1),
            max_groups: self.max_groups.max(1),
            strategies,
            groups: IndexMap::new(),
            runner: Runner::default(),
            clock: Clock::system(),
            metrics: ComponentMetrics::new(id, "reduce"),
        })
    }
}

struct Group {
    merged: Event,
    /// Collected values per strategy field (array / concat strategies), in strategy order.
    collected: Vec<Option<Vec<Value>>>,
    count: usize,
    last_seen: i64,
    finalizers: Finalizers,
}

pub struct Reduce {
    group_by: Vec<OwnedValuePath>,
    starts_when: Option<Program>,
    ends_when: Option<Program>,
    expire_after: i64,
    max_events: usize,
    max_groups: usize,
    strategies: Vec<(OwnedValuePath, Strategy)>,
    groups: IndexMap<Vec<Value>, Group>,
    runner: Runner,
    clock: Clock,
    metrics: ComponentMetrics,
}

impl Reduce {
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn check(&mut self, program: Option<&Program>, event: &mut Event) -> bool {
        let Some(program) = program else { return false };
        match self.runner.check(program, event.value_mut()) {
            Ok(b) => b,
            Err(error) => {
                self.metrics.error("condition_failed");
                tracing::debug!(component_id = self.metrics.id(), %error, "reduce condition failed");
                false
            }
        }
    }

    fn start_group(&self, event: Event, now: i64, finalizers: &Finalizers) -> Group {
        let collected = self
            .strategies
            .iter()
            .map(|(path, strategy)| match strategy {
                Strategy::Array | Strategy::Concat | Strategy::ConcatNewline => {
                    Some(event.at(path).cloned().into_iter().collect())
                }
                _ => None,
            })
            .collect();
        Group {
            merged: event,
            collected,
            count: 1,
            last_seen: now,
            finalizers: finalizers.clone(),
        }
    }

    fn merge_into(&self, group: &mut Group, event: &Event, now: i64, finalizers: &Finalizers) {
        group.count += 1;
        group.last_seen = now;
        group.finalizers.merge(finalizers.clone());
        for ((path, strategy), collected) in self.strategies.iter().zip(group.collected.iter_mut())
        {
            let Some(value) = event.at(path) else {
                continue;
            };
            match strategy {
                Strategy::Discard => {
                    if group.merged.at(path).is_none() {
                        group.merged.value_mut().insert(path, value.clone());
                    }
                }
                Strategy::Retain => {
                    group.merged.value_mut().insert(path, value.clone());
                }
                Strategy::Sum | Strategy::Max | Strategy::Min => {
                    let combined = combine(group.merged.at(path), value, *strategy);
                    group.merged.value_mut().insert(path, combined);
                }
                Strategy::Array | Strategy::Concat | Strategy::ConcatNewline => {
                    if let Some(values) = collected {
                        values.push(value.clone());
                    }
                }
            }
        }
    }

    fn finish_group(&self, mut group: Group, out: &mut Emitted) {
        for ((path, strategy), collected) in self.strategies.iter().zip(group.collected) {
            let Some(values) = collected else { continue };
            let value = match strategy {
                Strategy::Array => Value::Array(values),
                _ => {
                    let separator: &[u8] = if *strategy == Strategy::ConcatNewline {
                        b"\n"
                    } else {
                        b" "
                    };
                    let mut joined = BytesMut::new();
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            joined.put_slice(separator);
                        }
                        match v {
                            Value::Bytes(b) => joined.put_slice(b),
                            other => joined.put_slice(other.to_string_lossy().as_bytes()),
                        }
                    }
                    Value::Bytes(joined.freeze())
                }
            };
            group.merged.value_mut().insert(path, value);
        }
        out.events.push(group.merged);
        out.finalizers.merge(group.finalizers);
    }

    fn expire(&mut self, now: i64, out: &mut Emitted) {
        let expired: Vec<Vec<Value>> = self
            .groups
            .iter()
            .filter(|(_, g)| now - g.last_seen >= self.expire_after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(group) = self.groups.shift_remove(&key) {
                self.finish_group(group, out);
            }
        }
    }
}

fn combine(current: Option<&Value>, next: &Value, strategy: Strategy) -> Value {
    let as_f64 = |v: &Value| match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        _ => None,
    };
    match (current, next) {
        (Some(Value::Integer(a)), Value::Integer(b)) => Value::Integer(match strategy {
            Strategy::Sum => a.saturating_add(*b),
            Strategy::Max => *a.max(b),
            _ => *a.min(b),
        }),
        (Some(a), b) => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => {
                let r = match strategy {
                    Strategy::Sum => x + y,
                    Strategy::Max => x.max(y),
                    _ => x.min(y),
                };
                vrl::prelude::NotNan::new(r)
                    .map(Value::Float)
                    .unwrap_or(Value::Null)
            }
            _ => a.clone(),
        },
        (None, b) => b.clone(),
    }
}

impl StatefulTransform for Reduce {
    fn transform(&mut self, batch: EventBatch, out: &mut [Emitted]) {
        let now = self.clock.now();
        let EventBatch {
            events, finalizers, ..
        } = batch;
        for mut event in events {
            let key: Vec<Value> = self
                .group_by
                .iter()
                .map(|p| event.at(p).cloned().unwrap_or(Value::Null))
                .collect();
            let starts = self.check(self.starts_when.clone().as_ref(), &mut event);
            let ends = self.check(self.ends_when.clone().as_ref(), &mut event);
            if starts {
                if let Some(group) = self.groups.shift_remove(&key) {
                    self.finish_group(group, &mut out[0]);
                }
            }
            let full = match self.groups.shift_remove(&key) {
                Some(mut group) => {
                    self.merge_into(&mut group, &event, now, &finalizers);
                    let full = group.count >= self.max_events;
                    self.groups.insert(key.clone(), group);
                    full
                }
                None => {
                    if self.groups.len() >= self.max_groups {
                        if let Some((_, oldest)) = self.groups.shift_remove_index(0) {
                            self.finish_group(oldest, &mut out[0]);
                        }
                    }
                    let group = self.start_group(event, now, &finalizers);
                    let full = group.count >= self.max_events;
                    self.groups.insert(key.clone(), group);
                    full
                }
            };
            if ends || full {
                if let Some(group) = self.groups.shift_remove(&key) {
                    self.finish_group(group, &mut out[0]);
                }
            }
        }
        self.expire(now, &mut out[0]);
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_millis((self.expire_after / 4).clamp(50, 1000) as u64)
    }

    fn tick(&mut self, out: &mut [Emitted]) {
        let now = self.clock.now();
        self.expire(now, &mut out[0]);
    }

    fn finish(&mut self, out: &mut [Emitted]) {
        for (_, group) in std::mem::take(&mut self.groups) {
            self.finish_group(group, &mut out[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    fn reduce(yaml: &str) -> (Reduce, Arc<AtomicI64>) {
        let config: ReduceConfig = serde_yaml::from_str(&format!("inputs: [x]\n{yaml}")).unwrap();
        let now = Arc::new(AtomicI64::new(0));
        let reading = now.clone();
        (
            config
                .build("r")
                .unwrap()
                .with_clock(Clock::from_fn(move || reading.load(Ordering::SeqCst))),
            now,
        )
    }

    fn line(host: &str, message: &str, n: i64) -> Event {
        let mut e = Event::from_message(message.to_string().into());
        e.insert("host", host);
        e.insert("n", n);
        e
    }

    fn messages(out: &Emitted) -> Vec<String> {
        out.events
            .iter()
            .map(|e| e.get("message").unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn stack_traces_merge_into_one_event_per_trace() {
        let (mut r, _) = reduce("group_by: [host]\nstarts_when: '!match(string!(.message), r''^\\s'')'\nmerge_strategies:\n  message: concat_newline\n  n: sum\n");
        let events = vec![
            line("a", "Exception: boom", 1),
            line("a", "  at f()", 1),
            line("b", "other host", 1),
            line("a", "  at g()", 1),
            line("a", "next message", 1),
        ];
        let mut out = vec![Emitted::default()];
        r.transform(EventBatch::new(events, 0), &mut out);
        assert_eq!(
            messages(&out[0]),
            vec!["Exception: boom\n  at f()\n  at g()"]
        );
        assert_eq!(out[0].events[0].get("n"), Some(&Value::Integer(3)));
        let mut rest = vec![Emitted::default()];
        r.finish(&mut rest);
        assert_eq!(messages(&rest[0]), vec!["other host", "next message"]);
    }

    #[test]
    fn groups_expire_after_a_quiet_period_and_ends_when_closes_them() {
        let (mut r, now) = reduce("group_by: [host]\nends_when: ends_with(string!(.message), \"END\")\nexpire_after_secs: 5\nmerge_strategies:\n  message: array\n");
        let mut out = vec![Emitted::default()];
        r.transform(
            EventBatch::new(
                vec![
                    line("a", "one", 1),
                    line("a", "two END", 1),
                    line("b", "waiting", 1),
                ],
                0,
            ),
            &mut out,
        );
        assert_eq!(out[0].events.len(), 1, "a ended by condition");
        assert_eq!(
            out[0].events[0].get("message"),
            Some(&Value::Array(vec![
                Value::Bytes("one".into()),
                Value::Bytes("two END".into())
            ]))
        );
        let mut out = vec![Emitted::default()];
        now.store(4_999, Ordering::SeqCst);
        r.tick(&mut out);
        assert!(out[0].events.is_empty());
        now.store(5_000, Ordering::SeqCst);
        r.tick(&mut out);
        assert_eq!(messages(&out[0]), vec!["[\"waiting\"]"]);
    }
}
