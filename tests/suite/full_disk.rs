//! A real full disk: the agent's `data_dir` (or a file sink's directory) on a small tmpfs that
//! the test mounts, run as a real `sluice` process, file source in, a real HTTP receiver on
//! 127.0.0.1 (axum, in this test) or a file out. Mounting needs root (CI runs as root); where
//! the mount is refused each test says so and skips.
//!
//! Before the fix, a disk buffer on a full disk wedged for good: the reader wrote its position
//! (which needs a free block) before deleting delivered segments, so nothing was ever freed,
//! and a writer waiting for space ignored SIGTERM.

use crate::common;
use crate::common::{free_port, metric, wait_until_async, Agent, Mode, Receiver};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// A tmpfs of a given size mounted on a temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with a file of zeros until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    path
}

fn write_lines(path: &Path, range: std::ops::Range<usize>, pad: usize) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = range
        .map(|i| format!("event {i:07} {}\n", "d".repeat(pad)))
        .collect();
    file.write_all(text.as_bytes()).unwrap();
}

fn ids(receiver: &Receiver) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for line in receiver.lines() {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let id: usize = value["message"].as_str().unwrap()[6..13].parse().unwrap();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

const TOTAL: usize = 80_000; // ~20 MiB of lines; the tmpfs holds 8

/// file source -> disk buffer (`data_dir` on an 8 MiB tmpfs) -> http sink whose endpoint is
/// down, with `TOTAL` lines waiting in the input file.
struct Buffered {
    tmpfs: Tmpfs,
    dir: tempfile::TempDir,
    receiver: Receiver,
    api: u16,
    config: String,
}

impl Buffered {
    async fn start(when_full: &str) -> Option<(Buffered, Agent)> {
        let tmpfs = Tmpfs::mount("8m")?;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.log");
        let receiver = Receiver::start().await;
        receiver.set_mode(Mode::Unavailable);
        let api = free_port();
        let config = format!(
            r#"
data_dir: {data}
shutdown_timeout_secs: 3
api:
  enabled: true
  address: 127.0.0.1:{api}
sources:
  logs:
    type: file
    include: ["{input}"]
    glob_interval_ms: 100
    poll_interval_ms: 50
    checkpoint_interval_ms: 100
    file_key: ""
sinks:
  out:
    type: http
    inputs: [logs]
    uri: {uri}
    batch:
      max_events: 500
      timeout_secs: 0.05
    request:
      timeout_secs: 5
      retry_initial_backoff_ms: 20
      retry_max_backoff_secs: 0.2
    buffer:
      type: disk
      max_size: 1073741824
      segment_bytes: 262144
      when_full: {when_full}
"#,
            data = tmpfs.path().join("data").display(),
            input = input.display(),
            uri = receiver.uri(),
        );
        write_lines(&input, 0..TOTAL, 230);
        let setup = Buffered {
            tmpfs,
            dir,
            receiver,
            api,
            config,
        };
        let agent = setup.agent();
        Some((setup, agent))
    }

    fn agent(&self) -> Agent {
        Agent::start(self.dir.path(), &self.config)
    }

    fn data(&self) -> PathBuf {
        self.tmpfs.path().join("data")
    }

    fn metric(&self, name: &str, label: &str) -> f64 {
        metric(self.api, name, label)
    }

    async fn wait_for_a_full_disk(&self) {
        wait_until_async(WAIT, "the disk to fill", || {
            assert!(checkpoint_is_whole(&self.data()));
            self.metric(
                "component_errors_total",
                "error_type=\"buffer_write_failed\"",
            ) >= 1.0
        })
        .await;
    }

    /// Waits until `expected` distinct lines arrived; returns them with their counts.
    async fn delivered(&self, expected: usize, what: &str) -> BTreeMap<usize, usize> {
        wait_until_async(WAIT, what, || {
            assert!(checkpoint_is_whole(&self.data()));
            ids(&self.receiver).len() >= expected
        })
        .await;
        ids(&self.receiver)
    }
}

/// The checkpoint file, when there is one, always parses: a failed write on the full disk
/// leaves the previous one whole.
fn checkpoint_is_whole(data: &Path) -> bool {
    match std::fs::read(data.join("logs/checkpoints.json")) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
        Err(_) => true,
    }
}

