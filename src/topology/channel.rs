//! The bounded channel between components, limited both in events and in bytes.
//!
//! A sender acquires permits for a batch's event count and byte size before the batch enters the
//! channel; the receiver gives them back when it takes the batch out. A full channel therefore
//! makes the producer wait (backpressure), or, with `when_full: drop_newest`, drops the batch
//! and says so. A batch larger than a whole limit is let through alone rather than deadlocking.

use crate::event::{BatchStatus, EventBatch};
use crate::observe::ComponentMetrics;
use metrics::Gauge;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What a sender does when the channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: the producer slows down (default).
    #[default]
    Block,
    /// Drop the incoming batch and count it as discarded.
    DropNewest,
}

/// Limits of one channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub when_full: WhenFull,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits {
            max_events: 8192,
            max_bytes: 8 << 20,
            when_full: WhenFull::Block,
        }
    }
}

/// Room held in a channel for one batch.
pub struct Reservation {
    tx: mpsc::UnboundedSender<Envelope>,
    events: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

impl Reservation {
    /// Enqueues the batch into the room held.
    pub fn send(self, batch: EventBatch) -> Result<(), SendError> {
        let Reservation { tx, events, bytes } = self;
        tx.send(Envelope {
            batch,
            _events: events,
            _bytes: bytes,
        })
        .map_err(|error| {
            // Never delivered: the source must not advance past it.
            error
                .0
                .batch
                .finalizers
                .update_status(BatchStatus::Rejected);
            SendError::Closed
        })
    }
}

struct Envelope {
    batch: EventBatch,
    _events: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// The sending half; cheap to clone (one per upstream output).
#[derive(Clone)]
pub struct BufferSender {
    tx: mpsc::UnboundedSender<Envelope>,
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    limits: ChannelLimits,
}

/// The receiving half, owned by one transform or sink.
pub struct BufferReceiver {
    rx: mpsc::UnboundedReceiver<Envelope>,
}

/// Why a send did not enqueue the batch.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiver is gone (its component stopped).
    Closed,
    /// `when_full: drop_newest` and no room: the batch was dropped.
    Dropped,
}

pub fn channel(limits: ChannelLimits) -> (BufferSender, BufferReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = BufferSender {
        tx,
        events: Arc::new(Semaphore::new(limits.max_events.max(1))),
        bytes: Arc::new(Semaphore::new(limits.max_bytes.max(1))),
        limits,
    };
    (sender, BufferReceiver { rx })
}

impl BufferSender {
    fn permits_for(&self, batch: &EventBatch) -> (u32, u32) {
        let events = batch.len().clamp(1, self.limits.max_events.max(1));
        let bytes = batch.byte_size.clamp(1, self.limits.max_bytes.max(1));
        (events as u32, bytes as u32)
    }

    /// Waits for room for a batch of this size (or, with `drop_newest`, fails at once when
    /// full). Cancel-safe: dropping the future or the reservation gives the room back.
    pub async fn reserve(&self, batch: &EventBatch) -> Result<Reservation, SendError> {
        let (events, bytes) = self.permits_for(batch);
        let (event_permit, byte_permit) = match self.limits.when_full {
            WhenFull::Block => {
                let e = self.events.clone().acquire_many_owned(events).await;
                let b = self.bytes.clone().acquire_many_owned(bytes).await;
                match (e, b) {
                    (Ok(e), Ok(b)) => (e, b),
                    _ => return Err(SendError::Closed),
                }
            }
            WhenFull::DropNewest => {
                let e = self.events.clone().try_acquire_many_owned(events);
                let b = self.bytes.clone().try_acquire_many_owned(bytes);
                match (e, b) {
                    (Ok(e), Ok(b)) => (e, b),
                    _ => return Err(SendError::Dropped),
                }
            }
        };
        Ok(Reservation {
            tx: self.tx.clone(),
            events: event_permit,
            bytes: byte_permit,
        })
    }

    /// Enqueues a batch, waiting for room unless the policy is `drop_newest`.
    pub async fn send(&self, batch: EventBatch) -> Result<(), SendError> {
        match self.reserve(&batch).await {
            Ok(reservation) => reservation.send(batch),
            Err(error) => {
                if error == SendError::Closed {
                    batch.finalizers.update_status(BatchStatus::Rejected);
                }
                Err(error)
            }
        }
    }

    /// Both senders feed the same channel.
    pub fn same_channel(&self, other: &BufferSender) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Events currently queued (for the `buffer_events` gauge).
    pub fn queued_events(&self) -> usize {
        queued(self.limits.max_events, &self.events)
    }

    /// Bytes currently queued (for the `buffer_bytes` gauge).
    pub fn queued_bytes(&self) -> usize {
        queued(self.limits.max_bytes, &self.bytes)
    }

