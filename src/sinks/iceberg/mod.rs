//! The `iceberg` sink: events into an Apache Iceberg table, one atomic append snapshot per
//! `commit_interval_secs` (and at shutdown). Data files are written as events arrive and stay
//! invisible until the snapshot that names them commits; events are acknowledged only then.
//!
//! - Catalog: iceberg-rust's SQL catalog (SQLite file or PostgreSQL URL), the layout pyiceberg,
//!   Spark and Trino's JDBC catalog read, or AWS Glue ([`catalog`]). Warehouse: a local
//!   directory or an S3 bucket ([`storage`]).
//! - Concurrency: a commit is decided against one snapshot and succeeds only if that snapshot
//!   is still current ([`table::Pinned`]); otherwise the table is read again and the commit
//!   redone, so two agents appending to one table both succeed and lose nothing.
//! - Exactly-once from Kafka: each snapshot's summary records the next offset and claim of
//!   every Kafka partition the sink wrote ([`crate::exactly_once`], [`table::Recorded`]).

mod catalog;
mod storage;
mod table;
mod writer;

use super::{BufferConfig, SinkContext};
use crate::aws::AwsAuth;
use crate::exactly_once::{Decision, Ledger, PositionStore};
use crate::observe::ComponentMetrics;
use crate::sinks::aws_s3::parquet::ColumnType;
use crate::topology::{BuildError, ComponentError, RunFuture};
use catalog::{open_catalog, sqlite_file};
use iceberg::Catalog;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use storage::{S3Settings, Warehouse};
use table::{
    add_columns, append, commit_id_key, has_commit, missing_columns, CommitFailure, Recorded,
    SnapshotPositions,
};
use writer::{Closed, Writer};

/// The catalog that names the table's current metadata.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// `sql` (a SQLite file or PostgreSQL database) or `glue` (the AWS Glue Data Catalog).
    #[serde(rename = "type")]
    pub kind: CatalogKind,
    /// The catalog's name inside its tables (default `default`).
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// `sql`: the catalog database, `sqlite:///var/lib/sluice/iceberg.db` (created when
    /// missing) or a `postgresql://` URL. `glue`: not used (the sink's `region`, `endpoint`
    /// and `auth` reach Glue as they reach S3).
    #[serde(default)]
    pub uri: Option<String>,
    /// `glue`: the AWS account id of the catalog (default: the caller's).
    #[serde(default)]
    pub catalog_id: Option<String>,
}

/// Kinds of catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    /// A SQL database holding the catalog tables (the JDBC catalog's layout).
    Sql,
    /// The AWS Glue Data Catalog (what Athena, EMR and Redshift Spectrum read).
    Glue,
}

fn default_catalog_name() -> String {
    "default".into()
}

/// One column of the table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaField {
    /// Column name; also the event field it is read from (dots reach into nested objects).
    pub name: String,
    /// `string`, `int64`, `float64`, `bool`, `timestamp` (with time zone, µs) or `json` (any
    /// value as JSON text).
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// What happens to fields the table has no column for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// The table's columns are the contract: other fields are not written.
    #[default]
    Strict,
    /// New top-level fields become new optional columns.
    Evolve,
}

/// One partition field.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartitionField {
    /// A column of the schema.
    pub field: String,
    /// `identity`, `year`, `month`, `day`, `hour`, `bucket[N]` or `truncate[W]`.
    pub transform: String,
}

