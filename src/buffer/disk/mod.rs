//! The disk buffer: a sink's backlog in append-only segment files that survive restarts,
//! `kill -9` and corruption.
//!
//! ```text
//! upstream -> [small channel] -> writer -> data_dir/buffers/<sink>/<id>.seg -> reader -> [small channel] -> sink
//! ```
//! - The **writer** appends one CRC32C-checked record per batch and fsyncs at most
//!   `fsync_interval_ms` after a write (or after every batch with `0`), and at once when its
//!   queue runs empty while a source waits for acknowledgements (group commit). Only after the
//!   fsync does it release the batches' handles: a source checkpoints nothing not on disk.
//! - The **reader** reads records in order and hands them to the sink with handles of its
//!   own. When the sink delivers, the reader's position advances (in order); segments wholly
//!   before it are deleted *first*, then the position is written to `reader.json` (temp file,
//!   fsync, rename). Deleting first frees space without allocating any, so a full disk cannot
//!   wedge the buffer (writing the position needs a block; deleting does not). A crash between
//!   the two steps leaves an older position that points into a deleted segment; on start such a
//!   position moves to the first segment present — every byte before it was delivered.
//! - On start the writer always opens a new segment: existing files are never appended to, so
//!   a torn tail from a crash stays where it is and the reader skips it.
//! - A record with a bad checksum is skipped; a torn tail or an impossible length ends that
//!   segment. Both are counted (`buffer_corrupted_records_total`, `component_errors_total
//!   {error_type="buffer_corrupted"}`) and logged once per file with the offset; the buffer
//!   keeps going. Nothing here can crash-loop.
//! - Full (`max_size` reached, or the disk itself full): `when_full: block` stops taking
//!   batches (backpressure) until the reader frees a segment; `drop_newest` drops and counts.
//!   A write that fails for want of space leaves no partial record and seals the segment (the
//!   next write opens a new one), so the reader can finish and delete it. A writer waiting for
//!   space gives up on shutdown: the batch it holds is marked rejected, so its source keeps it
//!   (re-reads or re-asks for it after the restart) instead of counting it delivered.

pub mod record;

use crate::event::{BatchStatus, EventBatch, Finalizers};
use crate::observe::ComponentMetrics;
use crate::sources::acks::OrderedAcks;
use crate::topology::{BufferReceiver, BufferSender, ComponentError, Shutdown, WhenFull};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Settings of one disk buffer.
#[derive(Debug, Clone, Copy)]
pub struct DiskSettings {
    pub max_size: u64,
    pub when_full: WhenFull,
    /// 0: fsync after every batch.
    pub fsync_interval: Duration,
    pub segment_bytes: u64,
}

/// The reader's acknowledged position: the first record not yet delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    segment: u64,
    offset: u64,
}

/// What writer and reader share.
struct Shared {
    state: Mutex<State>,
    /// The writer appended data (or finished).
    data: Notify,
    /// The reader deleted a segment.
    space: Notify,
}

