//! The `console` sink: writes events to standard output, one per line.

use super::{BufferConfig, SinkContext};
use crate::codec::{Encoder, EncodingConfig};
use crate::event::BatchStatus;
use crate::topology::{BuildError, ComponentError, RunFuture};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Print events to stdout.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// `ndjson` (default), `json` or `text`.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl ConsoleConfig {
    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        let encoder = Encoder::new(&self.encoding);
        Ok(Box::pin(run(encoder, cx)))
    }
}

async fn run(encoder: Encoder, cx: SinkContext) -> Result<(), ComponentError> {
    let SinkContext {
        mut input,
        metrics,
        id,
        ..
    } = cx;
    let mut stdout = tokio::io::stdout();
    let mut buf = Vec::new();
    while let Some(batch) = input.recv().await {
        metrics.received(batch.len(), batch.byte_size);
        buf.clear();
        let mut failed = 0;
        for event in &batch.events {
            if encoder.encode_line(event, &mut buf).is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            metrics.errors("encode_failed", failed as u64);
            metrics.discarded("encode_failed", failed);
        }
        let written = async {
            stdout.write_all(&buf).await?;
            stdout.flush().await
        }
        .await;
        match written {
            Ok(()) => metrics.sent(batch.len() - failed, buf.len()),
            Err(error) => {
                // stdout closed (a pipe reader went away): nothing more can be written.
                batch.finalizers.update_status(BatchStatus::Rejected);
                metrics.error("write_failed");
                return Err(format!("{id}: cannot write to stdout: {error}").into());
            }
        }
    }
    Ok(())
}
