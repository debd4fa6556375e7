//! Parquet objects (via `arrow` + `parquet`): one file per batch, columns typed.
//!
//! The schema is either given (`schema: {field: type}`, field names may be dotted paths into
//! nested objects: `user.id`) or inferred per batch from the events' top-level fields,
//! sorted by name: integers → `int64`, numbers with a fraction → `float64`, booleans →
//! `bool`, timestamps → `timestamp` (µs, UTC), strings → `string`, objects and arrays →
//! `json` (a string column holding JSON), and a field with mixed types → `string`. Nested
//! objects are always JSON strings, never Parquet structs: the schema stays flat, so
//! objects of one prefix can differ in their nested shape. A value that does not fit its
//! given column type is written as null and counted (`component_errors_total{error_type=
//! "schema_mismatch"}`).

use crate::event::{Event, Value};
use crate::transforms::support::parse_path;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use indexmap::IndexMap;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCodec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use vrl::path::OwnedValuePath;

/// The type of a Parquet column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text; other scalars are written as their text form, objects as JSON.
    String,
    Int64,
    Float64,
    Bool,
    /// Microseconds since the epoch, UTC; from timestamps or RFC 3339 strings.
    Timestamp,
    /// Any value, as a JSON string.
    Json,
}

/// Column compression inside the Parquet file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    /// Snappy (default): fast, what most readers expect.
    #[default]
    Snappy,
    /// Zstandard level 3: smaller files.
    Zstd,
    None,
}

/// Parquet options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetConfig {
    /// Columns and their types, in order (`{host: string, status: int64, "user.id": int64}`).
    /// Without it the schema is inferred per batch (see the module docs in the README).
    #[serde(default)]
    pub schema: Option<IndexMap<String, ColumnType>>,
    /// Most rows per row group (default 65536).
    #[serde(default = "default_row_group_size")]
    pub row_group_size: usize,
    /// `snappy` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: ParquetCompression,
}

fn default_row_group_size() -> usize {
    65_536
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            schema: None,
            row_group_size: default_row_group_size(),
            compression: ParquetCompression::default(),
        }
    }
}

/// A column to write: its name, where its values come from, and its type.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    path: OwnedValuePath,
    kind: ColumnType,
}

/// Encodes batches of events as Parquet files.
#[derive(Debug, Clone)]
pub struct ParquetEncoder {
    fixed: Option<Vec<Column>>,
    properties: WriterProperties,
}

