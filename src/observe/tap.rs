//! Live taps (`sluice tap`, the api's `GET /tap`): a copy of events leaving a component,
//! serialized as JSON lines into a small bounded channel per tap. Sampling, never
//! backpressure: when a tap's reader is slower than the pipeline, events are skipped for it.
//! With no tap open, the cost on the data path is one atomic load per batch.

use crate::event::Event;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static TAPS: Mutex<Vec<(String, mpsc::Sender<String>)>> = Mutex::new(Vec::new());

/// How many JSON lines may wait for a tap's reader.
const TAP_CAPACITY: usize = 256;

/// Offers events leaving `component` to its taps (called by the fan-out of every output).
pub fn offer(component: &str, events: &[Event]) {
    if OPEN.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut taps = TAPS.lock().unwrap_or_else(|p| p.into_inner());
    taps.retain(|(id, tx)| {
        if id != component {
            return !tx.is_closed();
        }
        for event in events {
            if tx.capacity() == 0 {
                break; // the reader is behind: skip the rest of this batch
            }
            // As a JSON sink writes it (an event kept as text: its text, unbuilt).
            let mut line = Vec::new();
            event.write_json(&mut line);
            let line = String::from_utf8(line).unwrap_or_default();
            if tx.try_send(line).is_err() {
                break;
            }
        }
        !tx.is_closed()
    });
    OPEN.store(taps.len(), Ordering::Relaxed);
}

/// Opens a tap on `component`; it closes when the receiver is dropped.
pub fn open(component: &str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(TAP_CAPACITY);
    let mut taps = TAPS.lock().unwrap_or_else(|p| p.into_inner());
    taps.push((component.to_string(), tx));
    OPEN.store(taps.len(), Ordering::Relaxed);
    rx
}
