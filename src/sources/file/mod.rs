//! The `file` source: tails files matched by globs, follows rotation, and checkpoints read
//! positions under `data_dir`.
//!
//! Files are identified by a fingerprint of their first line (up to `fingerprint_bytes`), not
//! by path: a file renamed by rotation keeps its position, and a copy (copytruncate) is not
//! read twice. A file is not read until it has a full first line or `fingerprint_bytes` bytes.
//! Truncation (size below the read position) restarts the file at offset 0. Reading uses
//! plain blocking reads of the page cache in small chunks, which is cheaper than a thread hop.
//!
//! Descriptors are bounded: at most `max_open_files` files are open at once (by default a
//! quarter of the process's `RLIMIT_NOFILE`, at most 1024), so thousands of files under one
//! glob never exhaust the limit the sinks, buffers and checkpoints also need. Every known file
//! keeps its position in memory whether open or not; a file at its end is closed when others
//! are waiting for a slot, and reopened by path (checked by device and inode) when the scan
//! sees it grow. Files are read in turn, each batch starting after the file the last one ended
//! on. A file that cannot be opened (out of descriptors) is simply tried again at the next
//! scan, at its position: never read from the start because of it.

mod checkpoint;

use super::acks::OrderedAcks;
use super::SourceContext;
use crate::codec::decoding::{decode_frame, OnDecodeError};
use crate::codec::framing::{Frame, LineFramer, Oversize};
use crate::codec::{Decoder, DecodingConfig};
use crate::event::{BatchStatus, Event, EventBatch};
use crate::observe::ComponentMetrics;
use crate::topology::{BuildError, RunFuture};
use bytes::{Bytes, BytesMut};
use checkpoint::Checkpoints;
use serde::Deserialize;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where to start in a file that has no checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From the first byte (default).
    #[default]
    Beginning,
    /// From the end, for files present at startup; files created later are read from the
    /// beginning so their first lines are not lost.
    End,
}

/// Tail files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns of files to read, e.g. `/var/log/app/*.log`.
    pub include: Vec<String>,
    /// Glob patterns of files to skip even if included, e.g. `*.gz`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `beginning` (default) or `end`: where to start a file with no checkpoint.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Longest line kept, in bytes (default 102400). Longer lines follow `oversize_lines`.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// `truncate` (default: keep the first `max_line_bytes`) or `drop`. Both are counted.
    #[serde(default)]
    pub oversize_lines: Oversize,
    /// Bytes of the first line hashed to identify a file (default 256).
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: usize,
    /// How often to look for new, rotated or removed files, in milliseconds (default 1000).
    #[serde(default = "default_glob_interval_ms")]
    pub glob_interval_ms: u64,
    /// How long to wait when every file is at its end, in milliseconds (default 250).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// While a backlog of at least 1 MiB is being read, log a progress line (files, bytes
    /// read this run, bytes left) at most this often, in seconds (default 10; 0 turns it off).
    #[serde(default = "default_progress_interval_secs")]
    pub progress_interval_secs: f64,
    /// How often read positions are fsynced, in milliseconds (default 1000). Changed positions
    /// are also written every 20 ms without fsync (enough to survive the process being killed;
    /// an OS crash may replay up to this interval: duplicates, never loss), and on shutdown.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// Field that receives the file's path; empty to leave it out (default `file`).
    #[serde(default = "default_file_key")]
    pub file_key: String,
    /// How each line becomes an event (default: bytes into `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Most events in one batch sent downstream (default 1000).
    #[serde(default = "default_batch_events")]
    pub max_batch_events: usize,
    /// Most files held open at once (default: a quarter of the process's open-file limit,
    /// between 8 and 1024). Files at their end are closed while others wait and reopened when
    /// they grow, so any number of files can be tailed.
    #[serde(default)]
    pub max_open_files: Option<usize>,
}

/// Parses a checkpoint file's content (for fuzzing): the number of files it holds.
pub fn parse_checkpoints(bytes: &[u8]) -> Result<usize, String> {
    checkpoint::parse(bytes).map(|files| files.len())
}

/// The default `max_open_files`: well under the soft `RLIMIT_NOFILE`, which every other part
/// of the process (sockets, buffers, checkpoints) shares.
fn default_max_open_files() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    usize::try_from(soft / 4).unwrap_or(1024).clamp(8, 1024)
}

