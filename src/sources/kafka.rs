//! The `kafka` source: a consumer-group member that turns messages into events and commits
//! offsets only for events acknowledged end to end.
//!
//! Offsets go through librdkafka's offset store: auto-commit is on, but an offset is stored
//! only when its message (and every earlier one of its partition) is acknowledged, so
//! periodic, rebalance-time and close-time commits never pass an undelivered event. On revoke
//! the stored offsets are committed synchronously before the partitions go, and messages of
//! revoked partitions still waiting in this process are not handed out; partitions assigned
//! later resume from their committed offsets. When the pipeline is full the consumer stops
//! polling, and librdkafka's fetch queue (bounded by `queued.max.messages.kbytes`, 16 MiB by
//! default here) stops fetching: backpressure without unbounded buffering.

use super::acks::OrderedAcks;
use super::SourceContext;
use crate::codec::decoding::{decode_frame, OnDecodeError};
use crate::codec::{Decoder, DecodingConfig};
use crate::event::{BatchStatus, Event, EventBatch, ObjectMap, Value};
use crate::kafka::{KafkaConnection, KafkaSasl, KafkaTls};
use crate::topology::{BuildError, ComponentError, RunFuture};
use bytes::Bytes;
use futures::StreamExt;
use indexmap::IndexMap;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientContext;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Where a new consumer group starts in a partition without a committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest message still in the topic.
    Earliest,
    /// Only messages produced from now on (default, as in Vector).
    #[default]
    Latest,
}

/// Consume from Kafka topics as a member of a consumer group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Topic names; a name starting with `^` is a regular expression (`^logs-.*`).
    pub topics: Vec<String>,
    /// The consumer group: instances with the same group share the partitions.
    pub group_id: String,
    /// `earliest` or `latest` (default): where to start without a committed offset.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// How long the group waits for a silent member before reassigning its partitions (ms,
    /// default 10000).
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    /// How often acknowledged offsets are committed (ms, default 5000); also on revoke and
    /// shutdown.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// Most bytes fetched per partition per request (default 1 MiB).
    #[serde(default = "default_fetch_bytes")]
    pub fetch_max_partition_bytes: u64,
    /// Longest a broker may hold a fetch request waiting for data (ms, default 100, as in
    /// Vector; librdkafka's own default is 500). Brokers that wait out the full time even when
    /// data is ready (tansu does) cap consumption at one fetch per wait.
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_max_ms: u64,
    /// Field for the message key (default `message_key`; empty to leave out).
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Field for the topic (default `topic`; empty to leave out).
    #[serde(default = "default_topic_key")]
    pub topic_key: String,
    /// Field for the partition (default `partition`; empty to leave out).
    #[serde(default = "default_partition_key")]
    pub partition_key: String,
    /// Field for the offset (default `offset`; empty to leave out).
    #[serde(default = "default_offset_key")]
    pub offset_key: String,
    /// Field for the headers, as an object (default `headers`; empty to leave out).
    #[serde(default = "default_headers_key")]
    pub headers_key: String,
    /// How each message payload becomes events (default: bytes into `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// TLS to the brokers.
    #[serde(default)]
    pub tls: Option<KafkaTls>,
    /// SASL authentication.
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    /// Any other librdkafka consumer setting, passed as is.
    #[serde(default)]
    pub librdkafka_options: IndexMap<String, String>,
}

fn default_session_timeout() -> u64 {
    10_000
}
fn default_commit_interval() -> u64 {
    5_000
}
fn default_fetch_bytes() -> u64 {
    1 << 20
}
fn default_fetch_wait() -> u64 {
    100
}
fn default_key_field() -> String {
    "message_key".into()
}
fn default_topic_key() -> String {
    "topic".into()
}
fn default_partition_key() -> String {
    "partition".into()
}
fn default_offset_key() -> String {
    "offset".into()
}
fn default_headers_key() -> String {
    "headers".into()
}

const BATCH: usize = 1000;

/// Partitions this member owns; shared with the rebalance callbacks.
#[derive(Default)]
struct Ownership {
    assigned: HashSet<(String, i32)>,
}

struct GroupContext {
    id: String,
    ownership: Arc<Mutex<Ownership>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            {
                let mut ownership = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
                for element in partitions.elements() {
                    ownership
                        .assigned
                        .remove(&(element.topic().to_string(), element.partition()));
                }
            }
            // Commit what was acknowledged before the partitions move to another member.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(component_id = %self.id, partitions = partitions.count(), "partitions revoked; acknowledged offsets committed")
                }
                Err(error) => {
                    tracing::debug!(component_id = %self.id, %error, "nothing to commit on revoke")
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let mut ownership = self.ownership.lock().unwrap_or_else(|p| p.into_inner());
            for element in partitions.elements() {
                ownership
                    .assigned
                    .insert((element.topic().to_string(), element.partition()));
            }
            tracing::info!(component_id = %self.id, partitions = partitions.count(), "partitions assigned");
        }
    }
}

