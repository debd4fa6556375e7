//! Fan-out: delivers one component output to every component that reads it. Each consumer gets
//! its own copy of the batch (sharing the acknowledgement handles), and the slowest consumer
//! sets the pace: that is the backpressure path from sinks back to sources.
//!
//! The list of consumers is shared with the running topology ([`ConsumerList`]) so a config
//! reload can rewire a component that keeps running: add and remove consumers, or *pause* one
//! that is being rebuilt. A send that finds a paused consumer waits until the rebuilt one takes
//! its place, so nothing is sent past it in the meantime.

use super::channel::{BufferSender, SendError};
use crate::event::{BatchStatus, EventBatch};
use crate::observe::ComponentMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// One consumer of an output.
#[derive(Clone)]
pub struct Target {
    consumer: String,
    /// `None` while the consumer is being rebuilt (paused).
    live: Option<Live>,
}

#[derive(Clone)]
struct Live {
    tx: BufferSender,
    metrics: ComponentMetrics,
}

impl Target {
    /// A running consumer: sends go into `tx`.
    pub fn new(consumer: &str, tx: BufferSender, metrics: ComponentMetrics) -> Self {
        Target {
            consumer: consumer.to_string(),
            live: Some(Live { tx, metrics }),
        }
    }

    /// A consumer being rebuilt: sends wait until it is replaced by a running one.
    pub fn paused(consumer: &str) -> Self {
        Target {
            consumer: consumer.to_string(),
            live: None,
        }
    }
}

/// The consumers of one output, shared by its producer's [`Fanout`] and the topology.
pub struct ConsumerList {
    targets: watch::Sender<Arc<Vec<Target>>>,
    /// The producer has ended: the list stays empty so no channel is held open by it.
    closed: AtomicBool,
}

impl Default for ConsumerList {
    fn default() -> Self {
        ConsumerList {
            targets: watch::Sender::new(Arc::new(Vec::new())),
            closed: AtomicBool::new(false),
        }
    }
}

impl ConsumerList {
    /// Replaces the consumers (ignored once the producer has ended); a send in progress
    /// finishes with the ones it started with.
    pub fn set(&self, new: Vec<Target>) {
        self.targets.send_if_modified(|targets| {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            *targets = Arc::new(new);
            true
        });
    }

    /// The consumer ids, `(id, paused)`, in order.
    pub fn consumers(&self) -> Vec<(String, bool)> {
        self.targets
            .borrow()
            .iter()
            .map(|t| (t.consumer.clone(), t.live.is_none()))
            .collect()
    }

    fn push(&self, target: Target) {
        self.targets
            .send_modify(|targets| Arc::make_mut(targets).push(target));
    }

    /// Forgets a consumer whose channel closed (compared by channel, not by id: a rebuilt
    /// consumer with the same id may already have taken its place).
    fn forget(&self, closed: &BufferSender) {
        self.targets.send_modify(|targets| {
            Arc::make_mut(targets)
                .retain(|t| !t.live.as_ref().is_some_and(|l| l.tx.same_channel(closed)))
        });
    }

    /// The producer ended: drop every consumer's sender, for good.
    fn close(&self) {
        self.targets.send_modify(|targets| {
            self.closed.store(true, Ordering::Release);
            *targets = Arc::new(Vec::new());
        });
    }
}

/// The consumers of one output, as its producer sees them.
pub struct Fanout {
    producer: ComponentMetrics,
    list: Arc<ConsumerList>,
    changes: watch::Receiver<Arc<Vec<Target>>>,
}

/// Every consumer of an output has stopped: the producer may as well stop too.
#[derive(Debug, thiserror::Error)]
#[error("every downstream component has stopped")]
pub struct Closed;

impl Fanout {
    /// A fan-out with no consumers yet, for [`Fanout::add`].
    pub fn new(producer: ComponentMetrics) -> Self {
        Self::shared(producer, Arc::new(ConsumerList::default()))
    }

