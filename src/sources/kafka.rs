//! The `kafka` source: a consumer-group member that turns messages into events and commits
//! offsets only for events acknowledged end to end.
//!
//! Offsets go through librdkafka's offset store: auto-commit is on, but an offset is stored
//! only when its message (and every earlier one of its partition) is acknowledged, so
//! periodic, rebalance-time and close-time commits never pass an undelivered event. On revoke
//! librdkafka commits the stored offsets of the revoked partitions before they go.
//!
//! What keeps those offsets right:
//! - **Fencing.** Each assignment of a partition gets a new epoch, carried by the batches read
//!   under it. An acknowledgement from an earlier epoch (the partition was revoked meanwhile,
//!   maybe reassigned) never stores an offset; messages of a revoked partition still in this
//!   process are not handed out.
//! - **Freezing.** After a rejected batch, nothing later of that partition is stored until it
//!   is reassigned or the process restarts, so a commit never passes the rejected messages.
//! - **Gaps are seen.** The first message after an assignment is checked against the
//!   committed offset it should resume at, and every later one against its predecessor; a
//!   jump is logged (rate-limited) and counted in `kafka_offset_gaps_total`. Compacted topics
//!   and transaction markers make gaps too, so it is a warning. (tansu 0.6 answers a fetch
//!   inside a record batch with the *next* batch, which is how such a jump loses messages.)
//! - **Backpressure without leaving the group.** When the pipeline is full the assigned
//!   partitions are paused (librdkafka stops fetching) and the consumer is still polled at least
//!   every second — rebalance callbacks run and `max.poll.interval.ms` never passes — with
//!   messages already fetched held for the next batch; the partitions resume once there is
//!   room. A sink down for longer than the poll interval causes no rebalance.
//! - **Lag.** librdkafka's statistics (`statistics_interval_ms`) set `kafka_consumer_lag` and
//!   `kafka_committed_offset` per topic and partition.

use super::acks::OrderedAcks;
use super::SourceContext;
use crate::codec::decoding::{decode_frame, OnDecodeError};
use crate::codec::{Decoder, DecodingConfig};
use crate::event::{BatchStatus, Event, EventBatch, ObjectMap, SourcePosition, Value};
use crate::exactly_once::{claim_blocking, Partition, PositionStore};
use crate::kafka::{KafkaConnection, KafkaSasl, KafkaTls};
use crate::topology::{BuildError, ComponentError, RunFuture};
use bytes::Bytes;
use futures::StreamExt;
use indexmap::IndexMap;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// How the group's partitions are divided among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AssignmentStrategy {
    /// Contiguous ranges of each topic's partitions (eager: a rebalance revokes everything).
    #[serde(rename = "range")]
    Range,
    /// Partitions dealt out in turn (eager).
    #[serde(rename = "roundrobin")]
    RoundRobin,
    /// Incremental: a rebalance moves only the partitions that change owner; the others keep
    /// being read.
    #[serde(rename = "cooperative-sticky", alias = "cooperative_sticky")]
    CooperativeSticky,
}

