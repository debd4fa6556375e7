//! stdin -> remap/filter/route -> file and console sinks, run as a real `sluice` process fed
//! through a pipe. Checks exact outputs, that bad input is counted not fatal, and that the
//! agent drains and exits 0 at end of input.

use crate::common;
use crate::common::Agent;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

fn run_with_input(dir: &std::path::Path, config: &str, input: &[u8]) -> (Agent, String) {
    let mut agent = Agent::start_with(dir, config, Stdio::piped(), Stdio::piped());
    let mut stdin = agent.child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let stdout = agent.read_stdout();
    let status = agent.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        agent.stderr()
    );
    (agent, stdout)
}

#[test]
fn remap_and_route_split_events_into_files_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = format!(
        r#"
data_dir: {data}
sources:
  in:
    type: stdin
    decoding:
      codec: json
transforms:
  shape:
    type: remap
    inputs: [in]
    source: |
      .level = downcase(string!(.level))
      .n = to_int!(.n) * 10
      del(.secret)
  split:
    type: route
    inputs: [shape]
    route:
      errors: .level == "error"
      big: (to_int(.n) ?? 0) >= 50
sinks:
  errors:
    type: file
    inputs: [split.errors]
    path: {out}/errors.ndjson
  per_level:
    type: file
    inputs: [split._unmatched, split.big]
    path: "{out}/{{{{ level }}}}.log"
    encoding:
      codec: ndjson
"#,
        data = dir.path().join("data").display(),
        out = out.display()
    );
    let mut input = String::new();
    for n in 0..10 {
        let level = if n % 3 == 0 { "ERROR" } else { "Info" };
        input.push_str(&format!(
            "{{\"n\":{n},\"level\":\"{level}\",\"secret\":\"s{n}\"}}\n"
        ));
    }
    let (_agent, _) = run_with_input(dir.path(), &config, input.as_bytes());

    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let errors = read("errors.ndjson");
    let ns: Vec<i64> = errors.iter().map(|e| e["n"].as_i64().unwrap()).collect();
    assert_eq!(
        ns,
        vec![0, 30, 60, 90],
        "order is preserved within a stream"
    );
    assert!(errors
        .iter()
        .all(|e| e.get("secret").is_none() && e["level"] == "error"));

    // n*10 >= 50 goes to `big` too; errors with n >= 5 (60, 90) are in both outputs.
    let mut info: Vec<i64> = read("info.log")
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    info.sort();
    assert_eq!(info, vec![10, 20, 40, 50, 70, 80]);
    let big_errors: Vec<i64> = read("error.log")
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(big_errors, vec![60, 90]);
}

#[test]
fn invalid_json_and_utf8_are_counted_and_passed_raw_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\n      on_error: pass_raw\nsinks:\n  out:\n    type: console\n    inputs: [in]\n";
    let input = b"{\"ok\":1}\nnot json\n{\"bad\":\"\xff\"}\n{\"ok\":2}\n";
    let (agent, stdout) = run_with_input(dir.path(), config, input);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], r#"{"ok":1}"#);
    assert_eq!(lines[1], r#"{"message":"not json"}"#);
    assert_eq!(
        lines[2], "{\"message\":\"{\\\"bad\\\":\\\"\u{fffd}\\\"}\"}",
        "raw bytes kept, shown lossily"
    );
    assert_eq!(lines[3], r#"{"ok":2}"#);
    assert_eq!(
        agent.stderr().matches("cannot decode frame").count(),
        2,
        "{}",
        agent.stderr()
    );

    let dir = tempfile::tempdir().unwrap();
    let dropping = config.replace("pass_raw", "drop");
    let (agent, stdout) = run_with_input(dir.path(), &dropping, input);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![r#"{"ok":1}"#, r#"{"ok":2}"#]
    );
    // Dropped frames are never silent: one warning at the first, naming the component, the
    // reason and an example; the second, moments later, is only counted (rate limit).
    let stderr = agent.stderr();
    let warnings = common::discard_warnings(&stderr);
    assert_eq!(warnings.len(), 1, "{stderr}");
    for part in ["component_id=in", "reason=\"decode_failed\"", "not json"] {
        assert!(warnings[0].contains(part), "no `{part}` in {}", warnings[0]);
    }
}

#[test]
fn a_window_that_discards_events_without_a_time_says_so_once_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\ntransforms:\n  per_minute:\n    type: window\n    inputs: [in]\n    kind: tumbling\n    size_secs: 60\n    time_field: time\n    aggregations:\n      requests: {op: count}\nsinks:\n  out:\n    type: console\n    inputs: [per_minute]\n";
    let input: String = (0..2000)
        .map(|i| format!("{{\"path\":\"/{i}\"}}\n"))
        .collect();
    let (agent, stdout) = run_with_input(dir.path(), config, input.as_bytes());
    assert_eq!(stdout, "", "no event had a time, so no window closed");
    let stderr = agent.stderr();
    let warnings = common::discard_warnings(&stderr);
    assert_eq!(warnings.len(), 1, "{stderr}");
    for part in [
        "component_id=per_minute",
        "reason=\"invalid_event_time\"",
        "time_field time is missing",
    ] {
        assert!(warnings[0].contains(part), "no `{part}` in {}", warnings[0]);
    }
}

