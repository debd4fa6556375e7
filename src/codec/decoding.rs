//! Decoding frames into events: `bytes` (the frame becomes `.message`) or `json` (the frame is
//! parsed; a top-level array yields one event per element, as in Vector).

use crate::event::{json, Event, ObjectMap, Value, MESSAGE_KEY};
use crate::observe::ComponentMetrics;
use bytes::Bytes;
use serde::Deserialize;

/// How a frame is turned into an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodingCodec {
    /// The frame's bytes, untouched, in the `message` field (default). Invalid UTF-8 is kept.
    #[default]
    Bytes,
    /// The frame is parsed as JSON: an object becomes the event, an array one event per
    /// element, any other value is put in `message`.
    Json,
}

/// What happens to a frame that fails to decode. The failure is always counted in
/// `component_errors_total{error_type="decode_failed"}` and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDecodeError {
    /// Drop the frame (counted in `component_discarded_events_total{reason="decode_failed"}`).
    Drop,
    /// Keep the raw frame as `{ "message": <bytes> }` so nothing is lost.
    PassRaw,
    /// http_server only: reject the whole request with 400 and the reason (default there).
    Reject,
}

/// Decoding options of a source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// `bytes` (default) or `json`.
    #[serde(default)]
    pub codec: DecodingCodec,
    /// `drop`, `pass_raw` or (http_server) `reject`. Default: `drop`, and `reject` for
    /// http_server.
    #[serde(default)]
    pub on_error: Option<OnDecodeError>,
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// The runtime decoder built from a [`DecodingConfig`].
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    codec: DecodingCodec,
    /// What `json` makes of each document: its value, or its text (see [`Values`]).
    reading: json::Reading,
}

/// What a source's consumers need of its decoded events, and so what the `json` codec makes
/// of a one-line object (see `SourceContext::values`). The events are the same either way
/// (equal values); what differs is which work is done, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Values {
    /// Values: a transform, or a sink that does not write JSON, reads them.
    #[default]
    Built,
    /// Text and where its top-level fields are, checked: every consumer writes the events as
    /// JSON or reads top-level fields straight from the text (`Event::field`: templates, keys,
    /// Parquet and postgres columns); a value is built if something asks after all.
    Fields,
    /// Text alone, checked: every consumer only writes the events as JSON; a value is built
    /// if something asks after all.
    OnDemand,
}

impl Values {
    /// What two consumers together need: the more of the two.
    pub fn and(self, other: Values) -> Values {
        use Values::*;
        match (self, other) {
            (Built, _) | (_, Built) => Built,
            (Fields, _) | (_, Fields) => Fields,
            (OnDemand, OnDemand) => OnDemand,
        }
    }
}

impl Decoder {
    pub fn new(config: &DecodingConfig, values: Values) -> Self {
        Decoder {
            codec: config.codec,
            reading: match values {
                Values::Built => json::Reading::Value,
                Values::Fields => json::Reading::TextAndFields,
                Values::OnDemand => json::Reading::Text,
            },
        }
    }

    /// Decodes one frame, appending its events to `out`. Borrowed: `json` copies what it
    /// keeps, and a clone of the frame for it was two atomic counts per event for nothing.
    pub fn decode(&self, frame: &Bytes, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        match self.codec {
            DecodingCodec::Bytes => out.push(Event::from_message(frame.clone())),
            DecodingCodec::Json => match json::read(frame, self.reading)? {
                json::Document::Value(Value::Array(items)) => {
                    out.extend(items.into_iter().map(wrap))
                }
                json::Document::Value(value) => out.push(wrap(value)),
                // An object kept as text.
                document => out.push(Event::from_document(document)),
            },
        }
        Ok(())
    }
}

/// Decodes a frame applying the source's `on_error` policy (`drop` or `pass_raw`; `reject` is
/// the caller's business and is treated as `drop` here). Failures are counted and logged.
pub fn decode_frame(
    decoder: &Decoder,
    on_error: OnDecodeError,
    frame: Bytes,
    out: &mut Vec<Event>,
    metrics: &ComponentMetrics,
) {
    if let Err(error) = decoder.decode(&frame, out) {
        metrics.error("decode_failed");
        match on_error {
            OnDecodeError::PassRaw => {
                tracing::warn!(component_id = metrics.id(), %error, "cannot decode frame");
                out.push(Event::from_message(frame));
            }
            OnDecodeError::Drop | OnDecodeError::Reject => {
                metrics.discarded_with("decode_failed", 1, || {
                    Some(format!("{error}: {}", String::from_utf8_lossy(&frame)))
                })
            }
        }
    }
}

fn wrap(value: Value) -> Event {
    match value {
        Value::Object(_) => Event::from(value),
        other => {
            let mut map = ObjectMap::new();
            map.insert(MESSAGE_KEY.into(), other);
            Event::from(Value::Object(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codec: DecodingCodec, frame: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let mut out = Vec::new();
        Decoder::new(
            &DecodingConfig {
                codec,
                on_error: None,
            },
            Values::Built,
        )
        .decode(&Bytes::copy_from_slice(frame), &mut out)?;
        Ok(out)
    }

    #[test]
    fn bytes_keeps_invalid_utf8_as_is() {
        let events = decode(DecodingCodec::Bytes, b"a\xffb").unwrap();
        assert_eq!(
            events[0].get("message"),
            Some(&Value::Bytes(Bytes::from_static(b"a\xffb")))
        );
    }

    #[test]
    fn json_object_becomes_the_event_and_arrays_split() {
        let events = decode(DecodingCodec::Json, br#"[{"a":1},{"a":2},3]"#).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].get("a"), Some(&Value::Integer(2)));
        assert_eq!(events[2].get("message"), Some(&Value::Integer(3)));
    }

    #[test]
    fn invalid_json_and_invalid_utf8_are_errors() {
        assert!(decode(DecodingCodec::Json, b"{\"a\":").is_err());
        assert!(decode(DecodingCodec::Json, b"{\"a\":\"\xff\"}").is_err());
    }
}
