//! Data files for the next commit. Events become Arrow columns (the Parquet encoder's typed
//! builders, so values that do not fit a column follow the same rules: null, counted), are
//! split by the table's partition spec, and are written to Parquet data files at once; the
//! files stay invisible until a snapshot names them.
//!
//! With exactly-once, rows are also kept apart by the Kafka partition and claim they were read
//! under (one group of files each), so a commit can leave out exactly the fenced ones.

use super::table::columns;
use super::IcebergSinkConfig;
use crate::event::{EventBatch, Finalizers, SourcePosition, Value};
use crate::exactly_once::position_of;
use crate::sinks::aws_s3::column_encoding::column_properties;
use crate::sinks::aws_s3::parquet::{kind_of, merge, ColumnType, ParquetConfig, ParquetEncoder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use iceberg::arrow::{schema_to_arrow_schema, RecordBatchPartitionSplitter};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;
type Rolling = RollingFileWriterBuilder<
    ParquetWriterBuilder,
    DefaultLocationGenerator,
    DefaultFileNameGenerator,
>;

/// The Kafka topic, partition and claim a group's rows were read under.
type GroupKey = (Arc<str>, i32, Arc<str>);

/// Writes one group's rows: fanned out by partition, or into one writer when unpartitioned.
enum Files {
    Partitioned(
        Box<FanoutWriter<Builder>>,
        Arc<RecordBatchPartitionSplitter>,
    ),
    Unpartitioned(
        Box<
            DataFileWriter<
                ParquetWriterBuilder,
                DefaultLocationGenerator,
                DefaultFileNameGenerator,
            >,
        >,
    ),
}

/// The rows of one group, written so far.
pub struct Group {
    files: Files,
    /// Exactly-once: the Kafka partition, offsets and claim the rows were read under.
    pub position: Option<SourcePosition>,
    pub finalizers: Finalizers,
    pub rows: usize,
    pub bytes: usize,
}

/// A group's closed data files, ready for a commit.
pub struct Closed {
    pub files: Vec<DataFile>,
    pub position: Option<SourcePosition>,
    pub finalizers: Finalizers,
    pub rows: usize,
    pub bytes: usize,
}

/// What every data file of a writer is made with.
struct FileSpec {
    /// The base properties (zstd); the dictionary choice per column is added to them.
    properties: WriterProperties,
    schema: iceberg::spec::SchemaRef,
    target_size: usize,
    file_io: iceberg::io::FileIO,
    location: DefaultLocationGenerator,
    names: DefaultFileNameGenerator,
}

impl FileSpec {
    /// Rolling data files for one group: a column gets a dictionary unless `sample` (the
    /// group's first batch) shows its values mostly distinct.
    fn rolling<'a>(&self, sample: impl IntoIterator<Item = (&'a str, &'a ArrayRef)>) -> Rolling {
        let properties = column_properties(&self.properties, sample);
        RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(properties, self.schema.clone()),
            self.target_size,
            self.file_io.clone(),
            self.location.clone(),
            self.names.clone(),
        )
    }
}

/// Turns batches into data files of one table.
pub struct Writer {
    encoder: ParquetEncoder,
    /// The table's column names.
    known: HashSet<String>,
    arrow_schema: SchemaRef,
    /// How data files are made; each group settles its Parquet properties from the batch
    /// that opens it (see `FileSpec::rolling`).
    files: FileSpec,
    splitter: Option<Arc<RecordBatchPartitionSplitter>>,
    /// Open groups: one without exactly-once, else one per (topic, partition, claim).
    pub groups: HashMap<Option<GroupKey>, Group>,
}

