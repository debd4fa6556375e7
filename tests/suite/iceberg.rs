//! The `iceberg` sink writing tables through a SQLite SQL catalog into a local warehouse or an
//! `s3://` warehouse on moto's S3 server (`common/moto.rs`), with `sluice` running as a child
//! process, and every table read back by pyiceberg (the Python reference client,
//! `common/pyiceberg.rs`). One test keeps the catalog in a real PostgreSQL server
//! (`common/postgres.rs`) behind a proxy that cuts it off. The exactly-once test reads from a real
//! `tansu` broker process (one record per record batch, see tests/suite/kafka_delivery.rs for why).

use crate::common::{kafka_broker, moto, postgres, proxy, pyiceberg};

use crate::common::{free_port, sluice, wait_until, Agent};
use kafka_broker::{Broker, SteadyProducer};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

/// The SQLite catalog of the tests' tables; its directory does not exist until the sink
/// creates it.
fn catalog(dir: &Path) -> std::path::PathBuf {
    dir.join("catalog").join("iceberg.db")
}

/// The columns most tests write.
const SCHEMA: &str = "      - {name: id, type: int64}\n      - {name: time, type: timestamp}\n      - {name: service, type: string}\n      - {name: status, type: int64}\n      - {name: latency_ms, type: float64}\n      - {name: ok, type: bool}\n      - {name: attributes, type: json}\n";

/// An iceberg sink `lake` writing `logs.events` under `dir`, with `schema` lines and `extra`
/// sink fields.
fn lake_yaml(dir: &Path, inputs: &str, schema: &str, extra: &str) -> String {
    format!(
        "\n  lake:\n    type: iceberg\n    inputs: [{inputs}]\n    catalog: {{type: sql, uri: \"sqlite://{}\"}}\n    warehouse: {}\n    namespace: logs\n    table: events\n    schema:\n{schema}{extra}",
        catalog(dir).display(),
        dir.join("warehouse").display(),
    )
}

fn sink_yaml(dir: &Path, inputs: &str, extra: &str) -> String {
    lake_yaml(dir, inputs, SCHEMA, extra)
}

fn line(id: u64) -> String {
    format!(
        r#"{{"id":{id},"time":"2026-12-0{day}T10:00:{sec:02}Z","service":"svc-{s}","status":{status},"latency_ms":{id}.25,"ok":{ok},"attributes":{{"n":{id}}}}}"#,
        day = 1 + id % 3,
        sec = id % 60,
        s = id % 4,
        status = 200 + id % 5,
        ok = id.is_multiple_of(2)
    )
}

fn ids(read: &pyiceberg::Read) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for row in read.rows() {
        *counts.entry(row[0].as_u64().unwrap()).or_default() += 1;
    }
    counts
}

fn assert_each_once(counts: &BTreeMap<u64, usize>, total: u64) {
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<u64> = (0..total).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        doubled.is_empty() && missing.is_empty(),
        "{} ids doubled (first {:?}), {} missing (first {:?})",
        doubled.len(),
        doubled.first(),
        missing.len(),
        missing.first()
    );
}

#[test]
fn every_row_arrives_typed_and_partitioned_and_pyiceberg_reads_it() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\nsinks:{}",
        dir.path().join("data").display(),
        sink_yaml(
            dir.path(),
            "in",
            "    partition_by:\n      - {field: time, transform: day}\n      - {field: service, transform: identity}\n    commit_interval_secs: 0.5\n"
        )
    );
    let total = 5000u64;
    let mut input = String::new();
    for id in 0..total {
        if id == 4321 {
            // A status that is not a number: null in its column, the row kept.
            input.push_str(r#"{"id":4321,"time":"2026-12-01T10:00:00Z","service":"svc-1","status":"lots","latency_ms":1.0,"ok":true,"attributes":{}}"#);
        } else {
            input.push_str(&line(id));
        }
        input.push('\n');
    }
    Agent::run_stdin(dir.path(), &config, &input);
    let read = pyiceberg::read(
        &python,
        &catalog(dir.path()),
        &dir.path().join("warehouse"),
        "logs.events",
        "",
        "service == 'svc-1'",
    );
    assert_each_once(&ids(&read), total);
    let mut rows = read.rows().clone();
    rows.sort_by_key(|r| r[0].as_u64().unwrap());
    for row in &rows {
        let id = row[0].as_u64().unwrap();
        if id == 4321 {
            assert!(row[3].is_null(), "a misfit is null: {row:?}");
            continue;
        }
        assert_eq!(
            row[1],
            format!("2026-12-0{}T10:00:{:02}+00:00", 1 + id % 3, id % 60)
        );
        assert_eq!(row[2], format!("svc-{}", id % 4));
        assert_eq!(row[3], 200 + id % 5);
        assert_eq!(row[4].as_f64().unwrap(), id as f64 + 0.25);
        assert_eq!(row[5], id.is_multiple_of(2));
        assert_eq!(row[6], format!("{{\"n\":{id}}}"));
    }
    assert_eq!(
        read.json["spec"],
        serde_json::json!([["time_day", "day"], ["service", "identity"]])
    );
    // Partition pruning: a filter on `service` plans only that service's files.
    assert_eq!(read.json["filtered_rows"], total / 4);
    let (filtered, all) = (
        read.json["filtered_files"].as_u64().unwrap(),
        read.json["all_files"].as_u64().unwrap(),
    );
    assert!(
        filtered * 4 <= all && filtered > 0,
        "{filtered} of {all} files planned"
    );
}

