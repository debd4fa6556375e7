//! Acknowledgements: how a source learns that the sinks have delivered its events.
//!
//! A source that wants acknowledgements attaches one [`BatchNotifier`] to each batch it sends.
//! Every copy of the batch (fan-out, route splits, sink batching) holds an `Arc` to it. When the
//! last holder drops it, the notifier resolves with the worst status any holder reported:
//! `Delivered` unless a sink marked it `Rejected`. Dropping a batch on purpose (a filter, a
//! remap `abort`) therefore counts as delivered, which is what a checkpoint wants.
//!
//! Sinks must mark `Rejected` before dropping a batch they failed to deliver. On a forced
//! shutdown the topology stops the sources from reading acknowledgements *before* it aborts
//! any sink, so a batch dropped by an aborted sink never advances a checkpoint.

pub use crate::exactly_once::SourcePosition;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The outcome of a batch, as reported to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    /// Every sink that received it delivered it (or it was dropped on purpose).
    Delivered = 0,
    /// At least one sink gave up on it.
    Rejected = 1,
}

/// Resolves a source's receiver when the last reference is dropped.
#[derive(Debug)]
pub struct BatchNotifier {
    status: AtomicU8,
    sender: Mutex<Option<oneshot::Sender<BatchStatus>>>,
    /// Where the batch was read, for sinks that commit source positions with their data
    /// (see [`crate::exactly_once`]). Every copy and split of the batch carries it.
    position: Option<SourcePosition>,
}

impl BatchNotifier {
    /// A notifier and the receiver the source awaits.
    pub fn new() -> (Arc<BatchNotifier>, oneshot::Receiver<BatchStatus>) {
        Self::with_position(None)
    }

    /// [`BatchNotifier::new`] for a batch read at a known source position.
    pub fn with_position(
        position: Option<SourcePosition>,
    ) -> (Arc<BatchNotifier>, oneshot::Receiver<BatchStatus>) {
        let (tx, rx) = oneshot::channel();
        let notifier = BatchNotifier {
            status: AtomicU8::new(BatchStatus::Delivered as u8),
            sender: Mutex::new(Some(tx)),
            position,
        };
        (Arc::new(notifier), rx)
    }

    fn update(&self, status: BatchStatus) {
        self.status.fetch_max(status as u8, Ordering::AcqRel);
    }
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        let status = match self.status.load(Ordering::Acquire) {
            0 => BatchStatus::Delivered,
            _ => BatchStatus::Rejected,
        };
        let sender = match self.sender.get_mut() {
            Ok(sender) => sender.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            // The source may have stopped listening (shutdown); nothing to do then.
            let _ = sender.send(status);
        }
    }
}

/// The acknowledgement handles a batch carries (empty when its source does not want them).
#[derive(Debug, Clone, Default)]
pub struct Finalizers(Vec<Arc<BatchNotifier>>);

impl Finalizers {
    pub fn new(notifier: Arc<BatchNotifier>) -> Self {
        Finalizers(vec![notifier])
    }

    /// Takes over the handles of another batch (a sink merging batches).
    pub fn merge(&mut self, other: Finalizers) {
        for notifier in other.0 {
            if !self.0.iter().any(|n| Arc::ptr_eq(n, &notifier)) {
                self.0.push(notifier);
            }
        }
    }

    /// Records an outcome; the notifier resolves once every holder has dropped it.
    pub fn update_status(&self, status: BatchStatus) {
        for notifier in &self.0 {
            notifier.update(status);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The source positions of the batches these handles belong to (those that have one).
    pub fn positions(&self) -> impl Iterator<Item = &SourcePosition> {
        self.0.iter().filter_map(|n| n.position.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_delivered_after_last_holder_drops() {
        let (notifier, mut rx) = BatchNotifier::new();
        let a = Finalizers::new(notifier);
        let b = a.clone();
        drop(a);
        assert!(rx.try_recv().is_err(), "must wait for every holder");
        drop(b);
        assert_eq!(rx.await.unwrap(), BatchStatus::Delivered);
    }

    #[tokio::test]
    async fn one_rejection_wins_over_deliveries() {
        let (notifier, rx) = BatchNotifier::new();
        let a = Finalizers::new(notifier);
        let b = a.clone();
        a.update_status(BatchStatus::Delivered);
        b.update_status(BatchStatus::Rejected);
        drop((a, b));
        assert_eq!(rx.await.unwrap(), BatchStatus::Rejected);
    }

    #[tokio::test]
    async fn merge_does_not_duplicate_handles() {
        let (notifier, _rx) = BatchNotifier::new();
        let mut a = Finalizers::new(notifier);
        let b = a.clone();
        a.merge(b);
        assert_eq!(a.0.len(), 1);
    }
}