/// Append events to an Apache Iceberg table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IcebergSinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// The catalog.
    pub catalog: CatalogConfig,
    /// Where new tables put their files: a local directory (path or `file://` URL) or
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// AWS region of an `s3://` warehouse (default: the standard chain: `AWS_REGION`,
    /// profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store or emulator (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores and
    /// emulators need (default false).
    #[serde(default)]
    pub force_path_style: bool,
    /// Explicit AWS credentials for an `s3://` warehouse (default: the standard chain).
    #[serde(default)]
    pub auth: Option<AwsAuth>,
    /// The table's namespace (dots separate levels).
    pub namespace: String,
    /// The table's name.
    pub table: String,
    /// Create the namespace and the table from `schema` and `partition_by` when missing
    /// (default true).
    #[serde(default = "default_true")]
    pub create_table: bool,
    /// The columns, in order.
    pub schema: Vec<SchemaField>,
    /// `strict` (default): fields outside the table's columns are left out. `evolve`: a new
    /// top-level field adds an optional column (its type from its values) in a new schema
    /// version, and configured columns missing from an existing table are added.
    #[serde(default)]
    pub schema_mode: SchemaMode,
    /// How rows are partitioned (default: not partitioned).
    #[serde(default)]
    pub partition_by: Vec<PartitionField>,
    /// Seconds between commits (default 60): one snapshot per interval, not per batch.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_secs: f64,
    /// Size at which a data file is closed and the next begun (default 128 MiB).
    #[serde(default = "default_target_file_size")]
    pub target_file_size_bytes: usize,
    /// Record each Kafka partition's next offset in the snapshot with its rows and start the
    /// Kafka source from there: no row lost or written twice across crashes and rebalances.
    #[serde(default)]
    pub exactly_once: bool,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_true() -> bool {
    true
}
fn default_commit_interval() -> f64 {
    60.0
}
fn default_target_file_size() -> usize {
    128 << 20
}

impl IcebergSinkConfig {
    /// The warehouse location, checked.
    fn warehouse(&self) -> Result<Warehouse, String> {
        Warehouse::parse(&self.warehouse)
    }

    /// The AWS settings of an `s3://` warehouse.
    fn s3(&self) -> S3Settings<'_> {
        S3Settings {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            force_path_style: self.force_path_style,
            auth: self.auth.as_ref(),
        }
    }

    fn check(&self) -> Result<(), BuildError> {
        self.warehouse()
            .map_err(|m| BuildError::new("warehouse", m))?;
        catalog::check(self).map_err(|m| BuildError::new("catalog", m))?;
        self.s3()
            .check()
            .map_err(|(field, m)| BuildError::new(field, m))?;
        if self.namespace.trim().is_empty() || self.table.trim().is_empty() {
            return Err(BuildError::new(
                "table",
                "namespace and table must not be empty",
            ));
        }
        if self.schema.is_empty() {
            return Err(BuildError::new("schema", "needs at least one column"));
        }
        self.schema().map_err(|m| BuildError::new("schema", m))?;
        self.partition_spec()
            .map_err(|m| BuildError::new("partition_by", m))?;
        if !(self.commit_interval_secs.is_finite() && self.commit_interval_secs > 0.0) {
            return Err(BuildError::new(
                "commit_interval_secs",
                "must be a number > 0",
            ));
        }
        if self.target_file_size_bytes == 0 {
            return Err(BuildError::new("target_file_size_bytes", "must be > 0"));
        }
        Ok(())
    }

    /// Where the sink records source positions, for the kafka source feeding it.
    pub fn position_store(&self, sink_id: &str) -> Option<Arc<dyn PositionStore>> {
        self.exactly_once.then(|| {
            Arc::new(SnapshotPositions {
                config: self.clone(),
                sink: sink_id.to_string(),
            }) as Arc<dyn PositionStore>
        })
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        self.check()?;
        Ok(Box::pin(run(self.clone(), cx)))
    }

    /// For `sluice validate`: the catalog answers, and the table exists (or may be created).
    /// Creates nothing: a SQLite catalog file or local warehouse that does not exist yet is
    /// checked to be creatable, and noted.
    pub async fn healthcheck(&self) -> Result<Vec<String>, String> {
        self.check().map_err(|e| e.message)?;
        let mut notes = Vec::new();
        let warehouse = self.warehouse()?;
        if let Warehouse::S3(url) = &warehouse {
            self.s3().check_bucket(url).await?;
        }
        if let Some(dir) = warehouse.local_dir() {
            let found = crate::writable::check_dir(dir).map_err(|e| format!("warehouse: {e}"))?;
            notes.extend(found.note(dir));
        }
        if let Some(file) = sqlite_file(self).filter(|file| !file.exists()) {
            let parent = file.parent().unwrap_or(std::path::Path::new("."));
            let found = crate::writable::check_dir(parent).map_err(|e| format!("catalog: {e}"))?;
            if !self.create_table {
                return Err(format!(
                    "table `{}.{}` does not exist (and create_table is off): its catalog {} does not exist yet",
                    self.namespace,
                    self.table,
                    file.display()
                ));
            }
            notes.extend(found.note(parent));
            notes.push(format!(
                "the catalog {} and table `{}.{}` will be created at run time",
                file.display(),
                self.namespace,
                self.table
            ));
            return Ok(notes);
        }
        let catalog = open_catalog(self).await?;
        let exists = catalog
            .table_exists(&self.ident())
            .await
            .map_err(|e| format!("cannot reach the catalog: {e}"))?;
        if !exists && !self.create_table {
            return Err(format!(
                "table `{}.{}` does not exist (and create_table is off)",
                self.namespace, self.table
            ));
        }
        if exists {
            let table = catalog
                .load_table(&self.ident())
                .await
                .map_err(|e| format!("cannot load `{}.{}`: {e}", self.namespace, self.table))?;
            self.check_columns(&table)?;
        }
        Ok(notes)
    }
}

