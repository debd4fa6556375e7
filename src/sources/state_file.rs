//! A source's small JSON state file (checkpoints): read at start, replaced atomically. Written
//! to a temporary file, then renamed over the old one, so a crash leaves either the old or the
//! new state, never a torn one.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Loads `path`. A missing file is the default; an unreadable or corrupt one is logged and
/// started over (never a crash loop).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> T {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::error!(path = %path.display(), %error, "checkpoint file is corrupt; starting without checkpoints");
            T::default()
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read checkpoint file; starting without checkpoints");
            T::default()
        }
    }
}

/// Replaces `path` with `value`. `durable` adds the fsyncs that make it survive an OS crash;
/// without them it still survives the process being killed (the page cache outlives the
/// process), which keeps routine writes cheap.
pub fn store<T: Serialize>(path: &Path, value: &T, durable: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        if durable {
            file.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|_| durable) {
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
