//! The `postgres` sink: rows into a PostgreSQL table with a binary `COPY`, one transaction per
//! batch; `upsert` mode merges through a staging table; `exactly_once` commits the Kafka
//! offsets of the batch in the same transaction (see [`crate::exactly_once`]).
//!
//! - Column types come from the catalog at start; each event field is converted to its
//!   column's type in the agent. A value that does not convert sends its event to
//!   `<id>.dead_letter` with the column and the reason; the rest of the batch commits.
//! - Connection loss, serialization failures, deadlocks and server shutdowns are retried with
//!   backoff on a new connection (unlimited by default: a down database is backpressure).
//!   Anything else the server refuses (a constraint, a permission) rejects the batch.
//! - Why tokio-postgres: the maintained native client of the Rust ecosystem, with the binary
//!   COPY writer every fast loader uses, and no libpq to link.

mod columns;
mod store;

use super::batch::BatchConfig;
use super::retry::RequestConfig;
use super::{BufferConfig, SinkContext};
use crate::event::{BatchNotifier, BatchStatus, Event, EventBatch, Finalizers};
use crate::exactly_once::{position_of, Decision, PositionStore};
use crate::observe::ComponentMetrics;
use crate::tls::TlsConfig;
use crate::topology::{BuildError, ComponentError, Fanout, RunFuture};
use columns::{Cell, Column};
use futures::pin_mut;
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
pub use store::OffsetsTable;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// How rows reach the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `COPY` straight into the table (default).
    #[default]
    Insert,
    /// `COPY` into a staging table, then `INSERT ... ON CONFLICT (key) DO UPDATE`: the last
    /// event of each key wins.
    Upsert,
}

/// Write events as rows of a PostgreSQL table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// The database, as a URL (`postgresql://user:password@host:5432/db`) or libpq
    /// `key=value` pairs. Put the password in with `${file:...}` or `${VAR}`.
    pub endpoint: String,
    /// The table, optionally with its schema (`public.requests`).
    pub table: String,
    /// Column name → event field (`status`, `.http.status`; `.` is the whole event). Types come
    /// from the table itself.
    pub columns: IndexMap<String, String>,
    /// `insert` (default) or `upsert`.
    #[serde(default)]
    pub mode: Mode,
    /// Upsert: the columns of the table's primary key or unique constraint.
    #[serde(default)]
    pub key: Vec<String>,
    /// Rows per transaction (`max_events`, default 1000) and longest wait (`timeout_secs`).
    #[serde(default)]
    pub batch: BatchConfig,
    /// Connections writing at once (default 1). With exactly-once, each Kafka partition stays
    /// on one of them (its transactions in order); otherwise batches take turns. Upsert with
    /// more than one needs exactly-once: two connections could commit a key's versions out
    /// of order.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Timeout of one transaction and its retries.
    #[serde(default)]
    pub request: RequestConfig,
    /// Commit each batch's Kafka offsets in its transaction and start the Kafka source from
    /// them: no row lost or written twice across crashes and rebalances. Needs one kafka
    /// source feeding this sink through `remap`/`filter` only.
    #[serde(default)]
    pub exactly_once: bool,
    /// Exactly-once: the table of committed offsets, created if missing (default
    /// `sluice_offsets`).
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// TLS to the server: `ca_file` (trusted besides the public roots), `crt_file` +
    /// `key_file` (a client certificate). Whether TLS is used is the endpoint's `sslmode`
    /// (`disable`, `prefer` (default), `require`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_pool_size() -> usize {
    1
}

fn default_offsets_table() -> String {
    "sluice_offsets".into()
}

