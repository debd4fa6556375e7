//! The `postgres` sink against a real PostgreSQL server started by each test (initdb + pg_ctl
//! on 127.0.0.1, see `common/postgres.rs`), with `sluice` running as a child process. The
//! exactly-once tests read from Kafka: librdkafka's mock cluster in this process, or a real
//! `tansu` broker process (one record per record batch, see tests/suite/kafka_delivery.rs for why).
//! Every check reads the table back with SQL: counts, contents, no duplicates.

use crate::common::{kafka_broker, pki, postgres};

use crate::common::{free_port, metric, sluice, wait_until, Agent};
use kafka_broker::{produce_one_per_batch, Broker, SteadyProducer};
use postgres::Postgres;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

/// stdin (JSON lines) → a postgres sink `warehouse` writing to `endpoint`; `rest` goes on with
/// the sink's fields (and may add more sinks after them).
fn stdin_config(dir: &Path, endpoint: &str, rest: &str) -> String {
    format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\nsinks:\n  warehouse:\n    type: postgres\n    inputs: [in]\n    endpoint: \"{endpoint}\"\n{rest}",
        dir.join("data").display()
    )
}

/// `sluice validate` (with its environment checks: connecting, reading the catalog) on
/// `config`: whether it passed, and what it printed.
fn validate(dir: &Path, config: &str) -> (bool, String) {
    let path = dir.join("check.yaml");
    std::fs::write(&path, config).unwrap();
    let output = sluice().arg("validate").arg(&path).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn rows_equal_the_input_with_types_converted_and_misfits_dead_lettered() {
    let Some(pg) = Postgres::start() else { return };
    pg.execute(
        "CREATE TABLE requests (id bigint NOT NULL, service text, status integer, \
         latency_ms double precision, price numeric(12,3), ok boolean, at timestamptz, \
         attributes jsonb, request_id uuid, raw jsonb)",
    );
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let config = stdin_config(
        dir.path(),
        &pg.url(),
        &format!(
            r#"    table: public.requests
    columns:
      id: id
      service: service
      status: status
      latency_ms: latency_ms
      price: price
      ok: ok
      at: at
      attributes: .attributes
      request_id: request_id
      raw: .
    batch: {{max_events: 500, timeout_secs: 0.2}}
  misfits:
    type: file
    inputs: [warehouse.dead_letter]
    path: {}
"#,
            dead.display()
        ),
    );
    let total = 3000u64;
    let mut input = String::new();
    let mut bad = Vec::new();
    for id in 0..total {
        // Numbers arrive as numbers or as text, booleans as text, times as RFC 3339 or seconds.
        let status = if id % 2 == 0 {
            format!("{}", 200 + id % 3)
        } else {
            format!("\"{}\"", 200 + id % 3)
        };
        let at = if id % 2 == 0 {
            format!("\"2026-12-01T10:00:{:02}Z\"", id % 60)
        } else {
            format!("{}", 1_796_119_200 + id % 60)
        };
        let status = if id % 1000 == 7 {
            bad.push(id);
            "\"two hundred\"".to_string()
        } else {
            status
        };
        input.push_str(&format!(
            r#"{{"id":{id},"service":"svc-{s}","status":{status},"latency_ms":{id}.5,"price":"{id}.125","ok":"{ok}","at":{at},"attributes":{{"n":{id},"tags":["a","b"]}},"request_id":"00000000-0000-4000-8000-{id:012}"}}"#,
            s = id % 4,
            ok = id % 2 == 0
        ));
        input.push('\n');
    }
    Agent::run_stdin(dir.path(), &config, &input);

    let good = total - bad.len() as u64;
    assert_eq!(pg.scalar("SELECT count(*) FROM requests"), good as i64);
    assert_eq!(
        pg.scalar("SELECT count(DISTINCT id) FROM requests"),
        good as i64
    );
    let rows = pg.query(
        "SELECT id, service, status, latency_ms, price, ok, \
         to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'), attributes->>'n', \
         attributes->'tags'->>1, request_id, raw->>'service' FROM requests ORDER BY id",
    );
    let mut expected_ids = (0..total).filter(|id| !bad.contains(id));
    for row in &rows {
        let id = expected_ids.next().unwrap();
        let text = |i: usize| row[i].clone().unwrap_or_default();
        assert_eq!(text(0), id.to_string());
        assert_eq!(text(1), format!("svc-{}", id % 4));
        assert_eq!(text(2), (200 + id % 3).to_string(), "status of {id}");
        assert_eq!(text(3), format!("{id}.5"));
        assert_eq!(text(4), format!("{id}.125"));
        assert_eq!(text(5), if id % 2 == 0 { "t" } else { "f" });
        assert_eq!(
            text(6),
            format!("2026-12-01T10:00:{:02}", id % 60),
            "time of {id}"
        );
        assert_eq!(text(7), id.to_string());
        assert_eq!(text(8), "b");
        assert_eq!(text(9), format!("00000000-0000-4000-8000-{id:012}"));
        assert_eq!(
            text(10),
            format!("svc-{}", id % 4),
            "the whole event in `raw`"
        );
    }
    // Each misfit is in the dead-letter file with the column and the reason.
    let dead = std::fs::read_to_string(&dead).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dead_ids: Vec<u64> = dead.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(dead_ids, bad);
    for event in &dead {
        let reason = event["_dead_letter"]["reason"].as_str().unwrap();
        assert_eq!(
            reason,
            "column `status` (int4): `two hundred` is not an integer"
        );
        assert_eq!(event["_dead_letter"]["sink"], "warehouse");
    }
}

#[test]
fn upsert_keeps_the_last_version_of_each_key() {
    let Some(pg) = Postgres::start() else { return };
    pg.execute("CREATE TABLE latest (key text PRIMARY KEY, version integer NOT NULL, note text)");
    let dir = tempfile::tempdir().unwrap();
    let config = stdin_config(
        dir.path(),
        &pg.url(),
        "    table: latest\n    columns: {key: key, version: version, note: note}\n    mode: upsert\n    key: [key]\n    batch: {max_events: 64, timeout_secs: 0.2}\n",
    );
    // 100 keys, versions 0..=9 in order; a batch holds several versions of one key and a key's
    // versions span batches.
    let mut input = String::new();
    for version in 0..10 {
        for key in 0..100 {
            input.push_str(&format!(
                "{{\"key\":\"k{key}\",\"version\":{version},\"note\":\"v{version} of k{key}\"}}\n"
            ));
            if key % 7 == 0 && version < 9 {
                // The same key again right away, with the same version: still one row.
                input.push_str(&format!(
                    "{{\"key\":\"k{key}\",\"version\":{version},\"note\":\"v{version} of k{key}\"}}\n"
                ));
            }
        }
    }
    Agent::run_stdin(dir.path(), &config, &input);
    assert_eq!(pg.scalar("SELECT count(*) FROM latest"), 100);
    assert_eq!(
        pg.scalar("SELECT count(*) FROM latest WHERE version = 9"),
        100
    );
    let rows = pg.query("SELECT key, note FROM latest ORDER BY key");
    for row in rows {
        let key = row[0].clone().unwrap();
        assert_eq!(row[1].clone().unwrap(), format!("v9 of {key}"));
    }
}

#[test]
fn validate_names_a_missing_table_a_missing_column_and_a_path_that_cannot_be_exactly_once() {
    let Some(pg) = Postgres::start() else { return };
    pg.execute("CREATE TABLE present (id bigint, point point)");
    let dir = tempfile::tempdir().unwrap();
    let validate = |table: &str, columns: &str, extra: &str| {
        let rest = format!("    table: {table}\n    columns: {columns}\n{extra}");
        validate(dir.path(), &stdin_config(dir.path(), &pg.url(), &rest))
    };
    let (ok, stderr) = validate("present", "{id: id}", "    exactly_once: true\n");
    assert!(
        !ok && stderr.contains("sinks.warehouse.exactly_once")
            && stderr.contains(
                "the path starts at `in`, a stdin source; exactly-once needs a kafka source"
            ),
        "{stderr}"
    );
    let (ok, stderr) = validate(
        "present",
        "{id: id}",
        "    mode: upsert\n    key: [id]\n    pool_size: 2\n",
    );
    assert!(
        !ok && stderr.contains("sinks.warehouse.pool_size")
            && stderr.contains("upsert with more than one connection needs exactly_once"),
        "{stderr}"
    );
    let (ok, stderr) = validate(
        "present",
        "{id: id}",
        "    tls: {verify_certificate: false}\n",
    );
    assert!(
        !ok && stderr.contains("sinks.warehouse.tls.verify_certificate"),
        "{stderr}"
    );
    let validate_env = |table: &str, columns: &str| validate(table, columns, "");
    let (ok, stderr) = validate_env("public.nope", "{id: id}");
    assert!(
        !ok && stderr
            .contains("sinks.warehouse: healthcheck failed: table `public.nope` does not exist"),
        "{stderr}"
    );
    let (ok, stderr) = validate_env("present", "{id: id, name: name}");
    assert!(
        !ok && stderr.contains("table `present` has no column `name`"),
        "{stderr}"
    );
    let (ok, stderr) = validate_env("present", "{point: point}");
    assert!(
        !ok && stderr
            .contains("column `point` of `present` has type point, which the sink does not write"),
        "{stderr}"
    );
    let (ok, stderr) = validate_env("present", "{id: id}");
    assert!(ok, "{stderr}");
}

#[test]
fn tls_to_a_server_that_accepts_only_tls() {
    let certs = tempfile::tempdir().unwrap();
    let ca = pki::Pki::ca(certs.path(), "ca");
    pki::Pki::leaf(certs.path(), "server", &ca);
    pki::Pki::ca(certs.path(), "other-ca");
    let Some(pg) = Postgres::start_tls_only(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    ) else {
        return;
    };
    pg.execute("CREATE TABLE lines (n bigint)");
    let dir = tempfile::tempdir().unwrap();
    let config = |sslmode: &str, ca: &str| {
        let rest = format!(
            "    table: lines\n    columns: {{n: n}}\n    tls: {{ca_file: {}}}\n",
            certs.path().join(format!("{ca}.crt")).display()
        );
        stdin_config(
            dir.path(),
            &format!("{}?sslmode={sslmode}", pg.url()),
            &rest,
        )
    };
    let validate = |text: String| validate(dir.path(), &text);
    let (ok, stderr) = validate(config("disable", "ca"));
    assert!(!ok && stderr.contains("no encryption"), "{stderr}");
    let (ok, stderr) = validate(config("require", "other-ca"));
    assert!(
        !ok && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    let (ok, stderr) = validate(config("require", "ca"));
    assert!(ok, "{stderr}");
    let input: String = (0..500).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    Agent::run_stdin(dir.path(), &config("require", "ca"), &input);
    assert_eq!(pg.scalar("SELECT count(DISTINCT n) FROM lines"), 500);
}

/// Produces `{"id": i}` for each i, one record per record batch, spread over the partitions.
fn produce(servers: &str, topic: &str, ids: std::ops::Range<u64>) {
    produce_one_per_batch(servers, topic, ids.map(|id| format!("{{\"id\":{id}}}")));
}

/// kafka → remap → postgres with exactly-once, the api on `api`.
fn exactly_once_config(
    dir: &Path,
    servers: &str,
    url: &str,
    api: u16,
    batch: usize,
    pool_size: usize,
) -> String {
    format!(
        r#"
data_dir: {data}
shutdown_timeout_secs: 10
api:
  enabled: true
  address: 127.0.0.1:{api}
sources:
  in:
    type: kafka
    bootstrap_servers: {servers}
    topics: [events]
    group_id: loaders
    auto_offset_reset: earliest
    session_timeout_ms: 6000
    commit_interval_ms: 500
    decoding: {{codec: json}}
transforms:
  shape:
    type: remap
    inputs: [in]
    source: |
      .source = "kafka:" + to_string!(.partition) + ":" + to_string!(.offset)
sinks:
  warehouse:
    type: postgres
    inputs: [shape]
    endpoint: {url}
    table: events
    columns: {{id: id, source: source}}
    exactly_once: true
    pool_size: {pool_size}
    batch: {{max_events: {batch}, timeout_secs: 0.1}}
    request: {{retry_initial_backoff_ms: 50, retry_max_backoff_secs: 1}}
  misfits:
    type: file
    inputs: [warehouse.dead_letter]
    path: {dead}
"#,
        dead = dir.join("dead.ndjson").display(),
        data = dir.join("data").display(),
    )
}

/// How many rows each id has in the table.
fn id_counts(pg: &Postgres) -> BTreeMap<u64, i64> {
    pg.query("SELECT id, count(*) FROM events GROUP BY id")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap().parse().unwrap(),
                r[1].clone().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn assert_each_once(pg: &Postgres, total: u64) {
    let counts = id_counts(pg);
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<u64> = (0..total).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        doubled.is_empty() && missing.is_empty() && counts.len() as u64 == total,
        "{} ids doubled (first: {:?}), {} missing (first: {:?}), {} rows",
        doubled.len(),
        doubled.first(),
        missing.len(),
        missing.first(),
        counts.values().sum::<i64>()
    );
}

fn rows(pg: &Postgres) -> i64 {
    pg.scalar("SELECT count(*) FROM events")
}

/// The stored offsets sum to the messages per partition once everything is in.
fn offsets_cover(pg: &Postgres, total: u64) -> bool {
    pg.scalar("SELECT coalesce(sum(next_offset), 0) FROM sluice_offsets WHERE sink = 'warehouse'")
        == total as i64
}

#[test]
fn connections_killed_mid_batch_are_retried_without_a_row_lost_or_doubled() {
    let Some(pg) = Postgres::start() else { return };
    let Some(mut broker) = Broker::mock() else {
        return;
    };
    pg.execute("CREATE TABLE events (id bigint NOT NULL, source text NOT NULL)");
    broker.create_topic("events", 4);
    let total = 20_000u64;
    produce(&broker.servers(), "events", 0..total);
    // Misfits among them: their dead letters are delivered before the offsets past them commit.
    let bad = 25;
    produce_one_per_batch(
        &broker.servers(),
        "events",
        (0..bad).map(|n| format!("{{\"id\":\"bad-{n}\"}}")),
    );
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let agent = Agent::start(
        dir.path(),
        &exactly_once_config(dir.path(), &broker.servers(), &pg.url(), api, 200, 3),
    );
    // Three connections write at once (each partition keeps to one); cut them again and
    // again while the agent loads.
    let mut terminated = 0;
    let mut most_at_once = 0;
    let deadline = Instant::now() + WAIT;
    while rows(&pg) < total as i64 && Instant::now() < deadline {
        let cut = pg.terminate_agent_connections();
        most_at_once = most_at_once.max(cut);
        terminated += cut;
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_until(WAIT, "every message in the table", || {
        rows(&pg) >= total as i64
    });
    wait_until(
        WAIT,
        "the offsets table at the end of every partition",
        || offsets_cover(&pg, total + bad as u64),
    );
    assert!(
        most_at_once >= 2,
        "the pool's writers hold their own connections: at most {most_at_once} at once"
    );
    assert!(
        terminated >= 5,
        "only {terminated} connections were cut: the test did not test"
    );
    assert!(
        metric(api, "component_errors_total", "request_failed") >= 1.0,
        "the cut connections show as failed requests"
    );
    assert_each_once(&pg, total);
    // Each row came from the message of its own partition and offset, once.
    assert_eq!(
        pg.scalar("SELECT count(DISTINCT source) FROM events"),
        total as i64
    );
    drop(agent);
}

/// Members killed with -9 at random points (two agents in one group, so partitions also move
/// between live members), against a real broker: every message is in the table exactly once.
#[test]
fn agents_killed_at_random_while_loading_leave_every_message_exactly_once() {
    let Some(pg) = Postgres::start() else { return };
    let Some(mut broker) = Broker::tansu() else {
        return;
    };
    pg.execute("CREATE TABLE events (id bigint NOT NULL, source text NOT NULL)");
    broker.create_topic("events", 4);
    let servers = broker.servers();
    // Producing until the kills are done, so that they all land while rows are being loaded,
    // however fast that goes.
    let producer = SteadyProducer::start(&servers, "events", 200, Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let start = |n: usize| {
        let dir = dir.path().join(format!("agent{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        Agent::start(
            &dir,
            &exactly_once_config(&dir, &servers, &pg.url(), free_port(), 50, 2),
        )
    };
    let mut agents = [start(0), start(1)];
    let mut seed = 0x5eed_u64;
    let rounds = std::env::var("SLUICE_PG_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for round in 0..rounds {
        // Once loading has moved on since the last kill, at a random moment within 400 ms.
        let before = rows(&pg);
        wait_until(WAIT, "rows being loaded", || rows(&pg) >= before + 300);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 400));
        let victim = (seed >> 20) as usize % 2;
        agents[victim].kill9();
        eprintln!("round {round}: killed agent {victim} at {} rows", rows(&pg));
        kafka_broker::wait_out_killed_session();
        agents[victim] = start(victim);
    }
    let total = producer.finish();
    wait_until(
        Duration::from_secs(180),
        "every message in the table",
        || rows(&pg) >= total as i64,
    );
    wait_until(
        WAIT,
        "the offsets table at the end of every partition",
        || offsets_cover(&pg, total),
    );
    assert_each_once(&pg, total);
    assert_eq!(
        pg.scalar("SELECT count(DISTINCT source) FROM events"),
        total as i64
    );
}
