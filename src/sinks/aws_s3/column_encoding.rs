//! How each column of a Parquet file is encoded, decided from its first values: a dictionary
//! or plain values, and (under snappy) compressed or not. Shared by the aws_s3 Parquet encoder,
//! which decides per object, and the iceberg sink, which decides per writer group from the
//! batch that opens it.

use arrow_array::{Array, ArrayRef};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// `base`, tuned for each of `columns` (its name and first values) whose values are mostly
/// distinct:
///
/// - **No dictionary.** The writer interns every value of a dictionary column (a hash and a
///   compare each) and writes the values again as the dictionary page, which for unique
///   values (ids, messages, times) costs time and makes the column larger than plain values
///   would. parquet-mr makes the same call after a column's first page; the Rust writer only
///   falls back when the dictionary outgrows its page limit (1 MiB).
/// - **Not compressed, under snappy, where snappy saves less than an eighth** of a sample of
///   the values ([`snappy_saves_little`]): random ids and hashes. Snappy finds short matches
///   in hex or base64 text and spends most of its time on them for a few percent: a column of
///   32-digit hex trace ids saved 10% of its bytes for 6% of the Parquet load bench's
///   instructions (callgrind). zstd, chosen for size, codes them smaller still: it is left on.
pub(crate) fn column_properties<'a>(
    base: &WriterProperties,
    columns: impl IntoIterator<Item = (&'a str, &'a ArrayRef)>,
) -> WriterProperties {
    let mut builder = None;
    for (name, array) in columns {
        if !mostly_distinct(array) {
            continue;
        }
        let column = ColumnPath::new(vec![name.to_string()]);
        let uncompressed =
            base.compression(&column) == Compression::SNAPPY && snappy_saves_little(array);
        let tuned = builder
            .take()
            .unwrap_or_else(|| base.clone().into_builder())
            .set_column_dictionary_enabled(column.clone(), false);
        builder = Some(match uncompressed {
            true => tuned.set_column_compression(column, Compression::UNCOMPRESSED),
            false => tuned,
        });
    }
    match builder {
        Some(builder) => builder.build(),
        None => base.clone(),
    }
}

/// Whether most of the first values of a column (up to 256, at least 64) differ from each
/// other: the sign that a dictionary would not pay for itself.
fn mostly_distinct(array: &ArrayRef) -> bool {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::DataType;
    const SAMPLE: usize = 256;
    fn distinct<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> bool {
        let mut seen = std::collections::HashSet::with_capacity_and_hasher(
            SAMPLE,
            foldhash::fast::RandomState::default(),
        );
        let mut sampled = 0;
        for value in values.take(SAMPLE) {
            seen.insert(value);
            sampled += 1;
        }
        sampled >= 64 && seen.len() * 2 > sampled
    }
    match array.data_type() {
        DataType::Utf8 => distinct(array.as_string::<i32>().iter().flatten()),
        DataType::Int64 => distinct(array.as_primitive::<Int64Type>().iter().flatten()),
        DataType::Float64 => distinct(
            array
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .map(f64::to_bits),
        ),
        DataType::Timestamp(..) => distinct(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .flatten(),
        ),
        _ => false,
    }
}

/// Bytes of a column's values compressed to decide whether snappy pays: ~100 ids or lines,
/// a few microseconds per column and file. A 16 KiB sample cost 1.4% more instructions in
/// all on objects of 1,000-2,000 rows (callgrind).
const SNAPPY_SAMPLE_BYTES: usize = 4 * 1024;