/// Quotes a possibly schema-qualified name: `public.Requests` → `"public"."Requests"`.
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Connects, running the connection on the current runtime. TLS as the endpoint's `sslmode`
/// says (libpq's default, `prefer`: TLS when the server offers it), verified against `tls`.
/// The session is named `sluice` in `pg_stat_activity` unless the endpoint names it.
async fn connect(
    endpoint: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = endpoint.parse()?;
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

impl PostgresSinkConfig {
    /// The TLS client configuration (public roots when `tls` is absent).
    fn tls_client(&self) -> Result<Arc<rustls::ClientConfig>, BuildError> {
        self.tls
            .clone()
            .unwrap_or(TlsConfig {
                verify_certificate: true,
                ..TlsConfig::default()
            })
            .rustls_client()
            .map_err(|(field, message)| BuildError::new(field, message))
    }

    fn check(&self) -> Result<(), BuildError> {
        self.tls_client()?;
        self.endpoint
            .parse::<tokio_postgres::Config>()
            .map_err(|e| BuildError::new("endpoint", format!("invalid connection string: {e}")))?;
        if self.table.trim().is_empty() {
            return Err(BuildError::new("table", "must name a table"));
        }
        if self.columns.is_empty() {
            return Err(BuildError::new("columns", "needs at least one column"));
        }
        for field in self.columns.values() {
            if field.trim() != "." {
                crate::transforms::support::parse_path(field)
                    .map_err(|m| BuildError::new("columns", m))?;
            }
        }
        match self.mode {
            Mode::Upsert if self.key.is_empty() => {
                return Err(BuildError::new("key", "upsert needs the key columns"))
            }
            Mode::Upsert => {
                if let Some(missing) = self.key.iter().find(|k| !self.columns.contains_key(*k)) {
                    return Err(BuildError::new(
                        "key",
                        format!("key column `{missing}` is not in `columns`"),
                    ));
                }
            }
            Mode::Insert if !self.key.is_empty() => {
                return Err(BuildError::new("key", "only used with `mode: upsert`"))
            }
            Mode::Insert => {}
        }
        if !(1..=64).contains(&self.pool_size) {
            return Err(BuildError::new("pool_size", "must be between 1 and 64"));
        }
        if self.pool_size > 1 && self.mode == Mode::Upsert && !self.exactly_once {
            return Err(BuildError::new(
                "pool_size",
                "upsert with more than one connection needs exactly_once (batches then keep to one connection per Kafka partition); otherwise two connections could commit a key's versions out of order",
            ));
        }
        self.batch
            .check()
            .map_err(|m| BuildError::new("batch", m))?;
        self.request
            .check()
            .map_err(|(field, message)| BuildError::new(field, message))?;
        Ok(())
    }

    /// The offsets table, when this sink commits source positions.
    pub fn position_store(&self, sink_id: &str) -> Option<Arc<dyn PositionStore>> {
        if !self.exactly_once {
            return None;
        }
        // A config that does not build has no store; its build error is reported.
        let offsets = self.offsets(sink_id).ok()?;
        Some(Arc::new(offsets))
    }

    fn offsets(&self, sink_id: &str) -> Result<OffsetsTable, BuildError> {
        Ok(OffsetsTable {
            endpoint: self.endpoint.clone(),
            tls: self.tls_client()?,
            table: quote_name(&self.offsets_table),
            sink: sink_id.to_string(),
        })
    }

    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        self.check()?;
        let offsets = match self.exactly_once {
            true => Some(self.offsets(&cx.id)?),
            false => None,
        };
        let tls = self.tls_client()?;
        let writers = (0..self.pool_size)
            .map(|_| Writer {
                tls: tls.clone(),
                config: self.clone(),
                table: quote_name(&self.table),
                client: None,
                columns: None,
                offsets: offsets.clone(),
                metrics: cx.metrics.clone(),
            })
            .collect();
        Ok(Box::pin(run(writers, cx)))
    }

    /// For `sluice validate`: the database answers, the table exists, and every configured
    /// column exists with a type the sink writes.
    pub async fn healthcheck(&self) -> Result<(), String> {
        self.check().map_err(|e| e.message)?;
        let tls = self.tls_client().map_err(|e| e.message)?;
        let client = tokio::time::timeout(Duration::from_secs(10), connect(&self.endpoint, &tls))
            .await
            .map_err(|_| "no answer from the database in 10 s".to_string())?
            .map_err(|e| format!("cannot connect: {}", describe(&e)))?;
        read_columns(
            &client,
            &quote_name(&self.table),
            &self.table,
            &self.columns,
        )
        .await?;
        Ok(())
    }
}

