//! Shard leases in DynamoDB: several agents share a stream, each reading the shards it holds
//! a lease for, and take over from each other (the KCL's model).
//!
//! This task is the only writer of this agent's leases. Every third of the lease duration
//! it renews what it holds (a failed condition means the lease was taken: the shard's
//! reader stops at once), then scans the table and takes or steals what [`balance`] says.
//! Acknowledged positions become checkpoints in the lease (every `checkpoint_interval_secs`,
//! each write also a renewal); a shard read to its end is checkpointed `SHARD_END` and
//! released, which lets its children be leased. At shutdown, after the final checkpoints,
//! the leases are released so others take them at once; a killed agent's leases expire.
//!
//! [`balance`]: super::balance

use super::balance::{Observations, View};
use super::lease_table::{self, Lease, LeaseTable, Written};
use super::reader::{list_shards, parents, Start};
use super::{Acked, Assignment, AssignmentContext, StartPosition};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Share the stream's shards with other agents through a DynamoDB lease table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeasesConfig {
    /// The DynamoDB table of leases, one item per shard; created with on-demand billing on
    /// first start if missing. Agents sharing a table share the stream: use one table per
    /// stream and application.
    pub table: String,
    /// This agent's name in the table (default: host name and process id). Must be unique
    /// among the agents sharing the table.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// A lease whose counter has not moved for this long can be taken by another agent, in
    /// seconds (default 10). Held leases are renewed every third of it.
    #[serde(default = "default_lease_duration")]
    pub lease_duration_secs: f64,
    /// Most leases this agent holds (default 0: no limit).
    #[serde(default)]
    pub max_leases_per_worker: usize,
    /// How often acknowledged positions are written into the leases, in seconds (default 1):
    /// after a kill -9, the next owner reads again what was delivered since.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: f64,
    /// DynamoDB endpoint URL (default: the source's `endpoint`, for emulators serving every
    /// service on one address; otherwise AWS's).
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn default_lease_duration() -> f64 {
    10.0
}
fn default_checkpoint_interval() -> f64 {
    1.0
}

impl LeasesConfig {
    /// Field and message of the first unusable setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.table.is_empty() {
            return Err(("leases.table", "must not be empty".into()));
        }
        if !self.lease_duration_secs.is_finite() || self.lease_duration_secs < 0.3 {
            return Err(("leases.lease_duration_secs", "must be at least 0.3".into()));
        }
        if !self.checkpoint_interval_secs.is_finite() || self.checkpoint_interval_secs <= 0.0 {
            return Err((
                "leases.checkpoint_interval_secs",
                "must be a number > 0".into(),
            ));
        }
        if self.worker_id.as_deref() == Some("") {
            return Err(("leases.worker_id", "must not be empty".into()));
        }
        Ok(())
    }

    pub fn worker_id(&self) -> String {
        self.worker_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()))
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.lease_duration_secs)
    }
}

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(0);
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "sluice".to_string(),
    }
}

/// A lease this agent holds.
struct Held {
    /// The counter as this agent last wrote it.
    counter: u64,
    /// This holding's number, tagging its readers' pages and positions.
    lease: u64,
    /// An acknowledged position not yet written.
    pending: Option<String>,
    /// The last successful write.
    renewed: Instant,
}

struct Worker {
    cx: AssignmentContext,
    table: LeaseTable,
    settings: LeasesConfig,
    me: String,
    held: BTreeMap<String, Held>,
    observations: Observations,
    /// Shard ids the stream listed at the last sync.
    listed: BTreeSet<String>,
    /// Lease keys seen in the table (created or scanned).
    known: BTreeSet<String>,
    next_lease: u64,
    owned: metrics::Gauge,
    takes: metrics::Counter,
    steals: metrics::Counter,
    losses: metrics::Counter,
}

