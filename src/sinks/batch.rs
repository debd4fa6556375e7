//! Batching for sinks: collect events until `max_events`, `max_bytes` or `timeout_secs`
//! since the first one, then flush. Acknowledgement handles travel with the batch.

use crate::event::{Event, EventBatch, Finalizers};
use crate::observe::ComponentMetrics;
use crate::topology::BufferReceiver;
use serde::Deserialize;
use std::time::Duration;

/// When a sink sends what it has collected.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one request or write (default 1000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes in one request or write, measured as raw event size (default 1 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest time an event waits for its batch to fill, in seconds (default 1).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_max_events() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    1 << 20
}
fn default_timeout_secs() -> f64 {
    1.0
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

impl BatchConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.max_events == 0 || self.max_bytes == 0 {
            return Err("max_events and max_bytes must be greater than 0".into());
        }
        if !self.timeout_secs.is_finite() || self.timeout_secs < 0.0 {
            return Err("timeout_secs must be a number >= 0".into());
        }
        Ok(())
    }
}

/// What a batching sink does with a full batch.
pub trait Flush {
    /// Delivers the events, then marks `finalizers` delivered or rejected.
    fn flush(
        &mut self,
        events: Vec<Event>,
        byte_size: usize,
        finalizers: Finalizers,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Reads the sink's input, batching, until the input ends; flushes the remainder at the end.
/// One partition of [`drive_partitioned`].
pub async fn drive(
    input: BufferReceiver,
    config: BatchConfig,
    metrics: &ComponentMetrics,
    sink: &mut (impl Flush + Send),
) {
    drive_partitioned(input, config, metrics, &mut Unpartitioned(sink)).await;
}

/// A [`Flush`] sink as a single-partition [`PartitionedFlush`] one.
struct Unpartitioned<'a, S>(&'a mut S);

impl<S: Flush + Send> PartitionedFlush for Unpartitioned<'_, S> {
    type Pending = Vec<Event>;

    fn partition(&self, _event: &Event, _key: &mut String) -> Result<(), String> {
        Ok(())
    }

    fn start(&self) -> Vec<Event> {
        Vec::new()
    }

    fn add(&mut self, pending: &mut Vec<Event>, event: Event) {
        pending.push(event);
    }

    async fn flush(
        &mut self,
        _partition: String,
        pending: Vec<Event>,
        _events: usize,
        byte_size: usize,
        finalizers: Finalizers,
    ) {
        self.0.flush(pending, byte_size, finalizers).await;
    }

    async fn reject(&mut self, _events: Vec<Event>, _finalizers: Finalizers, _reason: String) {
        unreachable!("every event has the one partition")
    }
}

