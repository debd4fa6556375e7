//! The `aws_kinesis` source: reads a Kinesis data stream, every shard this instance owns,
//! with ListShards + GetShardIterator + GetRecords.
//!
//! - One reader task per shard polls GetRecords no more often than `poll_interval_ms`
//!   (default 200 ms: Kinesis allows 5 reads per second per shard) and hands pages to the
//!   source's loop over a small bounded channel, so a slow pipeline stops the polling.
//! - Checkpoints (`data_dir/<id>/checkpoints.json`): per shard, the last sequence number
//!   acknowledged end to end, and whether the shard is finished (closed by a split or merge
//!   and read to its end). A restart resumes AFTER_SEQUENCE_NUMBER.
//! - Splits and merges: the shard list is refreshed every `shard_refresh_secs`; a child shard
//!   starts only when its parents are finished (or gone from the stream's retention), from
//!   TRIM_HORIZON, so per-key order carries over from parent to child.
//! - Several instances: static assignment, `instance_index` of `instance_count`, by a hash
//!   of the shard id (stable across restarts; a resize of `instance_count` reassigns).

use super::acks::OrderedAcks;
use super::SourceContext;
use crate::aws::{classify, AwsAuth, AwsConnection};
use crate::codec::decoding::{decode_frame, DecodingConfig, OnDecodeError};
use crate::codec::Decoder;
use crate::event::{BatchStatus, EventBatch, Value};
use crate::observe::ComponentMetrics;
use crate::sinks::retry::{Attempt, RequestConfig};
use crate::state_file;
use crate::topology::{BuildError, ComponentError, RunFuture};
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Only records added from now on (default).
    #[default]
    Latest,
    /// The oldest record still in the stream.
    TrimHorizon,
    /// Records from `start_timestamp` on.
    AtTimestamp,
}

/// Read a Kinesis data stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// The data stream.
    pub stream_name: String,
    /// `latest` (default), `trim_horizon` or `at_timestamp`: where a shard without a
    /// checkpoint starts. Child shards of a split or merge always start at their beginning.
    #[serde(default)]
    pub start_position: StartPosition,
    /// RFC 3339 time for `start_position: at_timestamp`.
    #[serde(default)]
    pub start_timestamp: Option<String>,
    /// Shortest time between two GetRecords calls on one shard, in ms (default 200, the
    /// service's limit of 5 reads per second per shard).
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// Most records per GetRecords call (default 10000, the service's maximum).
    #[serde(default = "default_max_records")]
    pub max_records: i32,
    /// How often the shard list is refreshed to follow splits and merges, in seconds
    /// (default 10).
    #[serde(default = "default_shard_refresh")]
    pub shard_refresh_secs: f64,
    /// This instance's number, from 0, when `instance_count` instances share the stream.
    #[serde(default)]
    pub instance_index: u32,
    /// How many instances share the stream (default 1); each reads the shards whose id hashes
    /// to its `instance_index`.
    #[serde(default = "default_instance_count")]
    pub instance_count: u32,
    /// How each record's data becomes events (default: bytes into `message`). Each event also
    /// gets `partition_key`, `shard_id`, `sequence_number` and `arrival_timestamp`.
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// AWS region (default: the standard chain).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL for emulators or VPC endpoints.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Explicit credentials (default: the standard AWS credential chain).
    #[serde(default)]
    pub auth: Option<AwsAuth>,
    /// Timeouts and the backoff after failed calls (calls are retried without limit).
    #[serde(default)]
    pub request: RequestConfig,
}

fn default_poll_interval() -> u64 {
    200
}
fn default_max_records() -> i32 {
    10_000
}
fn default_shard_refresh() -> f64 {
    10.0
}
fn default_instance_count() -> u32 {
    1
}

/// Per shard: the last acknowledged sequence number, and whether it is finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ShardCheckpoint {
    #[serde(default)]
    sequence: Option<String>,
    #[serde(default)]
    finished: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    shards: BTreeMap<String, ShardCheckpoint>,
}

/// Parses a checkpoint file's content (for fuzzing): the number of shards it holds.
pub fn parse_checkpoints(bytes: &[u8]) -> Result<usize, String> {
    state_file::decode::<Stored>(bytes).map(|stored| stored.shards.len())
}