/// Runs the lease coordination until the readers' loop has no more acknowledgements to
/// report, then releases every lease.
pub(super) async fn run(cx: AssignmentContext, table: LeaseTable, settings: LeasesConfig) {
    let me = settings.worker_id();
    let metrics = cx.metrics.clone();
    let mut worker = Worker {
        owned: metrics.gauge("kinesis_leases_owned"),
        takes: metrics.counter("kinesis_lease_takes_total"),
        steals: metrics.counter("kinesis_lease_steals_total"),
        losses: metrics.counter("kinesis_lease_losses_total"),
        cx,
        table,
        settings,
        me,
        held: BTreeMap::new(),
        observations: Observations::default(),
        listed: BTreeSet::new(),
        known: BTreeSet::new(),
        next_lease: 1,
    };
    tracing::info!(component_id = metrics.id(), worker_id = %worker.me, table = worker.table.name(), "sharing the stream through leases");
    if worker.ensure_table().await {
        worker.coordinate().await;
    }
    worker.release_all().await;
}

impl Worker {
    fn id(&self) -> &str {
        self.cx.metrics.id()
    }

    /// Creates the table if missing, retrying until it works or the source stops.
    async fn ensure_table(&mut self) -> bool {
        let mut failures = 0;
        loop {
            match self.table.ensure().await {
                Ok(()) => return true,
                Err(reason) => {
                    self.cx.metrics.error("lease_table_failed");
                    failures += 1;
                    let wait = self.cx.config.request.backoff(failures);
                    tracing::warn!(component_id = self.id(), table = self.table.name(), %reason, wait_ms = wait.as_millis() as u64, "cannot create or describe the lease table; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.cx.stop.cancelled() => return false,
                    }
                }
            }
        }
    }

    async fn coordinate(&mut self) {
        let duration = self.settings.duration();
        let mut sync =
            tokio::time::interval(Duration::from_secs_f64(self.cx.config.shard_refresh_secs));
        let mut tick = tokio::time::interval(duration / 3);
        let mut checkpoint = tokio::time::interval(Duration::from_secs_f64(
            self.settings.checkpoint_interval_secs,
        ));
        for timer in [&mut sync, &mut tick, &mut checkpoint] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let stop = self.cx.stop.clone();
        loop {
            tokio::select! {
                _ = sync.tick(), if !stop.is_cancelled() => self.sync_shards().await,
                _ = tick.tick() => {
                    self.renew(true).await;
                    // While draining, leases are kept (renewed) but no new ones taken.
                    if !stop.is_cancelled() {
                        self.scan_and_take().await;
                    }
                }
                _ = checkpoint.tick() => self.renew(false).await,
                acked = self.cx.acked.recv() => match acked {
                    Some(acked) => self.acknowledged(acked).await,
                    None => return,
                },
            }
        }
    }

    /// Creates the leases of shards the table does not have yet.
    async fn sync_shards(&mut self) {
        let shards = match list_shards(&self.cx.kinesis, &self.cx.config.stream_name).await {
            Ok(shards) => shards,
            Err(reason) => {
                self.cx.metrics.error("list_shards_failed");
                tracing::warn!(component_id = self.id(), %reason, "cannot list shards; retrying at the next refresh");
                return;
            }
        };
        self.listed = shards.iter().map(|s| s.shard_id().to_string()).collect();
        for shard in &shards {
            if self.known.contains(shard.shard_id()) {
                continue;
            }
            let parents = parents(shard);
            // A child starts at its beginning (its parents were read to their ends); a shard
            // without known parents where the config says.
            let has_parent = parents
                .iter()
                .any(|p| self.listed.contains(p) || self.known.contains(p));
            let checkpoint = if has_parent {
                lease_table::TRIM_HORIZON
            } else {
                match self.cx.config.start_position {
                    StartPosition::Latest => lease_table::LATEST,
                    StartPosition::TrimHorizon => lease_table::TRIM_HORIZON,
                    StartPosition::AtTimestamp => lease_table::AT_TIMESTAMP,
                }
            };
            match self
                .table
                .create(shard.shard_id(), checkpoint, &parents)
                .await
            {
                Ok(created) => {
                    if created {
                        tracing::info!(
                            component_id = self.id(),
                            shard = shard.shard_id(),
                            checkpoint,
                            "created the shard's lease"
                        );
                    }
                    self.known.insert(shard.shard_id().to_string());
                }
                Err(reason) => {
                    self.cx.metrics.error("lease_table_failed");
                    tracing::warn!(component_id = self.id(), shard = shard.shard_id(), %reason, "cannot create the shard's lease; retrying at the next refresh");
                }
            }
        }
    }