fn default_max_line_bytes() -> usize {
    102_400
}
fn default_fingerprint_bytes() -> usize {
    256
}
fn default_glob_interval_ms() -> u64 {
    1000
}
fn default_poll_interval_ms() -> u64 {
    250
}
fn default_progress_interval_secs() -> f64 {
    10.0
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_file_key() -> String {
    "file".into()
}
fn default_batch_events() -> usize {
    1000
}

const READ_CHUNK: usize = 256 * 1024;
/// Changed positions are written (without fsync) this often: after `kill -9` a restart
/// re-reads at most this much more than was delivered.
const QUICK_CHECKPOINT: Duration = Duration::from_millis(20);
const MAX_BATCH_BYTES: usize = 1 << 20;

impl FileSourceConfig {
    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if self.include.is_empty() {
            return Err(BuildError::new(
                "include",
                "needs at least one glob pattern",
            ));
        }
        for pattern in self.include.iter().chain(&self.exclude) {
            glob::Pattern::new(pattern).map_err(|e| {
                BuildError::new("include", format!("invalid glob `{pattern}`: {e}"))
            })?;
        }
        if self.decoding.on_error == Some(OnDecodeError::Reject) {
            return Err(BuildError::new(
                "decoding",
                "`on_error: reject` is only for http_server; use drop or pass_raw",
            ));
        }
        if self.max_open_files == Some(0) {
            return Err(BuildError::new("max_open_files", "must be at least 1"));
        }
        let reader = Reader::new(self.clone(), &cx);
        Ok(Box::pin(reader.run(cx)))
    }
}

/// One file being read, open or not.
struct Watched {
    path: PathBuf,
    path_value: Bytes,
    /// `None` while closed to free its descriptor; reopened by path when there is more to read.
    file: Option<File>,
    /// Size at the last scan: a closed file with more than `read_pos` needs reading.
    len_seen: u64,
    fingerprint: u64,
    inode: (u64, u64),
    /// File offset just past the bytes moved into `buf`.
    read_pos: u64,
    buf: BytesMut,
    framer: LineFramer,
    /// The path no longer leads to this file: read to the end, then forget it.
    gone: bool,
}

impl Watched {
    /// Offset of the first byte not yet turned into an event.
    fn position(&self) -> u64 {
        self.read_pos - self.buf.len() as u64
    }

    /// Closed, and grown (or truncated: shorter than the read position) since it was read,
    /// as of the last scan.
    fn waiting(&self) -> bool {
        self.file.is_none() && self.len_seen != self.read_pos
    }

    /// Releases the descriptor; the position (and any partial line) stays.
    fn close(&mut self) {
        self.file = None;
        if self.buf.is_empty() {
            self.buf = BytesMut::new(); // give back the read buffer too
        }
    }

    /// Reopens the file at its read position, if the path still leads to the same file.
    fn reopen(&mut self) -> std::io::Result<bool> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.inode {
            return Ok(false); // the path now holds another file; the scan will find both
        }
        file.seek(SeekFrom::Start(self.read_pos))?;
        self.file = Some(file);
        Ok(true)
    }
}

struct Reader {
    config: FileSourceConfig,
    lines: LineDecoder,
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    watched: Vec<Watched>,
    /// How many of `watched` hold a descriptor.
    open_files: usize,
    max_open_files: usize,
    /// Where the next batch starts reading: files are read in turn.
    cursor: usize,
    /// `file_open_failed` warnings are logged once per scan, not once per file.
    open_failures: u64,
    checkpoints: Checkpoints,
    /// Files with a rejected batch: their checkpoint is frozen for this run.
    rejected: std::collections::HashSet<u64>,
    first_scan: bool,
}

impl Reader {
    /// One progress line while a backlog (≥ 1 MiB) is being read.
    fn log_progress(&self, cx: &SourceContext, read: u64) {
        let left: u64 = self
            .watched
            .iter()
            .map(|w| w.len_seen.saturating_sub(w.position()))
            .sum();
        if left >= 1 << 20 {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            tracing::info!(
                component_id = %cx.id,
                files = self.watched.len(),
                read_mib = format!("{:.1}", mib(read)),
                left_mib = format!("{:.1}", mib(left)),
                "catching up: {:.1} MiB read, {:.1} MiB left in {} files",
                mib(read),
                mib(left),
                self.watched.len()
            );
        }
    }

