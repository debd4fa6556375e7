//! The offsets table: where the postgres sink records, in the same transaction as the rows,
//! the next Kafka offset of every partition it has written (see [`crate::exactly_once`]).
//!
//! ```sql
//! CREATE TABLE sluice_offsets (
//!   sink text, topic text, partition integer,
//!   next_offset bigint,       -- where the partition resumes; NULL until the first commit
//!   claim text,               -- the assignment allowed to commit (fences earlier owners)
//!   updated_at timestamptz,
//!   PRIMARY KEY (sink, topic, partition))
//! ```

use super::connect;
use crate::exactly_once::{Ledger, Partition, PositionStore, SourcePosition};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::{GenericClient, Transaction};

/// The offsets table of one sink.
#[derive(Debug, Clone)]
pub struct OffsetsTable {
    /// The postgres URL.
    pub endpoint: String,
    /// TLS to the server (see the sink's `tls`).
    pub tls: Arc<rustls::ClientConfig>,
    /// The table's quoted name.
    pub table: String,
    /// The sink's id: one table can serve several sinks.
    pub sink: String,
}

impl OffsetsTable {
    /// Creates the table if it is missing. Two agents starting at once may race; the loser's
    /// error is harmless once the table exists.
    pub async fn ensure(&self, client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (sink text NOT NULL, topic text NOT NULL, \
             partition integer NOT NULL, next_offset bigint, claim text, \
             updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (sink, topic, partition))",
            self.table
        );
        match client.batch_execute(&create).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let exists = client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table])
                    .await?;
                if exists.get::<_, bool>(0) {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Reads (and locks until the transaction ends) the stored positions of the partitions
    /// in `positions`.
    pub async fn lock<'a>(
        &self,
        tx: &Transaction<'_>,
        positions: impl Iterator<Item = &'a SourcePosition>,
    ) -> Result<Ledger, tokio_postgres::Error> {
        let select = format!(
            "SELECT claim, next_offset FROM {} WHERE sink = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            self.table
        );
        let statement = tx.prepare(&select).await?;
        let mut ledger = Ledger::default();
        for (topic, partition) in Ledger::partitions(positions) {
            let row = tx
                .query_opt(&statement, &[&self.sink, &&*topic, &partition])
                .await?;
            let (claim, next) = match row {
                Some(row) => (row.get(0), row.get(1)),
                None => (None, None),
            };
            ledger.stored((topic, partition), claim, next);
        }
        Ok(ledger)
    }

    /// Writes the positions the commit advanced.
    pub async fn advance(
        &self,
        tx: &Transaction<'_>,
        ledger: &Ledger,
    ) -> Result<(), tokio_postgres::Error> {
        let update = format!(
            "UPDATE {} SET next_offset = $4, updated_at = now() WHERE sink = $1 AND topic = $2 AND partition = $3",
            self.table
        );
        let statement = tx.prepare(&update).await?;
        for (topic, partition, next) in ledger.advanced() {
            tx.execute(&statement, &[&self.sink, &topic, &partition, &next])
                .await?;
        }
        Ok(())
    }

    async fn claim_now(
        &self,
        partitions: &[Partition],
        claim: &str,
    ) -> Result<HashMap<Partition, i64>, String> {
        let mut client = connect(&self.endpoint, &self.tls)
            .await
            .map_err(|e| format!("cannot connect: {}", super::describe(&e)))?;
        self.ensure(&client)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.table))?;
        let upsert = format!(
            "INSERT INTO {} (sink, topic, partition, claim) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink, topic, partition) DO UPDATE SET claim = EXCLUDED.claim, updated_at = now() \
             RETURNING next_offset",
            self.table
        );
        let tx = client
            .transaction()
            .await
            .map_err(|e| format!("cannot begin: {e}"))?;
        let statement = tx.prepare(&upsert).await.map_err(|e| e.to_string())?;
        let mut next_offsets = HashMap::new();
        for (topic, partition) in partitions {
            let row = tx
                .query_one(&statement, &[&self.sink, topic, partition, &claim])
                .await
                .map_err(|e| format!("cannot claim {topic}/{partition}: {e}"))?;
            if let Some(next) = row.get::<_, Option<i64>>(0) {
                next_offsets.insert((topic.clone(), *partition), next);
            }
        }
        tx.commit()
            .await
            .map_err(|e| format!("cannot commit the claim: {e}"))?;
        Ok(next_offsets)
    }
}

impl PositionStore for OffsetsTable {
    fn claim<'a>(
        &'a self,
        partitions: &'a [Partition],
        claim: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<Partition, i64>, String>> {
        Box::pin(self.claim_now(partitions, claim))
    }
}