#[test]
fn two_agents_committing_to_one_table_both_succeed_and_lose_no_row() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let per_agent = 20_000u64;
    let mut agents = Vec::new();
    for n in 0..2 {
        let home = dir.path().join(format!("agent{n}"));
        std::fs::create_dir_all(&home).unwrap();
        let config = format!(
            "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\nsinks:{}",
            home.join("data").display(),
            sink_yaml(dir.path(), "in", "    commit_interval_secs: 0.05\n")
        );
        agents.push(Agent::start_with(
            &home,
            &config,
            Stdio::piped(),
            Stdio::null(),
        ));
    }
    // Both feed at once, in slices, so their frequent commits interleave.
    let mut inputs: Vec<_> = agents
        .iter_mut()
        .map(|a| a.child.stdin.take().unwrap())
        .collect();
    for slice in 0..40u64 {
        for (n, stdin) in inputs.iter_mut().enumerate() {
            let mut text = String::new();
            for i in 0..per_agent / 40 {
                text.push_str(&line(n as u64 * per_agent + slice * (per_agent / 40) + i));
                text.push('\n');
            }
            stdin.write_all(text.as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(inputs);
    let mut conflicts = 0;
    for agent in &mut agents {
        let status = agent.wait(WAIT);
        assert!(
            status.success(),
            "exit {status:?}; stderr:\n{}",
            agent.stderr()
        );
        conflicts += agent
            .stderr()
            .matches("another writer committed first")
            .count();
    }
    let read = pyiceberg::read(
        &python,
        &catalog(dir.path()),
        &dir.path().join("warehouse"),
        "logs.events",
        "id",
        "",
    );
    assert_each_once(&ids(&read), 2 * per_agent);
    eprintln!(
        "commit conflicts resolved by reading the table again: {conflicts}; snapshots: {}",
        read.json["snapshots"]
    );
}

/// A stdin → iceberg config (`extra` sink fields) whose warehouse is `s3://lake/warehouse` on
/// `moto`.
fn s3_config(dir: &Path, moto: &moto::Moto, extra: &str) -> String {
    format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\nsinks:{}",
        dir.join("data").display(),
        sink_yaml(dir, "in", extra)
    )
    .replace(
        &format!("warehouse: {}", dir.join("warehouse").display()),
        &format!(
            "warehouse: s3://lake/warehouse\n{}    force_path_style: true",
            moto.yaml("    ")
        ),
    )
}

/// pyiceberg's properties for reading files from `moto`'s S3.
fn s3_properties(moto: &moto::Moto) -> serde_json::Value {
    serde_json::json!({
        "s3.endpoint": moto.endpoint(),
        "s3.access-key-id": "test",
        "s3.secret-access-key": "test",
        "s3.region": "us-east-1",
    })
}

/// An `s3://` warehouse on moto: `validate` names a missing bucket, the running sink says the
/// same and retries, and once the bucket exists the table's metadata and data files land in
/// it and pyiceberg reads every row back from S3.
#[test]
fn an_s3_warehouse_holds_the_table_and_a_missing_bucket_is_retried() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(moto.s3());
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path(), &moto, "    commit_interval_secs: 0.5\n");
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, &config).unwrap();
    let output = sluice().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("sinks.lake: healthcheck failed: warehouse: bucket `lake`"),
        "{stderr}"
    );

    let mut agent = Agent::start_with(dir.path(), &config, Stdio::piped(), Stdio::null());
    wait_until(WAIT, "the error about the missing bucket", || {
        let stderr = agent.stderr();
        stderr.contains("cannot open the iceberg table; retrying component_id=\"lake\"")
            && stderr.contains("NoSuchBucket")
    });
    runtime
        .block_on(s3.create_bucket().bucket("lake").send())
        .unwrap();
    let total = 3000u64;
    let mut input = String::new();
    for id in 0..total {
        input.push_str(&line(id));
        input.push('\n');
    }
    let mut stdin = agent.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let status = agent.wait(WAIT);
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        agent.stderr()
    );

    let read = pyiceberg::read_from(
        &python,
        &format!("sqlite:///{}", catalog(dir.path()).display()),
        "s3://lake/warehouse",
        &s3_properties(&moto),
        "logs.events",
        "",
        "",
    );
    assert_each_once(&ids(&read), total);
    for row in read.rows() {
        let id = row[0].as_u64().unwrap();
        assert_eq!(row[2], format!("svc-{}", id % 4));
    }
    let keys: Vec<String> = runtime
        .block_on(
            s3.list_objects_v2()
                .bucket("lake")
                .prefix("warehouse/")
                .send(),
        )
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("warehouse/logs/events/data/") && k.ends_with(".parquet"))
            && keys
                .iter()
                .any(|k| k.starts_with("warehouse/logs/events/metadata/")
                    && k.ends_with(".metadata.json")),
        "data and metadata in the bucket: {keys:?}"
    );
    assert!(
        !dir.path().join("warehouse").exists(),
        "nothing written locally"
    );
}

