//! The `examples/access_log_windows.yaml` pipeline run for real: a `sluice` process tails a
//! generated access log (file source), aggregates per minute and status, and writes NDJSON.
//! Counts, sums and distinct clients must match exactly; percentiles within DDSketch's 1%.

use crate::common::{wait_until, Agent};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Per (minute, status): count, byte sum, latencies, distinct clients.
type Expected = (i64, i64, Vec<f64>, std::collections::BTreeSet<i64>);

/// The quantile DDSketch approximates: the value at rank floor(q * (n - 1)) of the sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64) as usize;
    sorted[rank]
}

/// The text of `examples/<name>` with its data directory under `dir`, its api on a free port,
/// and each `${VAR:-default}` of `paths` replaced by a path.
fn example(name: &str, dir: &Path, paths: &[(&str, &Path)]) -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut text = std::fs::read_to_string(examples.join(name)).unwrap();
    text = text
        .replace(
            "${SLUICE_DATA_DIR:-./sluice-data}",
            &dir.join("data").display().to_string(),
        )
        .replace(
            "${SLUICE_API_ADDRESS:-127.0.0.1:8686}",
            &format!("127.0.0.1:{}", crate::common::free_port()),
        );
    for (variable, path) in paths {
        text = text.replace(variable, &path.display().to_string());
    }
    text
}

#[test]
fn access_logs_become_exact_per_minute_status_counts_with_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let out = dir.path().join("out");
    // Three minutes of traffic, slightly out of order, plus one line far too late.
    let base = 1_735_689_600i64; // 2025-01-01T00:00:00Z
    let mut lines = Vec::new();
    let mut expected: BTreeMap<(i64, i64), Expected> = BTreeMap::new();
    for i in 0..3000i64 {
        let second = i * 180 / 3000; // spread over 180 s
        let jitter = if i % 7 == 0 { -3 } else { 0 }; // within max_out_of_orderness
        let time = base + second + jitter;
        let status = [200, 200, 200, 404, 500][(i % 5) as usize];
        let latency = 1.0 + ((i * 37) % 1000) as f64 / 10.0;
        let bytes = 100 + i % 50;
        let client = i % 23;
        let ts = chrono::DateTime::from_timestamp(time, 0)
            .unwrap()
            .to_rfc3339();
        lines.push(format!("{{\"timestamp\":\"{ts}\",\"status\":{status},\"latency_ms\":{latency},\"bytes\":{bytes},\"client_ip\":\"10.0.0.{client}\"}}"));
        let entry = expected
            .entry((time.div_euclid(60) * 60, status))
            .or_insert((0, 0, Vec::new(), Default::default()));
        entry.0 += 1;
        entry.1 += bytes;
        entry.2.push(latency);
        entry.3.insert(client);
    }
    lines.push(format!(
        "{{\"timestamp\":\"{}\",\"status\":200,\"latency_ms\":1,\"bytes\":1,\"client_ip\":\"x\"}}",
        chrono::DateTime::from_timestamp(base, 0)
            .unwrap()
            .to_rfc3339()
    ));
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    let config = example(
        "access_log_windows.yaml",
        dir.path(),
        &[
            ("${ACCESS_LOG:-/var/log/nginx/access.json}", &log),
            ("${OUT_DIR:-./out}", &out),
        ],
    );
    let mut agent = Agent::start(dir.path(), &config);
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // The first two minutes close while the log is read; the late line goes to late.ndjson.
    wait_until(
        Duration::from_secs(30),
        "two closed minutes and the late line",
        || read("status-per-minute.ndjson").len() >= 6 && read("late.ndjson").len() == 1,
    );
    // SIGTERM flushes the last, still open minute.
    assert!(
        agent.terminate(Duration::from_secs(30)).success(),
        "{}",
        agent.stderr()
    );

    let rows = read("status-per-minute.ndjson");
    assert_eq!(
        rows.len(),
        expected.len(),
        "one row per minute and status: {rows:#?}"
    );
    for row in &rows {
        assert!(
            row.get("window_update").is_none(),
            "no line was within lateness but after its window"
        );
        let start = chrono::DateTime::parse_from_rfc3339(row["window_start"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let status = row["status"].as_i64().unwrap();
        let (count, bytes, latencies, clients) = &expected[&(start, status)];
        assert_eq!(row["requests"].as_i64().unwrap(), *count, "{row}");
        assert_eq!(row["bytes"].as_i64().unwrap(), *bytes, "{row}");
        assert_eq!(
            row["clients"].as_i64().unwrap(),
            clients.len() as i64,
            "{row}"
        );
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        for (field, q) in [("p50_ms", 0.5), ("p99_ms", 0.99)] {
            let got = row[field].as_f64().unwrap();
            let want = quantile(&sorted, q);
            assert!(
                (got - want).abs() <= want * 0.011,
                "{field}: {got} vs {want} in {row}"
            );
        }
        let end = chrono::DateTime::parse_from_rfc3339(row["window_end"].as_str().unwrap())
            .unwrap()
            .timestamp();
        assert_eq!(end - start, 60);
    }
    let late = read("late.ndjson");
    assert_eq!(late[0]["client_ip"], "x");
}

/// `examples/demo_access_log.yaml` writes what `access_log_windows.yaml` reads: every line has
/// an RFC 3339 `timestamp`, an integer `status` and `bytes`, a numeric `latency_ms` and a
/// `client_ip`, so the windows example runs without a web server.
#[test]
fn the_demo_access_log_example_writes_the_fields_the_windows_example_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let config = example(
        "demo_access_log.yaml",
        dir.path(),
        &[("${ACCESS_LOG:-./access.json}", &log)],
    );
    let mut agent = Agent::start(dir.path(), &config);
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    wait_until(Duration::from_secs(30), "20 access-log lines", || {
        lines().len() >= 20
    });
    assert!(agent.terminate(Duration::from_secs(30)).success());
    for line in lines() {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let timestamp = event["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{line}"
        );
        assert!(event["status"].is_u64(), "{line}");
        assert!(event["bytes"].is_u64(), "{line}");
        assert!(event["latency_ms"].is_number(), "{line}");
        assert!(event["client_ip"].is_string(), "{line}");
    }
}
