//! A source's small JSON state file (checkpoints): read at start, replaced atomically. Written
//! to a temporary file, then renamed over the old one, so a crash or a full disk leaves either
//! the old or the new state, never a torn one.
//!
//! The file carries a CRC32C of its content (`"crc32c"`, over the compact JSON of everything
//! else), so damage that still parses (a flipped digit in an offset) is caught instead of
//! silently moving a position. A damaged file is kept aside as `<name>.corrupt`, counted and
//! logged, and the source starts without it: it reads again what it had read (duplicates),
//! never skips. A file without the field (written by an older version) is trusted as is.

use crate::observe::ComponentMetrics;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const CHECKSUM_KEY: &str = "crc32c";

/// Loads `path`. A missing file is the default; a damaged one is reported, counted
/// (`checkpoint_corrupted`) and started over; a read that fails for a passing reason (out of
/// descriptors) is retried a few times first, so a busy moment never costs the positions.
pub fn load<T: DeserializeOwned + Default>(path: &Path, metrics: &ComponentMetrics) -> T {
    let mut attempts = 0;
    let bytes = loop {
        match std::fs::read(path) {
            Ok(bytes) => break bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return T::default(),
            Err(error) if attempts < 20 && is_transient(&error) => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => {
                metrics.error("checkpoint_unreadable");
                tracing::error!(component_id = metrics.id(), path = %path.display(), %error, "cannot read checkpoint file; starting without checkpoints (what was read before is read again)");
                return T::default();
            }
        }
    };
    match decode(&bytes) {
        Ok(value) => value,
        Err(reason) => {
            metrics.error("checkpoint_corrupted");
            let aside = path.with_extension("json.corrupt");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(component_id = metrics.id(), path = %path.display(), kept_as = %aside.display(), "checkpoint file is damaged ({reason}); starting without checkpoints (what was read before is read again)");
            T::default()
        }
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EINTR | libc::EAGAIN | libc::ENOMEM)
    )
}

/// Parses a state file and checks its checksum.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| "not a JSON object".to_string())?;
    if let Some(stored) = object.remove(CHECKSUM_KEY) {
        let stored = stored
            .as_u64()
            .ok_or_else(|| "checksum is not a number".to_string())?;
        let actual = checksum(&value)?;
        if u64::from(actual) != stored {
            return Err(format!(
                "checksum mismatch: stored {stored}, content {actual}"
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| format!("unexpected content: {e}"))
}

/// Serializes a state file: the value's fields plus their checksum.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut value = serde_json::to_value(value).map_err(std::io::Error::other)?;
    let crc = checksum(&value).map_err(std::io::Error::other)?;
    match value.as_object_mut() {
        Some(object) => {
            object.insert(CHECKSUM_KEY.into(), crc.into());
        }
        None => return Err(std::io::Error::other("state must be a JSON object")),
    }
    serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)
}

fn checksum(value: &serde_json::Value) -> Result<u32, String> {
    serde_json::to_vec(value)
        .map(|compact| crc32c::crc32c(&compact))
        .map_err(|e| e.to_string())
}

/// Replaces `path` with `value`. `durable` adds the fsyncs that make it survive an OS crash;
/// without them it still survives the process being killed (the page cache outlives the
/// process), which keeps routine writes cheap. On failure (a full disk, no descriptors) the
/// old file stays as it was and the temporary file is removed.
pub fn store<T: Serialize>(path: &Path, value: &T, durable: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = encode(value)?;
    let tmp = path.with_extension("json.tmp");
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    if let Some(dir) = path.parent().filter(|_| durable) {
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        version: u32,
        files: BTreeMap<String, u64>,
    }

    fn state() -> State {
        State {
            version: 1,
            files: [("a".to_string(), 1234567), ("b".to_string(), 42)].into(),
        }
    }

    #[test]
    fn a_stored_state_reads_back_equal() {
        let bytes = encode(&state()).unwrap();
        assert_eq!(decode::<State>(&bytes).unwrap(), state());
    }

    #[test]
    fn a_flipped_digit_that_still_parses_is_caught() {
        let bytes = encode(&state()).unwrap();
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("1234567", "1234568");
        let error = decode::<State>(text.as_bytes()).unwrap_err();
        assert!(error.contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn a_file_without_checksum_is_trusted() {
        let bytes = serde_json::to_vec(&state()).unwrap();
        assert_eq!(decode::<State>(&bytes).unwrap(), state());
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_counted_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        store(&path, &state(), true).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.iter().position(|b| *b == b'4').unwrap();
        bytes[at] = b'5';
        std::fs::write(&path, bytes).unwrap();
        let metrics = ComponentMetrics::new("src", "file");
        let loaded: State = load(&path, &metrics);
        assert_eq!(loaded, State::default());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
        assert!(!path.exists());
    }
}