/// Reads the configured columns' types from the catalog.
async fn read_columns(
    client: &Client,
    quoted_table: &str,
    table: &str,
    wanted: &IndexMap<String, String>,
) -> Result<Vec<Column>, String> {
    let exists = client
        .query_one("SELECT to_regclass($1)::oid", &[&quoted_table])
        .await
        .map_err(|e| format!("cannot read the catalog: {e}"))?;
    let Some(oid) = exists.get::<_, Option<u32>>(0) else {
        return Err(format!("table `{table}` does not exist"));
    };
    let rows = client
        .query(
            "SELECT attname::text, atttypid, attnotnull AND NOT atthasdef FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| format!("cannot read the columns of `{table}`: {e}"))?;
    let catalog: IndexMap<String, (u32, bool)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, u32>(1), r.get::<_, bool>(2)),
            )
        })
        .collect();
    let mut columns = Vec::new();
    for (name, field) in wanted {
        let Some((type_oid, required)) = catalog.get(name) else {
            return Err(format!("table `{table}` has no column `{name}`"));
        };
        let ty = Type::from_oid(*type_oid).filter(columns::supported).ok_or_else(|| {
            let shown = Type::from_oid(*type_oid).map_or_else(|| format!("oid {type_oid}"), |t| t.name().to_string());
            format!("column `{name}` of `{table}` has type {shown}, which the sink does not write (text, integers, floats, numeric, bool, timestamp(tz), date, json(b), uuid, bytea)")
        })?;
        let field = field.trim();
        let field = if field == "." {
            None
        } else {
            Some(crate::transforms::support::parse_path(field)?)
        };
        columns.push(Column {
            name: name.clone(),
            ty,
            required: *required,
            field,
        });
    }
    Ok(columns)
}

/// One incoming batch, converted.
struct Prepared {
    batch: EventBatch,
    rows: Vec<Vec<Cell>>,
    /// Events that did not convert: index and reason.
    failed: Vec<(usize, String)>,
}

/// `<id>.dead_letter`, shared by the pool's writers (taken only to send misfits).
type DeadLetter = tokio::sync::Mutex<Fanout>;

/// The connection and what was learned from the catalog; one transaction at a time.
struct Writer {
    config: PostgresSinkConfig,
    tls: Arc<rustls::ClientConfig>,
    table: String,
    client: Option<Client>,
    columns: Option<Vec<Column>>,
    offsets: Option<OffsetsTable>,
    metrics: ComponentMetrics,
}

/// Why an attempt failed, and whether another may succeed.
enum Failure {
    Retry(String),
    Permanent(String),
}

/// An error with the server's own words when it sent any (tokio-postgres shows only "db
/// error" otherwise), and the cause chain (TLS and I/O failures).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        let reason = describe(&error);
        if retryable(&error) {
            Failure::Retry(reason)
        } else {
            Failure::Permanent(reason)
        }
    }
}

/// Connection trouble, conflicts between transactions and a server going down are worth
/// another try; what the server refused for the data or the schema is not.
fn retryable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let Some(code) = error.code() else {
        return true; // I/O, a broken connection, a timeout
    };
    let code = code.code();
    ["08", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "40001" | "40P01" | "55P03")
}

