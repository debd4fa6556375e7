//! The file source against real files on disk, run as a real `sluice` process writing to a
//! file sink: tailing, rotation by rename and by truncation, checkpoints across restarts, and
//! a clean SIGTERM mid-stream with no loss and no duplicates, and more files than the process
//! may hold open.

use crate::common::{wait_until, Agent};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, include: &str) -> String {
    format!(
        r#"
data_dir: {data}
shutdown_timeout_secs: 20
sources:
  logs:
    type: file
    include: ["{include}"]
    glob_interval_ms: 100
    poll_interval_ms: 50
    checkpoint_interval_ms: 100
sinks:
  out:
    type: file
    inputs: [logs]
    path: {out}
    encoding:
      codec: text
    batch:
      timeout_secs: 0.05
"#,
        data = dir.join("data").display(),
        out = dir.join("out.log").display()
    )
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = lines.into_iter().map(|l| l + "\n").collect();
    file.write_all(text.as_bytes()).unwrap();
}

fn output(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("out.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix} line {i:06} {}", "x".repeat(40)))
        .collect()
}

#[test]
fn tails_lines_appended_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines("a", 0..100));
    let agent = Agent::start(dir.path(), &config(dir.path(), &log.display().to_string()));
    wait_until(WAIT, "first 100 lines", || output(dir.path()).len() == 100);
    append(&log, lines("a", 100..250));
    wait_until(WAIT, "250 lines", || output(dir.path()).len() >= 250);
    assert_eq!(
        output(dir.path()),
        lines("a", 0..250),
        "stderr:\n{}",
        agent.stderr()
    );
}

#[test]
fn follows_rotation_by_rename_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines("first", 0..500));
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &log.display().to_string()));
    wait_until(WAIT, "first file read", || output(dir.path()).len() == 500);
    // More lines land in the old file just before it is renamed away.
    append(&log, lines("first", 500..600));
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, lines("second", 0..300));
    wait_until(WAIT, "both files read", || output(dir.path()).len() >= 900);
    assert!(agent.terminate(WAIT).success());
    let mut got = output(dir.path());
    got.sort();
    let mut want = [lines("first", 0..600), lines("second", 0..300)].concat();
    want.sort();
    assert_eq!(got, want, "stderr:\n{}", agent.stderr());
}

#[test]
fn restarts_from_the_start_after_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines("old", 0..200));
    let agent = Agent::start(dir.path(), &config(dir.path(), &log.display().to_string()));
    wait_until(WAIT, "old lines", || output(dir.path()).len() == 200);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, lines("new", 0..50));
    wait_until(WAIT, "new lines after truncation", || {
        output(dir.path()).len() >= 250
    });
    assert_eq!(
        output(dir.path()),
        [lines("old", 0..200), lines("new", 0..50)].concat(),
        "stderr:\n{}",
        agent.stderr()
    );
}

/// With one descriptor for two files, each file is closed while the other is read; a file
/// truncated while closed is noticed at the next scan and read again from its start (a closed
/// file waiting only when it grew missed this: checked).
#[test]
fn a_file_truncated_while_closed_restarts_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    append(&a, lines("a-old", 0..200));
    append(&b, lines("b-old", 0..200));
    let include = logs.join("*.log").display().to_string();
    let config = config(dir.path(), &include).replace(
        "    checkpoint_interval_ms: 100\n",
        "    checkpoint_interval_ms: 100\n    max_open_files: 1\n",
    );
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "old lines of both files", || {
        output(dir.path()).len() == 400
    });
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&a)
        .unwrap();
    append(&a, lines("a-new", 0..50));
    wait_until(WAIT, "new lines after truncation", || {
        output(dir.path()).len() >= 450
    });
    assert!(agent.terminate(WAIT).success());
    let mut got = output(dir.path());
    got.sort();
    let mut expected = [
        lines("a-old", 0..200),
        lines("b-old", 0..200),
        lines("a-new", 0..50),
    ]
    .concat();
    expected.sort();
    assert_eq!(got, expected, "stderr:\n{}", agent.stderr());
}

#[test]
fn a_restart_neither_rereads_nor_skips() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, lines("a", 0..300));
    let cfg = config(dir.path(), &log.display().to_string());
    let mut agent = Agent::start(dir.path(), &cfg);
    wait_until(WAIT, "300 lines", || output(dir.path()).len() == 300);
    assert!(agent.terminate(WAIT).success());
    append(&log, lines("a", 300..450)); // written while the agent is down
    let mut agent = Agent::start(dir.path(), &cfg);
    wait_until(WAIT, "450 lines", || output(dir.path()).len() >= 450);
    assert!(agent.terminate(WAIT).success());
    assert_eq!(
        output(dir.path()),
        lines("a", 0..450),
        "stderr:\n{}",
        agent.stderr()
    );
}

