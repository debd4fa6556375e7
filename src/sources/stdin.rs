//! The `stdin` source: one event per line of standard input. Ends at end of input, which lets
//! `sluice run` work as a filter in a shell pipeline (the agent drains and exits).

use super::SourceContext;
use crate::codec::decoding::{decode_frame, OnDecodeError};
use crate::codec::framing::{Frame, LineFramer, Oversize};
use crate::codec::{Decoder, DecodingConfig};
use crate::event::EventBatch;
use crate::topology::{BuildError, ComponentError, RunFuture};
use bytes::BytesMut;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Read lines from standard input.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Longest line kept, in bytes (default 102400).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// `truncate` (default) or `drop` lines longer than `max_line_bytes`; both are counted.
    #[serde(default)]
    pub oversize_lines: Oversize,
    /// How each line becomes an event (default: bytes into `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
}

fn default_max_line_bytes() -> usize {
    102_400
}

impl StdinConfig {
    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if self.decoding.on_error == Some(OnDecodeError::Reject) {
            return Err(BuildError::new(
                "decoding",
                "`on_error: reject` is only for http_server; use drop or pass_raw",
            ));
        }
        Ok(Box::pin(read_lines(self.clone(), tokio::io::stdin(), cx)))
    }
}

/// Reads lines from any byte stream until its end or shutdown.
pub async fn read_lines(
    config: StdinConfig,
    mut input: impl AsyncRead + Unpin,
    mut cx: SourceContext,
) -> Result<(), ComponentError> {
    let decoder = Decoder::new(&config.decoding, cx.values);
    let on_error = config.decoding.on_error.unwrap_or(OnDecodeError::Drop);
    let mut framer = LineFramer::new(config.max_line_bytes, config.oversize_lines);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        buf.reserve(64 * 1024);
        let read = tokio::select! {
            _ = cx.shutdown.stop.cancelled() => break,
            read = input.read_buf(&mut buf) => read?,
        };
        let mut events = Vec::new();
        let mut bytes = 0;
        while let Some(frame) = framer.next(&mut buf) {
            let line = match frame {
                Frame::Line(line) => line,
                Frame::Truncated(head) => {
                    cx.metrics.error("line_truncated");
                    head
                }
                Frame::Dropped => {
                    cx.metrics.discarded("oversize", 1);
                    continue;
                }
            };
            bytes += line.len() + 1;
            decode_frame(&decoder, on_error, line, &mut events, &cx.metrics);
        }
        if read == 0 && !buf.is_empty() {
            let line = buf.split().freeze();
            bytes += line.len();
            decode_frame(&decoder, on_error, line, &mut events, &cx.metrics);
        }
        if !events.is_empty() {
            cx.metrics.received(events.len(), bytes);
            if cx.out.send(EventBatch::new(events, bytes)).await.is_err() {
                break;
            }
        }
        if read == 0 {
            break;
        }
    }
    Ok(())
}
