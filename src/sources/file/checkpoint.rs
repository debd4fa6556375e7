//! Read positions of the file source, persisted so a restart neither re-reads nor skips.
//!
//! Keyed by file fingerprint (not path), so a renamed file keeps its position. Written to a
//! temporary file, fsynced, then renamed over the old one: a crash leaves either the old or the
//! new checkpoint, never a torn one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
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
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("checkpoints.json");
        let files = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => stored
                    .files
                    .into_iter()
                    .filter_map(|(k, v)| u64::from_str_radix(&k, 16).ok().map(|k| (k, v)))
                    .collect(),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "checkpoint file is corrupt; starting without checkpoints");
                    BTreeMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read checkpoint file; starting without checkpoints");
                BTreeMap::new()
            }
        };
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
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?)?;
            if durable {
                file.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|_| durable) {
            // Make the rename itself durable.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
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
        let mut cp = Checkpoints::load(dir.path());
        cp.set(0xabc, 42, "/var/log/a.log");
        cp.persist(true).unwrap();
        let again = Checkpoints::load(dir.path());
        assert_eq!(again.get(0xabc).map(|p| p.offset), Some(42));

        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").unwrap();
        let corrupt = Checkpoints::load(dir.path());
        assert!(corrupt.get(0xabc).is_none());
    }
}
