//! The `blackhole` sink: counts and discards events. For tests and benchmarks.

use super::{BufferConfig, SinkContext};
use crate::topology::{BuildError, ComponentError, RunFuture};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Count and discard events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// Log the running totals this often, in seconds (default: only at shutdown).
    #[serde(default)]
    pub print_interval_secs: Option<f64>,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl BlackholeConfig {
    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        let interval = match self.print_interval_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(_) => {
                return Err(BuildError::new(
                    "print_interval_secs",
                    "must be a number > 0",
                ))
            }
            None => None,
        };
        Ok(Box::pin(run(interval, cx)))
    }
}

async fn run(interval: Option<Duration>, cx: SinkContext) -> Result<(), ComponentError> {
    let SinkContext {
        mut input,
        metrics,
        id,
        ..
    } = cx;
    let (mut events, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    let mut last_print = Instant::now();
    while let Some(batch) = input.recv().await {
        metrics.received(batch.len(), batch.byte_size);
        metrics.sent(batch.len(), batch.byte_size);
        events += batch.len() as u64;
        bytes += batch.byte_size as u64;
        if let Some(every) = interval {
            if last_print.elapsed() >= every {
                tracing::info!(component_id = %id, events, bytes, "blackhole totals");
                last_print = Instant::now();
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(component_id = %id, events, bytes, events_per_sec = (events as f64 / secs) as u64, "blackhole finished");
    Ok(())
}