#[test]
fn oversize_lines_are_truncated_and_text_codec_writes_raw_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  in:\n    type: stdin\n    max_line_bytes: 8\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding:\n      codec: text\n";
    let (_, stdout) = run_with_input(dir.path(), config, b"short\n0123456789abcdef\ntail");
    assert_eq!(
        stdout, "short\n01234567\ntail\n",
        "a last line without newline still counts"
    );
}

#[test]
fn filter_keeps_only_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  in:\n    type: stdin\ntransforms:\n  f:\n    type: filter\n    inputs: [in]\n    condition: starts_with(string!(.message), \"keep\")\nsinks:\n  out:\n    type: console\n    inputs: [f]\n    encoding:\n      codec: text\n";
    let (_, stdout) = run_with_input(dir.path(), config, b"keep 1\ndrop 2\nkeep 3\n");
    assert_eq!(stdout, "keep 1\nkeep 3\n");
}

/// A remap of the text plan's shape feeding JSON writers runs on the text (fields in the
/// input's order, the set field last), as do its edits after a `json`-decoding source; an
/// event the plan cannot take runs the program (keys sorted), and invalid JSON is the
/// program's error, dropped and counted.
#[test]
fn remaps_that_only_set_and_delete_fields_write_the_text_they_were_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  in:\n    type: stdin\ntransforms:\n  parse:\n    type: remap\n    inputs: [in]\n    drop_on_error: true\n    source: '. = parse_json!(.message); .p = \"x\"; del(.t)'\nsinks:\n  out:\n    type: console\n    inputs: [parse]\n    encoding:\n      codec: ndjson\n";
    let input = "{\"z\":1, \"t\":\"gone\",\"a\":\"b\"}\nnot json\n{\"z\":-0,\"t\":2,\"a\":3}\n";
    let (agent, stdout) = run_with_input(dir.path(), config, input.as_bytes());
    assert_eq!(
        stdout,
        // `-0` is VRL's float -0.0: that event was built, and is written sorted.
        "{\"z\":1,\"a\":\"b\",\"p\":\"x\"}\n{\"a\":3,\"p\":\"x\",\"z\":-0.0}\n",
        "stderr:\n{}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("reason=\"remap_failed\" events=1"),
        "the invalid line is counted: {}",
        agent.stderr()
    );
    let config = "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\ntransforms:\n  edit:\n    type: remap\n    inputs: [in]\n    source: '.p = 1; del(.t)'\nsinks:\n  out:\n    type: console\n    inputs: [edit]\n    encoding:\n      codec: ndjson\n";
    let input = "{\"z\":1,\"t\":2,\"a\":3}\n";
    let (_, stdout) = run_with_input(dir.path(), config, input.as_bytes());
    assert_eq!(stdout, "{\"z\":1,\"a\":3,\"p\":1}\n");
}

#[test]
fn many_events_pass_in_order_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.log");
    let config = format!("sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {}\n    encoding:\n      codec: text\n    compression: gzip\n", out.display());
    let input: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    run_with_input(dir.path(), &config, input.as_bytes());
    let mut text = String::new();
    use std::io::Read;
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&out).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(
        text, input,
        "every line, in order, through a gzip file written batch by batch"
    );
}

