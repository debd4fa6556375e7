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

use super::column_encoding::column_properties;
use crate::event::{Event, Value};
use crate::transforms::support::parse_path;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use indexmap::IndexMap;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCodec, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
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
    /// Largest data page, in bytes of encoded values before compression (default 65536; the
    /// writer checks after each 1,024 values). Readers skip data a page at a time (the file
    /// has a page index); each page costs a header and statistics.
    #[serde(default = "default_page_bytes")]
    pub page_bytes: usize,
}

fn default_row_group_size() -> usize {
    65_536
}

/// 64 KiB, where the parquet crate's default is 1 MiB. The writer builds each page in buffers
/// grown by doubling, then compresses it into a buffer sized for the worst case and shrinks
/// that: per 1 MiB page, allocations of a megabyte and more, which the allocator serves from
/// fresh memory the kernel must fault in. At 64 KiB they come from the heap's reused pages:
/// the Parquet load bench's page faults 151 k -> 80 k per million events, system time
/// 0.35 -> 0.23 s, peak RSS 110 -> 88 MiB; files 0.6% larger (measured, README "Performance").
fn default_page_bytes() -> usize {
    64 * 1024
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            schema: None,
            row_group_size: default_row_group_size(),
            compression: ParquetCompression::default(),
            page_bytes: default_page_bytes(),
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
    /// The size of the file finished last (shared by the encoder's clones): the next file's
    /// buffer starts there, where growing it by doubling copied it into new memory some ten
    /// times per object. Page faults of the Parquet load bench 162.6 k -> 144.0 k per million
    /// events, peak RSS unchanged (119-123 MiB); not written, the room costs no pages.
    last_file_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl ParquetEncoder {
    pub fn new(config: &ParquetConfig) -> Result<Self, String> {
        if config.row_group_size == 0 {
            return Err("parquet.row_group_size must be greater than 0".into());
        }
        if config.page_bytes == 0 {
            return Err("parquet.page_bytes must be greater than 0".into());
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
            .set_data_page_size_limit(config.page_bytes)
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetEncoder {
            fixed,
            properties,
            last_file_bytes: Arc::default(),
        })
    }

    /// An empty set of rows for one object.
    pub fn start(&self) -> Rows {
        Rows {
            columns: self
                .fixed
                .iter()
                .flatten()
                .map(|c| ColumnState {
                    column: c.clone(),
                    builder: Builder::new(c.kind, CHUNK_ROWS, 0),
                    chunks: Vec::new(),
                    row_written: 0,
                })
                .collect(),
            inferred: self.fixed.is_none(),
            rows: 0,
            chunk_rows: CHUNK_ROWS,
            sealed: Vec::new(),
            last_columns: Vec::new(),
            columns_now: Vec::new(),
        }
    }

    /// The Parquet file holding `rows`: one record batch per chunk, written into the file's
    /// row groups as the writer cuts them (`row_group_size`).
    pub fn finish(&self, rows: Rows) -> Result<Vec<u8>, String> {
        let (fields, chunks) = rows.into_chunks();
        let schema = Arc::new(Schema::new(fields));
        // Each column's values as the writer meets them first: in its first chunk with any.
        let firsts = (0..schema.fields().len()).map(|at| {
            (chunks.iter().map(|(arrays, _)| &arrays[at]))
                .find(|array| array.null_count() < array.len())
                .unwrap_or(&chunks[0].0[at])
        });
        let names = schema.fields().iter().map(|f| f.name().as_str());
        let properties = column_properties(&self.properties, names.zip(firsts));
        let batches = chunks
            .into_iter()
            .map(|(arrays, count)| {
                RecordBatch::try_new_with_options(
                    schema.clone(),
                    arrays,
                    &arrow_array::RecordBatchOptions::new().with_row_count(Some(count)),
                )
                .map_err(|e| format!("cannot build the record batch: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_file_bytes.load(Relaxed);
        let file = Vec::with_capacity(last + last / 8);
        let mut writer = ArrowWriter::try_new(file, schema, Some(properties))
            .map_err(|e| format!("cannot start the Parquet file: {e}"))?;
        for batch in &batches {
            writer
                .write(batch)
                .map_err(|e| format!("cannot write Parquet rows: {e}"))?;
        }
        let file = writer
            .into_inner()
            .map_err(|e| format!("cannot finish the Parquet file: {e}"))?;
        self.last_file_bytes.store(file.len(), Relaxed);
        Ok(file)
    }

    /// One Parquet file holding every event, and how many values did not fit their column.
    pub fn encode(&self, events: &[Event]) -> Result<(Vec<u8>, usize), String> {
        let mut rows = self.start();
        let mismatches = events.iter().map(|e| rows.add(e)).sum();
        Ok((self.finish(rows)?, mismatches))
    }
}

/// Rows per chunk: the columns of an object are built in arrays of this many rows.
///
/// One array per column for a whole object grew by doubling, and each doubling copied the
/// column into new memory that the kernel had to fault in: 7% of the Parquet load bench's
/// CPU time (perf) went to that growth. A chunk's arrays are sized once, from the chunk before
/// them, and never move. 8192 is a multiple of the Parquet writer's mini-batch (1024 values),
/// so its pages are cut where they were cut from one array.
const CHUNK_ROWS: usize = 8192;

/// The rows of one object so far, as Arrow column builders: an event is copied into them as
/// it arrives and then dropped, so a batch waiting for its object holds columnar data (about
/// its raw size), not event objects (several times more).
pub struct Rows {
    columns: Vec<ColumnState>,
    /// Columns are found as fields appear (kept sorted by name), not configured.
    inferred: bool,
    rows: usize,
    /// Rows per chunk ([`CHUNK_ROWS`]; smaller in tests).
    chunk_rows: usize,
    /// The row count of each finished chunk; every column holds one array for each.
    sealed: Vec<usize>,
    /// The column of each field of the last event read from its text, in the text's order:
    /// the first guess for the next event's fields (events of one source mostly share their
    /// keys' order).
    last_columns: Vec<usize>,
    /// The same for the event being added.
    columns_now: Vec<usize>,
}

struct ColumnState {
    column: Column,
    /// The rows of the chunk being filled.
    builder: Builder,
    /// The column's arrays of the finished chunks, one for each of [`Rows::sealed`].
    chunks: Vec<ArrayRef>,
    /// The last row (counted from 1) whose value came from an event's text.
    row_written: usize,
}

impl ColumnState {
    /// A column first seen after `sealed` chunks and `nulls` rows of the chunk being filled:
    /// null before.
    fn new(name: &str, kind: ColumnType, sealed: &[usize], nulls: usize, room: usize) -> Self {
        let mut builder = Builder::new(kind, room, 0);
        for _ in 0..nulls {
            builder.append_null();
        }
        let chunks = sealed
            .iter()
            .map(|&rows| Builder::nulls(kind, rows))
            .collect();
        ColumnState {
            column: Column {
                name: name.to_string(),
                path: OwnedValuePath::single_field(name),
                kind,
            },
            builder,
            chunks,
            row_written: 0,
        }
    }

    /// Finishes the chunk being filled; the next one gets room for `rows` rows and, for text,
    /// as many bytes as this one took.
    fn seal(&mut self, rows: usize) {
        let bytes = if rows == 0 {
            0
        } else {
            self.builder.value_bytes()
        };
        let room = Builder::new(self.column.kind, rows, bytes);
        let chunk = std::mem::replace(&mut self.builder, room).finish();
        self.chunks.push(chunk);
    }

    /// Makes room for `value` in an inferred column: int64 widens to float64, any other
    /// conflict turns the column into strings (the rows so far are converted).
    fn widen_for(&mut self, value: &Value) {
        let Some(incoming) = kind_of(value) else {
            return;
        };
        let wanted = merge(self.column.kind, incoming);
        if wanted == self.column.kind {
            return;
        }
        let old = std::mem::replace(&mut self.builder, Builder::new(wanted, 0, 0)).finish();
        self.builder = Builder::converted(wanted, &old);
        for chunk in &mut self.chunks {
            *chunk = Builder::converted(wanted, chunk).finish();
        }
        self.column.kind = wanted;
    }
}

impl Rows {
    /// The finished columns, in schema order, and the row count (for writers that build their
    /// own record batches, e.g. the iceberg sink).
    pub fn into_columns(self) -> Result<(Vec<(String, ArrayRef)>, usize), String> {
        let rows = self.rows;
        let (fields, chunks) = self.into_chunks();
        let columns = fields
            .into_iter()
            .enumerate()
            .map(|(at, field)| {
                let array = if chunks.len() == 1 {
                    chunks[0].0[at].clone()
                } else {
                    let arrays: Vec<&dyn Array> = chunks
                        .iter()
                        .map(|(arrays, _)| arrays[at].as_ref())
                        .collect();
                    arrow_select::concat::concat(&arrays)
                        .map_err(|e| format!("column `{}`: {e}", field.name()))?
                };
                Ok((field.name().clone(), array))
            })
            .collect::<Result<_, String>>()?;
        Ok((columns, rows))
    }

    /// The schema's fields, and each chunk's arrays (in the fields' order) with its row count.
    /// At least one chunk, empty when there are no rows.
    fn into_chunks(mut self) -> (Vec<Field>, Vec<(Vec<ArrayRef>, usize)>) {
        let tail = self.rows - self.sealed.iter().sum::<usize>();
        if tail > 0 || self.sealed.is_empty() {
            self.seal(tail, 0);
        }
        // Every column holds an array for each chunk now: the first says its type.
        let fields = (self.columns.iter())
            .map(|state| {
                let kind = state.chunks[0].data_type().clone();
                Field::new(&state.column.name, kind, true)
            })
            .collect();
        let mut chunks: Vec<(Vec<ArrayRef>, usize)> =
            self.sealed.iter().map(|&rows| (Vec::new(), rows)).collect();
        for state in self.columns {
            for (chunk, array) in chunks.iter_mut().zip(state.chunks) {
                chunk.0.push(array);
            }
        }
        (fields, chunks)
    }

    /// Finishes the chunk being filled, of `rows` rows; the next gets room for `room` rows.
    fn seal(&mut self, rows: usize, room: usize) {
        for state in &mut self.columns {
            state.seal(room);
        }
        self.sealed.push(rows);
    }

    /// Rows in the chunk being filled.
    fn filling(&self) -> usize {
        self.rows % self.chunk_rows
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Copies one event in; returns how many of its values did not fit their column (written
    /// as null).
    pub fn add(&mut self, event: &Event) -> usize {
        if let Some(fields) = event.fields().filter(|_| self.inferred) {
            if let Some(missed) = self.add_fields(&fields) {
                return missed;
            }
        }
        let mut missed = 0;
        match (event.value(), self.inferred) {
            (Value::Object(map), true) => {
                // Columns and the event's fields are both sorted: one ordered walk.
                let mut at = 0;
                for (key, value) in map {
                    let key = key.as_str();
                    // One comparison per column passed: columns before the key get a null.
                    let found = loop {
                        let Some(state) = self.columns.get_mut(at) else {
                            break false;
                        };
                        match state.column.name.as_str().cmp(key) {
                            std::cmp::Ordering::Less => state.builder.append_null(),
                            std::cmp::Ordering::Equal => break true,
                            std::cmp::Ordering::Greater => break false,
                        }
                        at += 1;
                    };
                    if !found {
                        let kind = kind_of(value).unwrap_or(ColumnType::String);
                        let state = ColumnState::new(
                            key,
                            kind,
                            &self.sealed,
                            self.filling(),
                            self.chunk_rows,
                        );
                        self.columns.insert(at, state);
                    }
                    let state = &mut self.columns[at];
                    state.widen_for(value);
                    missed += usize::from(!state.builder.append(Some(value)));
                    at += 1;
                }
                for state in &mut self.columns[at..] {
                    state.builder.append_null();
                }
            }
            (_, true) => {
                missed += 1; // not an object: a row of nulls
                for state in &mut self.columns {
                    state.builder.append_null();
                }
            }
            (_, false) => {
                for state in &mut self.columns {
                    let value = event.field_at(&state.column.path);
                    missed += usize::from(!state.builder.append(value.as_deref()));
                }
            }
        }
        self.rows += 1;
        self.seal_when_full();
        missed
    }

    fn seal_when_full(&mut self) {
        if self.filling() == 0 {
            self.seal(self.chunk_rows, self.chunk_rows);
        }
    }
}

impl Rows {
    /// [`Rows::add`] for an event kept as text whose fields its source noted: each field's
    /// value is read from the text into its column, without building the event's object.
    /// `None`, having changed nothing, when a field has no column yet or a key repeats: the
    /// event's value decides those.
    fn add_fields(&mut self, fields: &crate::event::Fields<'_>) -> Option<usize> {
        let row = self.rows + 1;
        self.columns_now.clear();
        for index in 0..fields.len() {
            let guess = self.last_columns.get(index).copied();
            let column = match guess.filter(|&c| {
                (self.columns.get(c)).is_some_and(|s| fields.key_is(index, &s.column.name))
            }) {
                Some(column) => column,
                None => {
                    let key = fields.key(index);
                    (self.columns)
                        .binary_search_by(|state| state.column.name.as_str().cmp(key))
                        .ok()?
                }
            };
            if self.columns[column].row_written == row {
                return None;
            }
            self.columns[column].row_written = row;
            self.columns_now.push(column);
        }
        std::mem::swap(&mut self.last_columns, &mut self.columns_now);
        let mut missed = 0;
        for (index, &column) in self.last_columns.iter().enumerate() {
            let state = &mut self.columns[column];
            // Most values of log events: a plain string into a string column, copied straight
            // from the text.
            if let (Builder::String(builder), Some(text)) =
                (&mut state.builder, fields.plain_str(index))
            {
                builder.append_value(text);
                continue;
            }
            // Numbers into number columns, read from the text as the value would be.
            match &mut state.builder {
                Builder::Int64(builder) => {
                    if let Some(integer) = fields.integer(index) {
                        builder.append_value(integer);
                        continue;
                    }
                }
                Builder::Float64(builder) => {
                    if let Some(float) = fields.float(index) {
                        builder.append_value(float);
                        continue;
                    }
                }
                _ => {}
            }
            let value = fields.value(index);
            state.widen_for(&value);
            missed += usize::from(!state.builder.append(Some(&value)));
        }
        for state in &mut self.columns {
            if state.row_written != row {
                state.builder.append_null();
            }
        }
        self.rows = row;
        self.seal_when_full();
        Some(missed)
    }
}

/// A value of an Arrow array built here, back as an event value (for widening a column and
/// for dead-lettering the rows of an object that could not be uploaded).
pub(super) fn arrow_value(array: &ArrayRef, row: usize) -> Option<Value> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::DataType;
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::Int64 => Value::Integer(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => {
            Value::from_f64_or_zero(array.as_primitive::<Float64Type>().value(row))
        }
        DataType::Boolean => Value::Boolean(array.as_boolean().value(row)),
        DataType::Timestamp(..) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            Value::Timestamp(chrono::DateTime::from_timestamp_micros(micros)?)
        }
        _ => return None,
    })
}

/// The type a value suggests for its column.
pub(crate) fn kind_of(value: &Value) -> Option<ColumnType> {
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

pub(crate) fn merge(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType::*;
    match (a, b) {
        (a, b) if a == b => a,
        (Int64, Float64) | (Float64, Int64) => Float64,
        _ => String,
    }
}

fn json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// An Arrow array being built for one column.
enum Builder {
    String(StringBuilder),
    Json(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    /// Room for `rows` values; for text, `bytes` of it (with an eighth more), or a guess.
    fn new(kind: ColumnType, rows: usize, bytes: usize) -> Self {
        let text = |guess: usize| match bytes {
            0 => rows * guess,
            bytes => bytes + bytes / 8,
        };
        match kind {
            ColumnType::String => Builder::String(StringBuilder::with_capacity(rows, text(16))),
            ColumnType::Json => Builder::Json(StringBuilder::with_capacity(rows, text(32))),
            ColumnType::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            ColumnType::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
        }
    }

    /// Appends a value (missing or null: a null); returns false when it did not fit the
    /// column's type (a null is written instead).
    fn append(&mut self, value: Option<&Value>) -> bool {
        let Some(value) = value.filter(|v| !matches!(v, Value::Null)) else {
            self.append_null();
            return true;
        };
        let fits = match self {
            Builder::String(b) => {
                match value {
                    Value::Bytes(_) | Value::String(_) => {
                        b.append_value(value.to_str_lossy().unwrap_or_default())
                    }
                    Value::Object(_) | Value::Array(_) => b.append_value(json(value)),
                    other => b.append_value(other.to_string_lossy()),
                }
                true
            }
            Builder::Json(b) => {
                b.append_value(json(value));
                true
            }
            Builder::Int64(b) => match value {
                Value::Integer(i) => {
                    b.append_value(*i);
                    true
                }
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    b.append_value(f.into_inner() as i64);
                    true
                }
                _ => false,
            },
            Builder::Float64(b) => match value {
                Value::Float(f) => {
                    b.append_value(f.into_inner());
                    true
                }
                Value::Integer(i) => {
                    b.append_value(*i as f64);
                    true
                }
                _ => false,
            },
            Builder::Bool(b) => match value {
                Value::Boolean(v) => {
                    b.append_value(*v);
                    true
                }
                _ => false,
            },
            Builder::Timestamp(b) => {
                let micros = match value {
                    Value::Timestamp(t) => Some(t.timestamp_micros()),
                    Value::Bytes(_) | Value::String(_) => chrono::DateTime::parse_from_rfc3339(
                        &value.to_str_lossy().unwrap_or_default(),
                    )
                    .ok()
                    .map(|t| t.timestamp_micros()),
                    _ => None,
                };
                match micros {
                    Some(m) => {
                        b.append_value(m);
                        true
                    }
                    None => false,
                }
            }
        };
        if !fits {
            self.append_null();
        }
        fits
    }

    /// `rows` nulls, as a finished array.
    fn nulls(kind: ColumnType, rows: usize) -> ArrayRef {
        let mut builder = Builder::new(kind, rows, 0);
        for _ in 0..rows {
            builder.append_null();
        }
        builder.finish()
    }

    /// The values of an array built here, converted to `kind` (a widened column's).
    fn converted(kind: ColumnType, array: &ArrayRef) -> Self {
        let mut builder = Builder::new(kind, array.len(), 0);
        for row in 0..array.len() {
            builder.append(arrow_value(array, row).as_ref());
        }
        builder
    }

    /// Bytes of text so far (0 for columns of other types).
    fn value_bytes(&self) -> usize {
        match self {
            Builder::String(b) | Builder::Json(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::String(b) | Builder::Json(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::String(mut b) | Builder::Json(mut b) => Arc::new(b.finish()),
            Builder::Int64(mut b) => Arc::new(b.finish()),
            Builder::Float64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// The rows of a Parquet file as events (objects of their column values).
pub(crate) fn decode(body: &[u8]) -> Vec<Event> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let Ok(reader) = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(body))
        .and_then(|b| b.build())
    else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for batch in reader.flatten() {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = crate::event::ObjectMap::new();
            for (field, array) in schema.fields().iter().zip(batch.columns()) {
                if let Some(value) = arrow_value(array, row) {
                    object.insert(field.name().as_str().into(), value);
                }
            }
            events.push(Event::from(Value::Object(object)));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;
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

    /// An event as a source keeps it for a Parquet sink: its text and where its fields are.
    fn kept(json: &str) -> Event {
        use crate::event::json::{read, Document, Reading};
        let document = read(json.as_bytes(), Reading::TextAndFields).unwrap();
        assert!(
            matches!(
                document,
                Document::Text {
                    fields: Some(_),
                    ..
                }
            ),
            "{json}: fields noted"
        );
        Event::from_document(document)
    }

    #[test]
    fn fields_read_from_the_text_make_the_same_file_as_values() {
        let lines = [
            r#"{"b":1,"a":"x","n":null}"#,
            r#"{"a":"y","b":2}"#,
            // A new field: the first time the value decides, then the text.
            r#"{"a":"z","b":3,"c":true}"#,
            r#"{"c":false,"b":4,"a":"w"}"#,
            // A repeated key: the last counts.
            r#"{"a":"first","b":5,"a":"last"}"#,
            // Widening: an integer column takes a float, then becomes strings.
            r#"{"b":6.5,"o":{"k":[1,"v"]}}"#,
            // An integer, then a float, into the float column.
            r#"{"b":7,"a":"after a float"}"#,
            r#"{"b":-0.25,"a":"a float from the text"}"#,
            r#"{"b":"seven","a":"q\"uote","t":"2026-01-01T00:00:00Z"}"#,
            r#"{}"#,
        ];
        let encoder = ParquetEncoder::new(&ParquetConfig::default()).unwrap();
        let mut from_text = encoder.start();
        let mut from_values = encoder.start();
        // Read from the text, not built: all but the lines with a field new to the object or a
        // repeated key.
        let from_the_text = [
            false, true, false, true, false, false, true, true, false, true,
        ];
        for (line, expected) in lines.into_iter().zip(from_the_text) {
            let mut text = kept(line);
            let mut value = event(line);
            text.insert("file", "/var/log/app.log");
            value.insert("file", "/var/log/app.log");
            assert_eq!(from_text.add(&text), from_values.add(&value), "{line}");
            assert_eq!(text.fields().is_some(), expected, "{line}");
        }
        let text_file = read(encoder.finish(from_text).unwrap());
        let value_file = read(encoder.finish(from_values).unwrap());
        assert_eq!(text_file, value_file);
        assert_eq!(text_file.num_rows(), lines.len());
        let b = text_file.column_by_name("b").unwrap();
        assert_eq!(b.data_type(), &DataType::Utf8);
        let a = text_file.column_by_name("a").unwrap();
        use arrow_array::cast::AsArray;
        assert_eq!(a.as_string::<i32>().value(4), "last");
    }

    #[test]
    fn chunks_make_the_file_one_array_per_column_makes() {
        // Fields that appear, widen and change type after the first chunks, from values and
        // from text: every chunk size must give the same rows, types and encodings.
        let lines: Vec<String> = (0..23)
            .map(|i| match i {
                0..=4 => format!(r#"{{"n":{i},"s":"a{i}"}}"#),
                5..=9 => format!(r#"{{"n":{i}.5,"s":"b{i}","late":true}}"#),
                10..=14 => format!(r#"{{"n":"text {i}","s":"c{i}","at":"2026-01-01T00:00:{i}Z"}}"#),
                15..=19 => format!(r#"{{"s":"d{i}","o":{{"k":[{i}]}},"late":{i}}}"#),
                _ => format!(r#"{{"s":"e{i}","n":{i}}}"#),
            })
            .collect();
        let encoder = ParquetEncoder::new(&ParquetConfig::default()).unwrap();
        let file = |chunk_rows: usize, text: bool| {
            let mut rows = encoder.start();
            rows.chunk_rows = chunk_rows;
            for line in &lines {
                rows.add(&if text { kept(line) } else { event(line) });
            }
            assert_eq!(rows.len(), lines.len());
            encoder.finish(rows).unwrap()
        };
        let whole = read(file(CHUNK_ROWS, false));
        assert_eq!(whole.num_rows(), lines.len());
        use arrow_array::cast::AsArray;
        let n = whole.column_by_name("n").unwrap();
        assert_eq!(n.data_type(), &DataType::Utf8, "widened to strings");
        assert_eq!(n.as_string::<i32>().value(0), "0");
        assert_eq!(n.as_string::<i32>().value(5), "5.5");
        assert!(n.is_null(15));
        let late = whole.column_by_name("late").unwrap();
        assert_eq!(late.data_type(), &DataType::Utf8, "bool then int: strings");
        assert!(late.is_null(4));
        assert_eq!(late.as_string::<i32>().value(5), "true");
        for chunk_rows in [1, 2, 3, 5, 7, 22, 23, 24] {
            for text in [false, true] {
                let chunked = file(chunk_rows, text);
                assert_eq!(read(chunked), whole, "chunks of {chunk_rows}, text {text}");
            }
        }
        // The iceberg sink's columns are the same, joined.
        let mut rows = encoder.start();
        rows.chunk_rows = 4;
        for line in &lines {
            rows.add(&kept(line));
        }
        let (columns, count) = rows.into_columns().unwrap();
        assert_eq!(count, lines.len());
        for (name, array) in columns {
            assert_eq!(&array, whole.column_by_name(&name).unwrap(), "{name}");
        }
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
    fn a_field_that_appears_later_gets_nulls_before_it() {
        let events = [
            event(r#"{"a":1}"#),
            event(r#"{"b":"x"}"#),
            event(r#"{"a":3,"b":"z"}"#),
        ];
        let encoder = ParquetEncoder::new(&ParquetConfig::default()).unwrap();
        let batch = read(encoder.encode(&events).unwrap().0);
        let a = batch
            .column_by_name("a")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap()
            .clone();
        let b = batch
            .column_by_name("b")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        assert_eq!(a.iter().collect::<Vec<_>>(), [Some(1), None, Some(3)]);
        assert_eq!(b.iter().collect::<Vec<_>>(), [None, Some("x"), Some("z")]);
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

    #[test]
    fn data_pages_are_cut_at_page_bytes() {
        use parquet::arrow::arrow_reader::ArrowReaderOptions;
        use parquet::file::metadata::PageIndexPolicy;
        // 20,000 distinct 40-byte ids, written plain: ~880 KB of values.
        let events: Vec<Event> = (0..20_000)
            .map(|i| event(&format!(r#"{{"id":"{i:0>40}"}}"#)))
            .collect();
        // Each data page of the only column, as the file's offset index lists them.
        let pages = |page_bytes: usize| {
            let config = ParquetConfig {
                compression: ParquetCompression::None,
                page_bytes,
                ..ParquetConfig::default()
            };
            let (bytes, _) = ParquetEncoder::new(&config)
                .unwrap()
                .encode(&events)
                .unwrap();
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let reader =
                ParquetRecordBatchReaderBuilder::try_new_with_options(Bytes::from(bytes), options)
                    .unwrap();
            let index = reader.metadata().offset_index().expect("an offset index");
            let sizes: Vec<i32> = index[0][0]
                .page_locations()
                .iter()
                .map(|page| page.compressed_page_size)
                .collect();
            sizes
        };
        let default = pages(ParquetConfig::default().page_bytes);
        assert_eq!(ParquetConfig::default().page_bytes, 64 * 1024);
        // The writer checks a page's size after each 1,024 values (~45 KB here): a page ends
        // within one such step past the limit.
        assert!(default.len() >= 9, "{default:?}");
        assert!(
            default.iter().all(|&size| size < 64 * 1024 + 50_000),
            "{default:?}"
        );
        let large = pages(4 * 1024 * 1024);
        assert_eq!(large.len(), 1, "{large:?}");
        assert!(ParquetEncoder::new(&ParquetConfig {
            page_bytes: 0,
            ..ParquetConfig::default()
        })
        .is_err_and(|e| e.contains("parquet.page_bytes")),);
    }
}