impl ParquetEncoder {
    pub fn new(config: &ParquetConfig) -> Result<Self, String> {
        if config.row_group_size == 0 {
            return Err("parquet.row_group_size must be greater than 0".into());
        }
        let fixed = match &config.schema {
            None => None,
            Some(schema) if schema.is_empty() => {
                return Err("parquet.schema needs at least one column".into())
            }
            Some(schema) => Some(
                schema
                    .iter()
                    .map(|(name, kind)| {
                        Ok(Column {
                            name: name.clone(),
                            path: parse_path(name)
                                .map_err(|e| format!("parquet.schema.{name}: {e}"))?,
                            kind: *kind,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            ),
        };
        let codec = match config.compression {
            ParquetCompression::Snappy => ParquetCodec::SNAPPY,
            ParquetCompression::Zstd => ParquetCodec::ZSTD(ZstdLevel::try_new(3).unwrap()),
            ParquetCompression::None => ParquetCodec::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(config.row_group_size))
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetEncoder { fixed, properties })
    }

    /// One Parquet file holding every event; returns it and how many values did not fit
    /// their column type (written as null).
    pub fn encode(&self, events: &[Event]) -> Result<(Vec<u8>, usize), String> {
        let columns = match &self.fixed {
            Some(columns) => columns.clone(),
            None => infer(events),
        };
        let mut mismatches = 0;
        let mut fields = Vec::with_capacity(columns.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for column in &columns {
            let (array, missed) = build_column(column, events);
            mismatches += missed;
            fields.push(Field::new(&column.name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = if arrays.is_empty() {
            RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &arrow_array::RecordBatchOptions::new().with_row_count(Some(events.len())),
            )
        } else {
            RecordBatch::try_new(schema.clone(), arrays)
        }
        .map_err(|e| format!("cannot build the record batch: {e}"))?;
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(self.properties.clone()))
            .map_err(|e| format!("cannot start the Parquet file: {e}"))?;
        writer
            .write(&batch)
            .map_err(|e| format!("cannot write Parquet rows: {e}"))?;
        let bytes = writer
            .into_inner()
            .map_err(|e| format!("cannot finish the Parquet file: {e}"))?;
        Ok((bytes, mismatches))
    }
}

/// The type a value suggests for its column.
fn kind_of(value: &Value) -> Option<ColumnType> {
    Some(match value {
        Value::Null => return None,
        Value::Integer(_) => ColumnType::Int64,
        Value::Float(_) => ColumnType::Float64,
        Value::Boolean(_) => ColumnType::Bool,
        Value::Timestamp(_) => ColumnType::Timestamp,
        Value::Bytes(_) | Value::String(_) | Value::Regex(_) => ColumnType::String,
        Value::Object(_) | Value::Array(_) => ColumnType::Json,
    })
}

fn merge(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType::*;
    match (a, b) {
        (a, b) if a == b => a,
        (Int64, Float64) | (Float64, Int64) => Float64,
        _ => String,
    }
}

/// The columns of a batch without a configured schema: its top-level fields, by name.
fn infer(events: &[Event]) -> Vec<Column> {
    let mut kinds: BTreeMap<String, Option<ColumnType>> = BTreeMap::new();
    for event in events {
        if let Value::Object(map) = &event.value {
            for (key, value) in map {
                let seen = kinds.entry(key.to_string()).or_insert(None);
                *seen = match (*seen, kind_of(value)) {
                    (Some(a), Some(b)) => Some(merge(a, b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    kinds
        .into_iter()
        .map(|(name, kind)| Column {
            path: OwnedValuePath::single_field(&name),
            name,
            // A field that is null everywhere: a string column of nulls.
            kind: kind.unwrap_or(ColumnType::String),
        })
        .collect()
}

fn json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Builds one column; returns it and the number of values that did not fit.
fn build_column(column: &Column, events: &[Event]) -> (ArrayRef, usize) {
    let values = events.iter().map(|e| e.value.get(&column.path));
    let mut missed = 0;
    let array: ArrayRef = match column.kind {
        ColumnType::String => {
            let mut b = StringBuilder::new();
            for value in values {
                match value {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::Bytes(bytes)) => b.append_value(String::from_utf8_lossy(bytes)),
                    Some(v @ (Value::Object(_) | Value::Array(_))) => b.append_value(json(v)),
                    Some(v) => b.append_value(v.to_string_lossy()),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Json => {
            let mut b = StringBuilder::new();
            for value in values {
                match value {
                    None | Some(Value::Null) => b.append_null(),
                    Some(v) => b.append_value(json(v)),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Int64 => {
            let mut b = Int64Builder::with_capacity(events.len());
            for value in values {
                match value {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::Integer(i)) => b.append_value(*i),
                    Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        b.append_value(f.into_inner() as i64)
                    }
                    Some(_) => {
                        missed += 1;
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Float64 => {
            let mut b = Float64Builder::with_capacity(events.len());
            for value in values {
                match value {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::Float(f)) => b.append_value(f.into_inner()),
                    Some(Value::Integer(i)) => b.append_value(*i as f64),
                    Some(_) => {
                        missed += 1;
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bool => {
            let mut b = BooleanBuilder::with_capacity(events.len());
            for value in values {
                match value {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::Boolean(v)) => b.append_value(*v),
                    Some(_) => {
                        missed += 1;
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(events.len());
            for value in values {
                let micros = match value {
                    None | Some(Value::Null) => {
                        b.append_null();
                        continue;
                    }
                    Some(Value::Timestamp(t)) => Some(t.timestamp_micros()),
                    Some(text @ (Value::Bytes(_) | Value::String(_))) => {
                        chrono::DateTime::parse_from_rfc3339(&text.to_string_lossy())
                            .ok()
                            .map(|t| t.timestamp_micros())
                    }
                    Some(_) => None,
                };
                match micros {
                    Some(m) => b.append_value(m),
                    None => {
                        missed += 1;
                        b.append_null()
                    }
                }
            }
            Arc::new(b.finish().with_timezone("UTC"))
        }
    };
    debug_assert!(matches!(
        array.data_type(),
        DataType::Utf8
            | DataType::Int64
            | DataType::Float64
            | DataType::Boolean
            | DataType::Timestamp(TimeUnit::Microsecond, _)
    ));
    (array, missed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn event(json: &str) -> Event {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        Event::from(Value::from(value))
    }

    fn read(bytes: Vec<u8>) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        arrow_select_concat(&batches)
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
        assert_eq!(batches.len(), 1, "one batch in these small tests");
        batches[0].clone()
    }

    #[test]
    fn infers_types_per_field_and_mixed_types_become_strings() {
        let events = [
            event(r#"{"n":1,"x":1.5,"ok":true,"s":"a","o":{"k":1},"m":1}"#),
            event(r#"{"n":2,"x":2,"ok":false,"s":"b","o":[1],"m":"two"}"#),
        ];
        let encoder = ParquetEncoder::new(&ParquetConfig::default()).unwrap();
        let (bytes, mismatches) = encoder.encode(&events).unwrap();
        assert_eq!(mismatches, 0);
        let batch = read(bytes);
        let types: Vec<(String, DataType)> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("m".into(), DataType::Utf8),
                ("n".into(), DataType::Int64),
                ("o".into(), DataType::Utf8),
                ("ok".into(), DataType::Boolean),
                ("s".into(), DataType::Utf8),
                ("x".into(), DataType::Float64),
            ]
        );
        let o = batch
            .column_by_name("o")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!(o.value(0), r#"{"k":1}"#);
        assert_eq!(o.value(1), "[1]");
        let m = batch
            .column_by_name("m")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!((m.value(0), m.value(1)), ("1", "two"));
    }

    #[test]
    fn a_given_schema_reads_paths_and_counts_values_that_do_not_fit() {
        let config: ParquetConfig = serde_yaml::from_str(
            "schema: {\"user.id\": int64, at: timestamp, status: int64}\ncompression: zstd",
        )
        .unwrap();
        let encoder = ParquetEncoder::new(&config).unwrap();
        let events = [
            event(r#"{"user":{"id":7},"at":"2026-11-24T10:00:00Z","status":200}"#),
            event(r#"{"user":{"id":8},"at":"yesterday","status":"ok"}"#),
        ];
        let (bytes, mismatches) = encoder.encode(&events).unwrap();
        assert_eq!(mismatches, 2, "`yesterday` and `ok`");
        let batch = read(bytes);
        assert_eq!(batch.num_rows(), 2);
        let ids = batch
            .column_by_name("user.id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        assert_eq!((ids.value(0), ids.value(1)), (7, 8));
        let at = batch
            .column_by_name("at")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(at.value(0), 1_795_514_400_000_000);
        assert!(arrow_array::Array::is_null(at, 1));
    }
}