#[test]
fn sigterm_mid_stream_then_restart_delivers_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    let total = 400_000;
    append(&log, lines("big", 0..total));
    let cfg = config(dir.path(), &log.display().to_string());
    let mut agent = Agent::start(dir.path(), &cfg);
    wait_until(WAIT, "some lines delivered", || {
        !output(dir.path()).is_empty()
    });
    let status = agent.terminate(WAIT);
    assert!(status.success(), "clean exit; stderr:\n{}", agent.stderr());
    let after_stop = output(dir.path()).len();
    let mut agent = Agent::start(dir.path(), &cfg);
    wait_until(Duration::from_secs(60), "all lines", || {
        output(dir.path()).len() >= total
    });
    assert!(agent.terminate(WAIT).success());
    let got = output(dir.path());
    assert_eq!(
        got.len(),
        total,
        "no duplicates (stopped after {after_stop})"
    );
    assert!(got == lines("big", 0..total), "every line once, in order");
    eprintln!("stopped after {after_stop} of {total} lines; resumed without loss or duplicates");
}

#[test]
fn files_matching_a_glob_are_discovered_and_excludes_apply() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    append(&logs.join("one.log"), lines("one", 0..10));
    append(&logs.join("skip.log"), lines("skip", 0..10));
    let mut cfg = config(dir.path(), &format!("{}/*.log", logs.display()));
    cfg = cfg.replace(
        "    glob_interval_ms: 100",
        &format!(
            "    exclude: [\"{}/skip*\"]\n    glob_interval_ms: 100",
            logs.display()
        ),
    );
    let agent = Agent::start(dir.path(), &cfg);
    wait_until(WAIT, "one.log", || output(dir.path()).len() == 10);
    append(&logs.join("two.log"), lines("two", 0..10)); // appears later
    wait_until(WAIT, "two.log", || output(dir.path()).len() >= 20);
    let mut got = output(dir.path());
    got.sort();
    assert_eq!(
        got,
        [lines("one", 0..10), lines("two", 0..10)].concat(),
        "stderr:\n{}",
        agent.stderr()
    );
}

#[test]
fn a_large_backlog_logs_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.log");
    let line = format!("{}\n", "z".repeat(199));
    std::fs::write(&input, line.repeat(150_000)).unwrap(); // 30 MB
    let config = config(dir.path(), &input.display().to_string()).replace(
        "    checkpoint_interval_ms: 100\n",
        "    checkpoint_interval_ms: 100\n    progress_interval_secs: 0.05\n",
    );
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(Duration::from_secs(120), "the whole backlog", || {
        std::fs::metadata(dir.path().join("out.log")).map_or(0, |m| m.len()) >= 30_000_000
    });
    assert!(agent.terminate(Duration::from_secs(30)).success());
    let stderr = agent.stderr();
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("catching up:"))
        .collect();
    assert!(!progress.is_empty(), "{stderr}");
    assert!(
        progress[0].contains("MiB left in 1 files"),
        "{}",
        progress[0]
    );
}

/// A DaemonSet node's log directory: 3,000 files under one glob while the agent may hold only
/// 1,024 descriptors. Before the file source bounded its descriptors (`max_open_files`), files
/// it could not open were retried from scratch and others re-read: after 45 s only about a
/// third of the lines had arrived, some of them 20 times. Now every line arrives exactly once.
#[test]
fn more_files_than_descriptors_are_each_read_exactly_once() {
    const FILES: usize = 3000;
    const LINES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut expected = Vec::new();
    for file in 0..FILES {
        let lines: Vec<String> = (0..LINES)
            .map(|line| format!("file {file:04} line {line:02} {}", "x".repeat(40)))
            .collect();
        append(&logs.join(format!("pod-{file:04}.log")), lines.clone());
        expected.extend(lines);
    }
    let include = logs.join("*.log");
    let started = std::time::Instant::now();
    let mut agent = Agent::start_with_open_file_limit(
        dir.path(),
        &config(dir.path(), &include.display().to_string()),
        1024,
    );
    wait_until(Duration::from_secs(120), "every line of every file", || {
        output(dir.path()).len() >= FILES * LINES
    });
    let took = started.elapsed();
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    let mut got = output(dir.path());
    got.sort();
    expected.sort();
    let duplicates = got.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(duplicates, 0, "no line twice");
    assert_eq!(got, expected, "every line once");
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("Too many open files"),
        "the source stays under the descriptor limit:\n{}",
        &stderr[..stderr.len().min(4000)]
    );
    eprintln!("{FILES} files x {LINES} lines under a 1024-descriptor limit: {took:.1?}");
}
