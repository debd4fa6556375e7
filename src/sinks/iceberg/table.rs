//! The table side of the iceberg sink: opening the catalog, creating the table, and commits
//! that are compare-and-swap on the snapshot they were decided against.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and re-applies its actions when
//! someone else committed first. Right for a plain append; wrong for exactly-once, whose
//! decision (which batches are fenced, which offsets to record) was made against one snapshot.
//! So commits go through [`Pinned`], a catalog that answers `load_table` with the table as it
//! was read: the append then requires that snapshot to still be the current one, and a
//! conflict comes back as an error (not retried inside) for the sink to read the table again,
//! decide again and commit again.
//!
//! Source positions live in the summary of every snapshot the sink commits, merged forward
//! (the latest such snapshot holds the whole map): `sluice/<sink>/<topic>/<partition>/next`
//! and `.../claim`.

use super::catalog::open_catalog;
use super::{CatalogKind, IcebergSinkConfig};
use crate::exactly_once::{Ledger, Partition, PositionStore};
use futures::future::BoxFuture;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Error, ErrorKind, NamespaceIdent, TableCommit, TableCreation, TableIdent};
use std::collections::HashMap;
use std::sync::Arc;

use crate::sinks::aws_s3::parquet::ColumnType;

impl IcebergSinkConfig {
    /// The Iceberg type of a configured column. Timestamps are `timestamptz` (UTC), except in
    /// a Glue catalog: iceberg-rust's Glue catalog cannot describe `timestamptz` to Glue, so
    /// there they are `timestamp` (the same UTC instants, as Athena's own tables hold them).
    fn iceberg_type(&self, kind: ColumnType) -> PrimitiveType {
        match kind {
            ColumnType::String | ColumnType::Json => PrimitiveType::String,
            ColumnType::Int64 => PrimitiveType::Long,
            ColumnType::Float64 => PrimitiveType::Double,
            ColumnType::Bool => PrimitiveType::Boolean,
            ColumnType::Timestamp if self.catalog.kind == CatalogKind::Glue => {
                PrimitiveType::Timestamp
            }
            ColumnType::Timestamp => PrimitiveType::Timestamptz,
        }
    }
}

/// The type the sink writes into a column of this Iceberg type, if it writes one.
fn column_type(field_type: &Type) -> Option<ColumnType> {
    Some(match field_type {
        Type::Primitive(primitive) => match primitive {
            PrimitiveType::String => ColumnType::String,
            PrimitiveType::Long | PrimitiveType::Int => ColumnType::Int64,
            PrimitiveType::Double | PrimitiveType::Float => ColumnType::Float64,
            PrimitiveType::Boolean => ColumnType::Bool,
            PrimitiveType::Timestamptz
            | PrimitiveType::Timestamp
            | PrimitiveType::TimestamptzNs
            | PrimitiveType::TimestampNs => ColumnType::Timestamp,
            _ => return None,
        },
        _ => return None,
    })
}

/// The columns the sink fills, in the table's order: every column of the table's current
/// schema whose type it writes, with the configured type where `schema` names it (so `json`
/// stays JSON text in a string column). Other columns are left null.
pub fn columns(
    config: &IcebergSinkConfig,
    table: &Table,
) -> indexmap::IndexMap<String, ColumnType> {
    let schema = table.metadata().current_schema();
    schema
        .as_struct()
        .fields()
        .iter()
        .filter_map(|field| {
            let configured = config
                .schema
                .iter()
                .find(|c| c.name == field.name)
                .map(|c| c.kind);
            configured
                .or_else(|| column_type(&field.field_type))
                .map(|kind| (field.name.clone(), kind))
        })
        .collect()
}

/// Configured columns the table does not have.
pub fn missing_columns(config: &IcebergSinkConfig, table: &Table) -> Vec<(String, ColumnType)> {
    let schema = table.metadata().current_schema();
    config
        .schema
        .iter()
        .filter(|c| schema.field_by_name(&c.name).is_none())
        .map(|c| (c.name.clone(), c.kind))
        .collect()
}

