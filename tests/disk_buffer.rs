//! Durability, end to end: file source -> disk buffer -> http sink, run as a real `sluice`
//! process against real files and a real HTTP receiver on 127.0.0.1 (axum, in this test).
//! Covers kill -9 at random points, clean restarts, corrupted segments, a full buffer, and a
//! sink that rejects.

mod common;
use common::{free_port, http_get, wait_until_async, Agent, Mode, Receiver};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

struct Pipeline {
    dir: tempfile::TempDir,
    api_port: u16,
    config: String,
}

impl Pipeline {
    fn new(receiver: &Receiver, buffer: &str, extra_source: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let api_port = free_port();
        let config = format!(
            r#"
data_dir: {data}
shutdown_timeout_secs: 3
api:
  enabled: true
  address: 127.0.0.1:{api_port}
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
            api_port,
            config,
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
        Agent::start(self.dir.path(), &self.config)
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

    fn metric(&self, name: &str, label: &str) -> f64 {
        let (_, text) = http_get(([127, 0, 0, 1], self.api_port).into(), "/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
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
    // At least 20 kills, bounded by count and time.
    while kills < 20 || (kills < 40 && started.elapsed() < Duration::from_secs(40)) {
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
    receiver.set_mode(Mode::Unavailable);
    pipeline.append(0..2000);
    let mut agent = pipeline.start();
    wait_until_async(WAIT, "everything buffered on disk", || {
        pipeline.checkpoint() == pipeline.input_len()
    })
    .await;
    tokio::task::block_in_place(|| agent.terminate(WAIT));

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
