//! Ordered acknowledgements for checkpointing sources.
//!
//! A source sends each batch together with the position it reached (file offsets, later Kafka
//! offsets). Positions come back strictly in send order, each once its batch is resolved, so a
//! checkpoint built from them never passes an unacknowledged event. With acknowledgements off,
//! a position comes back as soon as its batch is handed downstream.

use crate::event::{BatchNotifier, BatchStatus, EventBatch, Finalizers};
use crate::topology::fanout::{Closed, Fanout};
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

    /// Sends a batch downstream; its position is returned by [`Self::ready`] or
    /// [`Self::next`] once it is acknowledged.
    pub async fn send(
        &mut self,
        out: &mut Fanout,
        mut batch: EventBatch,
        position: P,
    ) -> Result<(), Closed> {
        if self.enabled {
            let (notifier, rx) = BatchNotifier::new();
            batch.finalizers = Finalizers::new(notifier);
            out.send(batch).await?;
            self.pending.push_back(
                async move {
                    // A dropped sender without a status cannot happen (Drop always sends), but
                    // if it did, not advancing is the safe answer.
                    let status = rx.await.unwrap_or(BatchStatus::Rejected);
                    (position, status)
                }
                .boxed(),
            );
        } else {
            out.send(batch).await?;
            self.pending
                .push_back(futures::future::ready((position, BatchStatus::Delivered)).boxed());
        }
        Ok(())
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