/// A Glue catalog and an `s3://` warehouse, both on moto: the table is registered in Glue
/// and pyiceberg's Glue catalog reads every row back from S3.
#[test]
fn a_glue_catalog_on_moto_names_the_table_pyiceberg_reads() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(moto.s3());
    runtime
        .block_on(s3.create_bucket().bucket("lake").send())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(
        dir.path(),
        &moto,
        "    commit_interval_secs: 0.5\n    partition_by:\n      - {field: service, transform: identity}\n",
    )
    .replace(
        &format!("catalog: {{type: sql, uri: \"sqlite://{}\"}}", catalog(dir.path()).display()),
        "catalog: {type: glue}",
    );
    assert!(config.contains("type: glue"), "{config}");
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, &config).unwrap();
    let output = sluice().arg("validate").arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let total = 2000u64;
    let input: String = (0..total).map(|id| line(id) + "\n").collect();
    Agent::run_stdin(dir.path(), &config, &input);

    let mut properties = s3_properties(&moto);
    for (key, value) in [
        ("glue.endpoint", moto.endpoint()),
        ("glue.region", "us-east-1".into()),
        ("glue.access-key-id", "test".into()),
        ("glue.secret-access-key", "test".into()),
    ] {
        properties[key] = value.into();
    }
    let read = pyiceberg::read_from(
        &python,
        "glue",
        "s3://lake/warehouse",
        &properties,
        "logs.events",
        "",
        "service == 'svc-2'",
    );
    assert_each_once(&ids(&read), total);
    for row in read.rows() {
        let id = row[0].as_u64().unwrap();
        // A Glue table's timestamps are Iceberg `timestamp`: the UTC instant, without zone.
        assert_eq!(
            row[1],
            format!("2026-12-0{}T10:00:{:02}", 1 + id % 3, id % 60)
        );
        assert_eq!(row[2], format!("svc-{}", id % 4));
        assert_eq!(row[3], 200 + id % 5);
    }
    assert_eq!(read.json["filtered_rows"], total / 4);
    assert_eq!(
        read.json["spec"],
        serde_json::json!([["service", "identity"]])
    );
}