impl AssignmentStrategy {
    fn librdkafka_name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }
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
    /// `range`, `roundrobin` or `cooperative-sticky` (default: librdkafka's `range,roundrobin`).
    /// Every member of a group must use the same kind (eager or cooperative).
    #[serde(default)]
    pub assignment_strategy: Option<AssignmentStrategy>,
    /// How often partition lag and committed offsets are refreshed as gauges (ms, default
    /// 5000; 0 turns them off).
    #[serde(default = "default_statistics_interval")]
    pub statistics_interval_ms: u64,
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
fn default_statistics_interval() -> u64 {
    5_000
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
/// How long a send may wait for room before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// At most one gap warning per partition in this interval (all are counted).
const GAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What this member owns, shared with the rebalance callbacks.
#[derive(Default)]
struct Ownership {
    /// Assigned partitions and the epoch of their current assignment.
    assigned: HashMap<Partition, u64>,
    last_epoch: u64,
    /// Partitions with a rejected batch in their current assignment: nothing more is stored.
    frozen: HashSet<Partition>,
    /// The committed offset a newly assigned partition resumes at, until its first message.
    resume_at: HashMap<Partition, i64>,
    /// The pipeline is full: partitions assigned now are paused at once.
    paused: bool,
}

struct GroupContext {
    id: String,
    ownership: Arc<Mutex<Ownership>>,
    /// Exactly-once: the sink's position store, where assigned partitions are claimed.
    exactly_once: Option<Claims>,
}

/// What claiming partitions in an exactly-once sink's position store needs.
struct Claims {
    store: Arc<dyn PositionStore>,
    /// Unique to this process: with the assignment epoch it makes each claim's token.
    process: String,
    /// Claims retry until the store answers; shutdown ends the wait.
    stop: CancellationToken,
}

/// The token of one assignment's claim.
fn claim_token(process: &str, epoch: u64) -> Arc<str> {
    Arc::from(format!("{process}/{epoch}"))
}

impl GroupContext {
    fn ownership(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.ownership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records newly assigned partitions under a new epoch, before librdkafka assigns them.
    /// Exactly-once: first claims them in the sink's position store and sets each one's start
    /// to the offset the sink committed (in `partitions` itself, which librdkafka then
    /// assigns); a partition it cannot claim (shutdown came first) is not owned, and nothing
    /// read from it goes anywhere.
    fn take_over(&self, partitions: &TopicPartitionList) {
        let epoch = {
            let mut ownership = self.ownership();
            ownership.last_epoch += 1;
            ownership.last_epoch
        };
        let mut starts: HashMap<Partition, i64> = HashMap::new();
        if let Some(claims) = &self.exactly_once {
            let wanted: Vec<Partition> = partitions
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let token = claim_token(&claims.process, epoch);
            match claim_blocking(&*claims.store, &wanted, &token, &claims.stop, &self.id) {
                Some(claimed) => starts = claimed,
                None => {
                    tracing::warn!(component_id = %self.id, "shutting down before the sink's position store answered; the assigned partitions are not read");
                    return;
                }
            }
            for mut element in partitions.elements() {
                let partition = (element.topic().to_string(), element.partition());
                if let Some(next) = starts.get(&partition) {
                    let _ = element.set_offset(Offset::Offset(*next));
                }
            }
            tracing::info!(component_id = %self.id, claim = %token, starts = ?starts, "partitions claimed in the sink's position store; reading resumes where its commits ended");
        }
        let mut ownership = self.ownership();
        for element in partitions.elements() {
            let partition = (element.topic().to_string(), element.partition());
            ownership.assigned.insert(partition.clone(), epoch);
            ownership.frozen.remove(&partition);
            ownership.resume_at.remove(&partition);
            if let Some(next) = starts.get(&partition) {
                ownership.resume_at.insert(partition, *next);
            }
        }
    }
}

fn lag_labels(id: &str, topic: &str, partition: i32) -> [(&'static str, String); 3] {
    [
        ("component_id", id.to_string()),
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

impl ClientContext for GroupContext {
    /// Lag and committed offset of the partitions this member owns, as gauges. Read from the
    /// raw statistics JSON: only these two fields are needed, so nothing depends on the rest
    /// of librdkafka's statistics schema. librdkafka reports lag as unknown (-1) until the
    /// group has committed an offset; no gauge is set then.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let owned: HashSet<Partition> = self.ownership().assigned.keys().cloned().collect();
        let Some(topics) = statistics["topics"].as_object() else {
            return;
        };
        for (topic, stats) in topics {
            let Some(partitions) = stats["partitions"].as_object() else {
                continue;
            };
            for (partition, stats) in partitions {
                let Ok(partition) = partition.parse::<i32>() else {
                    continue;
                };
                if !owned.contains(&(topic.clone(), partition)) {
                    continue;
                }
                let labels = lag_labels(&self.id, topic, partition);
                if let Some(lag) = stats["consumer_lag"].as_i64().filter(|l| *l >= 0) {
                    metrics::gauge!("kafka_consumer_lag", &labels).set(lag as f64);
                }
                if let Some(offset) = stats["committed_offset"].as_i64().filter(|o| *o >= 0) {
                    metrics::gauge!("kafka_committed_offset", &labels).set(offset as f64);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.take_over(partitions);
        }
        if let Rebalance::Revoke(partitions) = rebalance {
            {
                let mut ownership = self.ownership();
                for element in partitions.elements() {
                    let partition = (element.topic().to_string(), element.partition());
                    ownership.assigned.remove(&partition);
                    ownership.frozen.remove(&partition);
                    ownership.resume_at.remove(&partition);
                    // Another member reports it now.
                    let labels = lag_labels(&self.id, &partition.0, partition.1);
                    metrics::gauge!("kafka_consumer_lag", &labels).set(0.0);
                }
            }
            // No commit here: with auto-commit on, librdkafka commits the stored offsets of
            // removed partitions itself when it unassigns them, and waits for that commit
            // before it takes a new assignment. A synchronous commit in this callback waits
            // without a bound, and a coordinator that holds it while the group rebalances
            // would hold this member too.
            tracing::info!(component_id = %self.id, partitions = partitions.count(), revoked = %names(partitions), "partitions revoked; their acknowledged offsets are committed as they go");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            // Where each partition resumes (unless a claim said), to see whether the broker
            // skips ahead.
            let committed = consumer
                .committed_offsets((*partitions).clone(), Duration::from_secs(5))
                .ok();
            let paused = {
                let mut ownership = self.ownership();
                for element in committed.iter().flat_map(|c| c.elements()) {
                    if let Offset::Offset(offset) = element.offset() {
                        let partition = (element.topic().to_string(), element.partition());
                        ownership.resume_at.entry(partition).or_insert(offset);
                    }
                }
                ownership.paused
            };
            if paused {
                // The pipeline is still full: these wait with the others.
                let _ = consumer.pause(partitions);
            }
            tracing::info!(component_id = %self.id, partitions = partitions.count(), assigned = %names(partitions), "partitions assigned");
        }
    }
}

/// `topic/partition` names of a list, for the log.
fn names(partitions: &TopicPartitionList) -> String {
    let mut names: Vec<String> = partitions
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    names.sort();
    names.join(",")
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
                "statistics.interval.ms",
                self.statistics_interval_ms.to_string(),
            )
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        if let Some(strategy) = self.assignment_strategy {
            client.set("partition.assignment.strategy", strategy.librdkafka_name());
        }
        for (key, value) in &self.librdkafka_options {
            client.set(key, value);
        }
        let ownership = Arc::new(Mutex::new(Ownership::default()));
        let context = GroupContext {
            id: cx.id.clone(),
            ownership: ownership.clone(),
            exactly_once: cx.position_store.clone().map(|store| Claims {
                store,
                process: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
                stop: cx.shutdown.stop.clone(),
            }),
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

/// The last offset of each partition in a batch, with the epoch it was read under.
type Positions = Vec<(String, i32, i64, u64)>;

/// Messages of one chunk on their way to becoming a batch.
#[derive(Default)]
struct Part {
    events: Vec<Event>,
    bytes: usize,
    /// Per partition: first and last offset, and the epoch they were read under.
    offsets: HashMap<Partition, (i64, i64, u64)>,
}

type Chunk<'a> = Vec<rdkafka::error::KafkaResult<BorrowedMessage<'a>>>;

/// Offsets seen so far, to notice jumps.
#[derive(Default)]
struct GapWatch {
    /// The offset expected next per partition, with the epoch it belongs to.
    next: HashMap<Partition, (u64, i64)>,
    last_logged: HashMap<Partition, Instant>,
}

impl GapWatch {
    fn check(
        &mut self,
        partition: &Partition,
        epoch: u64,
        offset: i64,
        ownership: &Mutex<Ownership>,
        cx: &SourceContext,
    ) {
        // Updated in place: no key allocation per message once a partition is known.
        let expected = match self.next.get_mut(partition) {
            Some((seen_epoch, next)) if *seen_epoch == epoch => std::mem::replace(next, offset + 1),
            seen => {
                // First message of this assignment: it should be the committed offset.
                let resume = ownership
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .resume_at
                    .remove(partition);
                match seen {
                    Some(entry) => *entry = (epoch, offset + 1),
                    None => {
                        self.next.insert(partition.clone(), (epoch, offset + 1));
                    }
                }
                let Some(resume) = resume else { return };
                resume
            }
        };
        if offset <= expected {
            return;
        }
        metrics::counter!("kafka_offset_gaps_total", "component_id" => cx.id.clone(),
            "topic" => partition.0.clone(), "partition" => partition.1.to_string())
        .increment(1);
        let now = Instant::now();
        let due = self
            .last_logged
            .get(partition)
            .is_none_or(|at| now.duration_since(*at) >= GAP_LOG_EVERY);
        if due {
            self.last_logged.insert(partition.clone(), now);
            tracing::warn!(component_id = %cx.id, topic = %partition.0, partition = partition.1, expected, received = offset, skipped = offset - expected, "offsets jumped: the broker answered past the position asked for (normal for compacted topics and transaction markers; otherwise messages were skipped)");
        }
    }
}

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
    let decoder = Decoder::new(&config.decoding, cx.values);
    let on_error = config.decoding.on_error.unwrap_or(OnDecodeError::Drop);
    let mut acks: OrderedAcks<Positions> = OrderedAcks::new(cx.acknowledgements);
    let mut stream = consumer.stream().ready_chunks(BATCH);
    let mut held: VecDeque<Chunk<'_>> = VecDeque::new();
    let mut gaps = GapWatch::default();
    // Exactly-once: this process's part of the claim tokens.
    let claims_process: Option<String> = consumer
        .context()
        .exactly_once
        .as_ref()
        .map(|c| c.process.clone());
    loop {
        let messages = match held.pop_front() {
            Some(chunk) => chunk,
            None => tokio::select! {
                _ = cx.shutdown.stop.cancelled() => break,
                acked = acks.next(), if acks.pending() > 0 => {
                    if let Some((positions, status)) = acked {
                        store(&consumer, &ownership, positions, status, Some(&cx));
                    }
                    continue;
                }
                messages = stream.next() => match messages {
                    Some(messages) => messages,
                    None => break,
                },
            },
        };
        let owned = ownership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assigned
            .clone();
        // One batch per chunk; with exactly-once one per partition, so that the sink can
        // judge each batch by its partition's claim.
        let mut parts: Vec<Part> = Vec::new();
        let count = messages.len();
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
            let Some(epoch) = owned.get(&partition).copied() else {
                continue; // revoked while waiting here: its new owner reads it
            };
            let offset = message.offset();
            gaps.check(&partition, epoch, offset, &ownership, &cx);
            let slot = match claims_process {
                Some(_) => parts
                    .iter()
                    .position(|p| p.offsets.contains_key(&partition)),
                None => (!parts.is_empty()).then_some(0),
            };
            let part = match slot {
                Some(slot) => &mut parts[slot],
                None => {
                    parts.push(Part {
                        events: Vec::with_capacity(if claims_process.is_some() {
                            0
                        } else {
                            count
                        }),
                        ..Part::default()
                    });
                    parts.last_mut().expect("just pushed")
                }
            };
            part.offsets
                .entry(partition)
                .and_modify(|(_, last, _)| *last = offset)
                .or_insert((offset, offset, epoch));
            let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
            part.bytes += payload.len();
            let first = part.events.len();
            decode_frame(&decoder, on_error, payload, &mut part.events, &cx.metrics);
            for event in &mut part.events[first..] {
                add_metadata(&config, event, &message);
            }
        }
        let mut closed = false;
        for part in parts {
            cx.metrics.received(part.events.len(), part.bytes);
            let source_position = claims_process.as_deref().and_then(|process| {
                let ((topic, partition), (first, last, epoch)) = part.offsets.iter().next()?;
                Some(SourcePosition {
                    topic: Arc::from(topic.as_str()),
                    partition: *partition,
                    first_offset: *first,
                    next_offset: last + 1,
                    claim: claim_token(process, *epoch),
                })
            });
            let positions: Positions = part
                .offsets
                .into_iter()
                .map(|((t, p), (_, o, e))| (t, p, o, e))
                .collect();
            let mut batch = EventBatch::new(part.events, part.bytes);
            acks.attach_at(&mut batch, positions, source_position);
            let sent = send_serving(
                &mut cx,
                batch,
                &consumer,
                &ownership,
                &mut stream,
                &mut held,
            )
            .await;
            if sent.is_err() {
                closed = true;
                break;
            }
        }
        if closed {
            break;
        }
        for (positions, status) in acks.ready() {
            store(&consumer, &ownership, positions, status, Some(&cx));
        }
    }
    drop(held);
    drop(stream);
    drop(cx.out);
    loop {
        tokio::select! {
            next = acks.next() => match next {
                Some((positions, status)) => store(&consumer, &ownership, positions, status, None),
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

/// Sends `batch` downstream while keeping the consumer served: if the pipeline has no room
/// for `PAUSE_AFTER`, every assigned partition is paused, and until the send completes the
/// stream is polled at least every second (rebalance callbacks, `max.poll.interval.ms`), with
/// messages that were already fetched held for the next batches. Resumes after.
async fn send_serving<'a, S>(
    cx: &mut SourceContext,
    batch: EventBatch,
    consumer: &StreamConsumer<GroupContext>,
    ownership: &Mutex<Ownership>,
    stream: &mut S,
    held: &mut VecDeque<Chunk<'a>>,
) -> Result<(), crate::topology::fanout::Closed>
where
    S: futures::Stream<Item = Chunk<'a>> + Unpin,
{
    let send = cx.out.send(batch);
    tokio::pin!(send);
    let mut paused_at: Option<Instant> = None;
    let mut keepalive = tokio::time::interval(Duration::from_secs(1));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pause_at = tokio::time::sleep(PAUSE_AFTER);
    tokio::pin!(pause_at);
    let result = loop {
        tokio::select! {
            biased;
            result = &mut send => break result,
            _ = &mut pause_at, if paused_at.is_none() => {
                ownership.lock().unwrap_or_else(|p| p.into_inner()).paused = true;
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.pause(&assignment);
                    tracing::info!(component_id = %cx.id, partitions = assignment.count(), "pipeline full: partitions paused (still in the group)");
                }
                paused_at = Some(Instant::now());
            }
            chunk = stream.next(), if paused_at.is_some() => {
                if let Some(chunk) = chunk {
                    held.push_back(chunk);
                }
            }
            // Wakes the loop so that the stream is polled even when nothing arrives.
            _ = keepalive.tick() => {}
        }
    };
    if let Some(paused_at) = paused_at {
        ownership.lock().unwrap_or_else(|p| p.into_inner()).paused = false;
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.resume(&assignment);
        }
        tracing::info!(component_id = %cx.id, paused_secs = format!("{:.1}", paused_at.elapsed().as_secs_f64()), held = held.iter().map(Vec::len).sum::<usize>(), "room in the pipeline: partitions resumed");
    }
    result
}

/// What an acknowledgement may do with its partition's offset.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Store it: acknowledged, under the current assignment, partition not frozen.
    Store,
    /// Read under an earlier assignment (revoked since, perhaps reassigned): fenced.
    Fenced,
    /// The first rejection of this assignment: the partition freezes now.
    Freeze,
    /// Frozen by an earlier rejection: nothing more is stored until reassigned.
    Frozen,
}

impl Ownership {
    /// Decides (and records a freeze) for one partition's position in an acknowledged batch.
    fn judge(&mut self, partition: &Partition, epoch: u64, status: BatchStatus) -> Verdict {
        if self.assigned.get(partition) != Some(&epoch) {
            return Verdict::Fenced;
        }
        if status == BatchStatus::Rejected {
            return if self.frozen.insert(partition.clone()) {
                Verdict::Freeze
            } else {
                Verdict::Frozen
            };
        }
        if self.frozen.contains(partition) {
            return Verdict::Frozen;
        }
        Verdict::Store
    }
}

/// Stores the acknowledged offsets of a batch: only for partitions still assigned under the
/// same epoch, and none of a partition frozen by a rejection. `cx` is `None` during shutdown
/// (rejections were reported already).
fn store(
    consumer: &StreamConsumer<GroupContext>,
    ownership: &Mutex<Ownership>,
    positions: Positions,
    status: BatchStatus,
    cx: Option<&SourceContext>,
) {
    let mut ownership = ownership.lock().unwrap_or_else(|p| p.into_inner());
    for (topic, partition, offset, epoch) in positions {
        let key = (topic, partition);
        match ownership.judge(&key, epoch, status) {
            // Stores offset + 1: the next message to read.
            Verdict::Store => {
                let _ = consumer.store_offset(&key.0, key.1, offset);
            }
            Verdict::Freeze => {
                if let Some(cx) = cx {
                    cx.metrics.error("delivery_rejected");
                    tracing::error!(component_id = %cx.id, topic = %key.0, partition = key.1, offset, "a sink rejected Kafka messages; this partition's offsets stay before them until it is reassigned or the agent restarts");
                }
            }
            Verdict::Fenced | Verdict::Frozen => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> Partition {
        ("logs".to_string(), n)
    }

    #[test]
    fn an_acknowledgement_from_an_earlier_assignment_is_fenced() {
        let mut ownership = Ownership::default();
        ownership.assigned.insert(partition(0), 1);
        assert_eq!(
            ownership.judge(&partition(0), 1, BatchStatus::Delivered),
            Verdict::Store
        );
        // Revoked, then assigned again: epoch 2. A late acknowledgement of epoch 1 stores nothing.
        ownership.assigned.insert(partition(0), 2);
        assert_eq!(
            ownership.judge(&partition(0), 1, BatchStatus::Delivered),
            Verdict::Fenced
        );
        ownership.assigned.remove(&partition(0));
        assert_eq!(
            ownership.judge(&partition(0), 2, BatchStatus::Delivered),
            Verdict::Fenced
        );
    }

    #[test]
    fn a_rejection_freezes_only_its_partition_until_reassigned() {
        let mut ownership = Ownership::default();
        ownership.assigned.insert(partition(0), 1);
        ownership.assigned.insert(partition(1), 2);
        assert_eq!(
            ownership.judge(&partition(0), 1, BatchStatus::Rejected),
            Verdict::Freeze
        );
        assert_eq!(
            ownership.judge(&partition(0), 1, BatchStatus::Delivered),
            Verdict::Frozen
        );
        assert_eq!(
            ownership.judge(&partition(0), 1, BatchStatus::Rejected),
            Verdict::Frozen
        );
        assert_eq!(
            ownership.judge(&partition(1), 2, BatchStatus::Delivered),
            Verdict::Store
        );
    }
}