impl IcebergSinkConfig {
    /// In `strict` mode every configured column must be in the table.
    fn check_columns(&self, table: &iceberg::table::Table) -> Result<(), String> {
        let missing = missing_columns(self, table);
        if missing.is_empty() || self.schema_mode == SchemaMode::Evolve {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        Err(format!(
            "schema: table `{}.{}` has no column {} (add it to the table, or set schema_mode: evolve)",
            self.namespace,
            self.table,
            names.join(", ")
        ))
    }
}

/// Retries what the catalog or the warehouse refuses, with backoff up to 10 s: nothing is
/// acknowledged meanwhile, so a down catalog is backpressure.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: Duration::from_millis(200),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(10));
    }
}

/// Opens the catalog and the table (creating it when allowed), retrying until they answer.
async fn open(
    config: &IcebergSinkConfig,
    metrics: &ComponentMetrics,
) -> (Box<dyn Catalog>, Writer) {
    let mut backoff = Backoff::new();
    loop {
        let opened = async {
            let catalog = open_catalog(config).await?;
            let mut table = config.load_or_create(catalog.as_ref()).await?;
            config.check_columns(&table)?;
            let missing = missing_columns(config, &table);
            if !missing.is_empty() {
                table = add_columns(catalog.as_ref(), config, &missing).await?;
            }
            let writer = Writer::new(config, &table)?;
            Ok::<_, String>((catalog, writer))
        }
        .await;
        match opened {
            Ok(opened) => return opened,
            Err(error) => {
                metrics.error("catalog_failed");
                tracing::error!(component_id = metrics.id(), %error, "cannot open the iceberg table; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Adds `new` columns to the table and returns a writer for its new schema, retrying until
/// the catalog takes the change.
async fn evolve(
    config: &IcebergSinkConfig,
    catalog: &dyn Catalog,
    new: &[(String, ColumnType)],
    metrics: &ComponentMetrics,
) -> Writer {
    let mut backoff = Backoff::new();
    loop {
        let evolved = async {
            let table = add_columns(catalog, config, new).await?;
            Writer::new(config, &table)
        }
        .await;
        match evolved {
            Ok(writer) => {
                metrics::counter!("iceberg_schema_updates_total", "component_id" => metrics.id().to_string())
                    .increment(1);
                return writer;
            }
            Err(error) => {
                metrics.error("schema_update_failed");
                tracing::error!(component_id = metrics.id(), %error, "cannot add the new fields' columns; retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn run(config: IcebergSinkConfig, mut cx: SinkContext) -> Result<(), ComponentError> {
    let metrics = cx.metrics.clone();
    let (catalog, mut writer) = open(&config, &metrics).await;
    let interval = Duration::from_secs_f64(config.commit_interval_secs);
    let mut next_commit = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            received = cx.input.recv() => match received {
                Some(batch) => {
                    metrics.received(batch.len(), batch.byte_size);
                    if config.schema_mode == SchemaMode::Evolve {
                        let new = writer.new_fields(&batch);
                        if !new.is_empty() {
                            // Open files follow the old schema: commit them, then go on with
                            // the new one.
                            if !writer.is_empty() {
                                commit(&config, catalog.as_ref(), &mut writer, &metrics).await;
                                next_commit = tokio::time::Instant::now() + interval;
                            }
                            writer = evolve(&config, catalog.as_ref(), &new, &metrics).await;
                        }
                    }
                    match writer.write(batch, config.exactly_once).await {
                        Ok(0) => {}
                        Ok(missed) => metrics.errors("schema_mismatch", missed as u64),
                        Err((reason, group, batch)) => {
                            tracing::error!(component_id = metrics.id(), %reason, "events could not be written to data files; rejected");
                            if let Some(group) = group {
                                metrics.discarded("rejected", group.rows);
                                group.finalizers.update_status(crate::event::BatchStatus::Rejected);
                            }
                            super::reject(&mut cx.dead_letter, &metrics, batch.events, batch.finalizers, &reason).await;
                        }
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_commit) => {
                if !writer.is_empty() {
                    commit(&config, catalog.as_ref(), &mut writer, &metrics).await;
                }
                next_commit = tokio::time::Instant::now() + interval;
            }
        }
    }
    if !writer.is_empty() {
        commit(&config, catalog.as_ref(), &mut writer, &metrics).await;
    }
    Ok(())
}

/// Commits every open group's files in one snapshot (with exactly-once, only the groups whose
/// claim still holds, with their advanced offsets), retrying conflicts and failures; then
/// acknowledges.
async fn commit(
    config: &IcebergSinkConfig,
    catalog: &dyn Catalog,
    writer: &mut Writer,
    metrics: &ComponentMetrics,
) {
    let mut groups: Vec<Closed> = Vec::new();
    for closed in writer.close().await {
        match closed {
            Ok(group) => groups.push(group),
            Err((reason, finalizers)) => {
                metrics.error("write_failed");
                tracing::error!(component_id = metrics.id(), %reason, "data files could not be finished; their events are rejected (their source reads them again)");
                finalizers.update_status(crate::event::BatchStatus::Rejected);
            }
        }
    }
    let sink = metrics.id().to_string();
    let ident = config.ident();
    let mut backoff = Backoff::new();
    let started = std::time::Instant::now();
    // The same id on every attempt: an attempt whose reply was lost shows in the table.
    let commit_id = uuid::Uuid::new_v4().to_string();
    let mut attempted: Option<Vec<Decision>> = None;
    let decisions = loop {
        let table = match catalog.load_table(&ident).await {
            Ok(table) => table,
            Err(error) => {
                metrics.error("commit_failed");
                tracing::warn!(component_id = %sink, %error, "cannot load the table to commit; retrying");
                backoff.wait().await;
                continue;
            }
        };
        if let Some(decisions) = attempted.take() {
            if has_commit(&table, &sink, &commit_id) {
                tracing::info!(component_id = %sink, "the commit had landed though its reply was lost; not committing again");
                break decisions;
            }
        }
        let (decisions, mut properties) = if config.exactly_once {
            let recorded = Recorded::read(&table, &sink);
            let partitions = Ledger::partitions(groups.iter().filter_map(|g| g.position.as_ref()));
            let mut ledger = recorded.ledger(&sink, &partitions);
            let decisions: Vec<Decision> = groups
                .iter()
                .map(|g| {
                    g.position
                        .as_ref()
                        .map_or(Decision::Commit, |p| ledger.judge(p))
                })
                .collect();
            (decisions, recorded.advanced(&sink, &ledger))
        } else {
            (vec![Decision::Commit; groups.len()], Default::default())
        };
        let files: Vec<_> = groups
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| **d == Decision::Commit)
            .flat_map(|(g, _)| g.files.iter().cloned())
            .collect();
        if files.is_empty() {
            break decisions; // nothing to write: everything fenced or already there
        }
        let file_count = files.len();
        let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
        let rows: u64 = files.iter().map(|f| f.record_count()).sum();
        properties.insert(commit_id_key(&sink), commit_id.clone());
        attempted = Some(decisions.clone());
        match append(catalog, &table, files, properties).await {
            Ok(_) => {
                metrics::counter!("iceberg_commits_total", "component_id" => sink.clone())
                    .increment(1);
                metrics::counter!("iceberg_data_files_total", "component_id" => sink.clone())
                    .increment(file_count as u64);
                metrics::counter!("iceberg_data_bytes_total", "component_id" => sink.clone())
                    .increment(bytes);
                metrics::histogram!("iceberg_rows_per_commit", "component_id" => sink.clone())
                    .record(rows as f64);
                tracing::debug!(component_id = %sink, files = file_count, rows, bytes, secs = started.elapsed().as_secs_f64(), "snapshot committed");
                break decisions;
            }
            Err(CommitFailure::Conflict) => {
                metrics::counter!("iceberg_commit_conflicts_total", "component_id" => sink.clone())
                    .increment(1);
                tracing::info!(component_id = %sink, "another writer committed first; reading the table again");
            }
            Err(CommitFailure::Failed(error)) => {
                metrics.error("commit_failed");
                tracing::warn!(component_id = %sink, %error, "commit failed; retrying (nothing is acknowledged until it succeeds)");
                backoff.wait().await;
            }
        }
    };
    for (group, decision) in groups.into_iter().zip(decisions) {
        match decision {
            Decision::Commit => metrics.sent(group.rows, group.bytes),
            Decision::Fenced => {
                metrics.discarded("fenced", group.rows);
                tracing::info!(component_id = %sink, rows = group.rows, "rows read under an earlier claim of their partition; not committed (the partition's new owner writes them)");
            }
            Decision::AlreadyCommitted => {}
        }
        drop(group.finalizers); // delivered
    }
}

#[cfg(test)]
mod tests {
    //! In-process: the sink's SQL catalog on a SQLite file and a local warehouse, behind a
    //! catalog wrapper that loses the reply of a commit that landed.
    use super::*;
    use crate::event::{Event, EventBatch};
    use iceberg::table::Table;
    use iceberg::{TableCommit, TableIdent};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Forwards everything; the first `update_table` is applied, then answered with an error,
    /// as when the connection drops after the catalog committed.
    #[derive(Debug)]
    struct LosesFirstReply {
        catalog: Box<dyn Catalog>,
        updates: AtomicUsize,
    }

    super::table::catalog_wrapper!(LosesFirstReply {
        async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
            let table = self.catalog.update_table(commit).await?;
            if self.updates.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    "connection reset after the commit",
                ));
            }
            Ok(table)
        }
        async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
            self.catalog.load_table(table).await
        }
    });

    /// A commit that landed but whose reply was lost is recognised on the retry by its id in
    /// the table: one snapshot of data, every row once, the rows counted as sent. (Before, the
    /// retry appended the same files again and iceberg-rust refused them as duplicates,
    /// forever.)
    #[tokio::test]
    async fn a_commit_whose_reply_was_lost_is_recognised_and_not_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let config: IcebergSinkConfig = serde_yaml::from_str(&format!(
            "inputs: [x]\ncatalog: {{type: sql, uri: \"sqlite://{d}/catalog.db\"}}\nwarehouse: {d}/warehouse\nnamespace: logs\ntable: events\nschema: [{{name: id, type: int64}}]\n",
            d = dir.path().display()
        ))
        .unwrap();
        let catalog = open_catalog(&config).await.unwrap();
        let table = config.load_or_create(catalog.as_ref()).await.unwrap();
        let mut writer = Writer::new(&config, &table).unwrap();
        let events: Vec<Event> = (0..10)
            .map(|id| Event::from(vrl::value!({ "id": id })))
            .collect();
        writer
            .write(EventBatch::new(events, 100), false)
            .await
            .map_err(|(reason, ..)| reason)
            .unwrap();
        let lossy = LosesFirstReply {
            catalog,
            updates: AtomicUsize::new(0),
        };
        let metrics = ComponentMetrics::new("lake", "iceberg");
        tokio::time::timeout(
            Duration::from_secs(30),
            commit(&config, &lossy, &mut writer, &metrics),
        )
        .await
        .expect("the commit finishes instead of retrying forever");
        assert_eq!(lossy.updates.load(Ordering::SeqCst), 1, "committed once");
        let table = lossy.catalog.load_table(&config.ident()).await.unwrap();
        let with_data: Vec<_> = table
            .metadata()
            .snapshots()
            .filter(|s| {
                s.summary()
                    .additional_properties
                    .contains_key("added-records")
            })
            .collect();
        assert_eq!(with_data.len(), 1, "one snapshot of data");
        assert_eq!(
            with_data[0].summary().additional_properties["added-records"],
            "10"
        );
    }
}
