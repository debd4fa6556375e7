//! Stopping: a real `sluice` process (file source -> http sink) and a real HTTP receiver on
//! 127.0.0.1 (axum, in this test), stopped with SIGINT as a user's Ctrl-C would.

use crate::common::{free_port, metric, wait_until, Agent, Mode, Receiver};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, uri: &str, api_port: u16) -> String {
    format!(
        r#"
data_dir: {data}
# Far longer than the test waits: only the second signal can end the drain in time.
shutdown_timeout_secs: 300
api:
  enabled: true
  address: 127.0.0.1:{api_port}
sources:
  logs:
    type: file
    include: ["{include}"]
    glob_interval_ms: 100
    poll_interval_ms: 50
    checkpoint_interval_ms: 100
sinks:
  out:
    type: http
    inputs: [logs]
    uri: {uri}
    batch:
      max_events: 10
      timeout_secs: 0.05
    request:
      retry_initial_backoff_ms: 20
      retry_max_backoff_secs: 0.2
"#,
        data = dir.join("data").display(),
        include = dir.join("in.log").display(),
    )
}

fn append(path: &Path, range: std::ops::Range<usize>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = range.map(|i| format!("line {i:04}\n")).collect();
    file.write_all(text.as_bytes()).unwrap();
}

fn interrupt(agent: &Agent) {
    unsafe {
        libc::kill(agent.child.id() as i32, libc::SIGINT);
    }
}

/// The first Ctrl-C drains (here it cannot: the endpoint answers 503), says a second one stops
/// at once; the second stops within seconds, exit 130, keeping the positions of what was
/// acknowledged and no more: a restart sends the unacknowledged lines and repeats none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_at_once_keeping_only_acknowledged_positions() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let api_port = free_port();
    let config = config(dir.path(), &receiver.uri(), api_port);
    let input = dir.path().join("in.log");
    tokio::task::block_in_place(|| {
        append(&input, 0..50);
        let mut agent = Agent::start(dir.path(), &config);
        wait_until(WAIT, "the first 50 lines delivered", || {
            receiver.count() >= 50
        });

        receiver.set_mode(Mode::Unavailable);
        append(&input, 50..100);
        wait_until(WAIT, "the source to read all 100 lines", || {
            metric(
                api_port,
                "component_received_events_total",
                "component_id=\"logs\"",
            ) >= 100.0
        });
        interrupt(&agent);
        wait_until(WAIT, "the first SIGINT to be logged", || {
            agent.stderr().contains("a second Ctrl-C stops at once")
        });
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "the first SIGINT drains; the agent must still run while the sink cannot deliver"
        );
        interrupt(&agent);
        let status = agent.wait(Duration::from_secs(15));
        assert_eq!(
            status.code(),
            Some(130),
            "exit status {status:?} (signal {:?}); stderr:\n{}",
            status.signal(),
            agent.stderr()
        );
        assert!(agent.stderr().contains("sluice stopped at once"));

        receiver.set_mode(Mode::Accept);
        let mut agent = Agent::start(dir.path(), &config);
        wait_until(WAIT, "all 100 lines delivered after the restart", || {
            receiver.count() >= 100
        });
        agent.terminate(WAIT);
    });
    let numbers: Vec<usize> = receiver
        .lines()
        .iter()
        .map(|line| {
            let at = line.find("line ").expect("a line of the input") + 5;
            line[at..at + 4].parse().unwrap()
        })
        .collect();
    let distinct: BTreeSet<usize> = numbers.iter().copied().collect();
    assert_eq!(distinct, (0..100).collect(), "every line arrives");
    assert_eq!(numbers.len(), 100, "no line arrives twice");
}