/// A catalog in PostgreSQL that goes away mid-stream: the sink says so and retries, and with
/// acknowledgements on an http_server client gets no 200 until its rows are committed once the
/// catalog is back; pyiceberg then reads every row exactly once through the same catalog.
#[test]
fn a_catalog_that_goes_down_holds_acknowledgements_until_it_is_back() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let Some(server) = postgres::Postgres::start() else {
        return;
    };
    let cut = proxy::Proxy::start(server.port);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let catalog_uri = format!("postgresql://postgres@127.0.0.1:{}/postgres", cut.port);
    let config = format!(
        "data_dir: {}\nacknowledgements: true\nsources:\n  in:\n    type: http_server\n    address: 127.0.0.1:{port}\n    decoding: {{codec: json}}\n    ack_timeout_secs: 300\nsinks:{}",
        dir.path().join("data").display(),
        sink_yaml(dir.path(), "in", "    commit_interval_secs: 0.2\n")
    )
    .replace(
        &format!("uri: \"sqlite://{}\"", catalog(dir.path()).display()),
        &format!("uri: \"{catalog_uri}\""),
    );
    assert!(config.contains(&catalog_uri), "{config}");
    let mut agent = Agent::start(dir.path(), &config);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let post = |from: u64, to: u64| {
        let body: String = (from..to).map(|id| line(id) + "\n").collect();
        let request = client
            .post(format!("http://127.0.0.1:{port}/"))
            .body(body)
            .send();
        async move { request.await.map(|r| r.status().as_u16()) }
    };
    wait_until(WAIT, "the http source listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(runtime.block_on(post(0, 1000)).unwrap(), 200);

    cut.set_up(false);
    let pending = runtime.spawn(post(1000, 2000));
    let deadline = Instant::now() + WAIT;
    loop {
        let stderr = agent.stderr();
        if stderr.contains("component_id=lake")
            && (stderr.contains("cannot load the table to commit; retrying")
                || stderr.contains("commit failed; retrying"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink did not report the catalog down:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pending.is_finished(),
        "no answer while the rows are not committed"
    );
    cut.set_up(true);
    assert_eq!(runtime.block_on(pending).unwrap().unwrap(), 200);
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());

    let read = pyiceberg::read_from(
        &python,
        &format!(
            "postgresql+psycopg2://postgres@127.0.0.1:{}/postgres",
            server.port
        ),
        &format!("file://{}", dir.path().join("warehouse").display()),
        &serde_json::json!({}),
        "logs.events",
        "id",
        "",
    );
    assert_each_once(&ids(&read), 2000);
}

/// `schema_mode: evolve`: fields the table has no column for become optional columns in new
/// schema versions, typed from their values; rows written before have nulls there. A second
/// run in `strict` mode keeps writing every column the table has, and `validate` in strict
/// mode names a configured column the table lacks.
#[test]
fn evolve_adds_new_fields_as_columns_and_strict_names_what_is_missing() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = "      - {name: id, type: int64}\n      - {name: service, type: string}\n";
    let config = |extra: &str| {
        format!(
            "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding: {{codec: json}}\nsinks:{}",
            dir.path().join("data").display(),
            lake_yaml(dir.path(), "in", schema, extra)
        )
    };
    let mut input = String::new();
    for id in 0..3000u64 {
        let mut line = format!(r#"{{"id":{id},"service":"svc-{}""#, id % 3);
        if id >= 1000 {
            line.push_str(&format!(r#","region":"eu-{}","bytes":{id}"#, id % 2));
        }
        if id >= 2000 {
            // Floats and integers in one field: float64. An object: JSON text.
            let ratio = if id % 2 == 0 {
                format!("{id}.5")
            } else {
                format!("{id}")
            };
            line.push_str(&format!(r#","ratio":{ratio},"tags":{{"n":{id}}}"#));
        }
        line.push_str("}\n");
        input.push_str(&line);
        if id == 999 || id == 1999 {
            // A pause, so that each shape of event arrives in batches of its own.
            Agent::run_stdin(
                dir.path(),
                &config("    schema_mode: evolve\n    commit_interval_secs: 0.2\n"),
                &input,
            );
            input.clear();
        }
    }
    Agent::run_stdin(
        dir.path(),
        &config("    schema_mode: evolve\n    commit_interval_secs: 0.2\n"),
        &input,
    );
    let read = pyiceberg::read(
        &python,
        &catalog(dir.path()),
        &dir.path().join("warehouse"),
        "logs.events",
        "",
        "",
    );
    assert_each_once(&ids(&read), 3000);
    assert_eq!(
        read.json["types"],
        serde_json::json!({"id": "long", "service": "string", "region": "string", "bytes": "long", "ratio": "double", "tags": "string"})
    );
    assert_eq!(read.json["schemas"], 3, "one schema version per new shape");
    let columns: Vec<&str> = read.json["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // New columns in name order (an event's fields are sorted).
    assert_eq!(
        columns,
        ["id", "service", "bytes", "region", "ratio", "tags"]
    );
    for row in read.rows() {
        let id = row[0].as_u64().unwrap();
        assert_eq!(row[1], format!("svc-{}", id % 3));
        if id < 1000 {
            assert!(row[2].is_null() && row[3].is_null(), "{row:?}");
        } else {
            assert_eq!(row[2], id);
            assert_eq!(row[3], format!("eu-{}", id % 2));
        }
        if id < 2000 {
            assert!(row[4].is_null() && row[5].is_null(), "{row:?}");
        } else {
            let ratio = if id % 2 == 0 {
                id as f64 + 0.5
            } else {
                id as f64
            };
            assert_eq!(row[4].as_f64().unwrap(), ratio);
            assert_eq!(row[5], format!("{{\"n\":{id}}}"));
        }
    }

    // Strict, with only the first two columns configured: the table's other columns are still
    // written, a new field is not.
    Agent::run_stdin(
        dir.path(),
        &config("    commit_interval_secs: 0.2\n"),
        r#"{"id":3000,"service":"svc-0","region":"us-1","bytes":7,"surprise":true}"#,
    );
    let read = pyiceberg::read(
        &python,
        &catalog(dir.path()),
        &dir.path().join("warehouse"),
        "logs.events",
        "",
        "",
    );
    assert_eq!(read.json["schemas"], 3, "strict adds no column");
    let last = read.rows().iter().find(|r| r[0] == 3000).expect("row 3000");
    assert_eq!(last[2], 7);
    assert_eq!(last[3], "us-1");

    // Strict, with a configured column the table lacks: validate says which.
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        config("").replace(
            schema,
            &format!("{schema}      - {{name: zone, type: string}}\n"),
        ),
    )
    .unwrap();
    let output = sluice().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("sinks.lake: healthcheck failed: schema: table `logs.events` has no column zone (add it to the table, or set schema_mode: evolve)"),
        "{stderr}"
    );
}

#[test]
fn validate_and_start_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        format!(
            "data_dir: {}\nsources:\n  in:\n    type: stdin\nsinks:{}",
            dir.path().join("data").display(),
            sink_yaml(dir.path(), "in", extra)
        )
    };
    let path = dir.path().join("sluice.yaml");
    let validate = |text: String| {
        std::fs::write(&path, text).unwrap();
        let output = sluice().arg("validate").arg(&path).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = validate(config("    create_table: false\n"));
    assert!(!ok && stderr.contains("sinks.lake: healthcheck failed: table `logs.events` does not exist (and create_table is off)"), "{stderr}");
    let (ok, stderr) = validate(config(
        "    partition_by:\n      - {field: nope, transform: day}\n",
    ));
    assert!(
        !ok && stderr.contains("partition field `nope` is not in the schema"),
        "{stderr}"
    );
    let (ok, stderr) = validate(config(
        "    partition_by:\n      - {field: service, transform: weekly}\n",
    ));
    assert!(
        !ok && stderr.contains("`weekly` is not a transform"),
        "{stderr}"
    );
    let (ok, stderr) = validate(config("    exactly_once: true\n"));
    assert!(
        !ok && stderr.contains("exactly-once needs a kafka source"),
        "{stderr}"
    );
    let (ok, stderr) = validate(config(""));
    assert!(ok, "{stderr}");

    // A warehouse that cannot be written: the agent says so, names the sink, and keeps trying.
    let text = config("").replace(
        &format!("warehouse: {}", dir.path().join("warehouse").display()),
        "warehouse: /proc/sluice-warehouse",
    );
    let mut agent = Agent::start_with(dir.path(), &text, Stdio::piped(), Stdio::null());
    wait_until(WAIT, "the error about the warehouse", || {
        let stderr = agent.stderr();
        stderr.contains("cannot open the iceberg table; retrying component_id=\"lake\"")
            && stderr.contains("cannot create table `logs.events`")
            && stderr.contains("sluice-warehouse/logs/events/metadata/")
    });
    // Nothing was acknowledged; a stop may wait out the shutdown deadline, so kill it.
    agent.kill9();
}

/// Two agents in one group on a real broker, killed with -9 at random while loading: the
/// table pyiceberg reads holds every message exactly once, and the latest snapshot's summary
/// records each partition's next offset.
#[test]
fn agents_killed_at_random_leave_every_message_in_the_table_exactly_once() {
    let Some(python) = pyiceberg::pyiceberg_python() else {
        return;
    };
    let Some(mut broker) = Broker::tansu() else {
        return;
    };
    broker.create_topic("events", 4);
    let servers = broker.servers();
    // Producing until the kills are done, so that they all land while rows are being
    // committed, however fast that goes.
    let producer = SteadyProducer::start(&servers, "events", 100, Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog(dir.path());
    let warehouse = dir.path().join("warehouse");
    let start = |n: usize| {
        let home = dir.path().join(format!("agent{n}"));
        std::fs::create_dir_all(&home).unwrap();
        let config = format!(
            r#"
data_dir: {data}
shutdown_timeout_secs: 10
api: {{enabled: true, address: "127.0.0.1:{api}"}}
sources:
  in:
    type: kafka
    bootstrap_servers: {servers}
    topics: [events]
    group_id: lake-loaders
    auto_offset_reset: earliest
    session_timeout_ms: 6000
    commit_interval_ms: 500
    decoding: {{codec: json}}
sinks:{lake}
"#,
            lake = lake_yaml(
                dir.path(),
                "in",
                "      - {name: id, type: int64}\n      - {name: partition, type: int64}\n      - {name: offset, type: int64}\n",
                "    commit_interval_secs: 0.3\n    exactly_once: true\n",
            ),
            data = home.join("data").display(),
            api = free_port(),
        );
        Agent::start(&home, &config)
    };
    let rows = || -> u64 {
        if !catalog.exists() {
            return 0;
        }
        let output = std::process::Command::new(&python)
            .arg("-c")
            .arg(format!(
                "from pyiceberg.catalog.sql import SqlCatalog\nt = SqlCatalog('default', uri='sqlite:///{}', warehouse='file://{}').load_table('logs.events')\nprint(t.scan(selected_fields=('id',)).to_arrow().num_rows)",
                catalog.display(),
                warehouse.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let mut agents = [start(0), start(1)];
    let mut seed = 0x1ce_u64;
    for round in 0..4 {
        let before = rows();
        wait_until(WAIT, "rows being committed", || rows() >= before + 200);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 400));
        let victim = (seed >> 20) as usize % 2;
        agents[victim].kill9();
        eprintln!("round {round}: killed agent {victim} at {} rows", rows());
        kafka_broker::wait_out_killed_session();
        agents[victim] = start(victim);
    }
    let total = producer.finish();
    wait_until(
        Duration::from_secs(180),
        "every message in the table",
        || rows() >= total,
    );
    // Give a wrongly doubled commit the time to show.
    std::thread::sleep(Duration::from_secs(2));
    let read = pyiceberg::read(
        &python,
        &catalog,
        &warehouse,
        "logs.events",
        "id,partition,offset",
        "",
    );
    assert_each_once(&ids(&read), total);
    // The summary's next offsets are one past the highest offset committed per partition.
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for row in read.rows() {
        let (partition, offset) = (row[1].as_i64().unwrap(), row[2].as_i64().unwrap());
        let entry = highest.entry(partition).or_insert(-1);
        *entry = (*entry).max(offset);
    }
    let summary = &read.json["summary"];
    for (partition, offset) in highest {
        assert_eq!(
            summary[format!("sluice/lake/events/{partition}/next")].as_str(),
            Some((offset + 1).to_string().as_str()),
            "summary {summary}"
        );
    }
    for agent in &mut agents {
        agent.terminate(Duration::from_secs(15));
    }
}

/// Each writer group settles its columns' encodings from the batch that opens it: unique ids
/// are written plain, the four services with a dictionary. Reads the data files with the
/// parquet crate. A file source, so the whole input is there at start and the first batch
/// holds hundreds of rows (one 256 KiB read), enough for the 64-value sample.
#[test]
fn unique_columns_are_written_without_a_dictionary() {
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let lines: String = (0..2000).map(|id| line(id) + "\n").collect();
    std::fs::write(&input, lines).unwrap();
    let config = format!(
        "data_dir: {}\nsources:\n  in:\n    type: file\n    include: [\"{}\"]\n    decoding: {{codec: json}}\nsinks:{}",
        dir.path().join("data").display(),
        input.display(),
        sink_yaml(dir.path(), "in", "")
    );
    let data = dir.path().join("warehouse/logs/events/data");
    let parquet_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&data)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
            .collect()
    };
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "a data file", || !parquet_files().is_empty());
    // Shutdown finishes and commits the open files.
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    let files = parquet_files();
    assert!(!files.is_empty());
    for file in files {
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        for row_group in reader.metadata().row_groups() {
            let dictionary = |name: &str| {
                let column = row_group
                    .columns()
                    .iter()
                    .find(|c| c.column_path().string() == name)
                    .unwrap();
                column.encodings().any(|e| e == Encoding::RLE_DICTIONARY)
            };
            assert!(!dictionary("id"), "{}: ids are unique", file.display());
            assert!(dictionary("service"), "{}: four services", file.display());
        }
    }
}
