//! Object bodies: NDJSON, a JSON array, or text lines (each optionally gzip or zstd as a
//! whole object), or a Parquet file.

use super::parquet::{ParquetConfig, ParquetEncoder, Rows};
use crate::codec::encoding::EncodingCodec;
use crate::codec::{Compression, Encoder};
use crate::event::{Event, Value};
use serde::Deserialize;

/// The format of each object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectCodec {
    /// One JSON object per line (default).
    #[default]
    Ndjson,
    /// One JSON array per object.
    Json,
    /// The `message` field, one per line.
    Text,
    /// A Parquet file (options under `parquet`).
    Parquet,
}

/// How events become an object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEncodingConfig {
    /// `ndjson` (default), `json`, `text` or `parquet`.
    #[serde(default)]
    pub codec: ObjectCodec,
    /// Parquet options (schema, row groups, column compression).
    #[serde(default)]
    pub parquet: ParquetConfig,
}

/// The object a batch is becoming: events are encoded as they arrive (and then dropped),
/// so what waits in memory is the encoded form.
pub enum Pending {
    /// Uncompressed NDJSON / JSON array / text; compressed as a whole at the end.
    Lines {
        buf: Vec<u8>,
        events: usize,
    },
    Parquet(Rows),
}

/// What adding one event did.
pub struct Added {
    /// It could not be encoded at all (no `message` for `text`).
    pub skipped: bool,
    /// Parquet values written as null because they did not fit their column.
    pub mismatches: usize,
}

/// The runtime encoder of a sink.
#[derive(Debug, Clone)]
pub enum ObjectEncoder {
    Lines(Encoder, Compression),
    Parquet(Box<ParquetEncoder>),
}

impl ObjectEncoder {
    /// `compression` applies to line formats (default gzip); Parquet compresses columns.
    pub fn new(
        config: &ObjectEncodingConfig,
        compression: Option<Compression>,
    ) -> Result<Self, (&'static str, String)> {
        let lines = |codec| {
            ObjectEncoder::Lines(Encoder { codec }, compression.unwrap_or(Compression::Gzip))
        };
        Ok(match config.codec {
            ObjectCodec::Ndjson => lines(EncodingCodec::Ndjson),
            ObjectCodec::Json => lines(EncodingCodec::Json),
            ObjectCodec::Text => lines(EncodingCodec::Text),
            ObjectCodec::Parquet => {
                if compression.is_some_and(|c| c != Compression::None) {
                    return Err((
                        "compression",
                        "Parquet compresses its columns: use encoding.parquet.compression".into(),
                    ));
                }
                ObjectEncoder::Parquet(Box::new(
                    ParquetEncoder::new(&config.parquet).map_err(|m| ("encoding", m))?,
                ))
            }
        })
    }

    /// The file extension: `ndjson.gz`, `json.zst`, `log`, `parquet`, ...
    pub fn extension(&self) -> String {
        match self {
            ObjectEncoder::Parquet(_) => "parquet".into(),
            ObjectEncoder::Lines(encoder, compression) => {
                let base = match encoder.codec {
                    EncodingCodec::Ndjson => "ndjson",
                    EncodingCodec::Json => "json",
                    EncodingCodec::Text => "log",
                };
                match compression {
                    Compression::None => base.into(),
                    Compression::Gzip => format!("{base}.gz"),
                    Compression::Zstd => format!("{base}.zst"),
                }
            }
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            ObjectEncoder::Parquet(_) => "application/vnd.apache.parquet",
            ObjectEncoder::Lines(encoder, _) => match encoder.codec {
                EncodingCodec::Ndjson => "application/x-ndjson",
                EncodingCodec::Json => "application/json",
                EncodingCodec::Text => "text/plain; charset=utf-8",
            },
        }
    }

    pub fn content_encoding(&self) -> Option<&'static str> {
        match self {
            ObjectEncoder::Parquet(_) => None,
            ObjectEncoder::Lines(_, compression) => compression.content_encoding(),
        }
    }

    pub fn start(&self) -> Pending {
        match self {
            ObjectEncoder::Parquet(parquet) => Pending::Parquet(parquet.start()),
            ObjectEncoder::Lines(..) => Pending::Lines {
                buf: Vec::new(),
                events: 0,
            },
        }
    }

    /// Encodes one event into the pending object.
    pub fn add(&self, pending: &mut Pending, event: &Event) -> Added {
        match (self, pending) {
            (ObjectEncoder::Parquet(_), Pending::Parquet(rows)) => Added {
                skipped: false,
                mismatches: rows.add(event),
            },
            (ObjectEncoder::Lines(encoder, _), Pending::Lines { buf, events }) => {
                let skipped = if encoder.codec == EncodingCodec::Json {
                    buf.push(if buf.is_empty() { b'[' } else { b',' });
                    event.write_json(buf);
                    false
                } else {
                    encoder.encode_line(event, buf).is_err()
                };
                *events += usize::from(!skipped);
                Added {
                    skipped,
                    mismatches: 0,
                }
            }
            _ => unreachable!("a pending object comes from its own encoder"),
        }
    }

    /// How many events the pending object holds.
    pub fn count(pending: &Pending) -> usize {
        match pending {
            Pending::Lines { events, .. } => *events,
            Pending::Parquet(rows) => rows.len(),
        }
    }

    /// The finished object's bytes (compressed, or the Parquet file).
    pub fn finish(&self, pending: Pending) -> Result<Vec<u8>, String> {
        match (self, pending) {
            (ObjectEncoder::Parquet(parquet), Pending::Parquet(rows)) => parquet.finish(rows),
            (ObjectEncoder::Lines(encoder, compression), Pending::Lines { mut buf, .. }) => {
                if encoder.codec == EncodingCodec::Json {
                    if buf.is_empty() {
                        buf.push(b'[');
                    }
                    buf.push(b']');
                }
                match compression.compress(&buf) {
                    Ok(std::borrow::Cow::Borrowed(_)) => Ok(buf),
                    Ok(std::borrow::Cow::Owned(packed)) => Ok(packed),
                    Err(error) => Err(format!("cannot compress the object: {error}")),
                }
            }
            _ => unreachable!("a pending object comes from its own encoder"),
        }
    }

    /// The events back out of a finished object, for the dead-letter output when it cannot
    /// be uploaded (the events themselves were dropped once encoded). Parquet rows come back
    /// as objects of their column values.
    pub fn decode(&self, body: &[u8]) -> Vec<Event> {
        match self {
            ObjectEncoder::Parquet(_) => super::parquet::decode(body),
            ObjectEncoder::Lines(encoder, compression) => {
                let raw = match crate::codec::compression::decompress(
                    compression.content_encoding(),
                    bytes::Bytes::copy_from_slice(body),
                    usize::MAX / 2,
                ) {
                    Ok(raw) => raw,
                    Err(_) => return Vec::new(),
                };
                let parse = |text: &[u8]| {
                    serde_json::from_slice::<serde_json::Value>(text)
                        .ok()
                        .map(|v| Event::from(Value::from(v)))
                };
                match encoder.codec {
                    EncodingCodec::Json => {
                        match serde_json::from_slice::<Vec<serde_json::Value>>(&raw) {
                            Ok(values) => values
                                .into_iter()
                                .map(|v| Event::from(Value::from(v)))
                                .collect(),
                            Err(_) => Vec::new(),
                        }
                    }
                    EncodingCodec::Ndjson => raw
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .filter_map(parse)
                        .collect(),
                    EncodingCodec::Text => raw
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| Event::from_message(bytes::Bytes::copy_from_slice(l)))
                        .collect(),
                }
            }
        }
    }
}
