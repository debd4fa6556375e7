//! Durability, end to end: file source -> disk buffer -> http sink, run as a real `sluice`
//! process against real files and a real HTTP receiver on 127.0.0.1 (axum, in this test).
//! Covers kill -9 at random points, clean restarts, corrupted segments, a full buffer, and a
//! sink that rejects.

use crate::common;
use crate::common::{wait_until_async, Agent, Mode, Receiver};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

struct Pipeline {
    dir: tempfile::TempDir,
    config: String,
    /// The log of the agent started last, which says where its api listens (port 0 in the
    /// config: the kernel picks it as the agent binds, so no other process can take it
    /// between restarts).
    last_log: RefCell<Option<PathBuf>>,
}

impl Pipeline {
    fn new(receiver: &Receiver, buffer: &str, extra_source: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
data_dir: {data}
shutdown_timeout_secs: 3
api:
  enabled: true
  address: 127.0.0.1:0
sources:
  logs:
    type: file
    include: ["{input}"]
    glob_interval_ms: 100
    poll_interval_ms: 50
    checkpoint_interval_ms: 100
{extra_source}
sinks:
  out:
    type: http
    inputs: [logs]
    uri: {uri}
    batch:
      max_events: 100
      timeout_secs: 0.05
    request:
      timeout_secs: 5
      retry_initial_backoff_ms: 20
      retry_max_backoff_secs: 0.2
    buffer:
{buffer}
"#,
            data = dir.path().join("data").display(),
            input = dir.path().join("input.log").display(),
            uri = receiver.uri(),
        );
        Pipeline {
            dir,
            config,
            last_log: RefCell::new(None),
        }
    }

    fn input(&self) -> PathBuf {
        self.dir.path().join("input.log")
    }

    fn append(&self, range: std::ops::Range<usize>) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.input())
            .unwrap();
        let text: String = range
            .map(|i| format!("event {i:07} {}\n", "d".repeat(60)))
            .collect();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn start(&self) -> Agent {
        let agent = Agent::start(self.dir.path(), &self.config);
        *self.last_log.borrow_mut() = Some(agent.stderr_path.clone());
        agent
    }

    /// Appends `range` while the endpoint is down and stops the agent once all of it sits in
    /// the disk buffer (the source's checkpoint at the end of the input).
    async fn buffer_while_down(&self, receiver: &Receiver, range: std::ops::Range<usize>) {
        receiver.set_mode(Mode::Unavailable);
        self.append(range);
        let mut agent = self.start();
        wait_until_async(WAIT, "everything buffered on disk", || {
            self.checkpoint() == self.input_len()
        })
        .await;
        tokio::task::block_in_place(|| agent.terminate(WAIT));
    }

    fn segments(&self) -> Vec<PathBuf> {
        let dir = self.dir.path().join("data/buffers/out");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// A metric of the agent started last; 0 while its api is not up.
    fn metric(&self, name: &str, label: &str) -> f64 {
        let log = self.last_log.borrow().as_ref().map(std::fs::read_to_string);
        match log
            .and_then(Result::ok)
            .as_deref()
            .and_then(common::api_port_in_log)
        {
            Some(port) => common::metric(port, name, label),
            None => 0.0,
        }
    }

    /// The file source's acknowledged offset of the input file.
    fn checkpoint(&self) -> u64 {
        let path = self.dir.path().join("data/logs/checkpoints.json");
        let Ok(bytes) = std::fs::read(path) else {
            return 0;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return 0;
        };
        value["files"].as_object().map_or(0, |files| {
            files
                .values()
                .filter_map(|f| f["offset"].as_u64())
                .max()
                .unwrap_or(0)
        })
    }

    fn input_len(&self) -> u64 {
        std::fs::metadata(self.input())
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

fn ids(receiver: &Receiver) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for line in receiver.lines() {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let message = value["message"].as_str().unwrap();
        let id: usize = message[6..13].parse().unwrap();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

fn kill9(agent: &mut Agent) {
    unsafe {
        libc::kill(agent.child.id() as i32, libc::SIGKILL);
    }
    agent.wait(Duration::from_secs(10));
}

/// A small xorshift generator: random kill points, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const DISK: &str = "      type: disk\n      fsync_interval_ms: 50\n      segment_bytes: 65536\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing() {
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(&receiver, DISK, "");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut total = 20_000;
    pipeline.append(0..total);
    let started = Instant::now();
    let mut kills = 0;
    // At least 20 kills, bounded by count and time; SLUICE_KILL_CYCLES=N runs exactly N
    // (the long version: 100 and more).
    let cycles: Option<usize> = std::env::var("SLUICE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok());
    while match cycles {
        Some(cycles) => kills < cycles,
        None => kills < 20 || (kills < 40 && started.elapsed() < Duration::from_secs(40)),
    } {
        receiver.set_mode(match rng.below(3) {
            0 => Mode::Accept,
            1 => Mode::Unavailable,
            _ => Mode::Hang,
        });
        let mut agent = pipeline.start();
        let delay = Duration::from_millis(50 + rng.below(400));
        tokio::time::sleep(delay).await; // the random kill point; nothing waits on it
        if rng.below(2) == 0 {
            pipeline.append(total..total + 500);
            total += 500;
        }
        tokio::task::block_in_place(|| kill9(&mut agent));
        kills += 1;
    }
    receiver.set_mode(Mode::Accept);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "every event delivered", || {
        ids(&receiver).len() >= total
    })
    .await;
    tokio::task::block_in_place(|| agent.terminate(Duration::from_secs(30)));
    let counts = ids(&receiver);
    let missing: Vec<usize> = (0..total).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{kills} kills: {total} events delivered, {duplicates} duplicates ({:.2}%)",
        duplicates as f64 * 100.0 / total as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_delivers_exactly_once() {
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(&receiver, DISK, "");
    pipeline.append(0..100_000);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "delivery started", || receiver.count() > 0).await;
    assert!(
        tokio::task::block_in_place(|| agent.terminate(WAIT)).success(),
        "{}",
        agent.stderr()
    );
    let after_stop = receiver.count();
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "all delivered", || receiver.count() >= 100_000).await;
    assert!(tokio::task::block_in_place(|| agent.terminate(WAIT)).success());
    let counts = ids(&receiver);
    assert_eq!(counts.len(), 100_000);
    assert!(
        counts.values().all(|c| *c == 1),
        "no duplicates after a clean stop at {after_stop}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_segments_are_skipped_counted_and_the_rest_delivered() {
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(
        &receiver,
        "      type: disk\n      segment_bytes: 4096\n",
        "    max_batch_events: 10\n",
    );
    pipeline.buffer_while_down(&receiver, 0..2000).await;

    let segments = pipeline.segments();
    assert!(segments.len() > 5, "{segments:?}");
    let mut flipped = std::fs::read(&segments[1]).unwrap();
    flipped[20] ^= 0x55; // inside the first record's payload
    std::fs::write(&segments[1], flipped).unwrap();
    let last = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap(); // torn tail

    receiver.set_mode(Mode::Accept);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "the rest delivered", || receiver.count() >= 1980).await;
    let corrupted = tokio::task::block_in_place(|| {
        pipeline.metric("buffer_corrupted_records_total", "component_id=\"out\"")
    });
    assert_eq!(corrupted, 2.0, "one bad checksum and one torn tail");
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    let counts = ids(&receiver);
    assert_eq!(
        counts.len(),
        1980,
        "exactly the two corrupted records (10 events each) are lost"
    );
    assert!(counts.values().all(|c| *c == 1));
    assert!(
        agent.stderr().contains("corrupt disk buffer record"),
        "{}",
        agent.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_blocks_the_source_and_loses_nothing() {
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(
        &receiver,
        "      type: disk\n      max_size: 65536\n      segment_bytes: 8192\n",
        "    max_batch_events: 20\n",
    );
    receiver.set_mode(Mode::Unavailable);
    pipeline.append(0..5000); // ~400 KiB of lines, far more than the buffer holds
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "the buffer to fill", || {
        pipeline
            .segments()
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
            > 50_000
    })
    .await;
    let disk: u64 = pipeline
        .segments()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        disk <= 65536 + 4096,
        "the buffer stays within max_size (plus one record): {disk}"
    );
    assert!(
        pipeline.checkpoint() < pipeline.input_len(),
        "the source stalled instead of reading everything"
    );
    receiver.set_mode(Mode::Accept);
    wait_until_async(WAIT, "everything delivered", || receiver.count() >= 5000).await;
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    let counts = ids(&receiver);
    assert_eq!(counts.len(), 5000);
    assert!(counts.values().all(|c| *c == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_counts_every_dropped_event_exactly() {
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(
        &receiver,
        "      type: disk\n      max_size: 32768\n      segment_bytes: 8192\n      when_full: drop_newest\n",
        "    max_batch_events: 20\n",
    );
    receiver.set_mode(Mode::Unavailable);
    pipeline.append(0..5000);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "the whole file read (kept or dropped)", || {
        pipeline.checkpoint() == pipeline.input_len()
    })
    .await;
    let dropped = tokio::task::block_in_place(|| {
        pipeline.metric("component_discarded_events_total", "reason=\"buffer_full\"")
    });
    assert!(dropped > 0.0);
    receiver.set_mode(Mode::Accept);
    let expected = 5000 - dropped as usize;
    wait_until_async(WAIT, "every kept event delivered", || {
        receiver.count() >= expected
    })
    .await;
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    let counts = ids(&receiver);
    assert_eq!(
        counts.len() + dropped as usize,
        5000,
        "delivered + counted drops = input"
    );
    assert!(counts.values().all(|c| *c == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_are_not_checkpointed_and_come_back_after_restart() {
    let receiver = Receiver::start().await;
    // Memory buffer: the file source itself must hold its position before rejected lines.
    let pipeline = Pipeline::new(&receiver, "      type: memory\n", "");
    receiver.set_mode(Mode::Reject);
    pipeline.append(0..50);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "the rejection counted", || {
        tokio::task::block_in_place(|| {
            pipeline.metric("component_errors_total", "error_type=\"delivery_rejected\"")
        }) >= 1.0
    })
    .await;
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    assert_eq!(
        pipeline.checkpoint(),
        0,
        "no checkpoint past rejected lines"
    );
    receiver.set_mode(Mode::Accept);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "redelivered", || receiver.count() >= 50).await;
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    let got: BTreeSet<usize> = ids(&receiver).keys().copied().collect();
    assert_eq!(got, (0..50).collect());
}

/// The ids of the events a segment holds, read straight from its bytes (the message text is
/// stored as is inside the record).
fn ids_in(bytes: &[u8]) -> BTreeSet<usize> {
    let mut ids = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(6).position(|w| w == b"event ") {
        let start = at + found + 6;
        if let Some(digits) = bytes.get(start..start + 7) {
            if let Some(id) = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
            {
                ids.insert(id);
            }
        }
        at = start;
    }
    ids
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Random damage, many seeded cases: bytes flipped in buffer segments, segments cut at random
/// points, the file source's checkpoint file or the buffer's position file damaged. Every case
/// starts from the same fully buffered state (2,000 events in 10-event records, the endpoint
/// down until then). The agent must always start, count what is damaged, deliver every event
/// of the undamaged segments, repeat nothing unless it had to re-read its input (a damaged
/// checkpoint), and stop cleanly. `SLUICE_CORRUPTION_CASES` sets the count (default 12),
/// `SLUICE_DAMAGE_SEED` the seed (printed by each run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_damage_to_segments_and_checkpoints_never_stops_the_agent() {
    let cases: u64 = std::env::var("SLUICE_CORRUPTION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let receiver = Receiver::start().await;
    let pipeline = Pipeline::new(
        &receiver,
        "      type: disk\n      segment_bytes: 8192\n",
        "    max_batch_events: 10\n",
    );
    pipeline.buffer_while_down(&receiver, 0..2000).await;
    let data = pipeline.dir.path().join("data");
    let pristine = pipeline.dir.path().join("pristine");
    copy_dir(&data, &pristine);
    // `SLUICE_DAMAGE_SEED` replays a printed seed.
    let seed = common::seed_from("SLUICE_DAMAGE_SEED") | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    for case in 0..cases {
        let _ = std::fs::remove_dir_all(&data);
        copy_dir(&pristine, &data);
        receiver.lines.lock().unwrap().clear();
        let segments = pipeline.segments();
        let mut damaged_segments = BTreeSet::new();
        let mut checkpoint_damaged = false;
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 | 1 => {
                    let index = rng.below(segments.len() as u64) as usize;
                    let mut bytes = std::fs::read(&segments[index]).unwrap();
                    if bytes.is_empty() {
                        // Cut to nothing by an earlier damage of this case.
                        continue;
                    }
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                    std::fs::write(&segments[index], bytes).unwrap();
                    damaged_segments.insert(index);
                    what.push(format!("flip segment {index} at {at}"));
                }
                2 => {
                    let index = rng.below(segments.len() as u64) as usize;
                    let len = std::fs::metadata(&segments[index]).unwrap().len();
                    let at = rng.below(len);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&segments[index])
                        .unwrap()
                        .set_len(at)
                        .unwrap();
                    damaged_segments.insert(index);
                    what.push(format!("cut segment {index} at {at}"));
                }
                3 => {
                    let path = data.join("logs/checkpoints.json");
                    let mut bytes = std::fs::read(&path).unwrap();
                    if bytes.is_empty() {
                        // Cut to nothing by an earlier damage of this case.
                        continue;
                    }
                    let at = rng.below(bytes.len() as u64) as usize;
                    if rng.below(2) == 0 {
                        bytes[at] ^= 1 << rng.below(8);
                    } else {
                        bytes.truncate(at);
                    }
                    std::fs::write(&path, bytes).unwrap();
                    checkpoint_damaged = true;
                    what.push(format!("damage checkpoints.json at {at}"));
                }
                4 => {
                    // A well-formed position whose segment number was flipped: trusted, it
                    // would skip (and delete) undelivered segments; its checksum catches it.
                    let position = serde_json::json!({"segment": 0, "offset": 0});
                    let text = String::from_utf8(sluice::state_file::encode(&position).unwrap())
                        .unwrap()
                        .replace("\"segment\": 0", "\"segment\": 9");
                    std::fs::write(data.join("buffers/out/reader.json"), text).unwrap();
                    what.push("position file with a flipped segment number".into());
                }
                _ => {
                    let garbage: Vec<u8> =
                        (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
                    std::fs::write(data.join("buffers/out/reader.json"), garbage).unwrap();
                    what.push("garbage reader.json".into());
                }
            }
        }
        let intact: BTreeSet<usize> = segments
            .iter()
            .enumerate()
            .filter(|(index, _)| !damaged_segments.contains(index))
            .flat_map(|(_, path)| ids_in(&std::fs::read(path).unwrap()))
            .collect();
        receiver.set_mode(Mode::Accept);
        let mut agent = pipeline.start();
        let re_read = |pipeline: &Pipeline| {
            checkpoint_damaged
                && pipeline.metric(
                    "component_errors_total",
                    "error_type=\"checkpoint_corrupted\"",
                ) >= 1.0
        };
        // Waits on the agent, so a failure says why with its log (seed cases are rare to replay).
        tokio::task::block_in_place(|| {
            agent.wait_while_running(
                WAIT,
                &format!("case {case} ({what:?}): the intact events delivered"),
                |_| {
                    let delivered = ids(&receiver);
                    let counted = damaged_segments.is_empty()
                        || pipeline
                            .metric("buffer_corrupted_records_total", "component_id=\"out\"")
                            >= 1.0;
                    counted && intact.iter().all(|id| delivered.contains_key(id))
                },
            )
        });
        let re_read = tokio::task::block_in_place(|| re_read(&pipeline));
        if re_read {
            tokio::task::block_in_place(|| {
                agent.wait_while_running(
                    WAIT,
                    &format!("case {case} ({what:?}): the re-read input delivered"),
                    |_| ids(&receiver).len() == 2000,
                )
            });
        }
        let status = tokio::task::block_in_place(|| agent.terminate(WAIT));
        let stderr = agent.stderr();
        assert!(
            status.success(),
            "case {case} ({what:?}): {status}\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "case {case} ({what:?}):\n{stderr}"
        );
        let counts = ids(&receiver);
        if !re_read {
            let repeated: Vec<&usize> = counts
                .iter()
                .filter(|(_, c)| **c > 1)
                .map(|(id, _)| id)
                .collect();
            assert!(
                repeated.is_empty(),
                "case {case} ({what:?}): {} repeated without a re-read, e.g. {:?}; stderr:\n{stderr}",
                repeated.len(),
                &repeated[..repeated.len().min(10)]
            );
        }
        eprintln!(
            "case {case}: {what:?}: {} of 2000 delivered, {} intact expected",
            counts.len(),
            intact.len()
        );
        receiver.set_mode(Mode::Unavailable);
    }
}