    /// A fan-out over a list the topology keeps and may rewire.
    pub fn shared(producer: ComponentMetrics, list: Arc<ConsumerList>) -> Self {
        let changes = list.targets.subscribe();
        Fanout {
            producer,
            list,
            changes,
        }
    }

    pub fn add(&mut self, consumer: &str, tx: BufferSender, consumer_metrics: ComponentMetrics) {
        self.list.push(Target::new(consumer, tx, consumer_metrics));
    }

    pub fn is_connected(&self) -> bool {
        !self.list.targets.borrow().is_empty()
    }

    /// The consumers to send to now, waiting while one of them is paused for a reload.
    async fn current_targets(&mut self) -> Arc<Vec<Target>> {
        loop {
            let targets = self.changes.borrow_and_update().clone();
            if targets.iter().all(|t| t.live.is_some()) {
                return targets;
            }
            if self.changes.changed().await.is_err() {
                // Unreachable while `self.list` holds the sender; never spin regardless.
                return std::future::pending().await;
            }
        }
    }

    /// Sends a batch to every consumer, waiting while any of them is full. Cancel-safe and
    /// all-or-nothing: room is reserved in every consumer before any copy is enqueued, so a
    /// caller that gives up (http_server's accept timeout) leaves nothing half-sent. Counts the
    /// batch as sent by the producer. An output nobody reads discards the batch, counted as
    /// `unconnected_output`.
    ///
    /// A rewire while this waits for room starts it over with the new consumers: the send lets
    /// go of the old ones at once, so a consumer being replaced can drain even while this
    /// producer waits on another, full one (which may itself wait on the replacement).
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        if batch.is_empty() {
            return Ok(());
        }
        crate::observe::tap::offer(self.producer.id(), &batch.events);
        let (targets, reservations) = loop {
            let targets = self.current_targets().await;
            if targets.is_empty() {
                self.producer.discarded("unconnected_output", batch.len());
                return Ok(());
            }
            let mut reservations = Vec::with_capacity(targets.len());
            let reserve_all = async {
                // Every target is live here (current_targets waited out the paused ones).
                for live in targets.iter().filter_map(|t| t.live.as_ref()) {
                    reservations.push(live.tx.reserve(&batch).await);
                }
            };
            tokio::select! {
                biased;
                _ = reserve_all => break (targets, reservations),
                _ = self.changes.changed() => continue,
            }
        };
        let live = || {
            targets
                .iter()
                .filter_map(|t| Some((t.consumer.as_str(), t.live.as_ref()?)))
        };
        self.producer.sent(batch.len(), batch.byte_size);
        let mut batch = Some(batch);
        let last = reservations.len() - 1;
        let mut open = reservations.len();
        for (index, ((consumer, target), reservation)) in live().zip(reservations).enumerate() {
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
                Err(SendError::Dropped) => target.metrics.discarded("buffer_full", count),
                Err(SendError::Closed) => {
                    tracing::warn!(%consumer, component_id = self.producer.id(), "downstream component stopped; no longer sending to it");
                    self.list.forget(&target.tx);
                    open -= 1;
                }
            }
        }
        if open == 0 {
            Err(Closed)
        } else {
            Ok(())
        }
    }
}

impl Drop for Fanout {
    /// The producer is gone: let go of its consumers' channels so they can close and drain.
    fn drop(&mut self) {
        self.list.close();
    }
}

#[cfg(test)]
mod tests {
    //! In-process: real bounded channels, no components.
    use super::*;
    use crate::event::Event;
    use crate::topology::channel::{channel, ChannelLimits};
    use std::time::Duration;

    fn batch(n: usize) -> EventBatch {
        EventBatch::new(
            (0..n)
                .map(|i| Event::from_message(format!("{i}").into()))
                .collect(),
            n,
        )
    }

    fn metrics(id: &str) -> ComponentMetrics {
        ComponentMetrics::new(id, "test")
    }