/// Whether snappy shrinks the first values of a string column by less than an eighth. Their
/// text is sampled (plain pages add a 4-byte length per value, which compresses well in
/// the same way for every column, so it is left out); other column types are compressed.
fn snappy_saves_little(array: &ArrayRef) -> bool {
    use arrow_array::cast::AsArray;
    let Some(strings) = array.as_string_opt::<i32>() else {
        return false;
    };
    let offsets = strings.value_offsets();
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    let values = &strings.value_data()[first..last];
    let sample = &values[..values.len().min(SNAPPY_SAMPLE_BYTES)];
    if sample.len() < SNAPPY_SAMPLE_BYTES / 4 {
        return false;
    }
    match snap::raw::Encoder::new().compress_vec(sample) {
        Ok(compressed) => compressed.len() * 8 > sample.len() * 7,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Value};
    use crate::sinks::aws_s3::parquet::{
        arrow_value, ParquetCompression, ParquetConfig, ParquetEncoder,
    };
    use bytes::Bytes;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn event(json: &str) -> Event {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        Event::from(Value::from(value))
    }

    /// The rows of a Parquet file, in one batch.
    fn read(bytes: &[u8]) -> arrow_array::RecordBatch {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    /// A row group's column named `name`.
    fn column<'a>(
        reader: &'a SerializedFileReader<Bytes>,
        name: &str,
    ) -> &'a parquet::file::metadata::ColumnChunkMetaData {
        let row_group = reader.metadata().row_group(0);
        (0..row_group.num_columns())
            .map(|i| row_group.column(i))
            .find(|c| c.column_path().string() == name)
            .unwrap()
    }

    /// 64 random hex digits from a xorshift generator: an id no compressor shortens much.
    fn hex_id(state: &mut u64) -> String {
        (0..4)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                format!("{:016x}", *state)
            })
            .collect()
    }

    #[test]
    fn mostly_distinct_columns_are_written_without_a_dictionary() {
        use parquet::basic::Encoding;
        let events: Vec<Event> = (0..1000)
            .map(|i| {
                event(&format!(
                    r#"{{"id":"id-{i}","n":{i},"x":{i}.5,"level":"{}","code":{}}}"#,
                    ["info", "warn"][i % 2],
                    200 + i % 3
                ))
            })
            .collect();
        let encoder = ParquetEncoder::new(&ParquetConfig::default()).unwrap();
        let (bytes, _) = encoder.encode(&events).unwrap();
        let reader = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
        let dictionary =
            |name: &str| (column(&reader, name).encodings()).any(|e| e == Encoding::RLE_DICTIONARY);
        assert!(!dictionary("id") && !dictionary("n") && !dictionary("x"));
        assert!(dictionary("level") && dictionary("code"));
        // Every value is there either way.
        let batch = read(&bytes);
        assert_eq!(batch.num_rows(), 1000);
        let ids = batch.column_by_name("id").unwrap();
        assert_eq!(arrow_value(ids, 999), Some(Value::from("id-999")));
        let codes = batch.column_by_name("code").unwrap();
        assert_eq!(arrow_value(codes, 4), Some(Value::Integer(201)));
    }

    #[test]
    fn under_snappy_a_column_it_would_barely_shrink_is_written_uncompressed() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let events: Vec<Event> = (0..2000)
            .map(|i| {
                event(&format!(
                    r#"{{"trace":"{}","message":"GET /api/v1/items/{i} answered 200 in {i} ms","n":{i}}}"#,
                    hex_id(&mut state)
                ))
            })
            .collect();
        let codecs = |compression: ParquetCompression| {
            let config = ParquetConfig {
                compression,
                ..ParquetConfig::default()
            };
            let (bytes, _) = ParquetEncoder::new(&config)
                .unwrap()
                .encode(&events)
                .unwrap();
            let reader = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
            let codec = |name: &str| column(&reader, name).compression();
            // Every value is there whatever the codec.
            let batch = read(&bytes);
            let traces = batch.column_by_name("trace").unwrap();
            assert_eq!(
                arrow_value(traces, 1999),
                event_field(&events[1999], "trace")
            );
            [codec("trace"), codec("message"), codec("n")]
        };
        assert_eq!(
            codecs(ParquetCompression::Snappy),
            [
                Compression::UNCOMPRESSED,
                Compression::SNAPPY,
                Compression::SNAPPY
            ]
        );
        // (A file does not record zstd's level.)
        let zstd = codecs(ParquetCompression::Zstd);
        assert!(
            zstd.iter().all(|c| matches!(c, Compression::ZSTD(_))),
            "{zstd:?}"
        );
    }

    fn event_field(event: &Event, name: &str) -> Option<Value> {
        event.value().as_object()?.get(name).cloned()
    }

    #[test]
    fn the_snappy_sample_decides_on_the_first_values_only() {
        // Compressible text: kept compressed. Too short a sample: kept compressed.
        let text: ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from_iter_values(
            (0..2000).map(|i| format!("request {i} from node-{}", i % 7)),
        ));
        assert!(!snappy_saves_little(&text));
        let mut state = 1u64;
        let short: ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from_iter_values(
            (0..10).map(|_| hex_id(&mut state)),
        ));
        assert!(!snappy_saves_little(&short));
        let ids: ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from_iter_values(
            (0..2000).map(|_| hex_id(&mut state)),
        ));
        assert!(snappy_saves_little(&ids));
        // A slice is sampled from its own first value.
        let sliced = ids.slice(1000, 1000);
        assert!(snappy_saves_little(&sliced));
    }
}