struct State {
    /// The segment the writer appends to.
    active: u64,
    /// Bytes of `active` written (readable).
    written: u64,
    writer_done: bool,
    /// Bytes of all segment files.
    disk_bytes: u64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".seg").and_then(|n| n.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Writes the position by temp file and rename, with a checksum (a flipped digit must not
/// move the position: that would skip or delete undelivered segments). `durable` adds the
/// fsyncs needed before relying on it; routine writes skip them (the page cache survives a
/// killed process, and an OS crash only replays more).
fn write_position(dir: &Path, position: Position, durable: bool) -> std::io::Result<()> {
    crate::state_file::store(&dir.join("reader.json"), &position, durable)
}

/// The recorded position; `None` (replay every segment) when there is none or it is damaged.
fn read_position(dir: &Path, metrics: &ComponentMetrics) -> Option<Position> {
    let path = dir.join("reader.json");
    if !path.exists() {
        return None;
    }
    let position: Option<Position> = crate::state_file::load(&path, metrics);
    if position.is_none() {
        tracing::error!(component_id = metrics.id(), dir = %dir.display(), "disk buffer position file unusable; replaying every segment");
    }
    position
}

/// Opens (or creates) the buffer in `dir` and runs its writer and reader until upstream is
/// done and the reader has drained (or shutdown stops it).
pub async fn run(
    dir: PathBuf,
    settings: DiskSettings,
    input: BufferReceiver,
    output: BufferSender,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
) -> Result<(), ComponentError> {
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create disk buffer {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("reader.json.tmp"));
    let segments = list_segments(&dir)?;
    let mut start = read_position(&dir, &metrics).unwrap_or(Position {
        segment: segments.first().copied().unwrap_or(0),
        offset: 0,
    });
    // Segments before the position were fully delivered; a crash may have left them behind.
    for id in segments.iter().filter(|id| **id < start.segment) {
        std::fs::remove_file(segment_path(&dir, *id))?;
    }
    let remaining: Vec<u64> = segments
        .into_iter()
        .filter(|id| *id >= start.segment)
        .collect();
    if !remaining.contains(&start.segment) {
        start = Position {
            segment: remaining.first().copied().unwrap_or(start.segment),
            offset: 0,
        };
    }
    let disk_bytes: u64 = remaining
        .iter()
        .filter_map(|id| std::fs::metadata(segment_path(&dir, *id)).ok())
        .map(|m| m.len())
        .sum();
    let active = remaining.last().map_or(start.segment, |last| last + 1);
    if !remaining.is_empty() {
        tracing::info!(
            component_id = metrics.id(),
            segments = remaining.len(),
            bytes = disk_bytes,
            "disk buffer has a backlog; replaying it"
        );
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            active,
            written: 0,
            writer_done: false,
            disk_bytes,
        }),
        data: Notify::new(),
        space: Notify::new(),
    });
    let writer = Writer::open(
        dir.clone(),
        active,
        settings,
        shared.clone(),
        metrics.clone(),
        shutdown.clone(),
    )?;
    let reader = Reader {
        dir,
        shared,
        metrics,
        position: start,
        persisted: start,
        deleted_below: start.segment,
        last_persist: Instant::now(),
        logged: HashSet::new(),
        frozen: false,
    };
    let writer = tokio::spawn(writer.run(input));
    let reader_result = reader.run(output, shutdown).await;
    let writer_result = writer
        .await
        .map_err(|e| format!("disk buffer writer failed: {e}"))?;
    writer_result?;
    reader_result
}

struct Writer {
    dir: PathBuf,
    id: u64,
    file: File,
    len: u64,
    settings: DiskSettings,
    shared: Arc<Shared>,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    /// Handles of batches written but not yet fsynced.
    unsynced: Vec<Finalizers>,
    buf: Vec<u8>,
    /// A write failed: the next append opens a new segment first, so the reader can finish
    /// this one and delete it (the active segment is never deleted).
    seal: bool,
}

