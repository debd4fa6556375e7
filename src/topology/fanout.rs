//! Fan-out: delivers one component output to every component that reads it. Each consumer gets
//! its own copy of the batch (sharing the acknowledgement handles), and the slowest consumer
//! sets the pace: that is the backpressure path from sinks back to sources.

use super::channel::{BufferSender, SendError};
use crate::event::{BatchStatus, EventBatch};
use crate::observe::ComponentMetrics;
use metrics::Gauge;

struct Target {
    consumer: String,
    tx: BufferSender,
    consumer_metrics: ComponentMetrics,
    queued_events: Gauge,
    queued_bytes: Gauge,
}

/// The consumers of one output.
pub struct Fanout {
    producer: ComponentMetrics,
    targets: Vec<Target>,
}

/// Every consumer of an output has stopped: the producer may as well stop too.
#[derive(Debug, thiserror::Error)]
#[error("every downstream component has stopped")]
pub struct Closed;

impl Fanout {
    pub fn new(producer: ComponentMetrics) -> Self {
        Fanout {
            producer,
            targets: Vec::new(),
        }
    }

    pub fn add(&mut self, consumer: &str, tx: BufferSender, consumer_metrics: ComponentMetrics) {
        let (queued_events, queued_bytes) = consumer_metrics.buffer_gauges();
        self.targets.push(Target {
            consumer: consumer.to_string(),
            tx,
            consumer_metrics,
            queued_events,
            queued_bytes,
        });
    }

    pub fn is_connected(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Sends a batch to every consumer, waiting while any of them is full. Cancel-safe and
    /// all-or-nothing: room is reserved in every consumer before any copy is enqueued, so a
    /// caller that gives up (http_server's accept timeout) leaves nothing half-sent. Counts the
    /// batch as sent by the producer. An output nobody reads discards the batch, counted as
    /// `unconnected_output`.
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        if batch.is_empty() {
            return Ok(());
        }
        crate::observe::tap::offer(self.producer.id(), &batch.events);
        if self.targets.is_empty() {
            self.producer.discarded("unconnected_output", batch.len());
            return Ok(());
        }
        let mut reservations = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            reservations.push(target.tx.reserve(&batch).await);
        }
        self.producer.sent(batch.len(), batch.byte_size);
        let mut closed = Vec::new();
        let mut batch = Some(batch);
        let last = self.targets.len() - 1;
        for (index, reservation) in reservations.into_iter().enumerate() {
            let target = &self.targets[index];
            let copy = match &batch {
                Some(b) if index < last => EventBatch {
                    events: b.events.clone(),
                    byte_size: b.byte_size,
                    finalizers: b.finalizers.clone(),
                },
                _ => batch.take().unwrap_or_default(),
            };
            let count = copy.len();
            let result = match reservation {
                Ok(reservation) => reservation.send(copy),
                Err(error) => {
                    if error == SendError::Closed {
                        copy.finalizers.update_status(BatchStatus::Rejected);
                    }
                    Err(error)
                }
            };
            match result {
                Ok(()) => {}
                Err(SendError::Dropped) => target.consumer_metrics.discarded("buffer_full", count),
                Err(SendError::Closed) => {
                    tracing::warn!(consumer = %target.consumer, component_id = self.producer.id(), "downstream component stopped; no longer sending to it");
                    closed.push(index);
                }
            }
            target.queued_events.set(target.tx.queued_events() as f64);
            target.queued_bytes.set(target.tx.queued_bytes() as f64);
        }
        for index in closed.into_iter().rev() {
            self.targets.remove(index);
        }
        if self.targets.is_empty() {
            Err(Closed)
        } else {
            Ok(())
        }
    }
}
