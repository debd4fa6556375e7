//! The `aws_kinesis` source: reads a Kinesis data stream with ListShards +
//! GetShardIterator + GetRecords, one reader task per shard ([`reader`]).
//!
//! Which shards this agent reads, and where their checkpoints live, is an assignment's job:
//! - [`static_assignment`] (default): `instance_index` of `instance_count` by a hash of the
//!   shard id, checkpoints in `data_dir/<id>/checkpoints.json`;
//! - [`leases`] (`leases:` set): shard leases in a DynamoDB table shared with other agents,
//!   checkpoints in the leases, takeover when an agent dies, stealing to balance.
//!
//! Either way checkpoints hold only positions acknowledged end to end, and a child shard of
//! a split or merge is read only after its parents were read to their ends, from its
//! beginning, so per-key order carries over from parent to child. This module runs the
//! readers the assignment asks for and hands it every acknowledged position.
mod balance;
pub mod lease_table;
pub mod leases;
mod reader;
mod static_assignment;

use super::acks::OrderedAcks;
use super::SourceContext;
use crate::aws::{AwsAuth, AwsConnection};
use crate::codec::decoding::{decode_frame, DecodingConfig, OnDecodeError};
use crate::codec::Decoder;
use crate::event::{BatchStatus, EventBatch, Value};
use crate::observe::ComponentMetrics;
use crate::sinks::retry::RequestConfig;
use crate::state_file;
use crate::topology::{BuildError, ComponentError, RunFuture};
use bytes::Bytes;
use leases::LeasesConfig;
use reader::{Page, ShardReader, Start};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
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
    /// Share the stream with other agents through shard leases in DynamoDB instead of the
    /// static `instance_index`/`instance_count` split: shards move to live agents when one
    /// dies or joins.
    #[serde(default)]
    pub leases: Option<LeasesConfig>,
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