    /// Writes held leases: those with a pending checkpoint, and (with `renewal`) every other
    /// one too. A lease found taken, or not renewed within the lease duration, is dropped
    /// and its reader stopped.
    async fn renew(&mut self, renewal: bool) {
        let duration = self.settings.duration();
        let shards: Vec<String> = self.held.keys().cloned().collect();
        for shard in shards {
            let held = &self.held[&shard];
            if !renewal && held.pending.is_none() {
                continue;
            }
            let checkpoint = held.pending.clone();
            let written = self
                .table
                .renew(&shard, &self.me, held.counter, checkpoint.as_deref())
                .await;
            match written {
                Ok(Written::Done(counter)) => {
                    let held = self.held.get_mut(&shard).expect("held");
                    held.counter = counter;
                    held.renewed = Instant::now();
                    if held.pending == checkpoint {
                        held.pending = None;
                    }
                }
                Ok(Written::Lost) => self.lose(&shard, "another worker took the lease"),
                Err(reason) => {
                    self.cx.metrics.error("lease_renewal_failed");
                    if self.held[&shard].renewed.elapsed() >= duration {
                        self.lose(&shard, "the lease could not be renewed within its duration");
                    } else {
                        tracing::warn!(component_id = self.id(), %shard, %reason, "cannot renew the lease; retrying");
                    }
                }
            }
        }
    }

    fn lose(&mut self, shard: &str, why: &str) {
        let Some(held) = self.held.remove(shard) else {
            return;
        };
        self.losses.increment(1);
        self.owned.set(self.held.len() as f64);
        tracing::warn!(component_id = self.id(), %shard, why, "lost a lease; stopped reading the shard");
        self.send(Assignment::Stop {
            shard: shard.to_string(),
            lease: held.lease,
        });
    }

    fn send(&self, assignment: Assignment) {
        // The readers' loop outlives this task; a closed channel means it is gone anyway.
        let _ = self.cx.assign.send(assignment);
    }

    async fn scan_and_take(&mut self) {
        let leases = match self.table.scan().await {
            Ok(leases) => leases,
            Err(reason) => {
                self.cx.metrics.error("lease_table_failed");
                tracing::warn!(component_id = self.id(), %reason, "cannot scan the lease table; retrying");
                return;
            }
        };
        let now = Instant::now();
        self.observations.update(&leases, now);
        self.known.extend(leases.iter().map(|l| l.key.clone()));
        let held: BTreeSet<String> = self.held.keys().cloned().collect();
        let duration = self.settings.duration();
        let observations = &self.observations;
        let expired = |lease: &Lease| observations.expired(lease, now, duration);
        let plan = View {
            leases: &leases,
            listed: &self.listed,
            me: &self.me,
            held: &held,
            expired: &expired,
            max_leases: self.settings.max_leases_per_worker,
        }
        .plan();
        for lease in plan.take {
            self.take(lease, false).await;
        }
        if let Some(lease) = plan.steal {
            self.take(lease, true).await;
        }
    }

    async fn take(&mut self, observed: Lease, steal: bool) {
        let taken = match self.table.take(&observed, &self.me).await {
            Ok(Written::Done(taken)) => taken,
            Ok(Written::Lost) => {
                tracing::debug!(component_id = self.id(), shard = %observed.key, "another worker wrote the lease first");
                return;
            }
            Err(reason) => {
                self.cx.metrics.error("lease_table_failed");
                tracing::warn!(component_id = self.id(), shard = %observed.key, %reason, "cannot take the lease; retrying at the next scan");
                return;
            }
        };
        if steal {
            self.steals.increment(1);
        } else {
            self.takes.increment(1);
        }
        let lease = self.next_lease;
        self.next_lease += 1;
        let from = self.start_of(&taken.checkpoint);
        tracing::info!(
            component_id = self.id(),
            shard = %taken.key,
            previous_owner = observed.owner.as_deref().unwrap_or("-"),
            stolen = steal,
            start = ?from,
            "took the shard's lease; reading it"
        );
        self.held.insert(
            taken.key.clone(),
            Held {
                counter: taken.counter,
                lease,
                pending: None,
                renewed: Instant::now(),
            },
        );
        self.owned.set(self.held.len() as f64);
        self.send(Assignment::Read {
            shard: taken.key,
            lease,
            from,
        });
    }