/// Adds `additions` as optional columns in a new schema version, committed on top of the
/// table as read; after a conflict the table is read again and only what is still missing is
/// added (another agent may have added the same column first). Returns the table after.
pub async fn add_columns(
    catalog: &dyn Catalog,
    config: &IcebergSinkConfig,
    additions: &[(String, ColumnType)],
) -> Result<Table, String> {
    loop {
        let table = catalog
            .load_table(&config.ident())
            .await
            .map_err(|e| format!("cannot load the table to add columns: {e}"))?;
        let schema = table.metadata().current_schema().clone();
        let missing: Vec<&(String, ColumnType)> = additions
            .iter()
            .filter(|(name, _)| schema.field_by_name(name).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(table);
        }
        let tx = Transaction::new(&table);
        let mut action = tx.update_schema();
        for (name, kind) in &missing {
            action = action.add_column(AddColumn::optional(
                name,
                Type::Primitive(config.iceberg_type(*kind)),
            ));
        }
        let tx = action
            .apply(tx)
            .map_err(|e| format!("cannot add columns: {e}"))?;
        let pinned = Pinned {
            catalog,
            table: table.clone(),
        };
        match tx.commit(&pinned).await {
            Ok(table) => {
                let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
                tracing::info!(table = %format!("{}.{}", config.namespace, config.table), columns = ?names, schema_id = table.metadata().current_schema_id(), "added columns to the iceberg table (a new schema version)");
                return Ok(table);
            }
            Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => continue,
            Err(e) => return Err(format!("cannot commit the new schema: {e}")),
        }
    }
}

impl IcebergSinkConfig {
    pub fn ident(&self) -> TableIdent {
        TableIdent::new(self.namespace_ident(), self.table.clone())
    }

    fn namespace_ident(&self) -> NamespaceIdent {
        NamespaceIdent::from_strs(self.namespace.split('.'))
            .unwrap_or_else(|_| NamespaceIdent::new(self.namespace.clone()))
    }

    /// The table schema the config describes: every column optional, ids from 1.
    pub fn schema(&self) -> Result<Schema, String> {
        let fields = self
            .schema
            .iter()
            .enumerate()
            .map(|(i, column)| {
                Arc::new(NestedField::optional(
                    i as i32 + 1,
                    &column.name,
                    Type::Primitive(self.iceberg_type(column.kind)),
                ))
            })
            .collect::<Vec<_>>();
        Schema::builder()
            .with_fields(fields)
            .build()
            .map_err(|e| format!("invalid schema: {e}"))
    }

    /// The partition spec the config describes.
    pub fn partition_spec(&self) -> Result<UnboundPartitionSpec, String> {
        let mut spec = UnboundPartitionSpec::builder();
        for partition in &self.partition_by {
            let Some(index) = self.schema.iter().position(|c| c.name == partition.field) else {
                return Err(format!(
                    "partition field `{}` is not in the schema",
                    partition.field
                ));
            };
            let transform: Transform = partition.transform.parse().map_err(|e| {
                format!(
                    "`{}` is not a transform (identity, year, month, day, hour, bucket[N], truncate[W]): {e}",
                    partition.transform
                )
            })?;
            let name = match transform {
                Transform::Identity => partition.field.clone(),
                _ => format!(
                    "{}_{}",
                    partition.field,
                    partition.transform.replace(['[', ']'], "")
                ),
            };
            spec = spec
                .add_partition_field(index as i32 + 1, name, transform)
                .map_err(|e| format!("partition by `{}`: {e}", partition.field))?;
        }
        Ok(spec.build())
    }

    /// Loads the table, creating its namespace and itself first when `create_table` allows.
    pub async fn load_or_create(&self, catalog: &dyn Catalog) -> Result<Table, String> {
        let ident = self.ident();
        match catalog.table_exists(&ident).await {
            Ok(true) => {}
            Ok(false) if !self.create_table => {
                return Err(format!(
                    "table `{}.{}` does not exist (and create_table is off)",
                    self.namespace, self.table
                ))
            }
            Ok(false) => self.create(catalog).await?,
            Err(e) => return Err(format!("cannot reach the catalog: {e}")),
        }
        catalog
            .load_table(&ident)
            .await
            .map_err(|e| format!("cannot load `{}.{}`: {e}", self.namespace, self.table))
    }

    async fn create(&self, catalog: &dyn Catalog) -> Result<(), String> {
        let namespace = self.namespace_ident();
        if !catalog
            .namespace_exists(&namespace)
            .await
            .map_err(|e| format!("cannot reach the catalog: {e}"))?
        {
            match catalog.create_namespace(&namespace, HashMap::new()).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => {}
                Err(e) => return Err(format!("cannot create namespace `{}`: {e}", self.namespace)),
            }
        }
        let creation = TableCreation::builder()
            .name(self.table.clone())
            .schema(self.schema()?)
            .partition_spec(self.partition_spec()?)
            .properties([(
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            )])
            .build();
        match catalog.create_table(&namespace, creation).await {
            Ok(_) => {
                tracing::info!(table = %format!("{}.{}", self.namespace, self.table), "created the iceberg table");
                Ok(())
            }
            // Another agent created it first.
            Err(e) if e.kind() == ErrorKind::TableAlreadyExists => Ok(()),
            Err(e) => Err(format!(
                "cannot create table `{}.{}`: {e}",
                self.namespace, self.table
            )),
        }
    }
}

