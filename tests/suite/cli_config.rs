//! The command line against config files on disk: validation messages, exit codes, graph
//! output. Talks to nothing but the `sluice` binary.

use crate::common;
use crate::common::sluice;
use std::path::Path;

fn validate(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = sluice()
        .args(["validate", "--no-environment"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const GOOD: &str =
    "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n";

#[test]
fn a_valid_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = validate(dir.path(), "ok.yaml", GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("1 sources, 0 transforms, 1 sinks"),
        "{stdout}"
    );
}

#[test]
fn a_misspelt_type_names_the_component_line_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\n  logs:\n    type: fiel\n    include: [/tmp/x]\nsinks:\n  out:\n    type: console\n    inputs: [in]\n";
    let (code, _, stderr) = validate(dir.path(), "typo.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "typo.yaml:5: sources.logs.type: unknown component type `fiel` (did you mean `file`?)"
        ),
        "{stderr}"
    );
}

#[test]
fn an_unknown_field_names_the_field_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encodng:\n      codec: json\n";
    let (code, _, stderr) = validate(dir.path(), "field.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("field.yaml:8: sinks.out.encodng: unknown field `encodng`"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_value_type_names_the_nested_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: http\n    inputs: [in]\n    uri: http://127.0.0.1:1/\n    batch:\n      max_events: lots\n";
    let (code, _, stderr) = validate(dir.path(), "value.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("value.yaml:10: sinks.out.batch.max_events: invalid type"),
        "{stderr}"
    );
}

#[test]
fn every_error_is_reported_in_one_run_and_missing_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: file\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding:\n      codec: yaml\n";
    let (code, _, stderr) = validate(dir.path(), "two.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("two.yaml:2: sources.in: missing field `include`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("two.yaml:9: sinks.out.encoding.codec: unknown variant `yaml`"),
        "{stderr}"
    );
    assert!(stderr.contains("configuration has 2 errors"), "{stderr}");
    let text =
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [inn]\n";
    let (_, _, stderr) = validate(dir.path(), "input.yaml", text);
    assert!(
        stderr.contains(
            "input.yaml:7: sinks.out.inputs: input `inn` does not exist (did you mean `in`?)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_cycle_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\ntransforms:\n  a:\n    type: remap\n    inputs: [in, b]\n    source: '.x = 1'\n  b:\n    type: remap\n    inputs: [a]\n    source: '.y = 1'\nsinks:\n  out:\n    type: console\n    inputs: [b]\n";
    let (code, _, stderr) = validate(dir.path(), "cycle.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("cycle in the topology: a -> b -> a"),
        "{stderr}"
    );
}

#[test]
fn invalid_yaml_reports_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = validate(
        dir.path(),
        "bad.yaml",
        "sources:\n  in:\n    type: stdin\n   bad: [\n",
    );
    assert_eq!(code, 78);
    assert!(stderr.contains("bad.yaml:4:"), "{stderr}");
}

#[test]
fn an_unset_environment_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: http_server\n    address: ${SLUICE_TEST_SURELY_UNSET}\nsinks:\n  out:\n    type: console\n    inputs: [in]\n";
    let (code, _, stderr) = validate(dir.path(), "env.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("env.yaml:4: environment variable `SLUICE_TEST_SURELY_UNSET` is not set"),
        "{stderr}"
    );
}

#[test]
fn environment_defaults_and_escapes_apply() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: http_server\n    address: ${SLUICE_TEST_SURELY_UNSET:-127.0.0.1:9}\ntransforms:\n  t:\n    type: remap\n    inputs: [in]\n    source: '.cost = \"$$5\"'\nsinks:\n  out:\n    type: console\n    inputs: [t]\n";
    let (code, _, stderr) = validate(dir.path(), "defaults.yaml", text);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_vrl_error_shows_the_component_and_vrl_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\ntransforms:\n  parse:\n    type: remap\n    inputs: [in]\n    source: '. = parse_json(.message'\nsinks:\n  out:\n    type: console\n    inputs: [parse]\n";
    let (code, _, stderr) = validate(dir.path(), "vrl.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("vrl.yaml:8: transforms.parse.source: VRL program does not compile"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[E"),
        "VRL's own diagnostic code: {stderr}"
    );
}

