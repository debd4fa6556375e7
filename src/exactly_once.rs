//! Exactly-once delivery from Kafka into sinks that commit atomically (a database
//! transaction; later an Iceberg snapshot): the sink records the source positions its data
//! covers *in the same commit*, and the source starts from those positions.
//!
//! ```text
//! kafka source ──batch + SourcePosition──▶ remap/filter ──▶ transactional sink
//!      ▲                                                     │ commit {rows, next offsets}
//!      └── on assignment: claim the partitions, start at the committed next offsets ◀──┘
//! ```
//!
//! One mechanism, every transactional sink:
//! - **Positions travel with the batch.** The source gives each batch (one partition per
//!   batch) a [`SourcePosition`] on its acknowledgement handle; copies and splits of the batch
//!   keep it, so the sink reads it from the batch's [`crate::event::Finalizers`].
//! - **Claims fence stale writers.** When a partition is assigned, the source *claims* it in
//!   the sink's [`PositionStore`] with a token unique to this assignment, before it fetches a
//!   message, and starts at the next offset the store returns. A sink commits a batch only
//!   while the stored claim is still the batch's own: a member that lost the partition in a
//!   rebalance (and may still hold its batches) can no longer commit them, and the new owner
//!   started exactly where the last successful commit ended.
//! - **Commits are idempotent.** A batch whose next offset the store already has (the
//!   commit went through but its answer was lost, and the sink retried) is skipped.
//!
//! A sink implements [`PositionStore`] and, in its commit, reads the stored positions under a
//! lock, judges each batch with a [`Ledger`], and writes the advanced positions back. `sluice validate` allows `exactly_once` only on a path that keeps a batch
//! whole: one kafka source, then only `remap`/`filter` transforms, each read by nothing else,
//! into the sink ([`check_paths`]).

use crate::config::{Config, Diagnostic, Graph, OutputId};
use crate::event::Finalizers;
use futures::future::BoxFuture;
use indexmap::IndexMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A topic and partition.
pub type Partition = (String, i32);

/// Where a batch was read: one partition, a contiguous run of its offsets, and the claim it
/// was read under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Offset of the batch's first message.
    pub first_offset: i64,
    /// Offset after the batch's last message: where reading resumes.
    pub next_offset: i64,
    /// The token of the assignment the batch was read under (see [`PositionStore::claim`]).
    pub claim: Arc<str>,
}

/// A sink's record of committed source positions, with the claims that fence stale writers.
pub trait PositionStore: Send + Sync {
    /// Takes `partitions` over for the assignment `claim`: records the claim (from now on
    /// only batches read under it may commit) and returns, per partition, the next offset
    /// committed so far (absent: nothing committed yet). Runs on a runtime of its own (see
    /// [`claim_blocking`]), so it opens its own connection.
    fn claim<'a>(
        &'a self,
        partitions: &'a [Partition],
        claim: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<Partition, i64>, String>>;
}

/// What a commit does with one batch, given what the store holds for its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it and advance the stored next offset.
    Commit,
    /// Another assignment claimed the partition since it was read: drop it; the partition's
    /// new owner reads it again from the stored position.
    Fenced,
    /// The store is already at or past it (an earlier attempt of this commit went through).
    AlreadyCommitted,
}

/// The stored positions of the partitions in one commit, read under a lock held until the
/// commit, and advanced batch by batch as the commit takes them.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: BTreeMap<(Arc<str>, i32), Stored>,
}

#[derive(Debug)]
struct Stored {
    claim: Option<String>,
    next_offset: Option<i64>,
    advanced: bool,
}

impl Ledger {
    /// The partitions of `positions`, each once, to read (and lock) in the store.
    pub fn partitions<'a>(
        positions: impl Iterator<Item = &'a SourcePosition>,
    ) -> Vec<(Arc<str>, i32)> {
        let mut partitions: Vec<(Arc<str>, i32)> =
            positions.map(|p| (p.topic.clone(), p.partition)).collect();
        partitions.sort();
        partitions.dedup();
        partitions
    }

    /// Records what the store holds for a partition (no row: both `None`).
    pub fn stored(
        &mut self,
        partition: (Arc<str>, i32),
        claim: Option<String>,
        next_offset: Option<i64>,
    ) {
        self.entries.insert(
            partition,
            Stored {
                claim,
                next_offset,
                advanced: false,
            },
        );
    }

    /// Decides for one batch, in commit order, and advances the partition's position when it
    /// is taken.
    pub fn judge(&mut self, position: &SourcePosition) -> Decision {
        let Some(stored) = self
            .entries
            .get_mut(&(position.topic.clone(), position.partition))
        else {
            return Decision::Fenced;
        };
        let decision = decide(position, stored.claim.as_deref(), stored.next_offset);
        if decision == Decision::Commit {
            stored.next_offset = Some(position.next_offset);
            stored.advanced = true;
        }
        decision
    }

    /// The partitions whose next offset this commit advances, with the new value.
    pub fn advanced(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.entries
            .iter()
            .filter(|(_, s)| s.advanced)
            .filter_map(|((topic, partition), s)| Some((&**topic, *partition, s.next_offset?)))
    }
}