/// The sink's recorded positions and claims, from the latest snapshot that has them.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// Every `sluice/<sink>/...` summary property, carried forward into the next commit.
    pub properties: HashMap<String, String>,
}

fn key(sink: &str, topic: &str, partition: i32, what: &str) -> String {
    format!("sluice/{sink}/{topic}/{partition}/{what}")
}

impl Recorded {
    /// Walks back from the current snapshot to the first one the sink committed (other
    /// writers' snapshots carry no sluice properties).
    pub fn read(table: &Table, sink: &str) -> Self {
        let prefix = format!("sluice/{sink}/");
        let metadata = table.metadata();
        let mut snapshot = metadata.current_snapshot().cloned();
        while let Some(current) = snapshot {
            let properties: HashMap<String, String> = current
                .summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !properties.is_empty() {
                return Recorded { properties };
            }
            snapshot = current
                .parent_snapshot_id()
                .and_then(|id| metadata.snapshot_by_id(id).cloned());
        }
        Recorded::default()
    }

    pub fn next_offset(&self, sink: &str, topic: &str, partition: i32) -> Option<i64> {
        self.properties
            .get(&key(sink, topic, partition, "next"))
            .and_then(|v| v.parse().ok())
    }

    pub fn claim(&self, sink: &str, topic: &str, partition: i32) -> Option<String> {
        self.properties
            .get(&key(sink, topic, partition, "claim"))
            .cloned()
    }

    /// The ledger for judging batches of `partitions` against this record.
    pub fn ledger(&self, sink: &str, partitions: &[(Arc<str>, i32)]) -> Ledger {
        let mut ledger = Ledger::default();
        for (topic, partition) in partitions {
            ledger.stored(
                (topic.clone(), *partition),
                self.claim(sink, topic, *partition),
                self.next_offset(sink, topic, *partition),
            );
        }
        ledger
    }

    /// The record after a commit that took `ledger`'s advanced positions.
    pub fn advanced(&self, sink: &str, ledger: &Ledger) -> HashMap<String, String> {
        let mut properties = self.properties.clone();
        for (topic, partition, next) in ledger.advanced() {
            properties.insert(key(sink, topic, partition, "next"), next.to_string());
        }
        properties
    }
}

/// A catalog whose `load_table` answers with the table as read, so that a commit is decided
/// against that snapshot and fails (not retried inside) if it is no longer current.
pub struct Pinned<'a> {
    pub catalog: &'a dyn Catalog,
    pub table: Table,
}

impl std::fmt::Debug for Pinned<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinned")
    }
}

/// Implements `Catalog` for `$wrapper` (a type with a `catalog` field): the methods given,
/// and every other one passed through to `self.catalog` unchanged. `async_trait` sees the
/// whole impl, so the passed-through methods are written here once for every wrapper.
macro_rules! catalog_wrapper {
    ($wrapper:ty { $($own:item)* }) => {
        #[async_trait::async_trait]
        impl iceberg::Catalog for $wrapper {
            $($own)*
            async fn list_namespaces(
                &self,
                parent: Option<&iceberg::NamespaceIdent>,
            ) -> iceberg::Result<Vec<iceberg::NamespaceIdent>> {
                self.catalog.list_namespaces(parent).await
            }
            async fn create_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
                properties: std::collections::HashMap<String, String>,
            ) -> iceberg::Result<iceberg::Namespace> {
                self.catalog.create_namespace(namespace, properties).await
            }
            async fn get_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<iceberg::Namespace> {
                self.catalog.get_namespace(namespace).await
            }
            async fn namespace_exists(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<bool> {
                self.catalog.namespace_exists(namespace).await
            }
            async fn update_namespace(
                &self,
                namespace: &iceberg::NamespaceIdent,
                properties: std::collections::HashMap<String, String>,
            ) -> iceberg::Result<()> {
                self.catalog.update_namespace(namespace, properties).await
            }
            async fn drop_namespace(&self, namespace: &iceberg::NamespaceIdent) -> iceberg::Result<()> {
                self.catalog.drop_namespace(namespace).await
            }
            async fn list_tables(
                &self,
                namespace: &iceberg::NamespaceIdent,
            ) -> iceberg::Result<Vec<iceberg::TableIdent>> {
                self.catalog.list_tables(namespace).await
            }
            async fn create_table(
                &self,
                namespace: &iceberg::NamespaceIdent,
                creation: iceberg::TableCreation,
            ) -> iceberg::Result<iceberg::table::Table> {
                self.catalog.create_table(namespace, creation).await
            }
            async fn drop_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
                self.catalog.drop_table(table).await
            }
            async fn purge_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<()> {
                self.catalog.purge_table(table).await
            }
            async fn table_exists(&self, table: &iceberg::TableIdent) -> iceberg::Result<bool> {
                self.catalog.table_exists(table).await
            }
            async fn rename_table(
                &self,
                src: &iceberg::TableIdent,
                dest: &iceberg::TableIdent,
            ) -> iceberg::Result<()> {
                self.catalog.rename_table(src, dest).await
            }
            async fn register_table(
                &self,
                table: &iceberg::TableIdent,
                location: String,
            ) -> iceberg::Result<iceberg::table::Table> {
                self.catalog.register_table(table, location).await
            }
        }
    };
}
// For the sink's tests, whose catalogs wrap the real one too.
#[cfg(test)]
pub(crate) use catalog_wrapper;

