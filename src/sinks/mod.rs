//! Sinks: where events leave. Every sink type is registered here, in one place.

pub mod batch;
pub mod blackhole;
pub mod console;
pub mod file;
pub mod http;

use crate::config::{parse_fields, unknown_type, FieldError};
use crate::observe::ComponentMetrics;
use crate::topology::{BufferReceiver, BuildError, ChannelLimits, RunFuture, WhenFull};
use serde::Deserialize;
use std::path::PathBuf;

/// What a running sink is handed.
pub struct SinkContext {
    pub id: String,
    pub input: BufferReceiver,
    pub metrics: ComponentMetrics,
    /// The sink's own state directory (`data_dir/<id>`).
    pub data_dir: PathBuf,
}

/// The kind of buffer in front of a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// In memory, bounded (default).
    #[default]
    Memory,
}

/// The buffer in front of a sink: how many events and bytes may wait for it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` (default).
    #[serde(default, rename = "type")]
    pub kind: BufferType,
    /// Most events waiting (default 8192).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes waiting, measured as the events' raw size (default 8 MiB).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// `block` (default: upstream waits, backpressure) or `drop_newest` (drop and count in
    /// `component_discarded_events_total{reason="buffer_full"}`).
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_max_events() -> usize {
    ChannelLimits::default().max_events
}
fn default_max_size() -> usize {
    ChannelLimits::default().max_bytes
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferType::Memory,
            max_events: default_max_events(),
            max_size: default_max_size(),
            when_full: WhenFull::Block,
        }
    }
}

impl BufferConfig {
    pub fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_events: self.max_events,
            max_bytes: self.max_size,
            when_full: self.when_full,
        }
    }
}

/// Every sink type, selected by `type:`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Blackhole(blackhole::BlackholeConfig),
    Console(console::ConsoleConfig),
    File(file::FileSinkConfig),
    Http(http::HttpSinkConfig),
}

const TYPES: &[&str] = &["blackhole", "console", "file", "http"];

impl SinkConfig {
    pub fn parse(kind: &str, value: serde_yaml::Value) -> Result<Self, FieldError> {
        Ok(match kind {
            "blackhole" => Self::Blackhole(parse_fields(value)?),
            "console" => Self::Console(parse_fields(value)?),
            "file" => Self::File(parse_fields(value)?),
            "http" => Self::Http(parse_fields(value)?),
            other => return Err(unknown_type(other, TYPES)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Blackhole(_) => "blackhole",
            Self::Console(_) => "console",
            Self::File(_) => "file",
            Self::Http(_) => "http",
        }
    }

    pub fn inputs(&self) -> &[String] {
        match self {
            Self::Blackhole(c) => &c.inputs,
            Self::Console(c) => &c.inputs,
            Self::File(c) => &c.inputs,
            Self::Http(c) => &c.inputs,
        }
    }

    pub fn buffer(&self) -> &BufferConfig {
        match self {
            Self::Blackhole(c) => &c.buffer,
            Self::Console(c) => &c.buffer,
            Self::File(c) => &c.buffer,
            Self::Http(c) => &c.buffer,
        }
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        match self {
            Self::Blackhole(c) => c.build(cx),
            Self::Console(c) => c.build(cx),
            Self::File(c) => c.build(cx),
            Self::Http(c) => c.build(cx),
        }
    }

    /// Checks the sink's service is reachable (for `sluice validate`). `None` if the sink has
    /// nothing to check.
    pub async fn healthcheck(&self) -> Option<Result<(), String>> {
        match self {
            Self::Http(c) => Some(c.healthcheck().await),
            Self::File(c) => Some(c.healthcheck()),
            _ => None,
        }
    }
}
