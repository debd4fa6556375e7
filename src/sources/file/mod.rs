//! The `file` source: tails files matched by globs, follows rotation, and checkpoints read
//! positions under `data_dir`.
//!
//! Files are identified by a fingerprint of their first line (up to `fingerprint_bytes`), not
//! by path: a file renamed by rotation keeps its position, and a copy (copytruncate) is not
//! read twice. A file is not read until it has a full first line or `fingerprint_bytes` bytes.
//! Truncation (size below the read position) restarts the file at offset 0. Reading uses
//! plain blocking reads of the page cache in small chunks, which is cheaper than a thread hop.

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
use std::io::{Read, Seek, SeekFrom};
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
        let reader = Reader::new(self.clone(), &cx);
        Ok(Box::pin(reader.run(cx)))
    }
}

/// One file being read.
struct Watched {
    path: PathBuf,
    path_value: Bytes,
    file: File,
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
}

struct Reader {
    config: FileSourceConfig,
    lines: LineDecoder,
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    watched: Vec<Watched>,
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
            .map(|w| {
                let len = w.file.metadata().map(|m| m.len()).unwrap_or(0);
                len.saturating_sub(w.position())
            })
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
                decoder: Decoder::new(&config.decoding),
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
            checkpoints: Checkpoints::load(&cx.data_dir),
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
        self.checkpoints
            .persist(true)
            .map_err(|e| format!("cannot write checkpoints in {}: {e}", cx.data_dir.display()))?;
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

    /// Finds new files, renames and removals.
    fn discover(&mut self, cx: &SourceContext) {
        let mut seen: Vec<(PathBuf, (u64, u64))> = Vec::new();
        for pattern in &self.include {
            let paths = match glob::glob(pattern) {
                Ok(paths) => paths,
                Err(_) => continue,
            };
            for path in paths.flatten() {
                if self.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => seen.push((path, (meta.dev(), meta.ino()))),
                    _ => {}
                }
            }
        }
        for watched in &mut self.watched {
            match seen.iter().find(|(_, inode)| *inode == watched.inode) {
                Some((path, _)) if *path != watched.path => {
                    tracing::info!(component_id = %cx.id, from = %watched.path.display(), to = %path.display(), "file renamed; following it");
                    watched.path = path.clone();
                    watched.path_value = Bytes::from(path.to_string_lossy().into_owned());
                    watched.gone = false;
                }
                Some(_) => watched.gone = false,
                None => watched.gone = true,
            }
        }
        let read_from_end = self.first_scan && self.config.read_from == ReadFrom::End;
        self.first_scan = false;
        for (path, inode) in seen {
            if self.watched.iter().any(|w| w.inode == inode) {
                continue;
            }
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(error) => {
                    cx.metrics.error("file_open_failed");
                    tracing::warn!(component_id = %cx.id, path = %path.display(), %error, "cannot open file");
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
            tracing::info!(component_id = %cx.id, path = %path.display(), offset = start, "watching file");
            let mut file = file;
            if file.seek(SeekFrom::Start(start)).is_err() {
                continue;
            }
            self.watched.push(Watched {
                path_value: Bytes::from(path.to_string_lossy().into_owned()),
                path,
                file,
                fingerprint,
                inode,
                read_pos: start,
                buf: BytesMut::with_capacity(READ_CHUNK),
                framer: LineFramer::new(self.config.max_line_bytes, self.config.oversize_lines),
                gone: false,
            });
            if self.checkpoints.get(fingerprint).is_none() {
                let path = self
                    .watched
                    .last()
                    .map(|w| w.path.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.checkpoints.set(fingerprint, start, &path);
            }
        }
    }

    /// Reads from every file until a batch is full or every file is at its end. Returns the
    /// batch and the position each contributing file reached.
    fn read_batch(&mut self, cx: &SourceContext) -> (EventBatch, Vec<(u64, u64, PathBuf)>) {
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut positions = Vec::new();
        let mut finished = Vec::new();
        let max_events = self.config.max_batch_events.max(1);
        for (index, watched) in self.watched.iter_mut().enumerate() {
            let before = watched.position();
            let mut at_eof = false;
            while events.len() < max_events && bytes < MAX_BATCH_BYTES {
                while let Some(frame) = watched.framer.next(&mut watched.buf) {
                    let line = match frame {
                        Frame::Line(line) => line,
                        Frame::Truncated(head) => {
                            cx.metrics.error("line_truncated");
                            tracing::warn!(component_id = %cx.id, path = %watched.path.display(), max_line_bytes = self.config.max_line_bytes, "line too long; truncated");
                            head
                        }
                        Frame::Dropped => {
                            cx.metrics.discarded("oversize", 1);
                            tracing::warn!(component_id = %cx.id, path = %watched.path.display(), max_line_bytes = self.config.max_line_bytes, "line too long; dropped");
                            continue;
                        }
                    };
                    bytes += line.len() + 1;
                    self.lines
                        .decode(line, &watched.path_value, &mut events, &cx.metrics);
                    if events.len() >= max_events || bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                }
                if events.len() >= max_events || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                watched.buf.reserve(READ_CHUNK);
                let spare = watched.buf.capacity() - watched.buf.len();
                let start = watched.buf.len();
                watched.buf.resize(start + spare.min(READ_CHUNK), 0);
                match watched.file.read(&mut watched.buf[start..]) {
                    Ok(0) => {
                        watched.buf.truncate(start);
                        at_eof = true;
                        break;
                    }
                    Ok(n) => {
                        watched.buf.truncate(start + n);
                        watched.read_pos += n as u64;
                    }
                    Err(error) => {
                        watched.buf.truncate(start);
                        cx.metrics.error("file_read_failed");
                        tracing::warn!(component_id = %cx.id, path = %watched.path.display(), %error, "read failed");
                        at_eof = true;
                        break;
                    }
                }
            }
            if at_eof {
                if let Ok(meta) = watched.file.metadata() {
                    if meta.len() < watched.read_pos {
                        tracing::info!(component_id = %cx.id, path = %watched.path.display(), "file truncated; reading from the start");
                        watched.read_pos = 0;
                        watched.buf.clear();
                        watched.framer.reset();
                        let _ = watched.file.seek(SeekFrom::Start(0));
                        if let Some(fp) = fingerprint(&watched.file, self.config.fingerprint_bytes)
                        {
                            watched.fingerprint = fp;
                        }
                        positions.push((watched.fingerprint, 0, watched.path.clone()));
                    }
                }
                if watched.gone {
                    // Rotated away and fully read: a last line without newline is complete now.
                    if !watched.buf.is_empty() {
                        let line = watched.buf.split().freeze();
                        bytes += line.len();
                        self.lines
                            .decode(line, &watched.path_value, &mut events, &cx.metrics);
                    }
                    finished.push(index);
                }
            }
            let after = watched.position();
            if after != before || finished.last() == Some(&index) {
                positions.push((watched.fingerprint, after, watched.path.clone()));
            }
            if events.len() >= max_events || bytes >= MAX_BATCH_BYTES {
                break;
            }
        }
        for index in finished.into_iter().rev() {
            let watched = self.watched.remove(index);
            tracing::info!(component_id = %cx.id, path = %watched.path.display(), "file removed or rotated away and fully read; no longer watching");
        }
        cx.metrics.received(events.len(), bytes);
        (EventBatch::new(events, bytes), positions)
    }
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
