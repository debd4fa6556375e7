//! Read positions of the file source, persisted so a restart neither re-reads nor skips.
//!
//! Keyed by file fingerprint (not path), so a renamed file keeps its position. Stored with
//! [`state_file`]: replaced atomically, never torn.

use crate::observe::ComponentMetrics;
use crate::state_file;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    /// Byte offset of the first line not yet delivered.
    pub offset: u64,
    /// Where the file was last seen (informational).
    pub path: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Fingerprint (hex) -> position.
    files: BTreeMap<String, Position>,
}

/// Parses a checkpoint file's content.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<u64, Position>, String> {
    state_file::decode::<Stored>(bytes).map(by_fingerprint)
}

fn by_fingerprint(stored: Stored) -> BTreeMap<u64, Position> {
    stored
        .files
        .into_iter()
        .filter_map(|(k, v)| u64::from_str_radix(&k, 16).ok().map(|k| (k, v)))
        .collect()
}

/// The positions of one source and the file they live in.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    files: BTreeMap<u64, Position>,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `dir/checkpoints.json`. A missing file is an empty set; an unreadable one is
    /// reported and started over (logged, never a crash loop).
    pub fn load(dir: &Path, metrics: &ComponentMetrics) -> Self {
        let path = dir.join("checkpoints.json");
        let stored: Stored = state_file::load(&path, metrics);
        let files = by_fingerprint(stored);
        Checkpoints {
            path,
            files,
            dirty: false,
        }
    }

    pub fn get(&self, fingerprint: u64) -> Option<&Position> {
        self.files.get(&fingerprint)
    }

    pub fn set(&mut self, fingerprint: u64, offset: u64, path: &str) {
        self.files.insert(
            fingerprint,
            Position {
                offset,
                path: path.to_string(),
            },
        );
        self.dirty = true;
    }

    /// Writes the checkpoint if anything changed since the last write. `durable` adds the
    /// fsyncs that make it survive an OS crash; without them it still survives the process
    /// being killed (the page cache outlives the process), which keeps routine writes cheap.
    pub fn persist(&mut self, durable: bool) -> std::io::Result<()> {
        if !self.dirty && !durable {
            return Ok(());
        }
        let stored = Stored {
            version: 1,
            files: self
                .files
                .iter()
                .map(|(k, v)| (format!("{k:016x}"), v.clone()))
                .collect(),
        };
        state_file::store(&self.path, &stored, durable)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_round_trip_and_ignores_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = ComponentMetrics::new("src", "file");
        let mut cp = Checkpoints::load(dir.path(), &metrics);
        cp.set(0xabc, 42, "/var/log/a.log");
        cp.persist(true).unwrap();
        let again = Checkpoints::load(dir.path(), &metrics);
        assert_eq!(again.get(0xabc).map(|p| p.offset), Some(42));

        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").unwrap();
        let corrupt = Checkpoints::load(dir.path(), &metrics);
        assert!(corrupt.get(0xabc).is_none());
    }
}