    fn new(config: FileSourceConfig, cx: &SourceContext) -> Self {
        Reader {
            lines: LineDecoder {
                decoder: Decoder::new(&config.decoding, cx.values),
                on_error: config.decoding.on_error.unwrap_or(OnDecodeError::Drop),
                file_key: config.file_key.clone(),
            },
            include: config.include.clone(),
            exclude: config
                .exclude
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect(),
            watched: Vec::new(),
            open_files: 0,
            max_open_files: config.max_open_files.unwrap_or_else(default_max_open_files),
            cursor: 0,
            open_failures: 0,
            checkpoints: Checkpoints::load(&cx.data_dir, &cx.metrics),
            rejected: Default::default(),
            first_scan: true,
            config,
        }
    }

    async fn run(mut self, mut cx: SourceContext) -> Result<(), crate::topology::ComponentError> {
        std::fs::create_dir_all(&cx.data_dir).map_err(|e| {
            format!(
                "cannot create data directory {}: {e}",
                cx.data_dir.display()
            )
        })?;
        let mut acks: OrderedAcks<Vec<(u64, u64, PathBuf)>> = OrderedAcks::new(cx.acknowledgements);
        let glob_every = Duration::from_millis(self.config.glob_interval_ms);
        let checkpoint_every = Duration::from_millis(self.config.checkpoint_interval_ms);
        let mut last_glob: Option<Instant> = None;
        let mut last_write = Instant::now();
        let mut last_durable = Instant::now();
        let progress_every = Duration::from_secs_f64(self.config.progress_interval_secs.max(0.0));
        let mut last_progress = Instant::now();
        let mut read_this_run = 0u64;

        while !cx.shutdown.stop.is_cancelled() {
            if last_glob.is_none_or(|t| t.elapsed() >= glob_every) {
                self.discover(&cx);
                last_glob = Some(Instant::now());
            }
            let (batch, positions) = self.read_batch(&cx);
            let idle = batch.is_empty() && positions.is_empty();
            read_this_run += batch.byte_size as u64;
            if !idle && !progress_every.is_zero() && last_progress.elapsed() >= progress_every {
                last_progress = Instant::now();
                self.log_progress(&cx, read_this_run);
            }
            if !positions.is_empty() {
                let mut batch = batch;
                acks.attach(&mut batch, positions);
                if cx.out.send(batch).await.is_err() {
                    break;
                }
            }
            for (positions, status) in acks.ready() {
                self.apply(positions, status, &cx.metrics);
            }
            if last_write.elapsed() >= QUICK_CHECKPOINT {
                let durable = last_durable.elapsed() >= checkpoint_every;
                self.persist(&cx, durable);
                last_write = Instant::now();
                if durable {
                    last_durable = last_write;
                }
            }
            if idle {
                let nap = Duration::from_millis(self.config.poll_interval_ms);
                tokio::select! {
                    _ = cx.shutdown.stop.cancelled() => break,
                    _ = tokio::time::sleep(nap) => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }

        // Drain: let downstream finish, then record what it acknowledged.
        drop(cx.out);
        tracing::debug!(component_id = %cx.id, pending = acks.pending(), "file source stopping; waiting for acknowledgements");
        loop {
            tokio::select! {
                next = acks.next() => match next {
                    Some((positions, status)) => self.apply(positions, status, &cx.metrics),
                    None => break,
                },
                _ = cx.shutdown.force.cancelled() => {
                    tracing::warn!(component_id = %cx.id, pending = acks.pending(), "shutdown forced; unacknowledged lines will be read again on restart");
                    break;
                }
            }
        }
        // The last write matters most: a passing error (a full disk, no descriptors) gets a
        // few more tries before the positions since the last good write are given up (then
        // read again on restart: duplicates, never loss).
        let mut attempt = 0;
        while let Err(error) = self.checkpoints.persist(true) {
            attempt += 1;
            if attempt == 20 {
                return Err(format!(
                    "cannot write checkpoints in {}: {error}",
                    cx.data_dir.display()
                )
                .into());
            }
            cx.metrics.error("checkpoint_failed");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        positions: Vec<(u64, u64, PathBuf)>,
        status: BatchStatus,
        metrics: &ComponentMetrics,
    ) {
        for (fingerprint, offset, path) in positions {
            if status == BatchStatus::Rejected && self.rejected.insert(fingerprint) {
                // A sink gave up on these lines: never checkpoint past them, so a restart reads
                // them again. Later lines of this file are still delivered in this run.
                metrics.error("delivery_rejected");
                tracing::error!(component_id = metrics.id(), path = %path.display(), offset, "a sink rejected lines of this file; its checkpoint stays before them until restart");
            }
            if !self.rejected.contains(&fingerprint) {
                self.checkpoints
                    .set(fingerprint, offset, &path.to_string_lossy());
            }
        }
    }

    fn persist(&mut self, cx: &SourceContext, durable: bool) {
        if let Err(error) = self.checkpoints.persist(durable) {
            cx.metrics.error("checkpoint_failed");
            tracing::error!(component_id = %cx.id, %error, "cannot write checkpoints; will retry");
        }
    }

    /// Finds new files, renames, growth and removals.
    fn discover(&mut self, cx: &SourceContext) {
        let mut seen: Vec<(PathBuf, (u64, u64), u64)> = Vec::new();
        // A directory that cannot be listed (out of descriptors, say) makes the scan partial:
        // then nothing is taken for removed, or a closed file would be given up on.
        let mut complete = true;
        for pattern in &self.include {
            let paths = match glob::glob(pattern) {
                Ok(paths) => paths,
                Err(_) => continue,
            };
            for path in paths {
                let Ok(path) = path else {
                    complete = false;
                    continue;
                };
                if self.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => {
                        seen.push((path, (meta.dev(), meta.ino()), meta.len()))
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => complete = false,
                }
            }
        }
        let by_inode: std::collections::HashMap<(u64, u64), (&PathBuf, u64)> = seen
            .iter()
            .map(|(path, inode, len)| (*inode, (path, *len)))
            .collect();
        for watched in &mut self.watched {
            match by_inode.get(&watched.inode) {
                Some((path, len)) => {
                    if **path != watched.path {
                        tracing::info!(component_id = %cx.id, from = %watched.path.display(), to = %path.display(), "file renamed; following it");
                        watched.path = (*path).clone();
                        watched.path_value = Bytes::from(path.to_string_lossy().into_owned());
                    }
                    watched.len_seen = *len;
                    watched.gone = false;
                }
                None if complete => watched.gone = true,
                None => {}
            }
        }
        let read_from_end = self.first_scan && self.config.read_from == ReadFrom::End;
        self.first_scan = false;
        let known: std::collections::HashSet<(u64, u64)> =
            self.watched.iter().map(|w| w.inode).collect();
        let mut failed_opens = 0u64;
        for (path, inode, _) in seen {
            if known.contains(&inode) {
                continue;
            }
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(error) => {
                    // Tried again at the next scan; nothing about the file is recorded yet.
                    failed_opens += 1;
                    cx.metrics.error("file_open_failed");
                    if failed_opens == 1 {
                        tracing::warn!(component_id = %cx.id, path = %path.display(), %error, "cannot open file; will try again at the next scan");
                    }
                    continue;
                }
            };
            let Some(fingerprint) = fingerprint(&file, self.config.fingerprint_bytes) else {
                continue; // too short to identify yet
            };
            if self.watched.iter().any(|w| w.fingerprint == fingerprint) {
                tracing::debug!(component_id = %cx.id, path = %path.display(), "same first line as a file already read (a copy?); skipping");
                continue;
            }
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let start = match self.checkpoints.get(fingerprint) {
                Some(position) if position.offset <= len => position.offset,
                Some(_) => 0, // shorter than our checkpoint: rewritten
                None if read_from_end => len,
                None => 0,
            };
            tracing::debug!(component_id = %cx.id, path = %path.display(), offset = start, "watching file");
            let mut file = file;
            // Keep the descriptor only while there is a free slot; otherwise the file waits
            // its turn closed, at its position.
            let file = if self.open_files < self.max_open_files
                && file.seek(SeekFrom::Start(start)).is_ok()
            {
                self.open_files += 1;
                Some(file)
            } else {
                None
            };
            if self.checkpoints.get(fingerprint).is_none() {
                self.checkpoints
                    .set(fingerprint, start, &path.to_string_lossy());
            }
            self.watched.push(Watched {
                path_value: Bytes::from(path.to_string_lossy().into_owned()),
                path,
                file,
                len_seen: len,
                fingerprint,
                inode,
                read_pos: start,
                buf: BytesMut::new(),
                framer: LineFramer::new(self.config.max_line_bytes, self.config.oversize_lines),
                gone: false,
            });
        }
        if failed_opens > 1 {
            tracing::warn!(component_id = %cx.id, files = failed_opens, "files could not be opened in this scan; will try again at the next");
        }
        self.open_failures += failed_opens;
    }

    /// Gives `index` a descriptor if it has none, closing a file at its end when every slot
    /// is taken. False when it cannot be read now.
    fn ensure_open(&mut self, index: usize, cx: &SourceContext) -> bool {
        if self.watched[index].file.is_some() {
            return true;
        }
        if self.open_files >= self.max_open_files {
            let idle = self
                .watched
                .iter()
                .position(|w| w.file.is_some() && !w.gone && w.len_seen <= w.read_pos);
            match idle {
                Some(idle) => {
                    self.watched[idle].close();
                    self.open_files -= 1;
                }
                None => return false,
            }
        }
        let watched = &mut self.watched[index];
        match watched.reopen() {
            Ok(true) => {
                self.open_files += 1;
                true
            }
            Ok(false) => {
                watched.gone = true;
                false
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                watched.gone = true;
                false
            }
            Err(error) => {
                cx.metrics.error("file_open_failed");
                tracing::debug!(component_id = %cx.id, path = %watched.path.display(), %error, "cannot reopen file; will try again");
                false
            }
        }
    }

    /// Reads from the files in turn until a batch is full or every file is at its end.
    /// Returns the batch and the position each contributing file reached.
    fn read_batch(&mut self, cx: &SourceContext) -> (EventBatch, Vec<(u64, u64, PathBuf)>) {
        let mut out = BatchOut {
            events: Vec::new(),
            bytes: 0,
            max_events: self.config.max_batch_events.max(1),
        };
        let mut positions = Vec::new();
        let mut finished = Vec::new();
        let count = self.watched.len();
        let waiting = self.watched.iter().filter(|w| w.waiting()).count();
        let mut last = self.cursor;
        for step in 0..count {
            let index = (self.cursor + step) % count;
            if self.watched[index].file.is_none() {
                let watched = &self.watched[index];
                if watched.gone {
                    // Closed, then removed or rotated out of the globs: it cannot be reopened.
                    if watched.len_seen > watched.position() {
                        cx.metrics.error("file_removed_unread");
                        tracing::warn!(component_id = %cx.id, path = %watched.path.display(), unread_bytes = watched.len_seen - watched.position(), "file removed before it could be read to its end");
                    }
                    finished.push(index);
                    continue;
                }
                if !watched.waiting() || !self.ensure_open(index, cx) {
                    continue;
                }
            }
            last = index;
            let watched = &mut self.watched[index];
            let before = watched.position();
            let at_eof = read_file(watched, &mut out, &self.lines, &self.config, cx);
            if at_eof {
                if watched.gone {
                    // Rotated away and fully read: a last line without newline is complete now.
                    if !watched.buf.is_empty() {
                        let line = watched.buf.split().freeze();
                        out.bytes += line.len();
                        self.lines
                            .decode(line, &watched.path_value, &mut out.events, &cx.metrics);
                    }
                    finished.push(index);
                } else if waiting > 0 {
                    // Others wait for a descriptor: give this one back until the file grows.
                    watched.len_seen = watched.read_pos;
                    watched.close();
                    self.open_files -= 1;
                }
            }
            let watched = &self.watched[index];
            let after = watched.position();
            if after != before || finished.last() == Some(&index) {
                positions.push((watched.fingerprint, after, watched.path.clone()));
            }
            if out.full() {
                break;
            }
        }
        // The next batch starts with the file after the last one read from.
        self.cursor = if count == 0 { 0 } else { (last + 1) % count };
        finished.sort_unstable();
        finished.dedup();
        for index in finished.into_iter().rev() {
            let watched = self.watched.remove(index);
            if watched.file.is_some() {
                self.open_files -= 1;
            }
            if index < self.cursor {
                self.cursor -= 1;
            }
            tracing::info!(component_id = %cx.id, path = %watched.path.display(), "file removed or rotated away and fully read; no longer watching");
        }
        if self.cursor >= self.watched.len() {
            self.cursor = 0;
        }
        cx.metrics.received(out.events.len(), out.bytes);
        (EventBatch::new(out.events, out.bytes), positions)
    }
}

/// The batch being filled and its limits.
struct BatchOut {
    events: Vec<Event>,
    bytes: usize,
    max_events: usize,
}

impl BatchOut {
    fn full(&self) -> bool {
        self.events.len() >= self.max_events || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Reads lines of one open file into `out` until it is full or the file is at its end
/// (returns true then; a truncated file restarts at 0).
fn read_file(
    watched: &mut Watched,
    out: &mut BatchOut,
    lines: &LineDecoder,
    config: &FileSourceConfig,
    cx: &SourceContext,
) -> bool {
    let Some(file) = watched.file.as_mut() else {
        return false;
    };
    let mut at_eof = false;
    while !out.full() {
        while let Some(frame) = watched.framer.next(&mut watched.buf) {
            let line = match frame {
                Frame::Line(line) => line,
                Frame::Truncated(head) => {
                    cx.metrics.error("line_truncated");
                    tracing::warn!(component_id = %cx.id, path = %watched.path.display(), max_line_bytes = config.max_line_bytes, "line too long; truncated");
                    head
                }
                Frame::Dropped => {
                    cx.metrics.discarded_with("oversize", 1, || {
                        Some(format!(
                            "a line of {} longer than max_line_bytes ({})",
                            watched.path.display(),
                            config.max_line_bytes
                        ))
                    });
                    continue;
                }
            };
            out.bytes += line.len() + 1;
            lines.decode(line, &watched.path_value, &mut out.events, &cx.metrics);
            if out.full() {
                break;
            }
        }
        if out.full() {
            break;
        }
        watched.buf.reserve(READ_CHUNK);
        match read_appending(file, &mut watched.buf, READ_CHUNK) {
            Ok(0) => {
                at_eof = true;
                break;
            }
            Ok(n) => watched.read_pos += n as u64,
            Err(error) => {
                cx.metrics.error("file_read_failed");
                tracing::warn!(component_id = %cx.id, path = %watched.path.display(), %error, "read failed");
                at_eof = true;
                break;
            }
        }
    }
    if at_eof {
        if let Ok(meta) = file.metadata() {
            watched.len_seen = watched.len_seen.max(meta.len());
            if meta.len() < watched.read_pos {
                tracing::info!(component_id = %cx.id, path = %watched.path.display(), "file truncated; reading from the start");
                watched.read_pos = 0;
                watched.len_seen = meta.len();
                watched.buf.clear();
                watched.framer.reset();
                let _ = file.seek(SeekFrom::Start(0));
                if let Some(fp) = fingerprint(file, config.fingerprint_bytes) {
                    watched.fingerprint = fp;
                }
            }
        }
    }
    at_eof
}

/// Reads up to `max` bytes from `file` into the spare capacity of `buf`, appending them;
/// returns how many (0 at the file's end). The room is not zero-filled first, as reading into
/// a slice needs: zeroing 256 KiB before every read was ~1% of the CPU time of a JSON file
/// read into Parquet (perf).
fn read_appending(file: &File, buf: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(max);
    // SAFETY: the kernel writes at most `room` bytes into `buf`'s spare capacity, which `buf`
    // owns and nothing refers to; no Rust reference to the unwritten bytes is made.
    let read = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), room) };
    let read = usize::try_from(read).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: the kernel wrote these `read` bytes, right after `buf`'s initialized ones.
    unsafe { buf.set_len(buf.len() + read) };
    Ok(read)
}

/// Turns lines into events: decoding policy plus the file path field.
struct LineDecoder {
    decoder: Decoder,
    on_error: OnDecodeError,
    file_key: String,
}

impl LineDecoder {
    fn decode(
        &self,
        line: Bytes,
        path: &Bytes,
        events: &mut Vec<Event>,
        metrics: &ComponentMetrics,
    ) {
        let first = events.len();
        decode_frame(&self.decoder, self.on_error, line, events, metrics);
        if !self.file_key.is_empty() {
            for event in &mut events[first..] {
                event.insert(&self.file_key, crate::event::Value::Bytes(path.clone()));
            }
        }
    }
}

/// Hash of the file's first line (or first `max` bytes), or `None` if it has neither yet.
fn fingerprint(file: &File, max: usize) -> Option<u64> {
    let mut head = vec![0u8; max.max(1)];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    let head = &head[..filled];
    let end = match memchr::memchr(b'\n', head) {
        Some(newline) => newline + 1,
        None if filled == max => filled,
        None => return None,
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[..end]);
    let crc = hasher.finalize() as u64;
    // Length in the high bits lowers collisions between short lines.
    Some((end as u64) << 32 | crc)
}