/// What a sink batching per partition (an object key prefix, a stream) does. Each partition
/// collects into the sink's own `Pending` form (say, an encoded object under way), so events
/// need not be kept whole until the flush.
pub trait PartitionedFlush {
    type Pending: Send;
    /// Writes the partition of an event into `key` (empty), or says why it has none (the
    /// event is then rejected). One buffer serves every event: no allocation per event.
    fn partition(&self, event: &Event, key: &mut String) -> Result<(), String>;
    /// An empty batch.
    fn start(&self) -> Self::Pending;
    /// Takes one event into a batch.
    fn add(&mut self, pending: &mut Self::Pending, event: Event);
    /// Delivers one partition's batch of `events` events (`byte_size` raw bytes), then marks
    /// `finalizers` delivered or rejected.
    fn flush(
        &mut self,
        partition: String,
        pending: Self::Pending,
        events: usize,
        byte_size: usize,
        finalizers: Finalizers,
    ) -> impl std::future::Future<Output = ()> + Send;
    /// Disposes of events without a partition (dead letter or rejection).
    fn reject(
        &mut self,
        events: Vec<Event>,
        finalizers: Finalizers,
        reason: String,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Most partitions collecting at once; one more flushes the oldest.
pub const MAX_OPEN_PARTITIONS: usize = 256;

struct Open<P> {
    pending: P,
    events: usize,
    bytes: usize,
    finalizers: Finalizers,
    deadline: tokio::time::Instant,
    /// The last incoming batch whose acknowledgement handles this partition holds.
    batch_seen: u64,
}

/// [`drive`] with one batch per partition: each fills and times out on its own.
pub async fn drive_partitioned<S: PartitionedFlush>(
    mut input: BufferReceiver,
    config: BatchConfig,
    metrics: &ComponentMetrics,
    sink: &mut S,
) {
    // Looked up once or twice per event: foldhash (seeded per process) where std's SipHash
    // cost ~200 instructions per lookup of a ~16-byte prefix (callgrind).
    let mut open: std::collections::HashMap<String, Open<S::Pending>, foldhash::fast::RandomState> =
        std::collections::HashMap::default();
    let mut batch_number = 0u64;
    let timeout = Duration::from_secs_f64(config.timeout_secs);
    let mut key = String::new();
    loop {
        let next_deadline = open.values().map(|o| o.deadline).min();
        let wait = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = input.recv() => match received {
                Some(batch) => {
                    metrics.received(batch.len(), batch.byte_size);
                    batch_number += 1;
                    let EventBatch { events, byte_size, finalizers } = batch;
                    let per_event = byte_size / events.len().max(1);
                    let mut unroutable = Vec::new();
                    let mut reason = String::new();
                    for event in events {
                        key.clear();
                        if let Err(why) = sink.partition(&event, &mut key) {
                            reason = why;
                            unroutable.push(event);
                            continue;
                        }
                        if !open.contains_key(key.as_str()) {
                            if open.len() >= MAX_OPEN_PARTITIONS {
                                if let Some(oldest) = open.iter().min_by_key(|(_, o)| o.deadline).map(|(k, _)| k.clone()) {
                                    let o = open.remove(&oldest).unwrap();
                                    sink.flush(oldest, o.pending, o.events, o.bytes, o.finalizers).await;
                                }
                            }
                            // The key is copied once per partition opened, not per event.
                            open.insert(key.clone(), Open {
                                pending: sink.start(),
                                events: 0,
                                bytes: 0,
                                finalizers: Finalizers::default(),
                                deadline: tokio::time::Instant::now() + timeout,
                                batch_seen: 0,
                            });
                        }
                        let partition = open.get_mut(key.as_str()).expect("opened above");
                        // Once per incoming batch and partition, not per event.
                        if partition.batch_seen != batch_number {
                            partition.batch_seen = batch_number;
                            partition.finalizers.merge(finalizers.clone());
                        }
                        sink.add(&mut partition.pending, event);
                        partition.events += 1;
                        partition.bytes += per_event;
                        if partition.events >= config.max_events || partition.bytes >= config.max_bytes {
                            let (key, o) = open.remove_entry(key.as_str()).unwrap();
                            sink.flush(key, o.pending, o.events, o.bytes, o.finalizers).await;
                        }
                    }
                    if !unroutable.is_empty() {
                        sink.reject(unroutable, finalizers, reason).await;
                    }
                }
                None => break,
            },
            _ = wait => {
                let now = tokio::time::Instant::now();
                let due: Vec<String> = open.iter().filter(|(_, o)| o.deadline <= now).map(|(k, _)| k.clone()).collect();
                for key in due {
                    let o = open.remove(&key).unwrap();
                    sink.flush(key, o.pending, o.events, o.bytes, o.finalizers).await;
                }
            }
        }
    }
    for (key, o) in open {
        sink.flush(key, o.pending, o.events, o.bytes, o.finalizers)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::channel::{channel, ChannelLimits};

    #[derive(Default)]
    struct Collect(Vec<usize>);

    impl Flush for Collect {
        async fn flush(&mut self, events: Vec<Event>, _bytes: usize, _f: Finalizers) {
            self.0.push(events.len());
        }
    }

    fn batch(n: usize) -> EventBatch {
        EventBatch::new(
            (0..n).map(|_| Event::from_message("x".into())).collect(),
            n * 10,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_count_and_on_timeout_and_at_the_end() {
        let (tx, rx) = channel(ChannelLimits::default());
        let config = BatchConfig {
            max_events: 4,
            max_bytes: 1 << 20,
            timeout_secs: 5.0,
        };
        let metrics = ComponentMetrics::new("t", "test");
        let task = tokio::spawn(async move {
            let mut sink = Collect::default();
            drive(rx, config, &metrics, &mut sink).await;
            sink.0
        });
        tx.send(batch(6)).await.unwrap(); // 4 flushed by count, 2 wait
        tokio::time::sleep(Duration::from_secs(6)).await; // timeout flushes the 2
        tx.send(batch(3)).await.unwrap();
        drop(tx); // end of input flushes the 3
        assert_eq!(task.await.unwrap(), vec![4, 2, 3]);
    }
}
