//! Sinks: where events leave. Every sink type is registered here, in one place.

pub mod aws_kinesis;
pub mod aws_records;
pub mod aws_s3;
pub mod batch;
pub mod blackhole;
pub mod console;
pub mod file;
pub mod http;
pub mod iceberg;
pub mod kafka;
pub mod postgres;
pub mod retry;

use crate::buffer::disk::DiskSettings;
use crate::config::{parse_fields, unknown_type, FieldError};
use crate::event::{BatchStatus, Event, EventBatch, Finalizers, ObjectMap, Value};
use crate::observe::ComponentMetrics;
use crate::topology::{BufferReceiver, BuildError, ChannelLimits, Fanout, RunFuture, WhenFull};
use serde::Deserialize;
use std::path::PathBuf;

/// What a running sink is handed.
pub struct SinkContext {
    pub id: String,
    pub input: BufferReceiver,
    pub metrics: ComponentMetrics,
    /// The sink's own state directory (`data_dir/<id>`).
    pub data_dir: PathBuf,
    /// `<id>.dead_letter`: where events the sink gives up on go, if anything reads it.
    pub dead_letter: Fanout,
}

/// Disposes of events a sink gave up on. When a component reads `<id>.dead_letter`, they go
/// there, tagged with `_dead_letter: {sink, reason}`, still carrying their acknowledgement
/// handles (so their source advances once the dead-letter path delivers them). Otherwise they
/// are marked rejected: their source does not advance past them, and they are counted.
pub async fn reject(
    dead_letter: &mut Fanout,
    metrics: &ComponentMetrics,
    mut events: Vec<Event>,
    finalizers: Finalizers,
    reason: &str,
) {
    let count = events.len();
    if count == 0 {
        return;
    }
    if dead_letter.is_connected() {
        for event in &mut events {
            let mut tag = ObjectMap::new();
            tag.insert("sink".into(), Value::from(metrics.id()));
            tag.insert("reason".into(), Value::from(reason));
            event.insert("_dead_letter", Value::Object(tag));
        }
        // If the dead-letter path has stopped, the channel marks them rejected itself.
        let _ = dead_letter
            .send(EventBatch {
                events,
                byte_size: 0,
                finalizers,
            })
            .await;
        return;
    }
    metrics.discarded_with("rejected", count, || Some(reason.to_string()));
    finalizers.update_status(BatchStatus::Rejected);
}

/// [`reject`] for the events of a batch at the given indices, each with its reason (the first
/// reason is reported for all).
pub async fn reject_some(
    dead_letter: &mut Fanout,
    metrics: &ComponentMetrics,
    events: &[Event],
    failed: &[(usize, String)],
    finalizers: Finalizers,
) {
    let Some((_, reason)) = failed.first() else {
        return;
    };
    let rejected = failed.iter().map(|(i, _)| events[*i].clone()).collect();
    reject(dead_letter, metrics, rejected, finalizers, reason).await;
}

/// The kind of buffer in front of a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// In memory, bounded (default). Lost on a crash; sources re-read what was not
    /// acknowledged.
    #[default]
    Memory,
    /// Segment files under `data_dir/buffers/<sink id>/`: survives restarts and crashes.
    Disk,
}

/// The buffer in front of a sink: how much may wait for it, and where.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` (default) or `disk`.
    #[serde(default, rename = "type")]
    pub kind: BufferType,
    /// Memory buffers: most events waiting (default 8192).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes waiting: memory buffers count the events' raw size (default 8 MiB), disk
    /// buffers the segment files (default 256 MiB).
    #[serde(default)]
    pub max_size: Option<u64>,
    /// `block` (default: upstream waits, backpressure) or `drop_newest` (drop and count in
    /// `component_discarded_events_total{reason="buffer_full"}`).
    #[serde(default)]
    pub when_full: WhenFull,
    /// Disk buffers: longest time written data waits for its fsync, in milliseconds (default
    /// 200); `0` fsyncs after every batch. When the queue runs empty while a source waits for
    /// acknowledgements, the fsync happens at once (group commit). Sources are acknowledged only
    /// after the fsync, so this trades latency for throughput, never safety (see README).
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Disk buffers: size at which a new segment file is started (default 16 MiB). Space is
    /// reclaimed a whole segment at a time, once every event in it is delivered.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