    fn start_of(&self, checkpoint: &str) -> Start {
        match checkpoint {
            lease_table::TRIM_HORIZON => Start::TrimHorizon,
            lease_table::LATEST => Start::Latest,
            lease_table::AT_TIMESTAMP => match self.cx.start {
                Start::At(millis) => Start::At(millis),
                _ => Start::TrimHorizon,
            },
            sequence => Start::After(sequence.to_string()),
        }
    }

    /// Notes an acknowledged position of a lease still held; a shard read to its end is
    /// checkpointed `SHARD_END` and released at once, so its children can be leased.
    async fn acknowledged(&mut self, acked: Acked) {
        let Some(held) = self.held.get_mut(&acked.shard) else {
            return;
        };
        if held.lease != acked.lease {
            return; // from an earlier holding, lost since
        }
        if let Some(sequence) = acked.sequence {
            held.pending = Some(sequence);
        }
        if !acked.closed {
            return;
        }
        let counter = held.counter;
        let lease = held.lease;
        self.held.remove(&acked.shard);
        self.owned.set(self.held.len() as f64);
        match self
            .table
            .release(
                &acked.shard,
                &self.me,
                counter,
                Some(lease_table::SHARD_END),
            )
            .await
        {
            Ok(Written::Done(_)) => {
                tracing::info!(component_id = self.id(), shard = %acked.shard, "checkpointed SHARD_END and released the lease");
            }
            Ok(Written::Lost) => {
                self.losses.increment(1);
                tracing::warn!(component_id = self.id(), shard = %acked.shard, "the lease was taken before SHARD_END could be recorded; its new owner reads the tail again");
            }
            Err(reason) => {
                // Not recorded: the lease expires, and whoever takes it reads the tail again.
                self.cx.metrics.error("lease_table_failed");
                tracing::warn!(component_id = self.id(), shard = %acked.shard, %reason, "cannot record SHARD_END; the lease will expire and the tail be read again");
            }
        }
        self.send(Assignment::Stop {
            shard: acked.shard,
            lease,
        });
    }

    /// Final checkpoints, then every lease given up.
    async fn release_all(&mut self) {
        for (shard, held) in std::mem::take(&mut self.held) {
            match self
                .table
                .release(&shard, &self.me, held.counter, held.pending.as_deref())
                .await
            {
                Ok(Written::Done(_)) => {
                    tracing::info!(component_id = self.id(), %shard, checkpoint = held.pending.as_deref().unwrap_or("-"), "released the lease");
                }
                Ok(Written::Lost) => {
                    tracing::warn!(component_id = self.id(), %shard, "the lease was taken before it could be released; its final checkpoint is not recorded");
                }
                Err(reason) => {
                    self.cx.metrics.error("lease_table_failed");
                    tracing::warn!(component_id = self.id(), %shard, %reason, "cannot release the lease; it will expire");
                }
            }
        }
        self.owned.set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused_with_their_field() {
        let parse = |yaml: &str| serde_yaml::from_str::<LeasesConfig>(yaml).unwrap().check();
        assert!(parse("table: t").is_ok());
        assert_eq!(parse("table: ''").unwrap_err().0, "leases.table");
        assert_eq!(
            parse("table: t\nlease_duration_secs: 0.1").unwrap_err().0,
            "leases.lease_duration_secs"
        );
        assert_eq!(
            parse("table: t\ncheckpoint_interval_secs: 0")
                .unwrap_err()
                .0,
            "leases.checkpoint_interval_secs"
        );
        assert_eq!(
            parse("table: t\nworker_id: ''").unwrap_err().0,
            "leases.worker_id"
        );
        assert!(serde_yaml::from_str::<LeasesConfig>("table: t\nlease_secs: 3").is_err());
    }

    #[test]
    fn the_default_worker_id_is_host_and_process() {
        let settings: LeasesConfig = serde_yaml::from_str("table: t").unwrap();
        let id = settings.worker_id();
        assert!(
            id.ends_with(&format!("-{}", std::process::id())) && id.len() > 2,
            "{id}"
        );
    }
}
