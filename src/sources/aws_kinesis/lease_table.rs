//! The lease table: one DynamoDB item per shard, written only with conditional writes, so
//! two workers never both hold a shard.
//!
//! Item layout (the KCL's attribute names, so a team moving from a KCL application
//! recognises its table; one table per stream and application):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `leaseKey` | S (hash key) | the shard id |
//! | `leaseOwner` | S | the worker holding the lease; absent when nobody does |
//! | `leaseCounter` | N | +1 on every write (take, renewal, checkpoint, release) |
//! | `checkpoint` | S | the last acknowledged sequence number, or `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` (not read yet: where to start) or `SHARD_END` (closed and read to its end) |
//! | `checkpointSubSequenceNumber` | N | always 0 (records are not de-aggregated) |
//! | `ownerSwitchesSinceCheckpoint` | N | owner changes since the checkpoint last moved |
//! | `parentShardId` | SS | the shard's parents (absent when it has none) |
//! | `checkpointOwner` | S | during a steal, the previous owner, which still writes the final checkpoint of what it read (the KCL 3 handoff); absent otherwise |
//!
//! Every write but the creation and the handoff's final checkpoint is conditional on
//! `leaseCounter` being the value the writer last saw (and, for the owner's writes, on
//! `leaseOwner` being the writer): a worker whose lease was taken learns it from its next
//! write failing, and never checkpoints that shard again, except that a worker the lease
//! was stolen from writes its final checkpoint once, conditional on `checkpointOwner`.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus,
};
use std::collections::HashMap;
use std::time::Duration;

/// `checkpoint` of a shard that is closed and was read to its end.
pub const SHARD_END: &str = "SHARD_END";
/// `checkpoint` of a shard not read yet, starting at its oldest record.
pub const TRIM_HORIZON: &str = "TRIM_HORIZON";
/// `checkpoint` of a shard not read yet, starting with records added from now on.
pub const LATEST: &str = "LATEST";
/// `checkpoint` of a shard not read yet, starting at the configured time.
pub const AT_TIMESTAMP: &str = "AT_TIMESTAMP";

/// One lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard id.
    pub key: String,
    pub owner: Option<String>,
    pub counter: u64,
    pub checkpoint: String,
    pub parents: Vec<String>,
    /// The previous owner, during a steal, until it wrote its final checkpoint.
    pub checkpoint_owner: Option<String>,
}

impl Lease {
    /// Closed and read to its end: nobody needs to hold it any more.
    pub fn finished(&self) -> bool {
        self.checkpoint == SHARD_END
    }
}

/// What a conditional write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Written<T> {
    Done(T),
    /// The condition failed: another worker changed the lease since the writer read it.
    Lost,
}

