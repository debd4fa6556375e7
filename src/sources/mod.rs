//! Sources: where events come from. Every source type is registered here, in one place.

pub mod acks;
pub mod aws_kinesis;
pub mod demo;
pub mod file;
pub mod http_server;
pub mod kafka;
pub mod stdin;

use crate::config::{parse_fields, unknown_type, FieldError};
use crate::observe::ComponentMetrics;
use crate::topology::{BuildError, Fanout, RunFuture, Shutdown};
use std::path::PathBuf;

/// What a running source is handed.
pub struct SourceContext {
    pub id: String,
    /// Where its events go.
    pub out: Fanout,
    pub shutdown: Shutdown,
    /// The source's own state directory (`data_dir/<id>`), created on demand.
    pub data_dir: PathBuf,
    /// Wait for delivery before advancing checkpoints / answering clients.
    pub acknowledgements: bool,
    pub metrics: ComponentMetrics,
    /// The position store of the exactly-once sink this source feeds, if one does: the
    /// source claims its partitions there and starts from the positions it returns.
    pub position_store: Option<std::sync::Arc<dyn crate::exactly_once::PositionStore>>,
    /// What its consumers need of its decoded events: values, or their JSON text (with where
    /// its top-level fields are, for consumers that read them) (`SinkConfig::needs`, folded
    /// over the consumers at build).
    pub values: crate::codec::decoding::Values,
}

/// Every source type, selected by `type:`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    AwsKinesis(Box<aws_kinesis::KinesisSourceConfig>),
    Demo(demo::DemoConfig),
    File(file::FileSourceConfig),
    HttpServer(http_server::HttpServerConfig),
    Kafka(Box<kafka::KafkaSourceConfig>),
    Stdin(stdin::StdinConfig),
}

const TYPES: &[&str] = &[
    "aws_kinesis",
    "demo",
    "file",
    "http_server",
    "kafka",
    "stdin",
];

impl SourceConfig {
    pub fn parse(kind: &str, value: serde_yaml::Value) -> Result<Self, FieldError> {
        Ok(match kind {
            "aws_kinesis" => Self::AwsKinesis(parse_fields(value)?),
            "demo" => Self::Demo(parse_fields(value)?),
            "file" => Self::File(parse_fields(value)?),
            "http_server" => Self::HttpServer(parse_fields(value)?),
            "kafka" => Self::Kafka(parse_fields(value)?),
            "stdin" => Self::Stdin(parse_fields(value)?),
            other => return Err(unknown_type(other, TYPES)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::AwsKinesis(_) => "aws_kinesis",
            Self::Demo(_) => "demo",
            Self::File(_) => "file",
            Self::HttpServer(_) => "http_server",
            Self::Kafka(_) => "kafka",
            Self::Stdin(_) => "stdin",
        }
    }

    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        match self {
            Self::AwsKinesis(c) => c.build(cx),
            Self::Demo(c) => c.build(cx),
            Self::File(c) => c.build(cx),
            Self::HttpServer(c) => c.build(cx),
            Self::Kafka(c) => c.build(cx),
            Self::Stdin(c) => c.build(cx),
        }
    }
}