impl Writer {
    /// A connection and the table's columns, connecting and reading the catalog if needed.
    async fn ready(&mut self) -> Result<(), Failure> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect(&self.config.endpoint, &self.tls)
                .await
                .map_err(|e| Failure::Retry(format!("cannot connect: {}", describe(&e))))?;
            if let Some(offsets) = &self.offsets {
                offsets.ensure(&client).await?;
            }
            if self.config.mode == Mode::Upsert {
                self.create_staging(&client).await?;
            }
            self.client = Some(client);
        }
        if self.columns.is_none() {
            let client = self.client.as_ref().expect("connected above");
            // A missing table may yet be created: retried, not rejected (nothing is lost).
            let columns = read_columns(
                client,
                &self.table,
                &self.config.table,
                &self.config.columns,
            )
            .await
            .map_err(Failure::Retry)?;
            self.columns = Some(columns);
        }
        Ok(())
    }

    /// The session's staging table for upserts: the configured columns and an order number.
    async fn create_staging(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let columns = self.column_list();
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS sluice_staging ON COMMIT DELETE ROWS AS \
                 SELECT {columns} FROM {} WITH NO DATA; \
                 ALTER TABLE sluice_staging ADD COLUMN IF NOT EXISTS sluice_seq bigserial",
                self.table
            ))
            .await
    }

    fn column_list(&self) -> String {
        self.config
            .columns
            .keys()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Converts the events of each batch to rows.
    fn prepare(&self, batches: Vec<EventBatch>) -> Vec<Prepared> {
        let columns = self.columns.as_deref().unwrap_or_default();
        batches
            .into_iter()
            .map(|batch| {
                let mut rows = Vec::with_capacity(batch.events.len());
                let mut failed = Vec::new();
                for (index, event) in batch.events.iter().enumerate() {
                    let row: Result<Vec<Cell>, String> =
                        columns.iter().map(|c| c.cell(event)).collect();
                    match row {
                        Ok(row) => rows.push(row),
                        Err(reason) => failed.push((index, reason)),
                    }
                }
                Prepared {
                    batch,
                    rows,
                    failed,
                }
            })
            .collect()
    }

    /// One transaction: with exactly-once, lock and judge the batches' partitions; copy the
    /// rows of the batches taken; merge (upsert); advance the offsets; commit.
    async fn transaction(&mut self, prepared: &[Prepared]) -> Result<Vec<Decision>, Failure> {
        self.ready().await?;
        let columns = self.columns.as_deref().unwrap_or_default();
        let types: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
        let target = match self.config.mode {
            Mode::Insert => self.table.clone(),
            Mode::Upsert => "sluice_staging".to_string(),
        };
        let copy = format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            self.column_list()
        );
        let merge = (self.config.mode == Mode::Upsert).then(|| self.merge_statement());
        let client = self.client.as_mut().expect("ready connects");
        let tx = client.transaction().await?;
        let mut ledger = None;
        let decisions: Vec<Decision> = match &self.offsets {
            Some(offsets) => {
                let positions = prepared
                    .iter()
                    .filter_map(|p| position_of(&p.batch.finalizers));
                let mut locked = offsets.lock(&tx, positions).await?;
                let decisions = prepared
                    .iter()
                    .map(|p| match position_of(&p.batch.finalizers) {
                        Some(position) => locked.judge(position),
                        None => Decision::Commit,
                    })
                    .collect();
                ledger = Some(locked);
                decisions
            }
            None => prepared.iter().map(|_| Decision::Commit).collect(),
        };
        let sink = tx.copy_in(&copy).await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for (p, decision) in prepared.iter().zip(&decisions) {
            if *decision != Decision::Commit {
                continue;
            }
            for row in &p.rows {
                writer.as_mut().write_raw(row.iter()).await?;
            }
        }
        writer.finish().await?;
        if let Some(merge) = merge {
            tx.batch_execute(&merge).await?;
        }
        if let (Some(offsets), Some(ledger)) = (&self.offsets, &ledger) {
            offsets.advance(&tx, ledger).await?;
        }
        tx.commit().await?;
        Ok(decisions)
    }

    /// Staging → table, the last row of each key winning.
    fn merge_statement(&self) -> String {
        let columns = self.column_list();
        let keys = self
            .config
            .key
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = self
            .config
            .columns
            .keys()
            .filter(|c| !self.config.key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        let action = if updates.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", updates.join(", "))
        };
        format!(
            "INSERT INTO {} ({columns}) SELECT DISTINCT ON ({keys}) {columns} FROM sluice_staging \
             ORDER BY {keys}, sluice_seq DESC ON CONFLICT ({keys}) DO {action}",
            self.table
        )
    }

    /// Writes the batches, retrying what may succeed later; then settles every event:
    /// committed, dead-lettered, fenced, or rejected.
    async fn flush(&mut self, batches: Vec<EventBatch>, dead_letter: &DeadLetter) {
        let timeout = Duration::from_secs_f64(self.config.request.timeout_secs);
        let mut tries = 0u32;
        // Converting needs the column types: the catalog is read first, with the same retries.
        while let Err(failure) = timed(timeout, self.ready()).await {
            if let Some(reason) = self.after_failure(failure, &mut tries).await {
                return self.reject_all(batches, dead_letter, &reason).await;
            }
        }
        let mut prepared = self.prepare(batches);
        if self.offsets.is_some() {
            self.misfits_first(&mut prepared, dead_letter).await;
        }
        loop {
            match timed(timeout, self.transaction(&prepared)).await {
                Ok(decisions) => return self.settle(prepared, decisions, dead_letter).await,
                Err(failure) => {
                    if let Some(reason) = self.after_failure(failure, &mut tries).await {
                        let batches = prepared.into_iter().map(|p| p.batch).collect();
                        return self.reject_all(batches, dead_letter, &reason).await;
                    }
                }
            }
        }
    }

    /// After a failed attempt: waits out the backoff and returns `None` to try again, or
    /// returns why it gives up.
    async fn after_failure(&mut self, failure: Failure, tries: &mut u32) -> Option<String> {
        let request = self.config.request;
        match failure {
            Failure::Permanent(reason) => {
                self.metrics.error("request_rejected");
                tracing::error!(component_id = self.metrics.id(), table = %self.config.table, %reason, "the database refused the batch; not retrying");
                Some(reason)
            }
            Failure::Retry(reason) => {
                self.metrics.error("request_failed");
                // A fresh connection and catalog for the next try: the old ones may be stale.
                self.client = None;
                self.columns = None;
                *tries += 1;
                if request.retry_attempts.is_some_and(|max| *tries > max) {
                    tracing::error!(component_id = self.metrics.id(), %reason, attempts = *tries, "retries exhausted; giving up");
                    return Some(format!("retries exhausted: {reason}"));
                }
                let wait = request
                    .backoff(*tries)
                    .min(Duration::from_secs_f64(request.retry_max_backoff_secs));
                tracing::warn!(component_id = self.metrics.id(), table = %self.config.table, %reason, attempt = *tries, wait_ms = wait.as_millis() as u64, "postgres write failed; retrying");
                tokio::time::sleep(wait).await;
                None
            }
        }
    }

    /// Sends the events of `p` that did not convert to the dead-letter output, each with its
    /// own reason, carrying `finalizers` (or counts and rejects them without a reader).
    async fn misfits(&self, p: &Prepared, finalizers: Finalizers, dead_letter: &DeadLetter) {
        if p.failed.is_empty() {
            return;
        }
        self.metrics
            .errors("conversion_failed", p.failed.len() as u64);
        tracing::warn!(component_id = self.metrics.id(), events = p.failed.len(), reason = %p.failed[0].1, "events do not fit the table's columns; sent to the dead-letter output");
        let mut by_reason: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
        for (index, reason) in &p.failed {
            by_reason
                .entry(reason)
                .or_default()
                .push(p.batch.events[*index].clone());
        }
        for (reason, events) in by_reason {
            super::reject(
                &mut *dead_letter.lock().await,
                &self.metrics,
                events,
                finalizers.clone(),
                reason,
            )
            .await;
        }
    }

    /// Exactly-once: the rows commit with the offsets past their misfits, so a crash after the
    /// commit must not lose the misfits on their way to the dead-letter output. They go first,
    /// and the commit waits until the dead-letter path has delivered them (a crash before the
    /// commit sends them again: the dead-letter output is at-least-once).
    async fn misfits_first(&self, prepared: &mut [Prepared], dead_letter: &DeadLetter) {
        if !dead_letter.lock().await.is_connected() || prepared.iter().all(|p| p.failed.is_empty())
        {
            return; // without a reader they are counted and dropped after the commit
        }
        let (notifier, delivered) = BatchNotifier::new();
        let finalizers = Finalizers::new(notifier);
        for p in prepared.iter_mut() {
            self.misfits(p, finalizers.clone(), dead_letter).await;
            p.failed.clear();
        }
        drop(finalizers);
        if delivered.await != Ok(BatchStatus::Delivered) {
            tracing::error!(component_id = self.metrics.id(), "the dead-letter output did not deliver this batch's misfits; they are counted there, and the rows commit");
        }
    }

    /// Reports what each batch became once its transaction committed.
    async fn settle(
        &self,
        prepared: Vec<Prepared>,
        decisions: Vec<Decision>,
        dead_letter: &DeadLetter,
    ) {
        for (p, decision) in prepared.into_iter().zip(decisions) {
            let events = p.batch.events.len();
            match decision {
                Decision::Commit => {
                    let written = p.rows.len();
                    let bytes = (p.batch.byte_size * written)
                        .checked_div(events)
                        .unwrap_or(0);
                    self.metrics.sent(written, bytes);
                    self.misfits(&p, p.batch.finalizers.clone(), dead_letter)
                        .await;
                }
                Decision::Fenced => {
                    // Another assignment owns the partition now and reads these again.
                    self.metrics.discarded("fenced", events);
                    tracing::info!(component_id = self.metrics.id(), events, "batch read under an earlier claim of its partition; not written (the partition's new owner writes it)");
                }
                Decision::AlreadyCommitted => {
                    tracing::debug!(
                        component_id = self.metrics.id(),
                        events,
                        "batch already committed by an earlier attempt"
                    );
                }
            }
        }
    }

    async fn reject_all(&self, batches: Vec<EventBatch>, dead_letter: &DeadLetter, reason: &str) {
        for batch in batches {
            super::reject(
                &mut *dead_letter.lock().await,
                &self.metrics,
                batch.events,
                batch.finalizers,
                reason,
            )
            .await;
        }
    }
}

