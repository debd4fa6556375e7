//! Encoding events into bytes: `json`/`ndjson` (one JSON object per line; for the http sink
//! `json` makes the body one JSON array) and `text` (the `message` field, raw).

use crate::event::{Event, Value, MESSAGE_KEY};
use serde::Deserialize;

/// How events are written out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingCodec {
    /// JSON. In line-oriented sinks, one object per line; in the http sink, a JSON array body.
    Json,
    /// Newline-delimited JSON: one object per line (default).
    #[default]
    Ndjson,
    /// The `message` field's bytes, one per line. Events without `message` are dropped and
    /// counted as `encode_failed`.
    Text,
}

/// Encoding options of a sink.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// `json`, `ndjson` (default) or `text`.
    #[serde(default)]
    pub codec: EncodingCodec,
}

/// An event that could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("event has no `message` field for the text codec")]
    NoMessage,
}

/// The runtime encoder.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    pub codec: EncodingCodec,
}

impl Encoder {
    pub fn new(config: &EncodingConfig) -> Self {
        Encoder {
            codec: config.codec,
        }
    }

    /// Appends one event followed by a newline. On error `buf` is left as it was.
    pub fn encode_line(&self, event: &Event, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = buf.len();
        let result = match self.codec {
            EncodingCodec::Json | EncodingCodec::Ndjson => {
                event.write_json(buf);
                Ok(())
            }
            EncodingCodec::Text => match event.get(MESSAGE_KEY) {
                Some(Value::Bytes(bytes)) => {
                    buf.extend_from_slice(bytes);
                    Ok(())
                }
                Some(other) => {
                    buf.extend_from_slice(other.to_string_lossy().as_bytes());
                    Ok(())
                }
                None => Err(EncodeError::NoMessage),
            },
        };
        match result {
            Ok(()) => {
                buf.push(b'\n');
                Ok(())
            }
            Err(error) => {
                buf.truncate(start);
                Err(error)
            }
        }
    }

    /// Encodes a whole request body: a JSON array for `json`, lines otherwise. Events that fail
    /// to encode (`text` without a `message`) are skipped and returned as the error count.
    pub fn encode_body(&self, events: &[Event], buf: &mut Vec<u8>) -> usize {
        let mut failed = 0;
        if self.codec == EncodingCodec::Json {
            buf.push(b'[');
            for (index, event) in events.iter().enumerate() {
                if index > 0 {
                    buf.push(b',');
                }
                event.write_json(buf);
            }
            buf.push(b']');
        } else {
            for event in events {
                if self.encode_line(event, buf).is_err() {
                    failed += 1;
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn ndjson_writes_one_object_per_line() {
        let mut buf = Vec::new();
        let event = Event::from_message("hi".into());
        Encoder {
            codec: EncodingCodec::Ndjson,
        }
        .encode_line(&event, &mut buf)
        .unwrap();
        assert_eq!(buf, b"{\"message\":\"hi\"}\n");
    }

    #[test]
    fn text_writes_the_message_and_rejects_events_without_one() {
        let encoder = Encoder {
            codec: EncodingCodec::Text,
        };
        let mut buf = Vec::new();
        encoder
            .encode_line(&Event::from_message("raw line".into()), &mut buf)
            .unwrap();
        assert_eq!(buf, b"raw line\n");
        let empty = Event::from(Value::Object(Default::default()));
        assert!(encoder.encode_line(&empty, &mut buf).is_err());
        assert_eq!(buf, b"raw line\n", "a failed event leaves nothing behind");
    }

    #[test]
    fn json_body_is_an_array() {
        let events = vec![
            Event::from_message("a".into()),
            Event::from_message("b".into()),
        ];
        let mut buf = Vec::new();
        assert_eq!(
            Encoder {
                codec: EncodingCodec::Json
            }
            .encode_body(&events, &mut buf),
            0
        );
        assert_eq!(buf, br#"[{"message":"a"},{"message":"b"}]"#);
    }
}