fn default_max_events() -> usize {
    ChannelLimits::default().max_events
}
fn default_fsync_interval_ms() -> u64 {
    200
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
const DEFAULT_DISK_MAX_SIZE: u64 = 256 << 20;

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferType::Memory,
            max_events: default_max_events(),
            max_size: None,
            when_full: WhenFull::Block,
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

impl BufferConfig {
    /// Limits of the channel in front of the sink (memory), or in front of the disk writer.
    pub fn limits(&self) -> ChannelLimits {
        match self.kind {
            BufferType::Memory => ChannelLimits {
                max_events: self.max_events,
                max_bytes: self
                    .max_size
                    .map_or(ChannelLimits::default().max_bytes, |s| s as usize),
                when_full: self.when_full,
            },
            // A short staging queue: the disk is the buffer, and it applies `when_full`.
            BufferType::Disk => ChannelLimits {
                max_events: 2048,
                max_bytes: 2 << 20,
                when_full: WhenFull::Block,
            },
        }
    }

    /// Settings of a disk buffer.
    pub fn disk(&self) -> Option<DiskSettings> {
        (self.kind == BufferType::Disk).then(|| DiskSettings {
            max_size: self.max_size.unwrap_or(DEFAULT_DISK_MAX_SIZE),
            when_full: self.when_full,
            fsync_interval: std::time::Duration::from_millis(self.fsync_interval_ms),
            segment_bytes: self.segment_bytes.max(1),
        })
    }
}

use crate::codec::decoding::Values;

/// Every sink type, selected by `type:`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    AwsKinesisFirehose(Box<aws_kinesis::KinesisSinkConfig>),
    AwsKinesisStreams(Box<aws_kinesis::KinesisSinkConfig>),
    AwsS3(Box<aws_s3::S3SinkConfig>),
    Blackhole(blackhole::BlackholeConfig),
    Console(console::ConsoleConfig),
    File(file::FileSinkConfig),
    Http(http::HttpSinkConfig),
    Iceberg(Box<iceberg::IcebergSinkConfig>),
    Kafka(Box<kafka::KafkaSinkConfig>),
    Postgres(Box<postgres::PostgresSinkConfig>),
}

const TYPES: &[&str] = &[
    "aws_kinesis_firehose",
    "aws_kinesis_streams",
    "aws_s3",
    "blackhole",
    "console",
    "file",
    "http",
    "iceberg",
    "kafka",
    "postgres",
];

