//! Object bodies: NDJSON, a JSON array, or text lines (each optionally gzip or zstd as a
//! whole object), or a Parquet file.

use super::parquet::{ParquetConfig, ParquetEncoder};
use crate::codec::encoding::EncodingCodec;
use crate::codec::{Compression, Encoder};
use crate::event::Event;
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

/// An encoded object and what went wrong on the way.
pub struct Body {
    pub bytes: Vec<u8>,
    /// Events left out (no `message` for `text`, or not serializable).
    pub skipped: usize,
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

    pub fn encode(&self, events: &[Event]) -> Result<Body, String> {
        match self {
            ObjectEncoder::Parquet(parquet) => {
                let (bytes, mismatches) = parquet.encode(events)?;
                Ok(Body {
                    bytes,
                    skipped: 0,
                    mismatches,
                })
            }
            ObjectEncoder::Lines(encoder, compression) => {
                let mut raw = Vec::with_capacity(events.len() * 256);
                let skipped = encoder.encode_body(events, &mut raw);
                let bytes = match compression.compress(&raw) {
                    Ok(std::borrow::Cow::Borrowed(_)) => raw,
                    Ok(std::borrow::Cow::Owned(packed)) => packed,
                    Err(error) => return Err(format!("cannot compress the object: {error}")),
                };
                Ok(Body {
                    bytes,
                    skipped,
                    mismatches: 0,
                })
            }
        }
    }
}