impl Writer {
    fn open(
        dir: PathBuf,
        id: u64,
        settings: DiskSettings,
        shared: Arc<Shared>,
        metrics: ComponentMetrics,
        shutdown: Shutdown,
    ) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, id))?;
        Ok(Writer {
            dir,
            id,
            file,
            len: 0,
            settings,
            shared,
            metrics,
            shutdown,
            unsynced: Vec::new(),
            buf: Vec::new(),
            seal: false,
        })
    }

    async fn run(mut self, mut input: BufferReceiver) -> Result<(), ComponentError> {
        let mut sync_at: Option<tokio::time::Instant> = None;
        loop {
            let tick = async {
                match sync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => {
                        self.append(batch).await;
                        // Group commit: sync at once when nothing else is queued and someone
                        // waits for the acknowledgement (an HTTP client, say); under steady load
                        // the interval batches many writes into one fsync.
                        let waiting = self.unsynced.iter().any(|f| !f.is_empty());
                        if self.settings.fsync_interval.is_zero() || (waiting && input.is_empty()) {
                            self.sync().await;
                            sync_at = None;
                        } else if sync_at.is_none() && !self.unsynced.is_empty() {
                            sync_at = Some(tokio::time::Instant::now() + self.settings.fsync_interval);
                        }
                    }
                    None => break,
                },
                _ = tick => {
                    self.sync().await;
                    sync_at = None;
                }
            }
        }
        self.sync().await;
        self.shared.lock().writer_done = true;
        self.shared.data.notify_one();
        Ok(())
    }

    /// Appends one batch, applying `when_full` when there is no room.
    async fn append(&mut self, batch: EventBatch) {
        self.buf.clear();
        let size = record::encode_record(&batch, &mut self.buf) as u64;
        loop {
            let used = self.shared.lock().disk_bytes;
            // A record larger than the whole buffer still goes in once the buffer is empty.
            let fits = used + size <= self.settings.max_size || used == 0;
            if fits {
                if self.len > 0 && (self.seal || self.len >= self.settings.segment_bytes) {
                    self.roll().await;
                }
                match self.file.write_all(&self.buf) {
                    Ok(()) => break,
                    Err(error) => {
                        // Leave no partial record behind; earlier records stay intact.
                        let _ = self.file.set_len(self.len);
                        self.seal = true;
                        self.metrics.error("buffer_write_failed");
                        tracing::error!(component_id = self.metrics.id(), %error, "cannot write to the disk buffer; waiting for space");
                    }
                }
            }
            match self.settings.when_full {
                WhenFull::DropNewest => {
                    self.metrics.discarded("buffer_full", batch.len());
                    return;
                }
                WhenFull::Block => {
                    // Make what is written durable (and acknowledged) before waiting.
                    self.sync().await;
                    tokio::select! {
                        _ = self.shared.space.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.shutdown.stop.cancelled() => {
                            // The reader stops freeing space now: never wait past shutdown.
                            batch.finalizers.update_status(BatchStatus::Rejected);
                            self.metrics.error("buffer_full_at_shutdown");
                            tracing::warn!(component_id = self.metrics.id(), events = batch.len(), "disk buffer full at shutdown; the batch goes back to its source");
                            return;
                        }
                    }
                }
            }
        }
        self.len += size;
        {
            let mut state = self.shared.lock();
            state.written = self.len;
            state.disk_bytes += size;
            let (events, bytes) = self.metrics.buffer_gauges();
            bytes.set(state.disk_bytes as f64);
            events.increment(batch.len() as f64);
        }
        self.shared.data.notify_one();
        self.unsynced.push(batch.finalizers);
    }

    async fn roll(&mut self) {
        self.sync().await;
        let next = self.id + 1;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next))
        {
            Ok(file) => {
                self.file = file;
                self.id = next;
                self.len = 0;
                self.seal = false;
                let mut state = self.shared.lock();
                state.active = next;
                state.written = 0;
            }
            Err(error) => {
                // Keep appending to the current segment; retry the roll next time.
                self.metrics.error("buffer_write_failed");
                tracing::error!(component_id = self.metrics.id(), %error, "cannot create a new buffer segment");
            }
        }
    }

    /// fsyncs the segment, then releases the handles of what it made durable.
    async fn sync(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let finalizers = std::mem::take(&mut self.unsynced);
        let synced = match self.file.try_clone() {
            Ok(file) => tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(error) => Err(error),
        };
        if let Err(error) = synced {
            self.metrics.error("buffer_sync_failed");
            tracing::error!(component_id = self.metrics.id(), %error, "fsync of the disk buffer failed; upstream will not advance");
            for f in &finalizers {
                f.update_status(BatchStatus::Rejected);
            }
        }
        drop(finalizers);
    }
}

/// How often the reader position is written while a segment is being read.
const PERSIST_EVERY: Duration = Duration::from_millis(20);

/// A position the sink acknowledged: the record ends at `end` in `segment`.
type Acked = (u64, u64, usize);

struct Reader {
    dir: PathBuf,
    shared: Arc<Shared>,
    metrics: ComponentMetrics,
    /// Where the next unacknowledged record starts.
    position: Position,
    persisted: Position,
    /// Segments below this one are deleted.
    deleted_below: u64,
    last_persist: Instant,
    /// Segments already reported as corrupt (log once per file).
    logged: HashSet<u64>,
    /// A batch was rejected: the position no longer advances in this run.
    frozen: bool,
}

