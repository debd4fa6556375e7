//! Whether a directory can be written, checked without touching the file system: `sluice
//! validate` must leave no directory or file behind, so nothing is created or probed here.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a run would find at a directory it writes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Directory {
    /// It exists and this process may write in it.
    Writable,
    /// It does not exist; its nearest existing ancestor (`under`) is a writable directory, so
    /// the run creates it.
    WillBeCreated { under: PathBuf },
}

impl Directory {
    /// A note for `sluice validate`'s output, if there is something to say.
    pub fn note(&self, dir: &Path) -> Option<String> {
        match self {
            Directory::Writable => None,
            Directory::WillBeCreated { under } => Some(format!(
                "{} will be created at run time (under {})",
                dir.display(),
                under.display()
            )),
        }
    }
}

/// Checks that `dir` is a writable directory, or that the run can create it: its nearest
/// existing ancestor is a directory this process may write in. Uses `access(2)`, so nothing
/// is created or written.
pub fn check_dir(dir: &Path) -> Result<Directory, String> {
    let dir = absolute(dir);
    let mut existing = dir.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    if !existing.is_dir() {
        return Err(format!(
            "cannot create {}: {} is not a directory",
            dir.display(),
            existing.display()
        ));
    }
    if !may_write(existing) {
        return Err(if existing == dir {
            format!("cannot write in {}: permission denied", dir.display())
        } else {
            format!(
                "cannot create {}: {} is not writable",
                dir.display(),
                existing.display()
            )
        });
    }
    Ok(if existing == dir {
        Directory::Writable
    } else {
        Directory::WillBeCreated {
            under: existing.to_path_buf(),
        }
    })
}

/// `dir` relative to the working directory, as the run would resolve it.
fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether this process may create entries in `dir` (write and search permission; a
/// read-only file system answers no).
fn may_write(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_directory_is_writable_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_dir(dir.path()), Ok(Directory::Writable));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_will_be_created_under_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = dir.path().join("a/b/c");
        let found = check_dir(&wanted).unwrap();
        assert_eq!(
            found,
            Directory::WillBeCreated {
                under: dir.path().to_path_buf()
            }
        );
        assert!(found.note(&wanted).unwrap().contains("will be created"));
        assert!(!dir.path().join("a").exists(), "nothing is created");
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let error = check_dir(&dir.path().join("file/sub")).unwrap_err();
        assert!(error.contains("is not a directory"), "{error}");
    }
}