impl KinesisSourceConfig {
    fn connection(&self) -> AwsConnection<'_> {
        AwsConnection {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            auth: self.auth.as_ref(),
            request: &self.request,
        }
    }

    fn start(&self) -> Result<Start, BuildError> {
        Ok(match self.start_position {
            StartPosition::Latest => Start::Latest,
            StartPosition::TrimHorizon => Start::TrimHorizon,
            StartPosition::AtTimestamp => {
                let text = self.start_timestamp.as_deref().ok_or_else(|| {
                    BuildError::new("start_timestamp", "needed for start_position: at_timestamp")
                })?;
                let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                    BuildError::new("start_timestamp", format!("`{text}` is not RFC 3339: {e}"))
                })?;
                Start::At(time.timestamp_millis())
            }
        })
    }

    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if self.instance_count == 0 || self.instance_index >= self.instance_count {
            return Err(BuildError::new(
                "instance_index",
                format!(
                    "must be below instance_count ({}), counting from 0",
                    self.instance_count
                ),
            ));
        }
        if !(1..=10_000).contains(&self.max_records) {
            return Err(BuildError::new("max_records", "must be 1 to 10000"));
        }
        if !self.shard_refresh_secs.is_finite() || self.shard_refresh_secs <= 0.0 {
            return Err(BuildError::new(
                "shard_refresh_secs",
                "must be a number > 0",
            ));
        }
        if self.decoding.on_error == Some(OnDecodeError::Reject) {
            return Err(BuildError::new(
                "decoding",
                "`on_error: reject` is only for http_server; use drop or pass_raw",
            ));
        }
        self.connection()
            .check()
            .map_err(|(field, message)| BuildError::new(field, message))?;
        let start = self.start()?;
        let config = self.clone();
        Ok(Box::pin(async move {
            let shared = config.connection().sdk_config().await;
            let client = aws_sdk_kinesis::Client::new(&shared);
            run(config, client, start, cx).await
        }))
    }
}

/// Where a reader starts.
#[derive(Debug, Clone)]
enum Start {
    Latest,
    TrimHorizon,
    At(i64),
    After(String),
}

/// One GetRecords page of one shard.
struct Page {
    shard: String,
    records: Vec<aws_sdk_kinesis::types::Record>,
    /// The shard is closed and this was its last page.
    closed: bool,
}

/// What an acknowledgement resolves to: the shard, its last sequence number in the batch
/// (none for an empty closing page) and whether that page closed the shard.
type Position = (String, Option<String>, bool);

async fn run(
    config: KinesisSourceConfig,
    client: aws_sdk_kinesis::Client,
    start: Start,
    mut cx: SourceContext,
) -> Result<(), ComponentError> {
    let path: PathBuf = cx.data_dir.join("checkpoints.json");
    let mut stored: Stored = state_file::load(&path, &cx.metrics);
    stored.version = 1;
    let mut dirty = false;
    let decoder = Decoder::new(&config.decoding);
    let on_error = config.decoding.on_error.unwrap_or(OnDecodeError::Drop);
    let mut acks: OrderedAcks<Position> = OrderedAcks::new(cx.acknowledgements);
    let (tx, mut rx) = mpsc::channel::<Page>(4);
    let readers = CancellationToken::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut refresh = tokio::time::interval(Duration::from_secs_f64(config.shard_refresh_secs));
    // Non-durable (no fsync) writes, cheap: they survive a killed process, and bound what a
    // restart re-reads to ~100 ms of records. The last one, at shutdown, is fsynced.
    let mut save = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = cx.shutdown.stop.cancelled() => break,
            _ = refresh.tick() => {
                match list_shards(&client, &config.stream_name).await {
                    Ok(shards) => {
                        for shard in assigned(&config, &shards, &stored.shards, &started) {
                            let from = match stored.shards.get(shard.shard_id()).and_then(|c| c.sequence.clone()) {
                                Some(sequence) => Start::After(sequence),
                                None if has_parent(shard, &shards) || started_from_parent(shard, &stored.shards) => Start::TrimHorizon,
                                None => start.clone(),
                            };
                            tracing::info!(component_id = %cx.id, shard = shard.shard_id(), start = ?from, "reading shard");
                            started.insert(shard.shard_id().to_string());
                            tokio::spawn(read_shard(
                                client.clone(), config.clone(), shard.shard_id().to_string(), from,
                                tx.clone(), readers.child_token(), cx.metrics.clone(),
                            ));
                        }
                    }
                    Err(reason) => {
                        cx.metrics.error("list_shards_failed");
                        tracing::warn!(component_id = %cx.id, %reason, "cannot list shards; retrying at the next refresh");
                    }
                }
            }
            _ = save.tick() => {
                if dirty {
                    persist(&path, &stored, false, &cx.metrics);
                    dirty = false;
                }
            }
            acked = acks.next(), if acks.pending() > 0 => {
                if let Some((position, status)) = acked {
                    dirty |= record(&mut stored, position, status, &cx.metrics);
                }
            }
            page = rx.recv() => {
                let Some(page) = page else { break };
                let (batch, position) = events_of(page, &decoder, on_error, &cx.metrics);
                let mut batch = batch;
                acks.attach(&mut batch, position);
                if !batch.events.is_empty() && cx.out.send(batch).await.is_err() {
                    break;
                }
                for (position, status) in acks.ready() {
                    dirty |= record(&mut stored, position, status, &cx.metrics);
                }
            }
        }
    }
    readers.cancel();
    drop(cx.out);
    loop {
        tokio::select! {
            next = acks.next() => match next {
                Some((position, status)) => { record(&mut stored, position, status, &cx.metrics); }
                None => break,
            },
            _ = cx.shutdown.force.cancelled() => break,
        }
    }
    persist(&path, &stored, true, &cx.metrics);
    Ok(())
}