#[test]
fn the_file_sink_rotates_by_size_and_renders_strftime_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = format!(
        "sources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: \"{}/%Y/{{{{ app }}}}.log.zst\"\n    compression: zstd\n    encoding:\n      codec: text\n    rotate:\n      max_bytes: 60\n    batch:\n      max_events: 10\n",
        out.display()
    );
    let input: String = (0..100).map(|i| format!("{{\"app\":\"web\",\"timestamp\":\"2031-02-03T04:05:06Z\",\"message\":\"event {i}\"}}\n")).collect();
    run_with_input(dir.path(), &config, input.as_bytes());
    let year_dir = out.join("2031");
    let mut files: Vec<_> = std::fs::read_dir(&year_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "rotated into several files: {files:?}");
    assert!(
        files.iter().all(|f| f.to_string_lossy().ends_with(".zst")),
        "{files:?}"
    );
    // Rotated files sort by their timestamp suffix; the live file (`web.log.zst`) is newest.
    let live = year_dir.join("web.log.zst");
    files.retain(|f| *f != live);
    files.push(live);
    let mut text = String::new();
    for file in &files {
        text.push_str(
            &String::from_utf8(zstd::decode_all(std::fs::File::open(file).unwrap()).unwrap())
                .unwrap(),
        );
    }
    let want: String = (0..100).map(|i| format!("event {i}\n")).collect();
    assert_eq!(
        text, want,
        "every event once, in order, across rotated files"
    );
}

#[test]
fn the_demo_source_generates_count_events_then_the_agent_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = "sources:\n  gen:\n    type: demo\n    format: syslog\n    interval_secs: 0\n    count: 2500\n    seed: 7\nsinks:\n  out:\n    type: console\n    inputs: [gen]\n    encoding:\n      codec: text\n";
    let mut agent = Agent::start_with(dir.path(), config, Stdio::null(), Stdio::piped());
    let stdout = agent.read_stdout();
    assert!(agent.wait(Duration::from_secs(30)).success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2500);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('<') && l.contains(" returned ")),
        "{}",
        lines[0]
    );
}

#[test]
fn the_built_in_default_config_runs_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::sluice()
        .arg("run")
        .current_dir(dir.path())
        .env(
            "SLUICE_API_ADDRESS",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(
        event["status"].is_i64() && event.get("client_ip").is_none(),
        "parsed by remap: {first}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// The `schema` transform end to end: a schema file with a `$ref` to a second file, every
/// tenth line breaking it; valid events reach one file, invalid ones the quarantine file with
/// their violations, and /metrics counts both and each violated rule.
#[test]
fn schema_contract_splits_valid_from_quarantined_and_counts_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("status.json"),
        r#"{"type": "integer", "minimum": 100, "maximum": 599}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("event.json"),
        r#"{"type": "object", "required": ["id", "status"],
            "properties": {"id": {"type": "integer"}, "status": {"$ref": "status.json"}}}"#,
    )
    .unwrap();
    let api = common::free_port();
    let config = format!(
        "data_dir: {dir}/data\napi: {{enabled: true, address: 127.0.0.1:{api}}}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\ntransforms:\n  contract:\n    type: schema\n    inputs: [in]\n    json_schema_file: {dir}/event.json\nsinks:\n  good:\n    type: file\n    inputs: [contract]\n    path: {dir}/good.ndjson\n  bad:\n    type: file\n    inputs: [contract.invalid]\n    path: {dir}/bad.ndjson\n",
        dir = dir.path().display()
    );
    let mut agent = Agent::start_with(dir.path(), &config, Stdio::piped(), Stdio::null());
    let mut input = String::new();
    for id in 0..1000 {
        let status = if id % 10 == 0 { 700 } else { 200 };
        input.push_str(&format!("{{\"id\":{id},\"status\":{status}}}\n"));
    }
    let mut stdin = agent.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let lines = |name: &str| {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    common::wait_until(Duration::from_secs(30), "both files written", || {
        lines("good.ndjson").len() == 900 && lines("bad.ndjson").len() == 100
    });
    for event in lines("bad.ndjson") {
        assert_eq!(event["id"].as_u64().unwrap() % 10, 0, "{event}");
        assert_eq!(
            event["_invalid"],
            serde_json::json!([{"path": "/status", "rule": "maximum",
                "schema_path": "/properties/status/$ref",
                "reason": "700 is greater than the maximum of 599"}]),
        );
    }
    assert!(lines("good.ndjson")
        .iter()
        .all(|e| e["id"].as_u64().unwrap() % 10 != 0 && e.get("_invalid").is_none()));
    assert_eq!(
        common::metric(api, "data_quality_events_total", "result=\"invalid\""),
        100.0
    );
    assert_eq!(
        common::metric(api, "data_quality_events_total", "result=\"valid\""),
        900.0
    );
    assert_eq!(
        common::metric(api, "data_quality_violations_total", "rule=\"maximum\""),
        100.0
    );
    drop(stdin);
    assert!(agent.wait(Duration::from_secs(30)).success());
}
