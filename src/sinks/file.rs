//! The `file` sink: appends encoded events to files named by a template, with optional
//! compression and rotation.
//!
//! Each write appends one complete gzip member or zstd frame, so a compressed file is valid at
//! every batch boundary: a crash never leaves an unreadable file, and every decompressor reads
//! the concatenation. Events are acknowledged once written to the file (page cache; no fsync).

use super::batch::{drive, BatchConfig, Flush};
use super::{reject_some, BufferConfig, SinkContext};
use crate::codec::{Compression, Encoder, EncodingConfig};
use crate::event::{Event, Finalizers};
use crate::observe::ComponentMetrics;
use crate::template::Template;
use crate::topology::{BuildError, ComponentError, RunFuture};
use indexmap::IndexMap;
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When the sink starts a new file at the same path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateConfig {
    /// Rotate once the file holds this many bytes (as written, after compression).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Rotate once the file has been open this many seconds.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
}

/// Write events to files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Components whose events this sink reads.
    pub inputs: Vec<String>,
    /// File path template: strftime on the event `timestamp` and `{{ field }}` values, e.g.
    /// `/var/log/out/{{ service }}-%Y-%m-%d.log`. Directories are created as needed.
    pub path: String,
    /// `ndjson` (default), `json` (one object per line) or `text`.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// `none` (default), `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Rotation: the current file is renamed to `<path>.<UTC time>` (before a `.gz`/`.zst`
    /// extension) and a new one started.
    #[serde(default)]
    pub rotate: RotateConfig,
    /// Close files not written for this many seconds (default 30).
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Batching of writes.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The buffer in front of this sink.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_idle_timeout_secs() -> u64 {
    30
}

impl FileSinkConfig {
    pub fn build(&self, cx: SinkContext) -> Result<RunFuture, BuildError> {
        let template = Template::parse(&self.path).map_err(|m| BuildError::new("path", m))?;
        self.batch
            .check()
            .map_err(|m| BuildError::new("batch", m))?;
        let static_path = template.is_static().then(|| PathBuf::from(&self.path));
        let sink = FileSink {
            template,
            static_path,
            buffers: IndexMap::new(),
            encoder: Encoder::new(&self.encoding),
            compression: self.compression,
            rotate: self.rotate,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            open: IndexMap::new(),
            metrics: cx.metrics.clone(),
            dead_letter: cx.dead_letter,
        };
        Ok(Box::pin(run(sink, self.batch, cx.input, cx.metrics)))
    }

    /// The directory of the path's fixed prefix must be writable or creatable (checked, not
    /// created).
    pub fn healthcheck(&self) -> Result<Vec<String>, String> {
        let prefix: String = self
            .path
            .split(['{', '%'])
            .next()
            .unwrap_or_default()
            .to_string();
        // `out/logs/%Y.log`: the fixed part is the directory itself; `out/app-%Y.log`: its parent.
        let dir = if prefix.ends_with('/') {
            match prefix.trim_end_matches('/') {
                "" => Path::new("/"),
                trimmed => Path::new(trimmed),
            }
        } else {
            Path::new(&prefix)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        };
        Ok(crate::writable::check_dir(dir)?
            .note(dir)
            .into_iter()
            .collect())
    }
}

async fn run(
    mut sink: FileSink,
    batch: BatchConfig,
    input: crate::topology::BufferReceiver,
    metrics: ComponentMetrics,
) -> Result<(), ComponentError> {
    drive(input, batch, &metrics, &mut sink).await;
    sink.close_all();
    Ok(())
}

struct OpenFile {
    file: File,
    written: u64,
    opened: Instant,
    last_write: Instant,
}

struct FileSink {
    template: Template,
    encoder: Encoder,
    compression: Compression,
    rotate: RotateConfig,
    idle_timeout: Duration,
    /// The path when the template has no fields and no strftime: rendered once.
    static_path: Option<PathBuf>,
    /// Encode buffers per path, reused between batches for a static path.
    buffers: IndexMap<PathBuf, (Vec<u8>, Vec<usize>)>,
    dead_letter: crate::topology::Fanout,
    open: IndexMap<PathBuf, OpenFile>,
    metrics: ComponentMetrics,
}

impl Flush for FileSink {
    async fn flush(&mut self, events: Vec<Event>, _byte_size: usize, finalizers: Finalizers) {
        let mut by_path = std::mem::take(&mut self.buffers);
        // Events that could not be written, with the reason: dead-lettered or rejected below.
        let mut failed: Vec<(usize, String)> = Vec::new();
        // A static path is looked up once per batch, not hashed (and cloned) per event.
        let static_slot = self
            .static_path
            .as_ref()
            .map(|path| slot(&mut by_path, path));
        // One buffer for every event's rendered path.
        let mut rendered = String::new();
        for (index, event) in events.iter().enumerate() {
            let at = match static_slot {
                Some(at) => at,
                None => {
                    rendered.clear();
                    match self.template.render_into(event, &mut rendered) {
                        Ok(()) => slot(&mut by_path, Path::new(&rendered)),
                        Err(error) => {
                            self.metrics.error("template_failed");
                            tracing::warn!(component_id = self.metrics.id(), %error, "cannot render path");
                            failed.push((index, format!("path template: {error}")));
                            continue;
                        }
                    }
                }
            };
            let (_, (buf, members)) = by_path.get_index_mut(at).expect("a slot of this map");
            match self.encoder.encode_line(event, buf) {
                Ok(()) => members.push(index),
                Err(error) => {
                    self.metrics.error("encode_failed");
                    tracing::warn!(component_id = self.metrics.id(), %error, "cannot encode event");
                    failed.push((index, format!("encoding: {error}")));
                }
            }
        }
        let (mut sent, mut bytes_out) = (0, 0);
        for (path, (data, members)) in by_path.iter_mut() {
            if data.is_empty() {
                continue;
            }
            match self.write_retrying(path, data).await {
                Ok(n) => {
                    bytes_out += n;
                    sent += members.len();
                }
                Err(error) => {
                    self.metrics.error("write_failed");
                    tracing::error!(component_id = self.metrics.id(), path = %path.display(), %error, "cannot write file");
                    failed.extend(
                        members
                            .iter()
                            .map(|i| (*i, format!("write {}: {error}", path.display()))),
                    );
                }
            }
            data.clear();
            members.clear();
        }
        // Keep the buffers (and their capacity) of the static path; templated paths come and go.
        if self.static_path.is_some() {
            self.buffers = by_path;
        }
        self.metrics.sent(sent, bytes_out);
        if !failed.is_empty() {
            reject_some(
                &mut self.dead_letter,
                &self.metrics,
                &events,
                &failed,
                finalizers,
            )
            .await;
        }
        self.close_idle();
    }
}