fn persist(path: &std::path::Path, stored: &Stored, durable: bool, metrics: &ComponentMetrics) {
    if let Err(error) = state_file::store(path, stored, durable) {
        metrics.error("checkpoint_failed");
        tracing::error!(component_id = metrics.id(), %error, "cannot write the checkpoint");
    }
}

/// Applies an acknowledged position; returns whether the checkpoint changed.
fn record(
    stored: &mut Stored,
    position: Position,
    status: BatchStatus,
    metrics: &ComponentMetrics,
) -> bool {
    let (shard, sequence, closed) = position;
    if status == BatchStatus::Rejected {
        // Never store past a rejected record: a restart reads it again.
        metrics.error("delivery_rejected");
        tracing::error!(component_id = metrics.id(), %shard, "a sink rejected Kinesis records; the shard's checkpoint stays before them");
        return false;
    }
    let entry = stored.shards.entry(shard).or_default();
    if let Some(sequence) = sequence {
        entry.sequence = Some(sequence);
    }
    entry.finished |= closed;
    true
}

/// The shards this instance should start now: its own (by hash), not yet started, not
/// finished, and whose parents are finished or no longer listed.
fn assigned<'a>(
    config: &KinesisSourceConfig,
    shards: &'a [Shard],
    checkpoints: &BTreeMap<String, ShardCheckpoint>,
    started: &BTreeSet<String>,
) -> Vec<&'a Shard> {
    let listed: BTreeSet<&str> = shards.iter().map(Shard::shard_id).collect();
    let finished = |id: &str| checkpoints.get(id).is_some_and(|c| c.finished);
    shards
        .iter()
        .filter(|s| {
            crc32fast::hash(s.shard_id().as_bytes()) % config.instance_count
                == config.instance_index
        })
        .filter(|s| !started.contains(s.shard_id()) && !finished(s.shard_id()))
        .filter(|s| {
            [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .all(|parent| finished(parent) || !listed.contains(parent))
        })
        .collect()
}

fn has_parent(shard: &Shard, shards: &[Shard]) -> bool {
    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .any(|parent| shards.iter().any(|s| s.shard_id() == parent))
}

fn started_from_parent(shard: &Shard, checkpoints: &BTreeMap<String, ShardCheckpoint>) -> bool {
    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
        .into_iter()
        .flatten()
        .any(|parent| checkpoints.contains_key(parent))
}

async fn list_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request
            .send()
            .await
            .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string())?;
        shards.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(shards),
        }
    }
}

