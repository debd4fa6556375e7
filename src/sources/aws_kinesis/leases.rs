//! Shard leases in DynamoDB: several agents share a stream, each reading the shards it holds
//! a lease for, and take over from each other (the KCL's model).
//!
//! This task is the only writer of this agent's leases. Every third of the lease duration
//! it renews what it holds (a failed condition means the lease was taken: the shard's
//! reader stops at once), then scans the table and takes or steals what [`balance`] says.
//!
//! A steal hands over without loss or duplicates when both agents are alive (the KCL 3
//! handoff): the thief becomes the owner with the victim as `checkpointOwner` and waits; the
//! victim learns of it from its next renewal failing, stops the reader, and once every
//! position read under the lease is acknowledged writes its final checkpoint and clears
//! `checkpointOwner`; then the thief reads from there. A victim that does not hand over
//! within the lease duration is overruled: the thief reads from the checkpoint as it stands.
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
    /// Stolen at this time and not read yet: waiting for the previous owner's final
    /// checkpoint.
    awaiting_handoff: Option<Instant>,
}

/// A lease stolen from this agent: its reader is stopped; once every position read under
/// it is acknowledged, the final checkpoint is written for the new owner.
struct HandingOver {
    lease: u64,
    pending: Option<String>,
}

struct Worker {
    cx: AssignmentContext,
    table: LeaseTable,
    settings: LeasesConfig,
    me: String,
    held: BTreeMap<String, Held>,
    handing_over: BTreeMap<String, HandingOver>,
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
        handing_over: BTreeMap::new(),
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
                // First the shard list, so the first scan finds the leases it creates.
                biased;
                _ = sync.tick(), if !stop.is_cancelled() => {
                    if self.sync_shards().await {
                        // New shards (or the first start): lease them now, not a tick later.
                        self.scan_and_take().await;
                    }
                }
                _ = tick.tick() => {
                    self.renew(true).await;
                    self.complete_handoffs().await;
                    // While draining, leases are kept (renewed) but no new ones taken.
                    if !stop.is_cancelled() {
                        self.scan_and_take().await;
                    }
                }
                _ = checkpoint.tick() => {
                    self.renew(false).await;
                    self.complete_handoffs().await;
                }
                acked = self.cx.acked.recv() => match acked {
                    Some(acked) => self.acknowledged(acked).await,
                    None => return,
                },
            }
        }
    }

    /// Creates the leases of shards the table does not have yet; whether it created any.
    async fn sync_shards(&mut self) -> bool {
        let shards = match list_shards(&self.cx.kinesis, &self.cx.config.stream_name).await {
            Ok(shards) => shards,
            Err(reason) => {
                self.cx.metrics.error("list_shards_failed");
                tracing::warn!(component_id = self.id(), %reason, "cannot list shards; retrying at the next refresh");
                return false;
            }
        };
        let mut created_any = false;
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
                    created_any |= created;
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
        created_any
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
                Ok(Written::Lost) => self.taken_from_me(&shard).await,
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

    /// A write found the lease changed: stolen (hand over) or taken as expired (lost).
    async fn taken_from_me(&mut self, shard: &str) {
        let stolen = match self.table.get(shard).await {
            Ok(lease) => lease.is_some_and(|l| l.checkpoint_owner.as_deref() == Some(&self.me)),
            Err(reason) => {
                self.cx.metrics.error("lease_table_failed");
                tracing::warn!(component_id = self.id(), %shard, %reason, "cannot read the lease after losing it; not handing over");
                false
            }
        };
        let Some(held) = self.held.get(shard) else {
            return;
        };
        if stolen && held.awaiting_handoff.is_some() {
            self.lose_before_reading(shard).await;
            return;
        }
        if !stolen {
            self.lose(shard, "another worker took the lease");
            return;
        }
        let held = self.held.remove(shard).expect("held");
        self.losses.increment(1);
        self.owned.set(self.held.len() as f64);
        tracing::info!(component_id = self.id(), %shard, "the lease was stolen; stopped reading, handing over after the final checkpoint");
        self.handing_over.insert(
            shard.to_string(),
            HandingOver {
                lease: held.lease,
                pending: held.pending,
            },
        );
        self.send(Assignment::Stop {
            shard: shard.to_string(),
            lease: held.lease,
        });
    }

    /// Writes the final checkpoint of a lease stolen from this agent.
    async fn hand_over(&mut self, shard: &str, handing: HandingOver) {
        match self
            .table
            .hand_over(shard, &self.me, handing.pending.as_deref())
            .await
        {
            Ok(Written::Done(())) => {
                tracing::info!(component_id = self.id(), %shard, checkpoint = handing.pending.as_deref().unwrap_or("-"), "handed the lease over");
            }
            Ok(Written::Lost) => {
                tracing::warn!(component_id = self.id(), %shard, "the new owner stopped waiting for the handoff; it reads again what this agent delivered since the last checkpoint");
            }
            Err(reason) => {
                self.cx.metrics.error("lease_table_failed");
                tracing::warn!(component_id = self.id(), %shard, %reason, "cannot write the handoff checkpoint; the new owner will read from the previous one");
            }
        }
    }

    /// Starts reading stolen leases whose previous owner handed over (or was too slow to).
    async fn complete_handoffs(&mut self) {
        let duration = self.settings.duration();
        let waiting: Vec<(String, Instant, u64)> = self
            .held
            .iter()
            .filter_map(|(shard, h)| {
                h.awaiting_handoff
                    .map(|since| (shard.clone(), since, h.counter))
            })
            .collect();
        for (shard, since, counter) in waiting {
            let lease = match self.table.get(&shard).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.lose(&shard, "the lease was deleted");
                    continue;
                }
                Err(reason) => {
                    self.cx.metrics.error("lease_table_failed");
                    tracing::warn!(component_id = self.id(), %shard, %reason, "cannot read the stolen lease; retrying");
                    continue;
                }
            };
            if lease.owner.as_deref() != Some(&self.me) {
                if lease.checkpoint_owner.as_deref() == Some(&self.me) {
                    self.lose_before_reading(&shard).await;
                } else {
                    self.lose(&shard, "another worker took the lease");
                }
                continue;
            }
            let lease = if lease.checkpoint_owner.is_none() {
                lease
            } else if since.elapsed() >= duration {
                match self.table.end_handoff(&shard, &self.me, counter).await {
                    Ok(Written::Done(lease)) => {
                        tracing::warn!(component_id = self.id(), %shard, previous_owner = lease.checkpoint_owner.as_deref().unwrap_or("-"), "the previous owner did not hand over within the lease duration; reading from the last checkpoint");
                        lease
                    }
                    Ok(Written::Lost) => {
                        self.lose(&shard, "another worker took the lease");
                        continue;
                    }
                    Err(reason) => {
                        self.cx.metrics.error("lease_table_failed");
                        tracing::warn!(component_id = self.id(), %shard, %reason, "cannot end the handoff; retrying");
                        continue;
                    }
                }
            } else {
                continue;
            };
            let held = self.held.get_mut(&shard).expect("held");
            held.awaiting_handoff = None;
            held.counter = held.counter.max(lease.counter);
            let lease_number = held.lease;
            if lease.finished() {
                // The previous owner read it to its end: nothing left to read.
                let counter = held.counter;
                self.held.remove(&shard);
                self.owned.set(self.held.len() as f64);
                if let Err(reason) = self.table.release(&shard, &self.me, counter, None).await {
                    tracing::warn!(component_id = self.id(), %shard, %reason, "cannot release a finished lease; it will expire");
                }
                continue;
            }
            let from = self.start_of(&lease.checkpoint);
            tracing::info!(component_id = self.id(), %shard, start = ?from, "the previous owner handed over; reading the shard");
            self.send(Assignment::Read {
                shard,
                lease: lease_number,
                from,
            });
        }
    }

    /// A lease stolen from this agent while it still waited for its own handoff: it read
    /// nothing, so the checkpoint stands and it hands over at once. Before, the new owner
    /// waited the whole lease duration for a handoff that never came (the kinesis_leases
    /// suite's fourth-agent test caught it: a steal of a steal).
    async fn lose_before_reading(&mut self, shard: &str) {
        let Some(lease) = self.held.get(shard).map(|held| held.lease) else {
            return;
        };
        self.lose(shard, "another worker took the lease before its handoff");
        let handing = HandingOver {
            lease,
            pending: None,
        };
        self.hand_over(shard, handing).await;
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
        let written = if steal {
            self.table.steal(&observed, &self.me).await
        } else {
            self.table.take(&observed, &self.me).await
        };
        let taken = match written {
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
        let awaiting_handoff = taken.checkpoint_owner.is_some().then(Instant::now);
        self.held.insert(
            taken.key.clone(),
            Held {
                counter: taken.counter,
                lease,
                pending: None,
                renewed: Instant::now(),
                awaiting_handoff,
            },
        );
        self.owned.set(self.held.len() as f64);
        let previous_owner = observed.owner.as_deref().unwrap_or("-");
        if awaiting_handoff.is_some() {
            tracing::info!(component_id = self.id(), shard = %taken.key, previous_owner, "stole the shard's lease; waiting for the previous owner to hand over");
            return;
        }
        let from = self.start_of(&taken.checkpoint);
        tracing::info!(component_id = self.id(), shard = %taken.key, previous_owner, start = ?from, "took the shard's lease; reading it");
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
        if let Some(handing) = self.handing_over.get_mut(&acked.shard) {
            if handing.lease == acked.lease {
                if let Some(sequence) = acked.sequence {
                    handing.pending = Some(sequence);
                }
                if acked.closed {
                    handing.pending = Some(lease_table::SHARD_END.to_string());
                }
                if acked.stopped {
                    let handing = self
                        .handing_over
                        .remove(&acked.shard)
                        .expect("handing over");
                    self.hand_over(&acked.shard, handing).await;
                }
                return;
            }
        }
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
        // Every acknowledgement is in: what is still being handed over is final now.
        for (shard, handing) in std::mem::take(&mut self.handing_over) {
            self.hand_over(&shard, handing).await;
        }
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
                    let handing = HandingOver {
                        lease: held.lease,
                        pending: held.pending,
                    };
                    match self.table.get(&shard).await {
                        Ok(Some(lease)) if lease.checkpoint_owner.as_deref() == Some(&self.me) => {
                            self.hand_over(&shard, handing).await;
                        }
                        _ => {
                            tracing::warn!(component_id = self.id(), %shard, "the lease was taken before it could be released; its final checkpoint is not recorded")
                        }
                    }
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