    /// Makes this channel's fill the `buffer_events` and `buffer_bytes` gauges of the
    /// component `metrics` belongs to. The gauges are set when metrics are read
    /// ([`refresh_buffer_gauges`]), not on every send: they are never stale (a drained or idle
    /// channel reads 0), and the send path does no gauge work.
    pub fn report_fill(&self, metrics: &ComponentMetrics) {
        let (events, bytes) = metrics.buffer_gauges();
        let watched = WatchedChannel {
            events: Arc::downgrade(&self.events),
            bytes: Arc::downgrade(&self.bytes),
            limits: self.limits,
            gauges: (events, bytes),
        };
        lock_watched().push(watched);
    }
}

/// What is queued in a channel whose `limit` is held by `permits`.
fn queued(limit: usize, permits: &Semaphore) -> usize {
    limit.max(1) - permits.available_permits()
}

/// A channel whose fill some component's buffer gauges report.
struct WatchedChannel {
    events: Weak<Semaphore>,
    bytes: Weak<Semaphore>,
    limits: ChannelLimits,
    gauges: (Gauge, Gauge),
}

static WATCHED: Mutex<Vec<WatchedChannel>> = Mutex::new(Vec::new());

fn lock_watched() -> std::sync::MutexGuard<'static, Vec<WatchedChannel>> {
    WATCHED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets every reported channel's `buffer_events`/`buffer_bytes` gauges to its fill now. A
/// channel that is gone (its component removed, or built only to be checked) reads 0 and is
/// forgotten, before the live ones are read: a component's gauges are its live channel's.
/// Called before `/metrics` is rendered.
pub fn refresh_buffer_gauges() {
    let mut watched = lock_watched();
    let (live, gone): (Vec<WatchedChannel>, Vec<WatchedChannel>) = std::mem::take(&mut *watched)
        .into_iter()
        .partition(|channel| channel.events.strong_count() > 0);
    for channel in &gone {
        channel.gauges.0.set(0.0);
        channel.gauges.1.set(0.0);
    }
    for channel in &live {
        if let Some((events, bytes)) = channel.events.upgrade().zip(channel.bytes.upgrade()) {
            let queued_events = queued(channel.limits.max_events, &events);
            let queued_bytes = queued(channel.limits.max_bytes, &bytes);
            channel.gauges.0.set(queued_events as f64);
            channel.gauges.1.set(queued_bytes as f64);
        }
    }
    *watched = live;
}

impl BufferReceiver {
    /// The next batch, or `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        self.rx.recv().await.map(|envelope| envelope.batch)
    }

    /// Nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Drop for BufferReceiver {
    /// A batch still queued when its consumer is gone (it failed, or was aborted) was never
    /// delivered: say so, or dropping it would count as delivered and let its source
    /// checkpoint past it.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(envelope) = self.rx.try_recv() {
            envelope
                .batch
                .finalizers
                .update_status(BatchStatus::Rejected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use std::time::Duration;

    fn batch(n: usize, bytes: usize) -> EventBatch {
        EventBatch::new(
            (0..n).map(|_| Event::from_message("x".into())).collect(),
            bytes,
        )
    }

    #[tokio::test]
    async fn a_full_channel_blocks_until_the_receiver_takes_a_batch() {
        let limits = ChannelLimits {
            max_events: 10,
            max_bytes: 1000,
            when_full: WhenFull::Block,
        };
        let (tx, mut rx) = channel(limits);
        tx.send(batch(10, 10)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(batch(1, 1))).await;
        assert!(
            blocked.is_err(),
            "send must wait while 10 of 10 events are queued"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 10);
        tokio::time::timeout(Duration::from_secs(5), tx.send(batch(1, 1)))
            .await
            .expect("room after the receiver took a batch")
            .unwrap();
    }

    #[tokio::test]
    async fn the_byte_limit_blocks_too() {
        let limits = ChannelLimits {
            max_events: 1000,
            max_bytes: 100,
            when_full: WhenFull::Block,
        };
        let (tx, _rx) = channel(limits);
        tx.send(batch(1, 100)).await.unwrap();
        assert_eq!(tx.queued_bytes(), 100);
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(batch(1, 1))).await;
        assert!(blocked.is_err());
    }

    #[tokio::test]
    async fn drop_newest_drops_instead_of_waiting() {
        let limits = ChannelLimits {
            max_events: 2,
            max_bytes: 1000,
            when_full: WhenFull::DropNewest,
        };
        let (tx, mut rx) = channel(limits);
        tx.send(batch(2, 2)).await.unwrap();
        assert_eq!(tx.send(batch(1, 1)).await, Err(SendError::Dropped));
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn batches_left_queued_when_the_consumer_is_gone_count_as_rejected() {
        use crate::event::{BatchNotifier, Finalizers};
        let (tx, rx) = channel(ChannelLimits::default());
        let (notifier, status) = BatchNotifier::new();
        let mut queued = batch(3, 3);
        queued.finalizers = Finalizers::new(notifier);
        tx.send(queued).await.unwrap();
        drop(rx);
        assert_eq!(status.await.unwrap(), BatchStatus::Rejected);
        assert_eq!(tx.send(batch(1, 1)).await, Err(SendError::Closed));
    }

    #[tokio::test]
    async fn an_oversize_batch_passes_alone() {
        let limits = ChannelLimits {
            max_events: 5,
            max_bytes: 10,
            when_full: WhenFull::Block,
        };
        let (tx, mut rx) = channel(limits);
        tx.send(batch(50, 500)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 50);
    }
}
