//! Events and batches: the unit of data moving through a topology.
//!
//! An event is VRL's own [`Value`] tree, so the remap transform works on events in place
//! without converting them. Events always travel in [`EventBatch`]es: per-event channel sends
//! are what make agents slow. Acknowledgement handles ride on the batch (see [`finalizer`]).

pub mod finalizer;
pub mod json;

use bytes::Bytes;
pub use finalizer::{BatchNotifier, BatchStatus, Finalizers, SourcePosition};
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