#[test]
fn route_outputs_are_addressed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\ntransforms:\n  r:\n    type: route\n    inputs: [in]\n    route:\n      errors: '.level == \"error\"'\nsinks:\n  bad:\n    type: console\n    inputs: [r]\n";
    let (code, _, stderr) = validate(dir.path(), "route.yaml", text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("input `r` has no default output; use one of `r.errors`, `r._unmatched`"),
        "{stderr}"
    );
}

#[test]
fn a_sinks_dead_letter_output_can_be_read_but_a_sink_itself_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: http\n    inputs: [in]\n    uri: http://127.0.0.1:9/\n  dlq:\n    type: console\n    inputs: [out.dead_letter]\n";
    let (code, _, stderr) = validate(dir.path(), "dlq.yaml", text);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = validate(
        dir.path(),
        "sink.yaml",
        &text.replace("[out.dead_letter]", "[out]"),
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("input `out` is a sink; its only output is `out.dead_letter`"),
        "{stderr}"
    );
    let cycle = "sources:\n  in:\n    type: stdin\ntransforms:\n  t:\n    type: remap\n    inputs: [in, out.dead_letter]\n    source: '.x = 1'\nsinks:\n  out:\n    type: console\n    inputs: [t]\n";
    let (code, _, stderr) = validate(dir.path(), "loop.yaml", cycle);
    assert_eq!(code, 78);
    assert!(stderr.contains("cycle in the topology"), "{stderr}");
}

