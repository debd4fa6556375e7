//! Config reload of the real binary: SIGHUP (and `--watch-config`) with a valid config drains
//! the running topology and starts the new one, losing and repeating nothing; an invalid one
//! is logged and the old topology keeps running. Real files on disk.

use crate::common;
use crate::common::{wait_until, Agent};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, version: u32) -> String {
    format!(
        "data_dir: {data}\nsources:\n  in:\n    type: file\n    include: [{input}]\n    read_from: beginning\ntransforms:\n  tag:\n    type: remap\n    inputs: [in]\n    source: |\n      .version = {version}\n      del(.file)\nsinks:\n  out:\n    type: file\n    inputs: [tag]\n    path: {out}\n    batch:\n      timeout_secs: 0.05\n",
        data = dir.join("data").display(),
        input = dir.join("in.log").display(),
        out = dir.join("out.ndjson").display()
    )
}

fn append(dir: &Path, range: std::ops::Range<usize>) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("in.log"))
        .unwrap();
    for i in range {
        writeln!(file, "line {i}").unwrap();
    }
}

/// (line number, version) of every output event, in order.
fn output(dir: &Path) -> Vec<(usize, i64)> {
    std::fs::read_to_string(dir.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let n = v["message"].as_str().unwrap()[5..].parse().unwrap();
            (n, v["version"].as_i64().unwrap())
        })
        .collect()
}

fn hup(agent: &Agent) {
    unsafe {
        libc::kill(agent.child.id() as i32, libc::SIGHUP);
    }
}

#[test]
fn sighup_swaps_in_a_valid_config_and_keeps_running_on_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), 0..100);
    let mut agent = Agent::start(dir.path(), &config(dir.path(), 1));
    wait_until(WAIT, "100 lines", || output(dir.path()).len() == 100);

    std::fs::write(dir.path().join("sluice.yaml"), config(dir.path(), 2)).unwrap();
    hup(&agent);
    wait_until(WAIT, "the reload", || {
        agent.stderr().contains("config reloaded")
    });
    append(dir.path(), 100..200);
    wait_until(WAIT, "200 lines", || output(dir.path()).len() >= 200);

    // A broken config: logged with its error, and the running topology carries on.
    std::fs::write(
        dir.path().join("sluice.yaml"),
        config(dir.path(), 3).replace("type: remap", "type: remapp"),
    )
    .unwrap();
    hup(&agent);
    wait_until(WAIT, "the refusal", || {
        agent
            .stderr()
            .contains("the new config is invalid; still running the current one")
    });
    assert!(
        agent.stderr().contains("did you mean `remap`"),
        "{}",
        agent.stderr()
    );
    append(dir.path(), 200..300);
    wait_until(WAIT, "300 lines", || output(dir.path()).len() >= 300);
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());

    let lines = output(dir.path());
    let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..300).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(lines[..100].iter().all(|(_, v)| *v == 1));
    assert!(
        lines[100..].iter().all(|(_, v)| *v == 2),
        "the invalid config never ran"
    );
}

#[test]
fn watch_config_reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), 0..10);
    std::fs::write(dir.path().join("sluice.yaml"), config(dir.path(), 1)).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = common::sluice()
        .args(["run", "--watch-config", "--config"])
        .arg(dir.path().join("sluice.yaml"))
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_until(WAIT, "10 lines", || output(dir.path()).len() == 10);
    std::fs::write(dir.path().join("sluice.yaml"), config(dir.path(), 2)).unwrap();
    // Modification times are coarse on some filesystems: make sure the new one differs.
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("sluice.yaml"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    wait_until(WAIT, "the reload", || log().contains("config reloaded"));
    append(dir.path(), 10..20);
    wait_until(WAIT, "20 lines", || output(dir.path()).len() >= 20);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let lines = output(dir.path());
    assert_eq!(lines.len(), 20);
    assert!(lines[10..].iter().all(|(_, v)| *v == 2));
}

/// Line numbers of a file sink's output, in order.
fn numbers(path: &Path) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["message"].as_str().unwrap()[5..].parse().unwrap()
        })
        .collect()
}

fn reloads(agent: &Agent) -> usize {
    agent.stderr().matches("config reloaded").count()
}

/// Writes `config` over the agent's config file, sends SIGHUP, waits for reload number `n` and
/// checks the log says what it kept, rebuilt, added and removed.
fn reload(agent: &Agent, config: &str, n: usize, summary: &str) {
    let dir = agent.stderr_path.parent().unwrap();
    std::fs::write(dir.join("sluice.yaml"), config).unwrap();
    hup(agent);
    wait_until(WAIT, "the reload", || reloads(agent) == n);
    let log = agent.stderr();
    assert!(log.contains(summary), "expected `{summary}` in:\n{log}");
}

/// `in` (file) -> `dedupe` -> the given file sinks, `(id, output file name)`.
fn dedupe_config(dir: &Path, sinks: &[(&str, &str)]) -> String {
    let mut text = format!(
        "data_dir: {data}\nsources:\n  in:\n    type: file\n    include: [{input}]\n    read_from: beginning\ntransforms:\n  dedupe:\n    type: dedupe\n    inputs: [in]\n    fields: [message]\nsinks:\n",
        data = dir.join("data").display(),
        input = dir.join("in.log").display(),
    );
    for (id, file) in sinks {
        text += &format!(
            "  {id}:\n    type: file\n    inputs: [dedupe]\n    path: {}\n    batch:\n      timeout_secs: 0.05\n",
            dir.join(file).display()
        );
    }
    text
}