/// Parses a checkpoint file's content (for fuzzing): the number of shards it holds.
pub fn parse_checkpoints(bytes: &[u8]) -> Result<usize, String> {
    state_file::decode::<static_assignment::Stored>(bytes).map(|stored| stored.shards.len())
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

    /// The lease table's connection: the source's, but for `leases.endpoint`.
    fn lease_connection<'a>(&'a self, leases: &'a LeasesConfig) -> AwsConnection<'a> {
        AwsConnection {
            endpoint: leases.endpoint.as_deref().or(self.endpoint.as_deref()),
            ..self.connection()
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

    fn check(&self) -> Result<(), BuildError> {
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
        if let Some(leases) = &self.leases {
            if self.instance_count != 1 {
                return Err(BuildError::new(
                    "leases",
                    "replaces instance_index/instance_count: set one or the other",
                ));
            }
            leases
                .check()
                .map_err(|(field, message)| BuildError::new(field, message))?;
            self.lease_connection(leases)
                .check()
                .map_err(|(_, message)| BuildError::new("leases.endpoint", message))?;
        }
        Ok(())
    }

    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        self.check()?;
        let start = self.start()?;
        let config = self.clone();
        Ok(Box::pin(async move {
            let shared = config.connection().sdk_config().await;
            let client = aws_sdk_kinesis::Client::new(&shared);
            run(config, client, start, cx).await
        }))
    }
}

/// What an assignment asks of the readers' loop.
#[derive(Debug)]
enum Assignment {
    /// Read `shard` from `from`; its pages and positions carry `lease`.
    Read {
        shard: String,
        lease: u64,
        from: Start,
    },
    /// Stop reading `shard` at once, if it is still read under `lease`.
    Stop { shard: String, lease: u64 },
}

/// A position acknowledged end to end: the shard, the holding it was read under, its last
/// sequence number (none for an empty closing page) and whether it closed the shard.
#[derive(Debug)]
struct Acked {
    shard: String,
    lease: u64,
    sequence: Option<String>,
    closed: bool,
    /// Not a position but a mark: the reader was stopped (on the assignment's request) and
    /// every position read under `lease` was reported before this.
    stopped: bool,
}

/// What an assignment task gets: the stream, and the channels to the readers' loop.
struct AssignmentContext {
    config: KinesisSourceConfig,
    kinesis: aws_sdk_kinesis::Client,
    /// Where a shard without a checkpoint starts.
    start: Start,
    metrics: ComponentMetrics,
    assign: mpsc::UnboundedSender<Assignment>,
    /// Closed when the readers' loop has reported its last acknowledgement.
    acked: mpsc::UnboundedReceiver<Acked>,
    /// The source is stopping: take on nothing new.
    stop: CancellationToken,
}

/// Hands acknowledged positions to the assignment, except past a rejection: once a sink
/// rejected records of a shard, that holding's checkpoint stays before them (a restart or the
/// next owner reads them again), as the Kafka source freezes a partition.
struct Report {
    acked: mpsc::UnboundedSender<Acked>,
    /// Holdings (shard, lease) with a rejected batch.
    frozen: HashSet<(String, u64)>,
    metrics: ComponentMetrics,
}

impl Report {
    fn acknowledged(&mut self, acked: Acked, status: BatchStatus) {
        let holding = (acked.shard.clone(), acked.lease);
        if status == BatchStatus::Rejected {
            self.metrics.error("delivery_rejected");
            if self.frozen.insert(holding) {
                tracing::error!(component_id = self.metrics.id(), shard = %acked.shard, "a sink rejected Kinesis records; this shard's checkpoint stays before them until the shard is read anew (restart or new owner)");
            }
            return;
        }
        if acked.stopped || !self.frozen.contains(&holding) {
            // A closed channel: the assignment is gone, and the source with it.
            let _ = self.acked.send(acked);
        }
    }
}

/// A running reader.
struct Reading {
    lease: u64,
    stop: CancellationToken,
}

async fn run(
    config: KinesisSourceConfig,
    client: aws_sdk_kinesis::Client,
    start: Start,
    mut cx: SourceContext,
) -> Result<(), ComponentError> {
    let decoder = Decoder::new(&config.decoding, cx.values);
    let on_error = config.decoding.on_error.unwrap_or(OnDecodeError::Drop);
    let mut acks: OrderedAcks<Acked> = OrderedAcks::new(cx.acknowledgements);
    let (pages_tx, mut pages) = mpsc::channel::<Page>(4);
    let (assign_tx, mut assignments) = mpsc::unbounded_channel();
    let (acked_tx, acked_rx) = mpsc::unbounded_channel();
    let assignment = AssignmentContext {
        config: config.clone(),
        kinesis: client.clone(),
        start,
        metrics: cx.metrics.clone(),
        assign: assign_tx,
        acked: acked_rx,
        stop: cx.shutdown.stop.clone(),
    };
    let mut assigner = match &config.leases {
        None => tokio::spawn(static_assignment::run(
            assignment,
            cx.data_dir.join("checkpoints.json"),
        )),
        Some(leases) => {
            // A lease call must fail well within the lease duration: while one hangs, the
            // agent could not notice that its leases expired and keep reading shards that
            // others have taken.
            let request = RequestConfig {
                timeout_secs: config
                    .request
                    .timeout_secs
                    .min(leases.lease_duration_secs / 3.0),
                ..config.request
            };
            let connection = AwsConnection {
                request: &request,
                ..config.lease_connection(leases)
            };
            let shared = connection.sdk_config().await;
            let table = lease_table::LeaseTable::new(
                aws_sdk_dynamodb::Client::new(&shared),
                leases.table.clone(),
            );
            tokio::spawn(leases::run(assignment, table, leases.clone()))
        }
    };
    let readers = CancellationToken::new();
    let mut reading: HashMap<String, Reading> = HashMap::new();
    let mut report = Report {
        acked: acked_tx,
        frozen: HashSet::new(),
        metrics: cx.metrics.clone(),
    };
    loop {
        tokio::select! {
            _ = cx.shutdown.stop.cancelled() => break,
            _ = &mut assigner => {
                return Err("the shard assignment task ended unexpectedly".into());
            }
            assignment = assignments.recv() => match assignment {
                Some(Assignment::Read { shard, lease, from }) => {
                    tracing::info!(component_id = %cx.id, %shard, start = ?from, "reading shard");
                    let stop = readers.child_token();
                    if let Some(previous) = reading.insert(shard.clone(), Reading { lease, stop: stop.clone() }) {
                        previous.stop.cancel();
                    }
                    tokio::spawn(ShardReader {
                        client: client.clone(),
                        config: config.clone(),
                        shard,
                        lease,
                        pages: pages_tx.clone(),
                        stop,
                        metrics: cx.metrics.clone(),
                    }.run(from));
                }
                Some(Assignment::Stop { shard, lease }) => {
                    if reading.get(&shard).is_some_and(|r| r.lease == lease) {
                        if let Some(reader) = reading.remove(&shard) {
                            reader.stop.cancel();
                        }
                    }
                    // Resolves after every batch already sent: the holding is fully reported.
                    acks.resolved(Acked { shard, lease, sequence: None, closed: false, stopped: true });
                }
                None => return Err("the shard assignment task ended unexpectedly".into()),
            },
            acked = acks.next(), if acks.pending() > 0 => {
                if let Some((acked, status)) = acked {
                    report.acknowledged(acked, status);
                }
            }
            page = pages.recv() => {
                let Some(page) = page else { break };
                if reading.get(&page.shard).is_none_or(|r| r.lease != page.lease) {
                    // Read under a lease lost since: its new owner reads it from the checkpoint.
                    continue;
                }
                if page.closed {
                    reading.remove(&page.shard);
                }
                let (mut batch, position) = events_of(page, &decoder, on_error, &cx.metrics);
                acks.attach(&mut batch, position);
                if !batch.events.is_empty() && cx.out.send(batch).await.is_err() {
                    break;
                }
                for (acked, status) in acks.ready() {
                    report.acknowledged(acked, status);
                }
            }
        }
    }
    readers.cancel();
    drop(cx.out);
    loop {
        tokio::select! {
            next = acks.next() => match next {
                Some((acked, status)) => report.acknowledged(acked, status),
                None => break,
            },
            _ = cx.shutdown.force.cancelled() => break,
        }
    }
    // The assignment writes its final checkpoints (and releases its leases).
    drop(report);
    tokio::select! {
        _ = &mut assigner => {}
        _ = cx.shutdown.force.cancelled() => assigner.abort(),
    }
    Ok(())
}

/// Turns a page into a batch of events and the position it reaches.
fn events_of(
    page: Page,
    decoder: &Decoder,
    on_error: OnDecodeError,
    metrics: &ComponentMetrics,
) -> (EventBatch, Acked) {
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
        Acked {
            shard: page.shard,
            lease: page.lease,
            sequence: last,
            closed: page.closed,
            stopped: false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(sequence: &str, stopped: bool) -> Acked {
        Acked {
            shard: "s".into(),
            lease: 1,
            sequence: Some(sequence.into()),
            closed: false,
            stopped,
        }
    }

    #[test]
    fn no_checkpoint_passes_a_rejected_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut report = Report {
            acked: tx,
            frozen: HashSet::new(),
            metrics: ComponentMetrics::new("in", "aws_kinesis"),
        };
        report.acknowledged(acked("1", false), BatchStatus::Delivered);
        report.acknowledged(acked("2", false), BatchStatus::Rejected);
        report.acknowledged(acked("3", false), BatchStatus::Delivered);
        report.acknowledged(acked("-", true), BatchStatus::Delivered);
        let mut reported = Vec::new();
        while let Ok(a) = rx.try_recv() {
            reported.push((a.sequence.unwrap(), a.stopped));
        }
        assert_eq!(
            reported,
            [("1".to_string(), false), ("-".to_string(), true)],
            "3 would move the checkpoint past the rejected 2; the stop mark still goes through"
        );
        // A new holding of the shard (read again from its checkpoint) reports again.
        let mut again = acked("4", false);
        again.lease = 2;
        report.acknowledged(again, BatchStatus::Delivered);
        assert_eq!(rx.try_recv().unwrap().sequence.as_deref(), Some("4"));
    }

    #[test]
    fn leases_replace_the_static_split() {
        let config: KinesisSourceConfig =
            serde_yaml::from_str("stream_name: s\ninstance_count: 2\nleases:\n  table: t").unwrap();
        let error = config.check().unwrap_err();
        assert_eq!(error.field, Some("leases"), "{error:?}");
        let config: KinesisSourceConfig =
            serde_yaml::from_str("stream_name: s\nleases:\n  table: t\n  endpoint: ftp://x")
                .unwrap();
        let error = config.check().unwrap_err();
        assert_eq!(error.field, Some("leases.endpoint"), "{error:?}");
    }
}