/// The rule: a batch commits only under the claim it was read under, and only once.
fn decide(
    position: &SourcePosition,
    stored_claim: Option<&str>,
    stored_next: Option<i64>,
) -> Decision {
    if stored_claim != Some(&*position.claim) {
        return Decision::Fenced;
    }
    match stored_next {
        Some(next) if next >= position.next_offset => Decision::AlreadyCommitted,
        _ => Decision::Commit,
    }
}

/// The position of a batch, if its source gave it one.
pub fn position_of(finalizers: &Finalizers) -> Option<&SourcePosition> {
    finalizers.positions().next()
}

/// Runs [`PositionStore::claim`] to completion from synchronous code (librdkafka's rebalance
/// callback), on a thread of its own with a runtime of its own, whatever runtime the caller is
/// on. Retries with backoff (the store may be down) until it succeeds or `stop` is cancelled;
/// `None` then.
pub fn claim_blocking(
    store: &dyn PositionStore,
    partitions: &[Partition],
    claim: &str,
    stop: &CancellationToken,
    component_id: &str,
) -> Option<HashMap<Partition, i64>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot start a runtime for the claim: {e}"))?;
                    runtime.block_on(async {
                        tokio::time::timeout(
                            Duration::from_secs(30),
                            store.claim(partitions, claim),
                        )
                        .await
                        .unwrap_or_else(|_| Err("timed out after 30 s".to_string()))
                    })
                })
                .join()
                .unwrap_or_else(|_| Err("the claim panicked".to_string()))
        });
        match result {
            Ok(offsets) => return Some(offsets),
            Err(error) => {
                metrics::counter!("exactly_once_claim_errors_total", "component_id" => component_id.to_string()).increment(1);
                tracing::warn!(component_id, %error, retry_in_ms = backoff.as_millis() as u64, "cannot claim the assigned partitions in the sink's position store; nothing is read from them until it answers");
            }
        }
        // Wait, waking early on shutdown.
        let deadline = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < deadline {
            if stop.is_cancelled() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Transforms that keep a batch whole (one batch in, at most one out, no state).
const KEEPS_BATCHES: &[&str] = &["remap", "filter"];

/// For every sink with `exactly_once`, the kafka source that feeds it; diagnostics for every
/// path where exactly-once cannot hold, with the reason.
pub fn check_paths(config: &Config, graph: &Graph) -> (IndexMap<String, String>, Vec<Diagnostic>) {
    let mut pairs = IndexMap::new();
    let mut diagnostics = Vec::new();
    for (sink_id, entry) in &config.sinks {
        if !entry.config.exactly_once() {
            continue;
        }
        let mut fail = |message: String| {
            diagnostics.push(entry.diagnostic("sinks", sink_id, &["exactly_once"], message));
        };
        if !config.global.acknowledgements {
            fail("needs `acknowledgements: true` (the source learns what was committed through them)".into());
            continue;
        }
        if entry.config.buffer().disk().is_some() {
            fail("cannot sit behind a disk buffer: the buffer acknowledges events before the sink commits them, and would replay them past the committed positions; use the memory buffer (the source re-reads from the table after a crash)".into());
            continue;
        }
        match trace_to_source(config, graph, sink_id) {
            Ok(source) => {
                pairs.insert(source, sink_id.clone());
            }
            Err(reason) => fail(reason),
        }
    }
    (pairs, diagnostics)
}

/// Follows the sink's input up to its source, checking every step keeps batches whole.
fn trace_to_source(config: &Config, graph: &Graph, sink_id: &str) -> Result<String, String> {
    let mut current = sink_id.to_string();
    let mut path = vec![sink_id.to_string()];
    loop {
        let inputs = graph.inputs.get(&current).map(Vec::as_slice).unwrap_or(&[]);
        let [input] = inputs else {
            return Err(format!(
                "`{current}` reads {} inputs; exactly-once needs a single path from one kafka source",
                inputs.len()
            ));
        };
        if input.port.is_some() {
            return Err(format!("`{current}` reads the named output `{input}`; exactly-once needs a single path through default outputs"));
        }
        let upstream = &input.component;
        let readers = readers_of(graph, upstream);
        if readers != [current.as_str()] {
            return Err(format!(
                "`{upstream}` is also read by {}; exactly-once needs a path that nothing else reads (the sink's committed positions would skip their undelivered events)",
                readers.iter().filter(|r| **r != current).map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        path.push(upstream.clone());
        if let Some(source) = config.sources.get(upstream) {
            if source.config.kind() != "kafka" {
                return Err(format!(
                    "the path starts at `{upstream}`, a {} source; exactly-once needs a kafka source",
                    source.config.kind()
                ));
            }
            return Ok(upstream.clone());
        }
        let Some(transform) = config.transforms.get(upstream) else {
            return Err(format!("`{upstream}` is not a source or transform"));
        };
        let kind = transform.config.kind();
        if !KEEPS_BATCHES.contains(&kind) {
            return Err(format!(
                "the path goes through `{upstream}`, a {kind} transform; exactly-once allows only {} between the kafka source and the sink",
                KEEPS_BATCHES.join(" and ")
            ));
        }
        current = upstream.clone();
    }
}

/// Every component reading any output of `component`.
fn readers_of<'a>(graph: &'a Graph, component: &str) -> Vec<&'a str> {
    let mut readers: Vec<&str> = graph
        .inputs
        .iter()
        .filter(|(_, inputs)| inputs.iter().any(|o: &OutputId| o.component == component))
        .map(|(id, _)| id.as_str())
        .collect();
    readers.dedup();
    readers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(partition: i32, first: i64, next: i64, claim: &str) -> SourcePosition {
        SourcePosition {
            topic: "t".into(),
            partition,
            first_offset: first,
            next_offset: next,
            claim: claim.into(),
        }
    }

    fn ledger(claim: Option<&str>, next: Option<i64>) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.stored(("t".into(), 0), claim.map(str::to_string), next);
        ledger
    }

    #[test]
    fn a_batch_commits_only_under_its_own_claim() {
        assert_eq!(
            ledger(Some("a/1"), Some(10)).judge(&position(0, 10, 20, "a/1")),
            Decision::Commit
        );
        assert_eq!(
            ledger(Some("a/1"), None).judge(&position(0, 10, 20, "a/1")),
            Decision::Commit
        );
        assert_eq!(
            ledger(Some("b/7"), Some(10)).judge(&position(0, 10, 20, "a/1")),
            Decision::Fenced
        );
        assert_eq!(
            ledger(None, None).judge(&position(0, 10, 20, "a/1")),
            Decision::Fenced
        );
        // A partition the commit did not read from the store is never written.
        assert_eq!(
            ledger(Some("a/1"), None).judge(&position(1, 0, 1, "a/1")),
            Decision::Fenced
        );
    }

    #[test]
    fn a_retried_commit_that_already_went_through_is_skipped() {
        assert_eq!(
            ledger(Some("a/1"), Some(20)).judge(&position(0, 10, 20, "a/1")),
            Decision::AlreadyCommitted
        );
        assert_eq!(
            ledger(Some("a/1"), Some(25)).judge(&position(0, 10, 20, "a/1")),
            Decision::AlreadyCommitted
        );
    }

    #[test]
    fn batches_advance_the_position_in_order_and_only_taken_ones_count() {
        let mut ledger = ledger(Some("a/1"), Some(10));
        ledger.stored(("t".into(), 1), Some("b/2".into()), Some(3));
        assert_eq!(ledger.judge(&position(0, 10, 15, "a/1")), Decision::Commit);
        assert_eq!(ledger.judge(&position(0, 15, 20, "a/1")), Decision::Commit);
        // The same batch twice in one commit (a retry) is taken once.
        assert_eq!(
            ledger.judge(&position(0, 15, 20, "a/1")),
            Decision::AlreadyCommitted
        );
        assert_eq!(ledger.judge(&position(1, 3, 9, "a/1")), Decision::Fenced);
        let advanced: Vec<_> = ledger.advanced().collect();
        assert_eq!(advanced, vec![("t", 0, 20)]);
    }
}