/// Polls one shard until it is closed and read to its end, or the source stops.
async fn read_shard(
    client: aws_sdk_kinesis::Client,
    config: KinesisSourceConfig,
    shard: String,
    mut start: Start,
    tx: mpsc::Sender<Page>,
    stop: CancellationToken,
    metrics: ComponentMetrics,
) {
    let poll = Duration::from_millis(config.poll_interval_ms);
    let mut iterator: Option<String> = None;
    let mut failures = 0u32;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let outcome = match &iterator {
            None => match shard_iterator(&client, &config.stream_name, &shard, &start).await {
                Attempt::Done(it) => {
                    iterator = Some(it);
                    continue;
                }
                Attempt::Retry(reason, after) => Attempt::Retry(reason, after),
                Attempt::Permanent(reason) => Attempt::Permanent(reason),
            },
            Some(current) => match client
                .get_records()
                .shard_iterator(current)
                .limit(config.max_records)
                .send()
                .await
            {
                Ok(page) => Attempt::Done(page),
                Err(error) => {
                    let expired = error
                        .as_service_error()
                        .is_some_and(|e| e.is_expired_iterator_exception());
                    if expired {
                        iterator = None; // get a new one from where this reader is
                        continue;
                    }
                    classify(error)
                }
            },
        };
        match outcome {
            Attempt::Done(page) => {
                failures = 0;
                let records = page.records().to_vec();
                if let Some(last) = records.last() {
                    start = Start::After(last.sequence_number().to_string());
                }
                let next = page.next_shard_iterator().map(str::to_string);
                let closed = next.is_none();
                if !records.is_empty() || closed {
                    let page = Page {
                        shard: shard.clone(),
                        records,
                        closed,
                    };
                    tokio::select! {
                        sent = tx.send(page) => if sent.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                }
                if closed {
                    tracing::info!(component_id = metrics.id(), %shard, "shard closed and read to its end");
                    return;
                }
                iterator = next;
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Attempt::Retry(reason, _) | Attempt::Permanent(reason) => {
                // A stream that is being created or resharded, throttling, a network outage:
                // the reader keeps trying (and keeps its place).
                metrics.error("get_records_failed");
                failures += 1;
                let wait = config.request.backoff(failures).max(poll);
                tracing::warn!(component_id = metrics.id(), %shard, %reason, wait_ms = wait.as_millis() as u64, "Kinesis read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn shard_iterator(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    start: &Start,
) -> Attempt<String> {
    let request = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    let request = match start {
        Start::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
        Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Start::At(millis) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(*millis)),
        Start::After(sequence) => request
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(sequence),
    };
    match request.send().await {
        Ok(output) => match output.shard_iterator() {
            Some(iterator) => Attempt::Done(iterator.to_string()),
            None => Attempt::Retry("no shard iterator returned".into(), None),
        },
        Err(error) => classify(error),
    }
}

/// Turns a page into a batch of events and the position it reaches.
fn events_of(
    page: Page,
    decoder: &Decoder,
    on_error: OnDecodeError,
    metrics: &ComponentMetrics,
) -> (EventBatch, Position) {
    let mut events = Vec::with_capacity(page.records.len());
    let mut bytes = 0;
    let last = page.records.last().map(|r| r.sequence_number().to_string());
    for record in &page.records {
        let data = Bytes::copy_from_slice(record.data().as_ref());
        bytes += data.len();
        let first = events.len();
        decode_frame(decoder, on_error, data, &mut events, metrics);
        for event in &mut events[first..] {
            event.insert("partition_key", Value::from(record.partition_key()));
            event.insert("shard_id", Value::from(page.shard.as_str()));
            event.insert("sequence_number", Value::from(record.sequence_number()));
            if let Some(arrival) = record.approximate_arrival_timestamp() {
                if let Some(time) =
                    chrono::DateTime::from_timestamp_millis(arrival.to_millis().unwrap_or_default())
                {
                    event.insert("arrival_timestamp", Value::Timestamp(time));
                }
            }
        }
    }
    metrics.received(events.len(), bytes);
    (
        EventBatch::new(events, bytes),
        (page.shard, last, page.closed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};

    // moto's SplitShard keeps routing writes to the closed parent and never ends its
    // iterator, so the parent-before-child rule is tested here, on the shard list.
    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parents.first().map(|p| p.to_string()))
            .set_adjacent_parent_shard_id(parents.get(1).map(|p| p.to_string()))
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("1")
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn config(index: u32, count: u32) -> KinesisSourceConfig {
        serde_yaml::from_str(&format!(
            "stream_name: s\ninstance_index: {index}\ninstance_count: {count}"
        ))
        .unwrap()
    }

    fn ids(shards: Vec<&Shard>) -> Vec<&str> {
        shards.into_iter().map(Shard::shard_id).collect()
    }

    #[test]
    fn children_wait_for_their_parents_to_finish() {
        let shards = [
            shard("p", &[]),
            shard("a", &["p"]),
            shard("b", &["p"]),
            shard("m", &["a", "b"]),
        ];
        let mut checkpoints = BTreeMap::new();
        let none = BTreeSet::new();
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["p"]
        );
        checkpoints.insert(
            "p".to_string(),
            ShardCheckpoint {
                sequence: Some("9".into()),
                finished: true,
            },
        );
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["a", "b"]
        );
        checkpoints.insert(
            "a".to_string(),
            ShardCheckpoint {
                sequence: None,
                finished: true,
            },
        );
        assert!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)) == ["b"],
            "the merge child waits for both parents"
        );
        checkpoints.insert(
            "b".to_string(),
            ShardCheckpoint {
                sequence: None,
                finished: true,
            },
        );
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["m"]
        );
        // A parent gone from the stream's retention does not hold its child back.
        let orphan = [shard("c", &["expired"])];
        assert_eq!(
            ids(assigned(&config(0, 1), &orphan, &BTreeMap::new(), &none)),
            ["c"]
        );
    }

    #[test]
    fn instances_split_the_shards_without_overlap() {
        let shards: Vec<Shard> = (0..40)
            .map(|i| shard(&format!("shardId-{i:012}"), &[]))
            .collect();
        let none = BTreeSet::new();
        let a = ids(assigned(&config(0, 2), &shards, &BTreeMap::new(), &none));
        let b = ids(assigned(&config(1, 2), &shards, &BTreeMap::new(), &none));
        assert!(!a.is_empty() && !b.is_empty());
        assert_eq!(a.len() + b.len(), 40);
        assert!(a.iter().all(|id| !b.contains(id)));
    }
}