/// Runs `attempt` with a time limit; running out is worth a retry.
async fn timed<T>(
    limit: Duration,
    attempt: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Retry(
                "no answer within the request timeout".into(),
            ))
        })
}

/// Hands each incoming batch to one of `pool_size` writers, each with its own connection and
/// batching: by Kafka partition with exactly-once (a partition's transactions stay in order,
/// so none is judged against a position its predecessor has not committed yet), in turn
/// otherwise.
async fn run(writers: Vec<Writer>, cx: SinkContext) -> Result<(), ComponentError> {
    let SinkContext {
        mut input,
        metrics,
        dead_letter,
        ..
    } = cx;
    let dead_letter = Arc::new(tokio::sync::Mutex::new(dead_letter));
    let by_partition = writers.first().is_some_and(|w| w.offsets.is_some());
    let mut tasks = tokio::task::JoinSet::new();
    let mut queues = Vec::new();
    for writer in writers {
        let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(4);
        queues.push(tx);
        tasks.spawn(write_batches(writer, rx, dead_letter.clone()));
    }
    let mut turn = 0usize;
    while let Some(batch) = input.recv().await {
        metrics.received(batch.len(), batch.byte_size);
        let index = match position_of(&batch.finalizers).filter(|_| by_partition) {
            Some(position) => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::hash::DefaultHasher::new();
                (&*position.topic, position.partition).hash(&mut hasher);
                hasher.finish() as usize % queues.len()
            }
            None => {
                turn = turn.wrapping_add(1);
                turn % queues.len()
            }
        };
        if queues[index].send(batch).await.is_err() {
            return Err("a postgres writer stopped".into());
        }
    }
    drop(queues);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One writer: collects whole batches (each keeps its acknowledgement handle and source
/// position) until `max_events`/`max_bytes` or `timeout_secs` after the first, then writes
/// them in one transaction.
async fn write_batches(
    mut writer: Writer,
    mut input: tokio::sync::mpsc::Receiver<EventBatch>,
    dead_letter: Arc<DeadLetter>,
) {
    let limits = writer.config.batch;
    let timeout = Duration::from_secs_f64(limits.timeout_secs);
    let mut pending: Vec<EventBatch> = Vec::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    let mut deadline = tokio::time::Instant::now();
    let mut open = true;
    while open || !pending.is_empty() {
        let full = events >= limits.max_events || bytes >= limits.max_bytes;
        if !full && open {
            tokio::select! {
                received = input.recv() => match received {
                    Some(batch) => {
                        if pending.is_empty() {
                            deadline = tokio::time::Instant::now() + timeout;
                        }
                        events += batch.len();
                        bytes += batch.byte_size;
                        pending.push(batch);
                        continue;
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(deadline), if !pending.is_empty() => {}
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batches = std::mem::take(&mut pending);
        (events, bytes) = (0, 0);
        writer.flush(batches, &dead_letter).await;
    }
}