enum Next {
    Batch(EventBatch, u64),
    Skip(u64),
    EndOfSegment,
    CaughtUp,
}

impl Reader {
    async fn run(mut self, output: BufferSender, shutdown: Shutdown) -> Result<(), ComponentError> {
        let mut acks: OrderedAcks<Acked> = OrderedAcks::new(true);
        let mut segment = self.position.segment;
        let mut offset = self.position.offset;
        let mut file: Option<(u64, File)> = None;
        loop {
            for (acked, status) in acks.ready() {
                self.acknowledge(acked, status);
            }
            if shutdown.stop.is_cancelled() {
                break; // the rest is safe on disk; replayed next start
            }
            if file.as_ref().map(|(id, _)| *id) != Some(segment) {
                file = match File::open(segment_path(&self.dir, segment)) {
                    Ok(f) => Some((segment, f)),
                    Err(_) if segment < self.shared.lock().active => {
                        segment += 1; // deleted or never created (a failed roll)
                        offset = 0;
                        continue;
                    }
                    Err(_) => None,
                };
            }
            let next = match &file {
                Some((_, f)) => self.read(f, segment, offset),
                None => Next::CaughtUp,
            };
            match next {
                Next::Batch(mut batch, end) => {
                    // Reserve room first so a shutdown while the sink is full cannot drop a
                    // batch that already carries a handle (that would count as delivered).
                    let reservation = tokio::select! {
                        reserved = output.reserve(&batch) => match reserved {
                            Ok(reservation) => reservation,
                            Err(_) => break,
                        },
                        _ = shutdown.stop.cancelled() => break,
                    };
                    let events = batch.len();
                    acks.attach(&mut batch, (segment, end, events));
                    offset = end;
                    if reservation.send(batch).is_err() {
                        break;
                    }
                }
                Next::Skip(end) => {
                    acks.resolved((segment, end, 0));
                    offset = end;
                }
                Next::EndOfSegment => {
                    acks.resolved((segment, offset, 0));
                    segment += 1;
                    offset = 0;
                }
                Next::CaughtUp => {
                    if self.shared.lock().writer_done {
                        break;
                    }
                    tokio::select! {
                        _ = self.shared.data.notified() => {}
                        next = acks.next(), if acks.pending() > 0 => {
                            if let Some((acked, status)) = next {
                                self.acknowledge(acked, status);
                            }
                        }
                        _ = shutdown.stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        // Let the sink finish what it has, then record how far it got.
        drop(output);
        loop {
            tokio::select! {
                next = acks.next() => match next {
                    Some((acked, status)) => self.acknowledge(acked, status),
                    None => break,
                },
                _ = shutdown.force.cancelled() => break,
            }
        }
        self.persist(true);
        Ok(())
    }

    /// Reads the record at `offset` of `segment`.
    fn read(&mut self, file: &File, segment: u64, offset: u64) -> Next {
        let (limit, sealed) = {
            let state = self.shared.lock();
            if segment == state.active {
                (state.written, false)
            } else {
                (file.metadata().map(|m| m.len()).unwrap_or(0), true)
            }
        };
        if offset >= limit {
            return if sealed {
                Next::EndOfSegment
            } else {
                Next::CaughtUp
            };
        }
        let mut header = [0u8; record::HEADER];
        let available = (limit - offset) as usize;
        if available < record::HEADER || file.read_exact_at(&mut header, offset).is_err() {
            return self.corrupt(
                segment,
                offset,
                "torn record header at the end of the segment",
                Next::EndOfSegment,
            );
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let total = record::HEADER + len.min(record::MAX_PAYLOAD + 1);
        let mut data = vec![0u8; total.min(available)];
        if file.read_exact_at(&mut data, offset).is_err() {
            return self.corrupt(segment, offset, "unreadable record", Next::EndOfSegment);
        }
        match record::read_record(&Bytes::from(data)) {
            record::Read::Record(payload, total) => match record::decode_batch(payload) {
                Ok(batch) => Next::Batch(batch, offset + total as u64),
                Err(error) => self.corrupt(
                    segment,
                    offset,
                    &error.to_string(),
                    Next::Skip(offset + total as u64),
                ),
            },
            record::Read::BadChecksum(total) => self.corrupt(
                segment,
                offset,
                "checksum mismatch; record skipped",
                Next::Skip(offset + total as u64),
            ),
            record::Read::Incomplete => self.corrupt(
                segment,
                offset,
                "torn record at the end of the segment",
                Next::EndOfSegment,
            ),
            record::Read::BadLength(len) => self.corrupt(
                segment,
                offset,
                &format!("impossible record length {len}; rest of the segment skipped"),
                Next::EndOfSegment,
            ),
        }
    }

    fn corrupt(&mut self, segment: u64, offset: u64, what: &str, next: Next) -> Next {
        self.metrics.error("buffer_corrupted");
        metrics::counter!("buffer_corrupted_records_total", "component_id" => self.metrics.id().to_string()).increment(1);
        if self.logged.insert(segment) {
            tracing::error!(component_id = self.metrics.id(), file = %segment_path(&self.dir, segment).display(), offset, "corrupt disk buffer record: {what}");
        }
        next
    }

    fn acknowledge(&mut self, (segment, end, events): Acked, status: BatchStatus) {
        let (gauge, _) = self.metrics.buffer_gauges();
        gauge.decrement(events as f64);
        if status == BatchStatus::Rejected && !self.frozen {
            // The sink gave up on a record: keep it (and everything after it) on disk, so a
            // restart delivers it again. Route rejections to `<sink>.dead_letter` to move on.
            self.frozen = true;
            self.metrics.error("delivery_rejected");
            tracing::error!(component_id = self.metrics.id(), segment, "the sink rejected a buffered batch; the buffer keeps it and will replay it on restart");
        }
        if !self.frozen {
            self.position = Position {
                segment,
                offset: end,
            };
            self.persist(false);
        }
    }

    /// Records the position when a segment was finished (deleting the segments before it
    /// first), or at most every 20 ms otherwise (the window of duplicates after a crash).
    fn persist(&mut self, force: bool) {
        let new_segment = self.position.segment > self.persisted.segment;
        if self.position == self.persisted
            || !(force || new_segment || self.last_persist.elapsed() >= PERSIST_EVERY)
        {
            return;
        }
        self.delete_delivered_segments();
        if let Err(error) = write_position(&self.dir, self.position, force || new_segment) {
            self.metrics.error("buffer_position_failed");
            tracing::error!(component_id = self.metrics.id(), %error, "cannot write disk buffer position; will retry");
            return;
        }
        self.persisted = self.position;
        self.last_persist = Instant::now();
    }

    /// Deletes every segment wholly before the position (all delivered). Needs no free space,
    /// so it is what unwedges a full disk.
    fn delete_delivered_segments(&mut self) {
        let mut freed = 0;
        let mut deleted = self.deleted_below;
        for id in self.deleted_below..self.position.segment {
            let path = segment_path(&self.dir, id);
            match std::fs::metadata(&path) {
                Ok(meta) => match std::fs::remove_file(&path) {
                    Ok(()) => freed += meta.len(),
                    Err(error) => {
                        self.metrics.error("buffer_delete_failed");
                        tracing::error!(component_id = self.metrics.id(), file = %path.display(), %error, "cannot delete a delivered buffer segment; will retry");
                        break;
                    }
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    self.metrics.error("buffer_delete_failed");
                    tracing::error!(component_id = self.metrics.id(), file = %path.display(), %error, "cannot inspect a delivered buffer segment; will retry");
                    break;
                }
            }
            deleted = id + 1;
        }
        self.deleted_below = deleted;
        if freed > 0 {
            let mut state = self.shared.lock();
            state.disk_bytes = state.disk_bytes.saturating_sub(freed);
            let (_, bytes) = self.metrics.buffer_gauges();
            bytes.set(state.disk_bytes as f64);
            drop(state);
            self.shared.space.notify_one();
        }
    }
}