/// The lease table of one stream.
#[derive(Clone)]
pub struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn error_text<E, R>(error: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(error).to_string()
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl LeaseTable {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        LeaseTable {
            client,
            table: table.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand billing) unless it exists, and waits until it is active.
    pub async fn ensure(&self) -> Result<(), String> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("leaseKey")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("leaseKey")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.table, "created the lease table"),
            // Another worker created it first, or it was there already.
            Err(error) if error.code() == Some("ResourceInUseException") => {}
            Err(error) => return Err(error_text(&error)),
        }
        for _ in 0..600 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| error_text(&e))?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!(
            "table `{}` did not become active within 5 minutes",
            self.table
        ))
    }

    /// Every lease, read consistently.
    pub async fn scan(&self) -> Result<Vec<Lease>, String> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error_text(&e))?;
            for item in page.items() {
                match lease_of(item) {
                    Some(lease) => leases.push(lease),
                    None => {
                        tracing::warn!(table = %self.table, ?item, "lease table item without leaseKey, leaseCounter or checkpoint; ignored")
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(leases),
            }
        }
    }

    /// Adds the lease of a shard nobody has a lease for yet; `false` when it exists already.
    pub async fn create(
        &self,
        shard: &str,
        checkpoint: &str,
        parents: &[String],
    ) -> Result<bool, String> {
        let mut item = HashMap::from([
            ("leaseKey".to_string(), s(shard)),
            ("leaseCounter".to_string(), n(0)),
            ("checkpoint".to_string(), s(checkpoint)),
            ("checkpointSubSequenceNumber".to_string(), n(0)),
            ("ownerSwitchesSinceCheckpoint".to_string(), n(0)),
        ]);
        if !parents.is_empty() {
            item.insert(
                "parentShardId".to_string(),
                AttributeValue::Ss(parents.to_vec()),
            );
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await;
        Ok(conditional(put, |_| Ok(()))? == Written::Done(()))
    }

    /// Takes `observed` (free or expired) for `worker`, if nobody wrote it since it was
    /// read. Returns the lease as taken.
    pub async fn take(&self, observed: &Lease, worker: &str) -> Result<Written<Lease>, String> {
        self.change_owner(observed, worker, false).await
    }

    /// Steals `observed` from its live owner for `worker`, if nobody wrote it since it was
    /// read: `worker` owns it at once, but the previous owner is recorded as
    /// `checkpointOwner` and should hand over (stop, write its final checkpoint) before
    /// `worker` reads.
    pub async fn steal(&self, observed: &Lease, worker: &str) -> Result<Written<Lease>, String> {
        self.change_owner(observed, worker, true).await
    }

    async fn change_owner(
        &self,
        observed: &Lease,
        worker: &str,
        hand_over: bool,
    ) -> Result<Written<Lease>, String> {
        let switched = u64::from(observed.owner.as_deref() != Some(worker));
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&observed.key))
            .condition_expression("leaseCounter = :observed")
            .expression_attribute_values(":worker", s(worker))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":switched", n(switched))
            .expression_attribute_values(":observed", n(observed.counter))
            .return_values(ReturnValue::AllNew);
        let set = "SET leaseOwner = :worker, leaseCounter = leaseCounter + :one, \
                   ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + :switched";
        request = match (hand_over, observed.owner.as_deref()) {
            (true, Some(previous)) => request
                .update_expression(format!("{set}, checkpointOwner = :previous"))
                .expression_attribute_values(":previous", s(previous)),
            _ => request.update_expression(format!("{set} REMOVE checkpointOwner")),
        };
        conditional(request.send().await, |output| {
            lease_after(output, &observed.key)
        })
    }

    /// Renews `worker`'s lease whose counter it last wrote as `counter`, moving its checkpoint
    /// when one is given. Returns the new counter.
    pub async fn renew(
        &self,
        shard: &str,
        worker: &str,
        counter: u64,
        checkpoint: Option<&str>,
    ) -> Result<Written<u64>, String> {
        self.owner_write(shard, worker, counter, checkpoint, false)
            .await
    }

    /// Gives the lease up (after its final checkpoint, if given) so another worker can take
    /// it at once.
    pub async fn release(
        &self,
        shard: &str,
        worker: &str,
        counter: u64,
        checkpoint: Option<&str>,
    ) -> Result<Written<u64>, String> {
        self.owner_write(shard, worker, counter, checkpoint, true)
            .await
    }

    /// One lease, read consistently; `None` when the table has no such item.
    pub async fn get(&self, shard: &str) -> Result<Option<Lease>, String> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error_text(&e))?;
        Ok(output.item().and_then(lease_of))
    }

    /// The final checkpoint of a worker a lease was stolen from, ending the handoff (the new
    /// owner starts reading once `checkpointOwner` is gone). Does not touch the counter, which
    /// belongs to the new owner.
    pub async fn hand_over(
        &self,
        shard: &str,
        worker: &str,
        checkpoint: Option<&str>,
    ) -> Result<Written<()>, String> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .condition_expression("checkpointOwner = :worker")
            .expression_attribute_values(":worker", s(worker));
        request = match checkpoint {
            Some(checkpoint) => request
                .update_expression(
                    "SET checkpoint = :checkpoint, ownerSwitchesSinceCheckpoint = :zero \
                     REMOVE checkpointOwner",
                )
                .expression_attribute_values(":checkpoint", s(checkpoint))
                .expression_attribute_values(":zero", n(0)),
            None => request.update_expression("REMOVE checkpointOwner"),
        };
        conditional(request.send().await, |_| Ok(()))
    }

    /// The new owner gives up waiting for a handoff (the previous owner did not write its
    /// final checkpoint in time): it reads from the checkpoint as it stands.
    pub async fn end_handoff(
        &self,
        shard: &str,
        worker: &str,
        counter: u64,
    ) -> Result<Written<Lease>, String> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .update_expression("SET leaseCounter = leaseCounter + :one REMOVE checkpointOwner")
            .condition_expression("leaseOwner = :worker AND leaseCounter = :counter")
            .expression_attribute_values(":worker", s(worker))
            .expression_attribute_values(":counter", n(counter))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        conditional(update, |output| lease_after(output, shard))
    }

    async fn owner_write(
        &self,
        shard: &str,
        worker: &str,
        counter: u64,
        checkpoint: Option<&str>,
        release: bool,
    ) -> Result<Written<u64>, String> {
        let mut set = vec!["leaseCounter = leaseCounter + :one"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .condition_expression("leaseOwner = :worker AND leaseCounter = :counter")
            .expression_attribute_values(":worker", s(worker))
            .expression_attribute_values(":counter", n(counter))
            .expression_attribute_values(":one", n(1));
        if let Some(checkpoint) = checkpoint {
            set.push("checkpoint = :checkpoint");
            set.push("ownerSwitchesSinceCheckpoint = :zero");
            request = request
                .expression_attribute_values(":checkpoint", s(checkpoint))
                .expression_attribute_values(":zero", n(0));
        }
        let mut expression = format!("SET {}", set.join(", "));
        if release {
            expression.push_str(" REMOVE leaseOwner");
        }
        conditional(request.update_expression(expression).send().await, |_| {
            Ok(counter + 1)
        })
    }
}

/// A conditional write's outcome: `Lost` when its condition failed, else what `done` makes of
/// the answer.
fn conditional<O, T, E, R>(
    result: Result<O, SdkError<E, R>>,
    done: impl FnOnce(O) -> Result<T, String>,
) -> Result<Written<T>, String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(output) => done(output).map(Written::Done),
        Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(Written::Lost),
        Err(error) => Err(error_text(&error)),
    }
}

/// The lease as an `UpdateItem` with `ALL_NEW` left it.
fn lease_after(output: UpdateItemOutput, shard: &str) -> Result<Lease, String> {
    output
        .attributes()
        .and_then(lease_of)
        .ok_or_else(|| format!("writing lease {shard} returned no usable item"))
}

fn lease_of(item: &HashMap<String, AttributeValue>) -> Option<Lease> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some(Lease {
        key: text("leaseKey")?,
        owner: text("leaseOwner"),
        counter: item.get("leaseCounter")?.as_n().ok()?.parse().ok()?,
        checkpoint: text("checkpoint")?,
        parents: item
            .get("parentShardId")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        checkpoint_owner: text("checkpointOwner"),
    })
}