#[test]
fn several_files_and_directories_merge_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("a.yaml"),
        "sources:\n  app_one:\n    type: stdin\n  app_two:\n    type: demo\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("b.yaml"),
        "sinks:\n  out:\n    type: blackhole\n    inputs: ['app_*']\n",
    )
    .unwrap();
    let out = sluice()
        .args(["validate", "--no-environment"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        conf.join("c.yaml"),
        "sources:\n  app_one:\n    type: stdin\n",
    )
    .unwrap();
    let out = sluice()
        .args(["validate", "--no-environment"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sources.app_one: defined twice"));
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, "sources:\n  in:\n    type: stdin\ntransforms:\n  r:\n    type: route\n    inputs: [in]\n    route:\n      errors: '.level == \"error\"'\nsinks:\n  out:\n    type: console\n    inputs: [r.errors]\n").unwrap();
    let dot = sluice().arg("graph").arg(&path).output().unwrap();
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph sluice {"), "{dot}");
    assert!(dot.contains("\"in\" -> \"r\";"), "{dot}");
    assert!(
        dot.contains("\"r\" -> \"out\" [label=\"errors\"];"),
        "{dot}"
    );
    let mermaid = sluice()
        .args(["graph", "--format", "mermaid"])
        .arg(&path)
        .output()
        .unwrap();
    let mermaid = String::from_utf8(mermaid.stdout).unwrap();
    assert!(mermaid.contains("r -->|errors| out"), "{mermaid}");
}

#[test]
fn version_and_help_work() {
    let out = sluice().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
    let out = sluice().arg("help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["run", "validate", "graph"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn validate_with_environment_checks_sink_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let text = format!("data_dir: {}\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: http\n    inputs: [in]\n    uri: http://127.0.0.1:{port}/\n", dir.path().join("data").display());
    let path = dir.path().join("env.yaml");
    std::fs::write(&path, text).unwrap();
    let out = sluice().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("sinks.out: healthcheck failed: cannot connect to 127.0.0.1"));
    let out = sluice()
        .args(["validate", "--no-environment"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn secrets_from_files_and_secret_env_vars_never_appear_in_errors_graph_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("api-password");
    std::fs::write(&secret_file, "Zq8-file-secret-77\n").unwrap();
    // The secret lands where an error quotes it (an unknown codec name).
    let text = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: console\n    inputs: [in]\n    encoding:\n      codec: \"${{file:{}}}\"\n",
        secret_file.display()
    );
    let (code, _, stderr) = validate(dir.path(), "leaky.yaml", &text);
    assert_eq!(code, 78);
    assert!(stderr.contains("codec: unknown variant `***`"), "{stderr}");
    assert!(!stderr.contains("Zq8-file-secret-77"), "{stderr}");

    // A missing secret file is a clear error.
    let (code, _, stderr) = validate(
        dir.path(),
        "missing.yaml",
        "sources:\n  in:\n    type: stdin\n    max_line_bytes: ${file:/nonexistent/secret}\nsinks:\n  out:\n    type: console\n    inputs: [in]\n",
    );
    assert_eq!(code, 78);
    assert!(
        stderr.contains("missing.yaml:4: cannot read secret file `/nonexistent/secret`"),
        "{stderr}"
    );

    // At run time: an http sink whose URL carries a password from a secret env var (reqwest
    // already leaves it out of its errors; the log writer would redact it otherwise, see
    // config::secrets' unit test). `graph` shows no secret either.
    let port = common::free_port();
    let config = format!(
        "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: http\n    inputs: [in]\n    uri: \"http://shipper:${{SINK_PASSWORD}}@127.0.0.1:{port}/in\"\n    request:\n      retry_attempts: 2\n      retry_initial_backoff_ms: 10\n"
    );
    let path = dir.path().join("run.yaml");
    std::fs::write(&path, &config).unwrap();
    let graph = sluice()
        .args(["graph"])
        .arg(&path)
        .env("SINK_PASSWORD", "Env-Secret-4242")
        .output()
        .unwrap();
    assert!(graph.status.success());
    assert!(!String::from_utf8_lossy(&graph.stdout).contains("Env-Secret-4242"));
    let mut child = sluice()
        .args(["run", "--config"])
        .arg(&path)
        .env("SINK_PASSWORD", "Env-Secret-4242")
        .env("SLUICE_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("request failed; retrying"), "{log}");
    assert!(!log.contains("Env-Secret-4242"), "{log}");
}

fn sluice_test(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("tested.yaml");
    std::fs::write(&path, text).unwrap();
    let out = sluice().arg("test").arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every example with `tests:` passes them (`routing.yaml`, `orders_contract.yaml` for the
/// schema transform, `anomaly_alerts.yaml` for the anomaly transform).
#[test]
fn sluice_test_runs_the_example_tests() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut tested = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("\ntests:") {
            continue;
        }
        let out = sluice().arg("test").arg(&path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {stdout}", path.display());
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        tested.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    tested.sort();
    assert!(
        [
            "routing.yaml",
            "orders_contract.yaml",
            "anomaly_alerts.yaml"
        ]
        .iter()
        .all(|name| tested.contains(&name.to_string())),
        "{tested:?}"
    );
}

const TESTED: &str = "sources:\n  in:\n    type: stdin\ntransforms:\n  parse:\n    type: remap\n    inputs: [in]\n    source: |\n      . = parse_json!(.message)\n  per_service:\n    type: window\n    inputs: [parse]\n    kind: tumbling\n    size_secs: 60\n    group_by: [service]\n    aggregations:\n      requests: {op: count}\nsinks:\n  out:\n    type: console\n    inputs: [per_service]\n";

#[test]
fn sluice_test_reports_each_failed_expectation_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{TESTED}tests:\n  - name: counts per service\n    inputs:\n      - insert_at: parse\n        value: '{{\"service\": \"a\"}}'\n      - insert_at: parse\n        value: '{{\"service\": \"a\"}}'\n      - insert_at: parse\n        value: '{{\"service\": \"b\"}}'\n    outputs:\n      - extract_from: per_service\n        count: 2\n        conditions:\n          - '(.service == \"a\" && .requests == 2) || (.service == \"b\" && .requests == 1)'\n  - name: wrong on purpose\n    inputs:\n      - insert_at: parse\n        value: '{{\"service\": \"c\"}}'\n    outputs:\n      - extract_from: parse\n        count: 2\n        conditions:\n          - '.service == \"d\"'\n    no_outputs_from: [per_service]\n"
    );
    let (code, stdout, stderr) = sluice_test(dir.path(), &text);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("test counts per service ... passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("test wrong on purpose ... FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("parse: expected 2 events, got 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("parse: condition `.service == \"d\"` is false for {\"service\":\"c\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("per_service: expected no events, got 1"),
        "{stdout}"
    );
    assert!(stdout.contains("2 tests: 1 passed, 1 failed"), "{stdout}");
}

#[test]
fn sluice_test_names_a_wrong_test_field_as_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{TESTED}tests:\n  - name: typo\n    inputs:\n      - insert_at: prase\n        value: x\n"
    );
    // The test is on line 23 of the file (TESTED has 21 lines, then `tests:`).
    let (code, _, stderr) = sluice_test(dir.path(), &text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("tested.yaml:23: tests[0].inputs[0].insert_at: `prase` is not a transform"),
        "{stderr}"
    );
    let text = format!(
        "{TESTED}tests:\n  - name: fine\n    inputs: []\n    outputs: []\n  - name: typo\n    inputs: []\n    outputs:\n      - extract_fro: parse\n"
    );
    let (code, _, stderr) = sluice_test(dir.path(), &text);
    assert_eq!(code, 78);
    assert!(
        stderr.contains(
            "tested.yaml:26: tests[1].outputs[0].extract_fro: unknown field `extract_fro`"
        ),
        "{stderr}"
    );
}

/// Every file and directory under `root`, relative to it.
fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn validate_checks_directories_but_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
data_dir: ./state/agent
sources:
  in:
    type: stdin
sinks:
  logs:
    type: file
    inputs: [in]
    path: ./out/logs/%Y-%m-%d.log
  objects:
    type: aws_s3
    inputs: [in]
    bucket: archive
    local_directory: ./objects
  lake:
    type: iceberg
    inputs: [in]
    catalog:
      type: sql
      uri: sqlite://./lake/catalog/iceberg.db
    warehouse: ./lake/warehouse
    namespace: logs
    table: events
    create_table: true
    schema:
      - {name: message, type: string}
"#;
    std::fs::write(dir.path().join("sluice.yaml"), config).unwrap();
    let before = tree(dir.path());
    let out = sluice()
        .arg("validate")
        .arg("sluice.yaml")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(tree(dir.path()), before, "validate changed the file system");
    for note in [
        "ok: data_dir: ",
        "state/agent will be created at run time",
        "ok: sinks.logs: ",
        "out/logs will be created at run time",
        "objects/archive will be created at run time",
        "lake/warehouse will be created at run time",
        "the catalog ./lake/catalog/iceberg.db and table `logs.events` will be created at run time",
    ] {
        assert!(stdout.contains(note), "no `{note}` in:\n{stdout}");
    }

    // A directory that cannot be created is an error naming the field and the obstacle.
    std::fs::write(dir.path().join("state"), b"a file in the way").unwrap();
    let out = sluice()
        .arg("validate")
        .arg("sluice.yaml")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("data_dir: cannot create") && stderr.contains("state is not a directory"),
        "{stderr}"
    );
}

#[test]
fn one_run_reports_every_kind_of_error_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    // Line 1 a misspelt top-level key, line 10 a VRL error, line 14 a field error in a
    // component that others read from, line 19 a dangling input.
    let text = "\
shutdown_timeout_sec: 10
sources:
  in:
    type: stdin
transforms:
  parse:
    type: remap
    inputs: [in]
    source: |
      . = parse_json(.message
sinks:
  out:
    type: console
    encodng: {codec: json}
    inputs: [parse]
  copy:
    type: console
    encoding: {codec: json}
    inputs: [pars]
  after_out:
    type: console
    inputs: [out.dead_letter]
";
    let (code, _, stderr) = validate(dir.path(), "all.yaml", text);
    assert_eq!(code, 78, "{stderr}");
    let expected = [
        "all.yaml:1: shutdown_timeout_sec: unknown top-level field `shutdown_timeout_sec` (did you mean `shutdown_timeout_secs`?)",
        "all.yaml:9: transforms.parse.source: VRL program does not compile",
        "all.yaml:14: sinks.out.encodng: unknown field `encodng`",
        "all.yaml:19: sinks.copy.inputs: input `pars` does not exist (did you mean `parse`?)",
    ];
    let mut last = 0;
    for line in expected {
        let at = stderr
            .find(line)
            .unwrap_or_else(|| panic!("no `{line}` in:\n{stderr}"));
        assert!(at >= last, "out of file order at `{line}`:\n{stderr}");
        last = at;
    }
    assert!(
        stderr.starts_with("configuration has 4 errors:"),
        "reading from the unparsed `out` is not an error of its own:\n{stderr}"
    );
}
