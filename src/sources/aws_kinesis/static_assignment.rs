//! Static assignment (no `leases`): this instance reads the shards whose id hashes to its
//! `instance_index` of `instance_count`, and keeps its checkpoints in
//! `data_dir/<id>/checkpoints.json`: per shard, the last sequence number acknowledged end to
//! end and whether the shard is finished (closed and read to its end).

use super::reader::{list_shards, parents, Start};
use super::{Acked, Assignment, AssignmentContext, KinesisSourceConfig};
use crate::observe::ComponentMetrics;
use crate::state_file;
use aws_sdk_kinesis::types::Shard;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Per shard: the last acknowledged sequence number, and whether it is finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShardCheckpoint {
    #[serde(default)]
    pub sequence: Option<String>,
    #[serde(default)]
    pub finished: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Stored {
    version: u32,
    pub shards: BTreeMap<String, ShardCheckpoint>,
}

/// Runs until the readers' loop has no more acknowledgements to report; the last checkpoint
/// write is durable.
pub async fn run(mut cx: AssignmentContext, path: PathBuf) {
    let mut stored: Stored = state_file::load(&path, &cx.metrics);
    stored.version = 1;
    let mut dirty = false;
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut refresh = tokio::time::interval(Duration::from_secs_f64(cx.config.shard_refresh_secs));
    // Non-durable (no fsync) writes, cheap: they survive a killed process, and bound what a
    // restart re-reads to ~100 ms of records.
    let mut save = tokio::time::interval(Duration::from_millis(100));
    let stop = cx.stop.clone();
    loop {
        tokio::select! {
            _ = refresh.tick(), if !stop.is_cancelled() => {
                match list_shards(&cx.kinesis, &cx.config.stream_name).await {
                    Ok(shards) => {
                        for shard in assigned(&cx.config, &shards, &stored.shards, &started) {
                            let from = match stored.shards.get(shard.shard_id()).and_then(|c| c.sequence.clone()) {
                                Some(sequence) => Start::After(sequence),
                                None if has_parent(shard, &shards) || started_from_parent(shard, &stored.shards) => Start::TrimHorizon,
                                None => cx.start.clone(),
                            };
                            started.insert(shard.shard_id().to_string());
                            let _ = cx.assign.send(Assignment::Read { shard: shard.shard_id().to_string(), lease: 0, from });
                        }
                    }
                    Err(reason) => {
                        cx.metrics.error("list_shards_failed");
                        tracing::warn!(component_id = cx.metrics.id(), %reason, "cannot list shards; retrying at the next refresh");
                    }
                }
            }
            _ = save.tick() => {
                if dirty {
                    persist(&path, &stored, false, &cx.metrics);
                    dirty = false;
                }
            }
            acked = cx.acked.recv() => match acked {
                Some(acked) => {
                    record(&mut stored, acked);
                    dirty = true;
                }
                None => break,
            },
        }
    }
    persist(&path, &stored, true, &cx.metrics);
}

fn persist(path: &Path, stored: &Stored, durable: bool, metrics: &ComponentMetrics) {
    if let Err(error) = state_file::store(path, stored, durable) {
        metrics.error("checkpoint_failed");
        tracing::error!(component_id = metrics.id(), %error, "cannot write the checkpoint");
    }
}

fn record(stored: &mut Stored, acked: Acked) {
    if acked.stopped {
        return; // a mark, not a position (static assignment never stops a reader)
    }
    let entry = stored.shards.entry(acked.shard).or_default();
    if let Some(sequence) = acked.sequence {
        entry.sequence = Some(sequence);
    }
    entry.finished |= acked.closed;
}

/// The shards this instance should start now: its own (by hash), not yet started, not
/// finished, and whose parents are finished or no longer listed.
pub fn assigned<'a>(
    config: &KinesisSourceConfig,
    shards: &'a [Shard],
    checkpoints: &BTreeMap<String, ShardCheckpoint>,
    started: &BTreeSet<String>,
) -> Vec<&'a Shard> {
    let listed: BTreeSet<&str> = shards.iter().map(Shard::shard_id).collect();
    let finished = |id: &str| checkpoints.get(id).is_some_and(|c| c.finished);
    shards
        .iter()
        .filter(|s| {
            crc32fast::hash(s.shard_id().as_bytes()) % config.instance_count
                == config.instance_index
        })
        .filter(|s| !started.contains(s.shard_id()) && !finished(s.shard_id()))
        .filter(|s| {
            parents(s)
                .iter()
                .all(|parent| finished(parent) || !listed.contains(parent.as_str()))
        })
        .collect()
}

fn has_parent(shard: &Shard, shards: &[Shard]) -> bool {
    parents(shard)
        .iter()
        .any(|parent| shards.iter().any(|s| s.shard_id() == parent))
}

fn started_from_parent(shard: &Shard, checkpoints: &BTreeMap<String, ShardCheckpoint>) -> bool {
    parents(shard)
        .iter()
        .any(|parent| checkpoints.contains_key(parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};

    // moto's SplitShard keeps routing writes to the closed parent and never ends its
    // iterator, so the parent-before-child rule is tested here, on the shard list.
    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parents.first().map(|p| p.to_string()))
            .set_adjacent_parent_shard_id(parents.get(1).map(|p| p.to_string()))
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("1")
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn config(index: u32, count: u32) -> KinesisSourceConfig {
        serde_yaml::from_str(&format!(
            "stream_name: s\ninstance_index: {index}\ninstance_count: {count}"
        ))
        .unwrap()
    }

    fn ids(shards: Vec<&Shard>) -> Vec<&str> {
        shards.into_iter().map(Shard::shard_id).collect()
    }

    #[test]
    fn children_wait_for_their_parents_to_finish() {
        let shards = [
            shard("p", &[]),
            shard("a", &["p"]),
            shard("b", &["p"]),
            shard("m", &["a", "b"]),
        ];
        let mut checkpoints = BTreeMap::new();
        let none = BTreeSet::new();
        let finished = ShardCheckpoint {
            sequence: None,
            finished: true,
        };
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["p"]
        );
        checkpoints.insert("p".to_string(), finished.clone());
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["a", "b"]
        );
        checkpoints.insert("a".to_string(), finished.clone());
        assert!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)) == ["b"],
            "the merge child waits for both parents"
        );
        checkpoints.insert("b".to_string(), finished);
        assert_eq!(
            ids(assigned(&config(0, 1), &shards, &checkpoints, &none)),
            ["m"]
        );
        // A parent gone from the stream's retention does not hold its child back.
        let orphan = [shard("c", &["expired"])];
        assert_eq!(
            ids(assigned(&config(0, 1), &orphan, &BTreeMap::new(), &none)),
            ["c"]
        );
    }

    #[test]
    fn instances_split_the_shards_without_overlap() {
        let shards: Vec<Shard> = (0..40)
            .map(|i| shard(&format!("shardId-{i:012}"), &[]))
            .collect();
        let none = BTreeSet::new();
        let a = ids(assigned(&config(0, 2), &shards, &BTreeMap::new(), &none));
        let b = ids(assigned(&config(1, 2), &shards, &BTreeMap::new(), &none));
        assert!(!a.is_empty() && !b.is_empty());
        assert_eq!(a.len() + b.len(), 40);
        assert!(a.iter().all(|id| !b.contains(id)));
    }
}