impl SinkConfig {
    pub fn parse(kind: &str, value: serde_yaml::Value) -> Result<Self, FieldError> {
        Ok(match kind {
            "aws_kinesis_firehose" => Self::AwsKinesisFirehose(parse_fields(value)?),
            "aws_kinesis_streams" => Self::AwsKinesisStreams(parse_fields(value)?),
            "aws_s3" => Self::AwsS3(parse_fields(value)?),
            "blackhole" => Self::Blackhole(parse_fields(value)?),
            "console" => Self::Console(parse_fields(value)?),
            "file" => Self::File(parse_fields(value)?),
            "http" => Self::Http(parse_fields(value)?),
            "iceberg" => Self::Iceberg(parse_fields(value)?),
            "kafka" => Self::Kafka(parse_fields(value)?),
            "postgres" => Self::Postgres(parse_fields(value)?),
            other => return Err(unknown_type(other, TYPES)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::AwsKinesisFirehose(_) => "aws_kinesis_firehose",
            Self::AwsKinesisStreams(_) => "aws_kinesis_streams",
            Self::AwsS3(_) => "aws_s3",
            Self::Blackhole(_) => "blackhole",
            Self::Console(_) => "console",
            Self::File(_) => "file",
            Self::Http(_) => "http",
            Self::Iceberg(_) => "iceberg",
            Self::Kafka(_) => "kafka",
            Self::Postgres(_) => "postgres",
        }
    }

    pub fn inputs(&self) -> &[String] {
        match self {
            Self::AwsKinesisFirehose(c) | Self::AwsKinesisStreams(c) => &c.inputs,
            Self::AwsS3(c) => &c.inputs,
            Self::Blackhole(c) => &c.inputs,
            Self::Console(c) => &c.inputs,
            Self::File(c) => &c.inputs,
            Self::Http(c) => &c.inputs,
            Self::Iceberg(c) => &c.inputs,
            Self::Kafka(c) => &c.inputs,
            Self::Postgres(c) => &c.inputs,
        }
    }

    pub fn buffer(&self) -> &BufferConfig {
        match self {
            Self::AwsKinesisFirehose(c) | Self::AwsKinesisStreams(c) => &c.buffer,
            Self::AwsS3(c) => &c.buffer,
            Self::Blackhole(c) => &c.buffer,
            Self::Console(c) => &c.buffer,
            Self::File(c) => &c.buffer,
            Self::Http(c) => &c.buffer,
            Self::Iceberg(c) => &c.buffer,
            Self::Kafka(c) => &c.buffer,
            Self::Postgres(c) => &c.buffer,
        }
    }

    /// What the sink needs of the events it takes: only their JSON text ([`Values::OnDemand`]:
    /// it writes events as JSON and reads no field: no field or time in a path, topic or key),
    /// their text and values (it writes JSON and reads fields), or values (anything else; so
    /// does a disk buffer, which records values). Decides, over a source's consumers, what
    /// its `json` decoding makes (see `codec::decoding::Values`).
    pub fn needs(&self) -> Values {
        use crate::codec::encoding::EncodingCodec;
        use aws_s3::encode::ObjectCodec;
        let json =
            |codec: EncodingCodec| matches!(codec, EncodingCodec::Json | EncodingCodec::Ndjson);
        let fixed = |template: &str| {
            crate::template::Template::parse(template).is_ok_and(|t| t.is_static())
        };
        // JSON written, and top-level fields read (templates, keys, partition keys: through
        // `Event::field`, from the text) or not.
        let writes_json = |reads_fields: bool| {
            if reads_fields {
                Values::Fields
            } else {
                Values::OnDemand
            }
        };
        if self.buffer().disk().is_some() {
            return Values::Built;
        }
        match self {
            Self::Blackhole(_) => Values::OnDemand,
            Self::Console(c) if json(c.encoding.codec) => Values::OnDemand,
            Self::Http(c) if json(c.encoding.codec) => Values::OnDemand,
            Self::File(c) if json(c.encoding.codec) => writes_json(!fixed(&c.path)),
            Self::AwsS3(c)
                if matches!(c.encoding.codec, ObjectCodec::Ndjson | ObjectCodec::Json) =>
            {
                writes_json(!fixed(&c.key_prefix))
            }
            // Columns read top-level fields from the text (`parquet::Rows::add`,
            // `postgres::Column::cell`).
            Self::AwsS3(c) if c.encoding.codec == ObjectCodec::Parquet => Values::Fields,
            Self::Postgres(_) => Values::Fields,
            Self::Kafka(c) if json(c.encoding.codec) => {
                writes_json(!fixed(&c.topic) || c.key_field.is_some() || c.headers_key.is_some())
            }
            Self::AwsKinesisStreams(c) | Self::AwsKinesisFirehose(c) if json(c.encoding.codec) => {
                writes_json(c.partition_key_field.is_some())
            }
            _ => Values::Built,
        }
    }

    /// Whether the sink commits its sources' positions with its data (exactly-once).
    pub fn exactly_once(&self) -> bool {
        match self {
            Self::Postgres(c) => c.exactly_once,
            Self::Iceberg(c) => c.exactly_once,
            _ => false,
        }
    }

    /// Where the sink records source positions, for the source that feeds it.
    pub fn position_store(
        &self,
        sink_id: &str,
    ) -> Option<std::sync::Arc<dyn crate::exactly_once::PositionStore>> {
        match self {
            Self::Postgres(c) => c.position_store(sink_id),
            Self::Iceberg(c) => c.position_store(sink_id),
            _ => None,
        }
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        match self {
            Self::AwsKinesisFirehose(c) => c.build(aws_kinesis::Service::Firehose, cx),
            Self::AwsKinesisStreams(c) => c.build(aws_kinesis::Service::Streams, cx),
            Self::AwsS3(c) => c.build(cx),
            Self::Blackhole(c) => c.build(cx),
            Self::Console(c) => c.build(cx),
            Self::File(c) => c.build(cx),
            Self::Http(c) => c.build(cx),
            Self::Iceberg(c) => c.build(cx),
            Self::Kafka(c) => c.build(cx),
            Self::Postgres(c) => c.build(cx),
        }
    }

    /// Checks the sink's service is reachable and its directories writable or creatable (for
    /// `sluice validate`, which must change nothing). `Ok` holds notes on what the run will
    /// create. `None` if the sink has nothing to check.
    pub async fn healthcheck(&self) -> Option<Result<Vec<String>, String>> {
        let no_notes = |result: Result<(), String>| result.map(|()| Vec::new());
        match self {
            Self::Http(c) => Some(no_notes(c.healthcheck().await)),
            Self::File(c) => Some(c.healthcheck()),
            Self::AwsS3(c) => Some(c.healthcheck().await),
            Self::Postgres(c) => Some(no_notes(c.healthcheck().await)),
            Self::Iceberg(c) => Some(c.healthcheck().await),
            Self::AwsKinesisStreams(c) => {
                Some(no_notes(c.healthcheck(aws_kinesis::Service::Streams).await))
            }
            Self::AwsKinesisFirehose(c) => Some(no_notes(
                c.healthcheck(aws_kinesis::Service::Firehose).await,
            )),
            _ => None,
        }
    }
}
