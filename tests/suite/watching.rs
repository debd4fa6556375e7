//! `sluice top` and `sluice tap` against a running agent's api on 127.0.0.1 (real HTTP).

use crate::common::{free_port, sluice, wait_for_port, Agent};
use std::time::Duration;

#[test]
fn top_shows_every_component_with_its_live_rates() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = format!(
        "data_dir: {}\napi:\n  enabled: true\n  address: 127.0.0.1:{api}\nsources:\n  gen:\n    type: demo\n    interval_secs: 0.001\ntransforms:\n  keep:\n    type: filter\n    inputs: [gen]\n    condition: 'true'\nsinks:\n  drain:\n    type: blackhole\n    inputs: [keep]\n",
        dir.path().join("data").display()
    );
    let mut agent = Agent::start(dir.path(), &config);
    wait_for_port(api);
    let out = sluice()
        .args([
            "top",
            "--api",
            &format!("127.0.0.1:{api}"),
            "--interval",
            "0.5",
            "--iterations",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last table: one row per component, and events flowing through all three.
    let last = stdout.trim_end().rsplit("component ").next().unwrap();
    for (id, kind) in [("gen", "demo"), ("keep", "filter"), ("drain", "blackhole")] {
        let row = last
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}: {stdout}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], kind, "{row}");
        let flowing = if id == "gen" { cells[3] } else { cells[2] };
        assert_ne!(flowing, "0", "events flow through {id}: {row}");
    }
    assert!(agent.terminate(Duration::from_secs(30)).success());

    // No agent there: a clear error, not a hang.
    let out = sluice()
        .args([
            "top",
            "--api",
            &format!("127.0.0.1:{}", free_port()),
            "--iterations",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the api"));
}

#[test]
fn tap_prints_a_live_sample_of_a_components_events() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = format!(
        "data_dir: {}\napi:\n  enabled: true\n  address: 127.0.0.1:{api}\nsources:\n  gen:\n    type: demo\n    format: json\n    interval_secs: 0.01\ntransforms:\n  parse:\n    type: remap\n    inputs: [gen]\n    source: |\n      . = parse_json!(.message)\n      .tapped = true\nsinks:\n  drain:\n    type: blackhole\n    inputs: [parse]\n",
        dir.path().join("data").display()
    );
    let mut agent = Agent::start(dir.path(), &config);
    wait_for_port(api);
    let out = sluice()
        .args([
            "tap",
            "parse",
            "--api",
            &format!("127.0.0.1:{api}"),
            "--limit",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|e| e["tapped"] == true && e["status"].is_i64()));

    let out = sluice()
        .args([
            "tap",
            "nope",
            "--api",
            &format!("127.0.0.1:{api}"),
            "--limit",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no component `nope`; components: gen, parse, drain"),
        "{stderr}"
    );
    assert!(agent.terminate(Duration::from_secs(30)).success());
}