impl KafkaSourceConfig {
    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if self.topics.is_empty() {
            return Err(BuildError::new("topics", "needs at least one topic"));
        }
        if self.group_id.trim().is_empty() {
            return Err(BuildError::new("group_id", "must not be empty"));
        }
        if self.decoding.on_error == Some(OnDecodeError::Reject) {
            return Err(BuildError::new(
                "decoding",
                "`on_error: reject` is only for http_server; use drop or pass_raw",
            ));
        }
        let connection = KafkaConnection {
            bootstrap_servers: &self.bootstrap_servers,
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
        };
        let mut client = connection.client_config()?;
        client
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval_ms.to_string(),
            )
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "max.partition.fetch.bytes",
                self.fetch_max_partition_bytes.to_string(),
            )
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("queued.max.messages.kbytes", "16384")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        for (key, value) in &self.librdkafka_options {
            client.set(key, value);
        }
        let ownership = Arc::new(Mutex::new(Ownership::default()));
        let context = GroupContext {
            id: cx.id.clone(),
            ownership: ownership.clone(),
        };
        let consumer: StreamConsumer<GroupContext> =
            client.create_with_context(context).map_err(|e| {
                BuildError::new(
                    "bootstrap_servers",
                    format!("cannot create the Kafka consumer: {e}"),
                )
            })?;
        let config = self.clone();
        Ok(Box::pin(consume(config, consumer, ownership, cx)))
    }
}

/// The last offset of each partition in a batch.
type Positions = Vec<(String, i32, i64)>;

async fn consume(
    config: KafkaSourceConfig,
    consumer: StreamConsumer<GroupContext>,
    ownership: Arc<Mutex<Ownership>>,
    mut cx: SourceContext,
) -> Result<(), ComponentError> {
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
    let decoder = Decoder::new(&config.decoding);
    let on_error = config.decoding.on_error.unwrap_or(OnDecodeError::Drop);
    let mut acks: OrderedAcks<Positions> = OrderedAcks::new(cx.acknowledgements);
    let mut stream = consumer.stream().ready_chunks(BATCH);
    loop {
        tokio::select! {
            _ = cx.shutdown.stop.cancelled() => break,
            acked = acks.next(), if acks.pending() > 0 => {
                if let Some((positions, status)) = acked {
                    store(&consumer, &ownership, positions, status, &cx);
                }
            }
            messages = stream.next() => {
                let Some(messages) = messages else { break };
                let owned = ownership.lock().unwrap_or_else(|p| p.into_inner()).assigned.clone();
                let mut events = Vec::with_capacity(messages.len());
                let mut bytes = 0;
                let mut last: HashMap<(String, i32), i64> = HashMap::new();
                for message in messages {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            cx.metrics.error("kafka_read_failed");
                            tracing::warn!(component_id = %cx.id, %error, "Kafka consumer error");
                            continue;
                        }
                    };
                    let partition = (message.topic().to_string(), message.partition());
                    if !owned.contains(&partition) {
                        continue; // revoked while waiting here: its new owner reads it
                    }
                    last.insert(partition, message.offset());
                    let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                    bytes += payload.len();
                    let first = events.len();
                    decode_frame(&decoder, on_error, payload, &mut events, &cx.metrics);
                    for event in &mut events[first..] {
                        add_metadata(&config, event, &message);
                    }
                }
                cx.metrics.received(events.len(), bytes);
                let positions: Positions = last.into_iter().map(|((t, p), o)| (t, p, o)).collect();
                let mut batch = EventBatch::new(events, bytes);
                acks.attach(&mut batch, positions);
                if cx.out.send(batch).await.is_err() {
                    break;
                }
                for (positions, status) in acks.ready() {
                    store(&consumer, &ownership, positions, status, &cx);
                }
            }
        }
    }
    drop(stream);
    drop(cx.out);
    loop {
        tokio::select! {
            next = acks.next() => match next {
                Some((positions, status)) => store_quiet(&consumer, &ownership, positions, status),
                None => break,
            },
            _ = cx.shutdown.force.cancelled() => break,
        }
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(component_id = %cx.id, %error, "final commit");
    }
    Ok(())
}

fn store(
    consumer: &StreamConsumer<GroupContext>,
    ownership: &Mutex<Ownership>,
    positions: Positions,
    status: BatchStatus,
    cx: &SourceContext,
) {
    if status == BatchStatus::Rejected {
        // Never store past a rejected event: a restart or the next owner reads it again.
        cx.metrics.error("delivery_rejected");
        tracing::error!(component_id = %cx.id, "a sink rejected Kafka messages; their offsets are not committed");
        return;
    }
    store_quiet(consumer, ownership, positions, status);
}

fn store_quiet(
    consumer: &StreamConsumer<GroupContext>,
    ownership: &Mutex<Ownership>,
    positions: Positions,
    status: BatchStatus,
) {
    if status == BatchStatus::Rejected {
        return;
    }
    let owned = ownership
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .assigned
        .clone();
    for (topic, partition, offset) in positions {
        if owned.contains(&(topic.clone(), partition)) {
            // Stores offset + 1: the next message to read.
            let _ = consumer.store_offset(&topic, partition, offset);
        }
    }
}

fn add_metadata(config: &KafkaSourceConfig, event: &mut Event, message: &impl Message) {
    if !config.key_field.is_empty() {
        let key = message
            .key()
            .map_or(Value::Null, |k| Value::Bytes(Bytes::copy_from_slice(k)));
        event.insert(&config.key_field, key);
    }
    if !config.topic_key.is_empty() {
        event.insert(&config.topic_key, Value::from(message.topic()));
    }
    if !config.partition_key.is_empty() {
        event.insert(
            &config.partition_key,
            Value::Integer(i64::from(message.partition())),
        );
    }
    if !config.offset_key.is_empty() {
        event.insert(&config.offset_key, Value::Integer(message.offset()));
    }
    if !config.headers_key.is_empty() {
        let mut headers = ObjectMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = header
                    .value
                    .map_or(Value::Null, |v| Value::Bytes(Bytes::copy_from_slice(v)));
                headers.insert(header.key.into(), value);
            }
        }
        event.insert(&config.headers_key, Value::Object(headers));
    }
}