    #[tokio::test]
    async fn a_send_waits_while_a_consumer_is_paused_and_goes_to_its_replacement() {
        let list = Arc::new(ConsumerList::default());
        let (old_tx, mut old_rx) = channel(ChannelLimits::default());
        list.set(vec![Target::new("sink", old_tx, metrics("sink"))]);
        let mut fanout = Fanout::shared(metrics("source"), list.clone());
        fanout.send(batch(2)).await.unwrap();

        list.set(vec![Target::paused("sink")]);
        // The old consumer's channel is now held by nobody: it drains and ends.
        assert_eq!(old_rx.recv().await.unwrap().len(), 2);
        assert!(old_rx.recv().await.is_none(), "the old channel closed");

        let send = tokio::spawn(async move {
            fanout.send(batch(3)).await.unwrap();
            fanout
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !send.is_finished(),
            "the send waits for the paused consumer"
        );

        let (new_tx, mut new_rx) = channel(ChannelLimits::default());
        list.set(vec![Target::new("sink", new_tx, metrics("sink"))]);
        let fanout = tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("the send resumes once the consumer is replaced")
            .unwrap();
        assert_eq!(new_rx.recv().await.unwrap().len(), 3);

        // The producer ending lets go of its consumers for good.
        drop(fanout);
        list.set(vec![Target::paused("sink")]);
        assert!(list.consumers().is_empty(), "a closed list stays empty");
        assert!(new_rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_send_waiting_on_a_full_consumer_lets_go_of_a_replaced_one() {
        let one = ChannelLimits {
            max_events: 1,
            ..ChannelLimits::default()
        };
        let (full_tx, mut full_rx) = channel(one);
        full_tx.send(batch(1)).await.unwrap();
        let (old_tx, mut old_rx) = channel(ChannelLimits::default());
        let list = Arc::new(ConsumerList::default());
        list.set(vec![
            Target::new("full", full_tx.clone(), metrics("full")),
            Target::new("replaced", old_tx, metrics("replaced")),
        ]);
        let mut fanout = Fanout::shared(metrics("source"), list.clone());
        let send = tokio::spawn(async move { fanout.send(batch(1)).await });
        // On this single-threaded runtime, yielding runs the send until it waits for room.
        tokio::task::yield_now().await;
        assert!(!send.is_finished());

        // The rewire pauses "replaced" while the send still waits for room in "full": the
        // old "replaced" channel must close now, not once "full" has room.
        list.set(vec![
            Target::new("full", full_tx.clone(), metrics("full")),
            Target::paused("replaced"),
        ]);
        let closed = tokio::time::timeout(Duration::from_secs(5), old_rx.recv()).await;
        assert!(
            matches!(closed, Ok(None)),
            "the replaced consumer's channel closed with nothing in it"
        );

        // Room in "full" alone does not finish the send: it waits for the replacement.
        assert_eq!(full_rx.recv().await.unwrap().len(), 1);
        let (new_tx, mut new_rx) = channel(ChannelLimits::default());
        list.set(vec![
            Target::new("full", full_tx, metrics("full")),
            Target::new("replaced", new_tx, metrics("replaced")),
        ]);
        tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("the send finishes once the replacement is in place")
            .unwrap()
            .unwrap();
        assert_eq!(full_rx.recv().await.unwrap().len(), 1);
        assert_eq!(new_rx.recv().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn every_consumer_gets_a_copy() {
        let (a_tx, mut a_rx) = channel(ChannelLimits::default());
        let (b_tx, mut b_rx) = channel(ChannelLimits::default());
        let mut fanout = Fanout::new(metrics("source"));
        fanout.add("a", a_tx, metrics("a"));
        fanout.add("b", b_tx, metrics("b"));
        fanout.send(batch(4)).await.unwrap();
        drop(fanout);
        for rx in [&mut a_rx, &mut b_rx] {
            assert_eq!(rx.recv().await.unwrap().len(), 4);
            assert!(rx.recv().await.is_none());
        }
    }
}