catalog_wrapper!(Pinned<'_> {
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        if table == self.table.identifier() {
            return Ok(self.table.clone());
        }
        self.catalog.load_table(table).await
    }
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        self.catalog.update_table(commit).await.map_err(|e| {
            if e.kind() == ErrorKind::CatalogCommitConflicts {
                Error::new(ErrorKind::CatalogCommitConflicts, e.to_string()).with_retryable(false)
            } else {
                e
            }
        })
    }
});

/// The snapshot-summary key under which a sink records the id of each commit of data files,
/// kept the same across the retries of one commit.
pub fn commit_id_key(sink: &str) -> String {
    format!("sluice-commit/{sink}")
}

/// Whether a snapshot of `table` carries `commit_id` for `sink`: that commit landed.
pub fn has_commit(table: &Table, sink: &str, commit_id: &str) -> bool {
    let key = commit_id_key(sink);
    table.metadata().snapshots().any(|s| {
        s.summary()
            .additional_properties
            .get(&key)
            .map(String::as_str)
            == Some(commit_id)
    })
}

/// Why a commit did not happen.
pub enum CommitFailure {
    /// Someone else committed since the table was read: read it again and decide again.
    Conflict,
    /// Anything else (catalog down, warehouse unwritable): retry later.
    Failed(String),
}

/// Appends `files` with `properties` in the snapshot summary, on top of `table` exactly.
///
/// Without iceberg-rust's duplicate-file check: it reads every manifest of the current
/// snapshot, one more per commit, so a commit's cost grew with the number of commits before
/// it. The sink never appends a file twice: each data file has a new name, and a commit that
/// is retried first looks for its own id in the table ([`has_commit`]), so one whose reply
/// was lost is recognised as landed rather than appended again.
pub async fn append(
    catalog: &dyn Catalog,
    table: &Table,
    files: Vec<iceberg::spec::DataFile>,
    properties: HashMap<String, String>,
) -> Result<Table, CommitFailure> {
    let tx = Transaction::new(table);
    let action = tx
        .fast_append()
        .with_check_duplicate(false)
        .set_commit_uuid(uuid::Uuid::new_v4())
        .add_data_files(files)
        .set_snapshot_properties(properties);
    let tx = action
        .apply(tx)
        .map_err(|e| CommitFailure::Failed(e.to_string()))?;
    let pinned = Pinned {
        catalog,
        table: table.clone(),
    };
    tx.commit(&pinned).await.map_err(|e| {
        if e.kind() == ErrorKind::CatalogCommitConflicts {
            CommitFailure::Conflict
        } else {
            CommitFailure::Failed(e.to_string())
        }
    })
}

/// The iceberg sink's position store: claims are snapshots (no data files) whose summary
/// records the new claims, committed on top of the snapshot they were read against.
pub struct SnapshotPositions {
    pub config: IcebergSinkConfig,
    pub sink: String,
}

impl SnapshotPositions {
    async fn claim_now(
        &self,
        partitions: &[Partition],
        claim: &str,
    ) -> Result<HashMap<Partition, i64>, String> {
        let catalog = open_catalog(&self.config).await?;
        loop {
            let table = self.config.load_or_create(catalog.as_ref()).await?;
            let recorded = Recorded::read(&table, &self.sink);
            let mut properties = recorded.properties.clone();
            let mut next_offsets = HashMap::new();
            for (topic, partition) in partitions {
                properties.insert(
                    key(&self.sink, topic, *partition, "claim"),
                    claim.to_string(),
                );
                if let Some(next) = recorded.next_offset(&self.sink, topic, *partition) {
                    next_offsets.insert((topic.clone(), *partition), next);
                }
            }
            match append(catalog.as_ref(), &table, Vec::new(), properties).await {
                Ok(_) => return Ok(next_offsets),
                Err(CommitFailure::Conflict) => continue,
                Err(CommitFailure::Failed(e)) => {
                    return Err(format!("cannot commit the claim: {e}"))
                }
            }
        }
    }
}

impl PositionStore for SnapshotPositions {
    fn claim<'a>(
        &'a self,
        partitions: &'a [Partition],
        claim: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<Partition, i64>, String>> {
        Box::pin(self.claim_now(partitions, claim))
    }
}