impl Writer {
    pub fn new(config: &IcebergSinkConfig, table: &Table) -> Result<Self, String> {
        let parquet = ParquetConfig {
            schema: Some(columns(config, table)),
            ..ParquetConfig::default()
        };
        let encoder = ParquetEncoder::new(&parquet)?;
        let metadata = table.metadata();
        let schema = metadata.current_schema().clone();
        let arrow_schema =
            Arc::new(schema_to_arrow_schema(&schema).map_err(|e| format!("table schema: {e}"))?);
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("level 3 exists"),
            ))
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build();
        let files = FileSpec {
            properties,
            schema: schema.clone(),
            target_size: config.target_file_size_bytes,
            file_io: table.file_io().clone(),
            location: DefaultLocationGenerator::new(metadata).map_err(|e| e.to_string())?,
            // A name unique to this process: a restarted agent never overwrites a committed file.
            names: DefaultFileNameGenerator::new(
                format!("sluice-{}", uuid::Uuid::new_v4()),
                None,
                DataFileFormat::Parquet,
            ),
        };
        let spec = metadata.default_partition_spec().clone();
        let splitter = if spec.is_unpartitioned() {
            None
        } else {
            Some(Arc::new(
                RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)
                    .map_err(|e| format!("partition spec: {e}"))?,
            ))
        };
        let known = arrow_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        Ok(Writer {
            encoder,
            known,
            arrow_schema,
            files,
            splitter,
            groups: HashMap::new(),
        })
    }

    /// The events of `batch` as a record batch of the table's schema, and how many values did
    /// not fit their column.
    fn record_batch(&self, batch: &EventBatch) -> Result<(RecordBatch, usize), String> {
        let mut rows = self.encoder.start();
        let missed = batch.events.iter().map(|e| rows.add(e)).sum();
        let (columns, count) = rows.into_columns()?;
        let mut columns: HashMap<String, ArrayRef> = columns.into_iter().collect();
        let arrays: Vec<ArrayRef> = self
            .arrow_schema
            .fields()
            .iter()
            .map(|field| match columns.remove(field.name()) {
                // A column of a type the sink does not write: null.
                None => Ok(arrow_array::new_null_array(field.data_type(), count)),
                Some(array) if array.data_type() == field.data_type() => Ok(array),
                Some(array) => arrow_cast::cast(&array, field.data_type())
                    .map_err(|e| format!("column `{}`: {e}", field.name())),
            })
            .collect::<Result<_, String>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.arrow_schema.clone(),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(count)),
        )
        .map_err(|e| format!("cannot build the record batch: {e}"))?;
        Ok((batch, missed))
    }

    /// Writes a batch into its group's files; returns how many values did not fit. On an
    /// error the group is gone (its files are never committed) and handed back for rejection.
    pub async fn write(
        &mut self,
        batch: EventBatch,
        exactly_once: bool,
    ) -> Result<usize, (String, Option<Group>, EventBatch)> {
        let position = position_of(&batch.finalizers)
            .filter(|_| exactly_once)
            .cloned();
        let key = position
            .as_ref()
            .map(|p| (p.topic.clone(), p.partition, p.claim.clone()));
        let (record_batch, missed) = match self.record_batch(&batch) {
            Ok(converted) => converted,
            Err(e) => return Err((e, None, batch)),
        };
        if !self.groups.contains_key(&key) {
            let columns = self.arrow_schema.fields().iter().map(|f| f.name().as_str());
            let rolling = self.files.rolling(columns.zip(record_batch.columns()));
            let files = match &self.splitter {
                Some(splitter) => Files::Partitioned(
                    Box::new(FanoutWriter::new(DataFileWriterBuilder::new(rolling))),
                    splitter.clone(),
                ),
                None => match DataFileWriterBuilder::new(rolling).build(None).await {
                    Ok(writer) => Files::Unpartitioned(Box::new(writer)),
                    Err(e) => return Err((e.to_string(), None, batch)),
                },
            };
            self.groups.insert(
                key.clone(),
                Group {
                    files,
                    position: None,
                    finalizers: Finalizers::default(),
                    rows: 0,
                    bytes: 0,
                },
            );
        }
        let group = self.groups.get_mut(&key).expect("inserted above");
        let written = match &mut group.files {
            Files::Unpartitioned(writer) => writer.write(record_batch).await,
            Files::Partitioned(writer, splitter) => match splitter.split(&record_batch) {
                Ok(parts) => {
                    let mut result = Ok(());
                    for (partition_key, part) in parts {
                        result = writer.write(partition_key, part).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = written {
            let group = self.groups.remove(&key);
            return Err((format!("cannot write data files: {e}"), group, batch));
        }
        group.rows += batch.events.len();
        group.bytes += batch.byte_size;
        group.finalizers.merge(batch.finalizers.clone());
        if let Some(position) = position {
            match &mut group.position {
                None => group.position = Some(position),
                Some(range) => {
                    range.first_offset = range.first_offset.min(position.first_offset);
                    range.next_offset = range.next_offset.max(position.next_offset);
                }
            }
        }
        Ok(missed)
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Top-level fields of `batch` the table has no column for, each with the type its values
    /// suggest (integers and floats together make float64; other mixes string). Fields whose
    /// values are all null wait until one is not; names with a dot are left out (a dot in a
    /// column name reaches into nested objects).
    pub fn new_fields(&self, batch: &EventBatch) -> Vec<(String, ColumnType)> {
        let mut found: indexmap::IndexMap<String, ColumnType> = indexmap::IndexMap::new();
        for event in &batch.events {
            let Value::Object(fields) = event.value() else {
                continue;
            };
            for (name, value) in fields {
                if self.known.contains(name.as_str()) || name.contains('.') {
                    continue;
                }
                let Some(kind) = kind_of(value) else {
                    continue;
                };
                found
                    .entry(name.to_string())
                    .and_modify(|seen| *seen = merge(*seen, kind))
                    .or_insert(kind);
            }
        }
        found.into_iter().collect()
    }

    /// Closes every group's files for a commit; a group whose files cannot be finished comes
    /// back as an error with its acknowledgement handles.
    pub async fn close(&mut self) -> Vec<Result<Closed, (String, Finalizers)>> {
        let mut closed = Vec::new();
        for (_, group) in self.groups.drain() {
            let Group {
                files,
                position,
                finalizers,
                rows,
                bytes,
            } = group;
            let result = match files {
                Files::Unpartitioned(mut writer) => writer.close().await,
                Files::Partitioned(writer, _) => writer.close().await,
            };
            closed.push(match result {
                Ok(files) => Ok(Closed {
                    files,
                    position,
                    finalizers,
                    rows,
                    bytes,
                }),
                Err(e) => Err((format!("cannot finish data files: {e}"), finalizers)),
            });
        }
        closed
    }
}