/// Where `path`'s encode buffer is in `buffers`, made when missing.
fn slot(buffers: &mut IndexMap<PathBuf, (Vec<u8>, Vec<usize>)>, path: &Path) -> usize {
    match buffers.get_index_of(path) {
        Some(at) => at,
        None => {
            buffers
                .insert_full(path.to_path_buf(), Default::default())
                .0
        }
    }
}

/// Errors that pass by themselves (space or descriptors freed elsewhere): the write is
/// retried, holding the batch (backpressure), rather than rejected.
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::EINTR | libc::EAGAIN
        )
    )
}

impl FileSink {
    /// [`FileSink::write`], retried with backoff while the error is transient (a full disk):
    /// every failed attempt is undone first, so no line is ever torn or written twice. A
    /// forced shutdown aborts the wait; the batch is then not acknowledged and comes again.
    async fn write_retrying(&mut self, path: &Path, data: &[u8]) -> std::io::Result<usize> {
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0u64;
        loop {
            match self.write(path, data) {
                Err(error) if is_transient(&error) => {
                    attempts += 1;
                    self.metrics.error("write_failed");
                    if attempts.is_power_of_two() {
                        tracing::error!(component_id = self.metrics.id(), path = %path.display(), %error, attempts, "cannot write file; retrying (nothing of the failed write is kept)");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> std::io::Result<usize> {
        let payload = self.compression.compress(data)?;
        let rotate_now = match self.open.get(path) {
            Some(open) => {
                self.rotate.max_bytes.is_some_and(|max| open.written >= max)
                    || self
                        .rotate
                        .max_age_secs
                        .is_some_and(|max| open.opened.elapsed() >= Duration::from_secs(max))
            }
            None => false,
        };
        if rotate_now {
            self.open.shift_remove(path);
            let target = rotated_name(path);
            std::fs::rename(path, &target)?;
            tracing::info!(component_id = self.metrics.id(), from = %path.display(), to = %target.display(), "rotated file");
        }
        if !self.open.contains_key(path) {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(path)?;
            let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
            if written > 0
                && self.compression == Compression::None
                && !ends_with_newline(&file, written)
            {
                // A crash tore the last line: end it, so the torn line stays alone and the
                // lines appended now are intact. Its events were not acknowledged and come again.
                file.write_all(b"\n")?;
                written += 1;
            }
            let now = Instant::now();
            self.open.insert(
                path.to_path_buf(),
                OpenFile {
                    file,
                    written,
                    opened: now,
                    last_write: now,
                },
            );
        }
        let open = self.open.get_mut(path).expect("inserted above");
        if let Err(error) = open.file.write_all(&payload) {
            // Undo the partial write so the file ends on a whole line (or frame). If even that
            // fails, forget the handle: reopening ends a torn last line before appending.
            if open.file.set_len(open.written).is_err() {
                self.open.shift_remove(path);
            }
            return Err(error);
        }
        open.written += payload.len() as u64;
        open.last_write = Instant::now();
        Ok(payload.len())
    }

    fn close_idle(&mut self) {
        let idle = self.idle_timeout;
        self.open.retain(|_, f| f.last_write.elapsed() < idle);
    }

    fn close_all(&mut self) {
        for (_, open) in self.open.drain(..) {
            let _ = open.file.sync_all();
        }
    }
}

fn ends_with_newline(file: &File, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1).is_ok() && last[0] == b'\n'
}

/// `out.log` -> `out.log.20240305T100000.123456789Z`; `out.log.gz` -> `out.log.<time>.gz`.
/// Nanoseconds keep names unique and sortable in rotation order.
fn rotated_name(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ").to_string();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (base, ext) = match name.rfind('.') {
        Some(dot) if matches!(&name[dot..], ".gz" | ".zst") => {
            (name[..dot].to_string(), name[dot..].to_string())
        }
        _ => (name.clone(), String::new()),
    };
    let mut candidate = path.with_file_name(format!("{base}.{stamp}{ext}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{base}.{stamp}-{n}{ext}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        std::fs::write(&path, b"{\"id\":1}\n{\"id\":2,\"to").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert!(!ends_with_newline(
            &file,
            std::fs::metadata(&path).unwrap().len()
        ));
        std::fs::write(&path, b"{\"id\":1}\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert!(ends_with_newline(
            &file,
            std::fs::metadata(&path).unwrap().len()
        ));
    }

    #[test]
    fn rotated_names_keep_the_compression_extension() {
        let plain = rotated_name(Path::new("/x/out.log"));
        assert!(plain.to_string_lossy().starts_with("/x/out.log.2"));
        let gz = rotated_name(Path::new("/x/out.log.gz"));
        assert!(gz.to_string_lossy().ends_with("Z.gz"), "{}", gz.display());
    }
}
