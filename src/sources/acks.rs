//! Ordered acknowledgements for checkpointing readers (the file source, the disk buffer).
//!
//! A reader attaches a notifier to each batch together with the position it reached (file
//! offsets, buffer segment offsets, later Kafka offsets). Positions come back strictly in the
//! order they were attached, each once its batch is resolved, so a checkpoint built from them
//! never passes an unacknowledged event. With acknowledgements off, a position comes back as
//! soon as it is attached.

use crate::event::{BatchNotifier, BatchStatus, EventBatch, Finalizers, SourcePosition};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};

pub struct OrderedAcks<P> {
    enabled: bool,
    pending: FuturesOrdered<BoxFuture<'static, (P, BatchStatus)>>,
}

impl<P: Send + 'static> OrderedAcks<P> {
    pub fn new(enabled: bool) -> Self {
        OrderedAcks {
            enabled,
            pending: FuturesOrdered::new(),
        }
    }

    /// Gives `batch` a fresh acknowledgement handle whose resolution returns `position`.
    /// Send the batch downstream afterwards.
    pub fn attach(&mut self, batch: &mut EventBatch, position: P) {
        self.attach_at(batch, position, None);
    }

    /// [`OrderedAcks::attach`], also telling the sinks where the batch was read (exactly-once
    /// sinks commit it with the data).
    pub fn attach_at(
        &mut self,
        batch: &mut EventBatch,
        position: P,
        source_position: Option<SourcePosition>,
    ) {
        if !self.enabled {
            self.resolved(position);
            return;
        }
        let (notifier, rx) = BatchNotifier::with_position(source_position);
        batch.finalizers = Finalizers::new(notifier);
        self.pending.push_back(
            async move {
                // Drop always sends; a missing status can only mean a bug, and not advancing
                // is the safe answer then.
                let status = rx.await.unwrap_or(BatchStatus::Rejected);
                (position, status)
            }
            .boxed(),
        );
    }

    /// Records a position that needs no acknowledgement (skipped data), in order.
    pub fn resolved(&mut self, position: P) {
        self.pending
            .push_back(futures::future::ready((position, BatchStatus::Delivered)).boxed());
    }

    /// Positions acknowledged so far, in order, without waiting.
    pub fn ready(&mut self) -> Vec<(P, BatchStatus)> {
        let mut out = Vec::new();
        while let Some(Some(item)) = self.pending.next().now_or_never() {
            out.push(item);
        }
        out
    }

    /// Waits for the next acknowledged position; `None` when nothing is pending.
    pub async fn next(&mut self) -> Option<(P, BatchStatus)> {
        self.pending.next().await
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