/// Fails (stalls for good) when the reader records its position before deleting segments: I
/// checked that mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_a_disk_buffer_blocks_then_delivers_everything_once() {
    let Some((setup, mut agent)) = Buffered::start("block").await else {
        return;
    };
    setup.wait_for_a_full_disk().await;
    // Take the last free bytes too: recording the reader's position now fails, so only
    // deleting delivered segments first can free space.
    let _filler = fill(setup.tmpfs.path());
    setup.receiver.set_mode(Mode::Accept);
    let counts = setup
        .delivered(TOTAL, "every line delivered once the endpoint is back")
        .await;
    let status = tokio::task::block_in_place(|| agent.terminate(Duration::from_secs(30)));
    assert!(status.success(), "{}", agent.stderr());
    assert_eq!(counts.len(), TOTAL, "nothing lost");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert_eq!(duplicates, 0, "nothing repeated without a restart");
    assert!(agent.stderr().contains("No space left on device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_disk_is_full_stops_promptly_and_a_restart_loses_nothing() {
    let Some((setup, mut agent)) = Buffered::start("block").await else {
        return;
    };
    setup.wait_for_a_full_disk().await;
    let asked = Instant::now();
    // shutdown_timeout_secs is 3: well within 15 s, or the writer ignored the signal.
    let status = tokio::task::block_in_place(|| agent.terminate(Duration::from_secs(15)));
    eprintln!(
        "stopped {:.1?} after SIGTERM on a full disk ({status})",
        asked.elapsed()
    );
    setup.receiver.set_mode(Mode::Accept);
    let mut agent = setup.agent();
    let counts = setup
        .delivered(TOTAL, "every line delivered after the restart")
        .await;
    tokio::task::block_in_place(|| agent.terminate(Duration::from_secs(30)));
    assert_eq!(counts.len(), TOTAL, "nothing lost");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("{duplicates} duplicates after the stop on a full disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_on_a_full_disk_drops_exactly_what_it_counts() {
    let Some((setup, mut agent)) = Buffered::start("drop_newest").await else {
        return;
    };
    wait_until_async(WAIT, "the whole input read (kept or dropped)", || {
        setup.metric("component_received_events_total", "component_id=\"logs\"") >= TOTAL as f64
    })
    .await;
    let dropped = setup.metric("component_discarded_events_total", "reason=\"buffer_full\"");
    assert!(dropped > 0.0, "the full disk dropped something");
    setup.receiver.set_mode(Mode::Accept);
    let kept = TOTAL - dropped as usize;
    let counts = setup.delivered(kept, "every kept line delivered").await;
    tokio::task::block_in_place(|| agent.terminate(Duration::from_secs(30)));
    assert_eq!(
        counts.len() + dropped as usize,
        TOTAL,
        "delivered + counted drops = input"
    );
    assert!(counts.values().all(|c| *c == 1), "nothing repeated");
}

#[test]
fn the_file_sink_on_a_full_disk_retries_without_tearing_a_line() {
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.log");
    let out = tmpfs.path().join("out.log");
    let api = free_port();
    let filler = fill(tmpfs.path());
    let config = format!(
        r#"
data_dir: {data}
api:
  enabled: true
  address: 127.0.0.1:{api}
sources:
  logs:
    type: file
    include: ["{input}"]
    glob_interval_ms: 100
    poll_interval_ms: 50
sinks:
  out:
    type: file
    inputs: [logs]
    path: {out}
    encoding:
      codec: text
    batch:
      max_events: 100
      timeout_secs: 0.05
"#,
        data = dir.path().join("data").display(),
        input = input.display(),
        out = out.display(),
    );
    write_lines(&input, 0..5000, 80);
    let mut agent = Agent::start(dir.path(), &config);
    common::wait_until(WAIT, "a write to fail for want of space", || {
        metric(api, "component_errors_total", "error_type=\"write_failed\"") >= 1.0
    });
    std::fs::remove_file(filler).unwrap();
    let expected: Vec<String> = (0..5000)
        .map(|i| format!("event {i:07} {}", "d".repeat(80)))
        .collect();
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    common::wait_until(WAIT, "every line written once space is back", || {
        lines().len() >= expected.len()
    });
    assert!(agent.terminate(Duration::from_secs(30)).success());
    assert_eq!(lines(), expected, "every line once, whole, in order");
}
