//! Newline framing with a maximum line length, shared by the file and stdin sources.

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;

/// What happens to a line longer than `max_line_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Keep the first `max_line_bytes` bytes as the event, skip the rest of the line
    /// (default; counted as `component_errors_total{error_type="line_truncated"}`).
    #[default]
    Truncate,
    /// Drop the whole line (counted in `component_discarded_events_total{reason="oversize"}`).
    Drop,
}

/// One result of framing.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline.
    Line(Bytes),
    /// The head of an oversize line (`Oversize::Truncate`).
    Truncated(Bytes),
    /// An oversize line was dropped (`Oversize::Drop`).
    Dropped,
}

/// Splits a byte stream into lines, never holding more than `max` bytes of one line.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max: usize,
    policy: Oversize,
    /// Inside an oversize line: discard up to the next newline.
    skipping: bool,
}

impl LineFramer {
    pub fn new(max: usize, policy: Oversize) -> Self {
        LineFramer {
            max: max.max(1),
            policy,
            skipping: false,
        }
    }

    /// The next frame from `buf`, or `None` when `buf` holds no complete line yet.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if self.skipping {
            match memchr::memchr(b'\n', buf) {
                Some(end) => {
                    buf.advance(end + 1);
                    self.skipping = false;
                }
                None => {
                    buf.clear();
                    return None;
                }
            }
        }
        let window = buf.len().min(self.max + 1);
        match memchr::memchr(b'\n', &buf[..window]) {
            Some(end) => {
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                Some(Frame::Line(line.freeze()))
            }
            None if buf.len() > self.max => {
                let head = buf.split_to(self.max).freeze();
                self.skipping = true;
                Some(match self.policy {
                    Oversize::Truncate => Frame::Truncated(head),
                    Oversize::Drop => Frame::Dropped,
                })
            }
            None => None,
        }
    }

    /// Forgets a partial oversize line (after a file is truncated).
    pub fn reset(&mut self) {
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, policy: Oversize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max, policy);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = framer.next(&mut buf) {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_keeps_partial_tails() {
        let out = frames(100, Oversize::Drop, &[b"ab", b"c\nde", b"f\ng"]);
        assert_eq!(
            out,
            vec![Frame::Line("abc".into()), Frame::Line("def".into())]
        );
    }

    #[test]
    fn truncates_oversize_lines_and_resumes_after_them() {
        let out = frames(4, Oversize::Truncate, &[b"0123456", b"789\nok\n"]);
        assert_eq!(
            out,
            vec![Frame::Truncated("0123".into()), Frame::Line("ok".into())]
        );
    }

    #[test]
    fn drops_oversize_lines_when_asked() {
        let out = frames(4, Oversize::Drop, &[b"0123456789\nok\n"]);
        assert_eq!(out, vec![Frame::Dropped, Frame::Line("ok".into())]);
    }

    #[test]
    fn a_line_of_exactly_max_bytes_passes() {
        let out = frames(4, Oversize::Drop, &[b"0123\n"]);
        assert_eq!(out, vec![Frame::Line("0123".into())]);
    }
}
