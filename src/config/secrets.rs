//! Secrets in the config: `${file:/run/secrets/name}` reads a file (a mounted Kubernetes or
//! Docker secret; one trailing newline is dropped), and environment variables whose names
//! contain PASSWORD, PASSWD, SECRET, TOKEN, KEY or CREDENTIAL are treated as secrets too.
//! Their values are registered here and replaced by `***` in config errors, `validate` and
//! `graph` output and every log line.

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether an environment variable's value is a secret, by its name.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word))
}

/// Remembers a secret value (values shorter than 4 characters would redact ordinary text,
/// and are too short to be worth hiding).
pub fn register(value: &str) {
    if value.chars().count() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret containing another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for secret in secrets.iter() {
        out = out.replace(secret.as_str(), "***");
    }
    Cow::Owned(out)
}

/// Largest secret file read: a path to a device or a log by mistake (`/dev/zero`) must give an
/// error, not fill memory.
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// Reads a secret file: its contents without one trailing newline.
pub fn read_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read secret file `{path}`: {e}"))?;
    let mut value = String::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut value)
        .map_err(|e| format!("cannot read secret file `{path}`: {e}"))?;
    if value.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "secret file `{path}` is larger than {} KiB; is it the right file?",
            MAX_SECRET_BYTES >> 10
        ));
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// A writer for the log subscriber that redacts each line before it reaches stderr.
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_hidden_and_names_decide_what_is_secret() {
        register("hunter2-long");
        register("ab");
        assert_eq!(redact("password=hunter2-long; ab"), "password=***; ab");
        assert!(is_secret_name("INGEST_TOKEN") && is_secret_name("db_password"));
        assert!(!is_secret_name("HOST"));
    }

    #[test]
    fn a_device_or_huge_file_as_secret_is_an_error_not_a_hang() {
        let error = read_file("/dev/zero").unwrap_err();
        assert!(error.contains("larger than 1024 KiB"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_file(path.to_str().unwrap()).unwrap(), "s3cret");
    }
}