#[test]
fn unchanged_components_keep_their_state_while_sinks_are_added_changed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    append(dir.path(), 0..50);
    let mut agent = Agent::start(dir.path(), &dedupe_config(dir.path(), &[("a", "a.ndjson")]));
    wait_until(WAIT, "50 lines in a", || {
        numbers(&path("a.ndjson")).len() == 50
    });

    // Add sink b. The dedupe keeps running: lines it has seen stay dropped.
    reload(
        &agent,
        &dedupe_config(dir.path(), &[("a", "a.ndjson"), ("b", "b.ndjson")]),
        1,
        r#"kept=["in", "dedupe", "a"] rebuilt=[] added=["b"] removed=[]"#,
    );
    append(dir.path(), 0..80);
    wait_until(WAIT, "80 lines in a, 30 in b", || {
        numbers(&path("a.ndjson")).len() >= 80 && numbers(&path("b.ndjson")).len() >= 30
    });

    // Remove a and point b at another file: a drains first, b is rebuilt.
    reload(
        &agent,
        &dedupe_config(dir.path(), &[("b", "c.ndjson")]),
        2,
        r#"kept=["in", "dedupe"] rebuilt=["b"] added=[] removed=["a"]"#,
    );
    append(dir.path(), 0..100);
    wait_until(WAIT, "20 lines in c", || {
        numbers(&path("c.ndjson")).len() >= 20
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());

    assert_eq!(
        numbers(&path("a.ndjson")),
        (0..80).collect::<Vec<_>>(),
        "a saw every distinct line once: the dedupe remembered across the reload"
    );
    assert_eq!(numbers(&path("b.ndjson")), (50..80).collect::<Vec<_>>());
    assert_eq!(numbers(&path("c.ndjson")), (80..100).collect::<Vec<_>>());
}

#[test]
fn a_sink_rebuilt_under_steady_input_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink_config = |timeout: f64| {
        format!(
            "data_dir: {data}\nsources:\n  in:\n    type: file\n    include: [{input}]\n    read_from: beginning\n    poll_interval_ms: 2\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n    batch:\n      timeout_secs: {timeout}\n",
            data = dir.path().join("data").display(),
            input = dir.path().join("in.log").display(),
            out = dir.path().join("out.ndjson").display()
        )
    };
    append(dir.path(), 0..1);
    let mut agent = Agent::start(dir.path(), &sink_config(0.05));
    wait_until(WAIT, "the first line", || {
        numbers(&dir.path().join("out.ndjson")).len() == 1
    });
    const TOTAL: usize = 3000;
    let writer = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for start in (1..TOTAL).step_by(10) {
                append(&dir, start..(start + 10).min(TOTAL));
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Rebuild the sink three times while lines keep coming.
    for (n, timeout) in [0.06, 0.07, 0.05].into_iter().enumerate() {
        reload(
            &agent,
            &sink_config(timeout),
            n + 1,
            r#"kept=["in"] rebuilt=["out"]"#,
        );
    }
    writer.join().unwrap();
    wait_until(WAIT, "every line", || {
        numbers(&dir.path().join("out.ndjson")).len() >= TOTAL
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    assert_eq!(
        numbers(&dir.path().join("out.ndjson")),
        (0..TOTAL).collect::<Vec<_>>(),
        "every line once, in order, across three sink rebuilds"
    );
}

#[test]
fn a_replaced_sink_that_cannot_drain_restarts_everything_without_marking_its_events_done() {
    // An endpoint that accepts connections and never answers: the http sink delivers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let config = |sinks: &str| {
        format!(
            "data_dir: {data}\nshutdown_timeout_secs: 1\nsources:\n  in:\n    type: file\n    include: [{input}]\n    read_from: beginning\nsinks:\n  a:\n    type: file\n    inputs: [in]\n    path: {a}\n    batch:\n      timeout_secs: 0.05\n{sinks}",
            data = path("data").display(),
            input = path("in.log").display(),
            a = path("a.ndjson").display(),
        )
    };
    append(dir.path(), 0..50);
    let mut agent = Agent::start(
        dir.path(),
        &config(&format!(
            "  stuck:\n    type: http\n    inputs: [in]\n    uri: http://127.0.0.1:{port}/\n    batch:\n      timeout_secs: 0.05\n"
        )),
    );
    wait_until(WAIT, "50 lines in a", || {
        numbers(&path("a.ndjson")).len() >= 50
    });

    // Replace the stuck sink by a file sink. The stuck one cannot drain within the 1 s
    // deadline; aborting it alone would count its events as delivered and let the source
    // checkpoint past them. Instead everything restarts from the acknowledged positions,
    // so the 50 lines, which `stuck` never acknowledged, are read again and reach `b`.
    reload(
        &agent,
        &config(&format!(
            "  b:\n    type: file\n    inputs: [in]\n    path: {}\n",
            path("b.ndjson").display()
        )),
        1,
        "restarted=true",
    );
    assert!(agent
        .stderr()
        .contains("did not drain within shutdown_timeout_secs"));
    wait_until(WAIT, "the 50 lines in b", || {
        numbers(&path("b.ndjson")).len() >= 50
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    assert_eq!(numbers(&path("b.ndjson")), (0..50).collect::<Vec<_>>());
    let a = numbers(&path("a.ndjson"));
    assert!(
        (0..50).all(|n| a.contains(&n)),
        "a has every line (twice, at least once)"
    );
    drop(silent);
}
