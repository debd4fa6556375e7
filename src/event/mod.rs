//! Events and batches: the unit of data moving through a topology.
//!
//! An event is VRL's own [`Value`] tree, so the remap transform works on events in place
//! without converting them. Events always travel in [`EventBatch`]es: per-event channel sends
//! are what make agents slow. Acknowledgement handles ride on the batch (see [`finalizer`]).

pub mod finalizer;
pub mod json;

use bytes::Bytes;
pub use finalizer::{BatchNotifier, BatchStatus, Finalizers, SourcePosition};
use vrl::path::{OwnedSegment, OwnedValuePath};
pub use vrl::value::{KeyString, ObjectMap, Value};

/// The field a source puts raw line bytes into, and the `text` codec writes out.
pub const MESSAGE_KEY: &str = "message";

/// One event: a JSON-like value tree (usually an object).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub value: Value,
}

impl Event {
    /// An event `{ "message": bytes }` for a raw line, kept as bytes until something needs structure.
    pub fn from_message(bytes: Bytes) -> Self {
        let mut map = ObjectMap::new();
        map.insert(KeyString::from(MESSAGE_KEY), Value::Bytes(bytes));
        Event {
            value: Value::Object(map),
        }
    }

    /// Inserts a top-level field (no-op on non-object events).
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        if let Value::Object(map) = &mut self.value {
            map.insert(KeyString::from(key), value.into());
        }
    }

    /// The value at `path`, as VRL's `Value::get` finds it. A top-level field (what most
    /// configured paths name) is one map lookup, where VRL's general path walk costs ~15% more
    /// (callgrind: ~290 against ~335 instructions in an 11-field event; both search the
    /// object's keys in order). Components read configured fields through this.
    pub fn at(&self, path: &OwnedValuePath) -> Option<&Value> {
        match (&self.value, path.segments.as_slice()) {
            (Value::Object(map), [OwnedSegment::Field(key)]) => map.get(key),
            (value, _) => value.get(path),
        }
    }

    /// Reads a top-level field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.value {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }
}

impl From<Value> for Event {
    fn from(value: Value) -> Self {
        Event { value }
    }
}

/// A batch of events plus what they share: an estimate of their size in bytes (used by the
/// byte limits of channels and buffers) and the acknowledgement handles of their sources.
#[derive(Debug, Default)]
pub struct EventBatch {
    pub events: Vec<Event>,
    /// Approximate size of the events as they were read (raw bytes); carried, not recomputed.
    pub byte_size: usize,
    pub finalizers: Finalizers,
}

impl EventBatch {
    pub fn new(events: Vec<Event>, byte_size: usize) -> Self {
        EventBatch {
            events,
            byte_size,
            finalizers: Finalizers::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_reads_the_same_value_as_vrls_path_walk() {
        let text = r#"{"a":1,"b":{"c":[5,{"d":"x"}]},"e.f":2,"":3}"#;
        let event = Event::from(serde_json::from_str::<Value>(text).unwrap());
        for path in [
            ".a",
            ".b",
            ".b.c",
            ".b.c[1].d",
            ".\"e.f\"",
            ".e.f",
            ".missing",
            ".\"\"",
            ".",
        ] {
            let path = vrl::path::parse_value_path(path).unwrap();
            assert_eq!(event.at(&path), event.value.get(&path), "{path}");
        }
        assert_eq!(
            event.at(&vrl::path::parse_value_path(".a").unwrap()),
            Some(&Value::Integer(1))
        );
        let scalar = Event::from(Value::Integer(7));
        assert_eq!(scalar.at(&vrl::path::parse_value_path(".a").unwrap()), None);
    }
}
