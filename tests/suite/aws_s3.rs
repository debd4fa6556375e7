//! The `aws_s3` sink against moto's S3 emulator (real HTTP on 127.0.0.1, through a proxy
//! that can cut the network), and against its local-directory target (real files). Objects
//! are read back with the AWS SDK and decoded (gzip, zstd, Parquet via the `parquet` crate).

use crate::common;
use crate::common::moto;

use crate::common::Agent;
use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use moto::Moto;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const SERVICES: [&str; 3] = ["api", "db", "web"];

fn line(i: usize) -> String {
    format!(
        "{{\"id\":{i},\"service\":\"{}\",\"msg\":\"request {i} {}\",\"latency\":{}.5,\"user\":{{\"n\":{}}}}}\n",
        SERVICES[i % 3],
        "x".repeat(i % 40),
        i % 100,
        i % 7
    )
}

/// Runs `sinks:` YAML behind a stdin source fed `count` lines; waits for a clean exit.
fn run(dir: &Path, sinks: &str, count: usize) -> Agent {
    let config = format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\nsinks:\n{sinks}",
        dir.join("data").display()
    );
    let mut agent = Agent::start_with(dir, &config, Stdio::piped(), Stdio::null());
    let mut stdin = agent.child.stdin.take().unwrap();
    let input: String = (0..count).map(line).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    assert!(agent.wait(WAIT).success(), "{}", agent.stderr());
    agent
}

fn s3_sink(moto: &Moto, bucket: &str, extra: &str) -> String {
    format!(
        "  lake:\n    type: aws_s3\n    inputs: [in]\n    bucket: {bucket}\n    force_path_style: true\n    key_prefix: \"logs/service={{{{ service }}}}/\"\n{}{extra}",
        moto.yaml("    ")
    )
}

async fn objects(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .max_keys(1000)
        .send()
        .await
        .unwrap();
    for object in listed.contents() {
        let key = object.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        out.insert(key, body);
    }
    out
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Checks NDJSON objects: every input line exactly once, equal in content, under the prefix
/// of its service; returns how many objects each service got.
fn check_ndjson(objects: &BTreeMap<String, String>, count: usize) -> BTreeMap<String, usize> {
    let mut seen = vec![0usize; count];
    let mut per_service = BTreeMap::new();
    for (key, body) in objects {
        let service = key
            .strip_prefix("logs/service=")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        *per_service.entry(service.to_string()).or_insert(0) += 1;
        for text in body.lines() {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let id = value["id"].as_u64().unwrap() as usize;
            let expected: serde_json::Value = serde_json::from_str(&line(id)).unwrap();
            assert_eq!(value, expected, "object {key}");
            assert_eq!(value["service"], service, "event {id} under {key}");
            seen[id] += 1;
        }
    }
    let wrong: Vec<usize> = (0..count).filter(|i| seen[*i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} events missing or repeated, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    per_service
}

/// moto, an S3 client, a bucket named `bucket` and a working directory for the agent.
async fn emulator_with_bucket(
    bucket: &str,
) -> Option<(Moto, aws_sdk_s3::Client, tempfile::TempDir)> {
    let moto = Moto::start()?;
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    Some((moto, s3, tempfile::tempdir().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_gzip_objects_hold_every_event_under_its_rendered_prefix() {
    let Some((moto, s3, dir)) = emulator_with_bucket("lake").await else {
        return;
    };
    let sink = s3_sink(
        &moto,
        "lake",
        "    batch:\n      max_events: 500\n    storage_class: STANDARD_IA\n    tags:\n      team: data eng\n      tier: \"1\"\n",
    );
    run(dir.path(), &sink, 3000);

    let stored = objects(&s3, "lake").await;
    assert!(
        stored.keys().all(|k| k.ends_with(".ndjson.gz")),
        "{:?}",
        stored.keys()
    );
    let decoded = stored.iter().map(|(k, v)| (k.clone(), gunzip(v))).collect();
    let per_service = check_ndjson(&decoded, 3000);
    // 1000 events per service in batches of 500.
    assert_eq!(
        per_service,
        SERVICES.iter().map(|s| (s.to_string(), 2)).collect()
    );
    // Names are unique and, within a prefix, sort in the order they were written.
    let head = s3
        .head_object()
        .bucket("lake")
        .key(stored.keys().next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(head.content_type(), Some("application/x-ndjson"));
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    let tags = s3
        .get_object_tagging()
        .bucket("lake")
        .key(stored.keys().next().unwrap())
        .send()
        .await
        .unwrap();
    let tags: BTreeMap<&str, &str> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, BTreeMap::from([("team", "data eng"), ("tier", "1")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_objects_and_a_large_object_in_parts() {
    let Some((moto, s3, dir)) = emulator_with_bucket("big").await else {
        return;
    };
    // One uncompressed object of 100k events (~10 MiB) goes up in 5 MiB parts; a second sink
    // writes the same events as zstd objects under another prefix.
    let sink = format!(
        "  lake:\n    type: aws_s3\n    inputs: [in]\n    bucket: big\n    force_path_style: true\n    key_prefix: \"logs/service=all/\"\n    compression: none\n    multipart_threshold_bytes: 5242880\n    multipart_part_bytes: 5242880\n    batch:\n      max_events: 1000000\n      max_bytes: 1000000000\n{}  packed:\n    type: aws_s3\n    inputs: [in]\n    bucket: big\n    force_path_style: true\n    key_prefix: \"zstd/\"\n    compression: zstd\n{}",
        moto.yaml("    "),
        moto.yaml("    ")
    );
    let count = 100_000;
    run(dir.path(), &sink, count);
    let stored = objects(&s3, "big").await;
    let (whole, packed): (BTreeMap<_, _>, BTreeMap<_, _>) = stored
        .into_iter()
        .partition(|(k, _)| k.starts_with("logs/"));
    assert_eq!(whole.len(), 1, "one object: {:?}", whole.keys());
    let (key, body) = whole.iter().next().unwrap();
    assert!(
        body.len() > 5 << 20,
        "large enough for two parts or more: {}",
        body.len()
    );
    let text = String::from_utf8(body.clone()).unwrap();
    // Every event once, in input order (one source, one object).
    let ids: Vec<usize> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    assert_eq!(ids, (0..count).collect::<Vec<_>>(), "{key}");
    let head = s3
        .head_object()
        .bucket("big")
        .key(key)
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().contains('-'),
        "a multipart ETag: {:?}",
        head.e_tag()
    );

    let mut unpacked = String::new();
    for (key, body) in &packed {
        assert!(key.ends_with(".ndjson.zst"));
        unpacked.push_str(&String::from_utf8(zstd::decode_all(&body[..]).unwrap()).unwrap());
    }
    let mut ids: Vec<usize> = unpacked
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap() as usize
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..count).collect::<Vec<_>>());
}

/// Reads Parquet rows back as (id, service, msg, latency, user JSON).
fn parquet_rows(bytes: Vec<u8>) -> Vec<(i64, String, String, f64, String)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.unwrap();
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let id = column("id");
        let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
        let service = column("service");
        let service = service.as_any().downcast_ref::<StringArray>().unwrap();
        let msg = column("msg");
        let msg = msg.as_any().downcast_ref::<StringArray>().unwrap();
        let latency = column("latency");
        let latency = latency
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        let user = column("user");
        let user = user.as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..batch.num_rows() {
            assert!(!id.is_null(row));
            rows.push((
                id.value(row),
                service.value(row).to_string(),
                msg.value(row).to_string(),
                latency.value(row),
                user.value(row).to_string(),
            ));
        }
    }
    rows
}

fn check_parquet(files: Vec<(String, Vec<u8>)>, count: usize) {
    let mut seen = vec![0usize; count];
    for (key, bytes) in files {
        assert!(key.ends_with(".parquet"), "{key}");
        for (id, service, msg, latency, user) in parquet_rows(bytes) {
            let expected: serde_json::Value = serde_json::from_str(&line(id as usize)).unwrap();
            assert_eq!(service, expected["service"].as_str().unwrap());
            assert!(key.contains(&format!("service={service}/")), "{key}");
            assert_eq!(msg, expected["msg"].as_str().unwrap());
            assert_eq!(latency, expected["latency"].as_f64().unwrap());
            assert_eq!(user, expected["user"].to_string());
            seen[id as usize] += 1;
        }
    }
    assert!(seen.iter().all(|n| *n == 1), "every row exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_objects_read_back_row_for_row() {
    let Some((moto, s3, dir)) = emulator_with_bucket("parquet").await else {
        return;
    };
    let sink = s3_sink(
        &moto,
        "parquet",
        "    encoding:\n      codec: parquet\n      parquet:\n        compression: zstd\n        row_group_size: 1000\n    batch:\n      max_events: 2000\n",
    );
    run(dir.path(), &sink, 9000);
    let stored = objects(&s3, "parquet").await;
    assert_eq!(stored.len(), 6, "{:?}", stored.keys());
    check_parquet(stored.into_iter().collect(), 9000);
}

#[test]
fn the_local_directory_target_writes_the_same_layout() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sink = format!(
        "  lake:\n    type: aws_s3\n    inputs: [in]\n    bucket: events\n    local_directory: {}\n    key_prefix: \"logs/service={{{{ service }}}}/\"\n    encoding:\n      codec: parquet\n    batch:\n      max_events: 2000\n",
        lake.display()
    );
    run(dir.path(), &sink, 9000);
    let mut files = Vec::new();
    for service in SERVICES {
        let prefix = lake.join("events/logs").join(format!("service={service}"));
        for entry in std::fs::read_dir(&prefix).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(!name.starts_with('.'), "no temporary file left: {name}");
            files.push((
                format!("logs/service={service}/{name}"),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
    assert_eq!(files.len(), 6);
    check_parquet(files, 9000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_retry_while_the_emulator_is_unreachable_and_lose_nothing() {
    let Some(moto) = Moto::start() else { return };
    let s3 = moto.s3().await;
    s3.create_bucket().bucket("flaky").send().await.unwrap();
    moto.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let sink = s3_sink(
        &moto,
        "flaky",
        "    batch:\n      max_events: 400\n    request:\n      retry_initial_backoff_ms: 50\n      retry_max_backoff_secs: 0.5\n",
    );
    let config = format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\nsinks:\n{sink}",
        dir.path().join("data").display()
    );
    let mut agent = Agent::start_with(dir.path(), &config, Stdio::piped(), Stdio::null());
    let mut stdin = agent.child.stdin.take().unwrap();
    let input: String = (0..2000).map(line).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    common::wait_until(WAIT, "the sink retrying", || {
        agent.stderr().contains("request failed; retrying")
    });
    moto.set_up(true);
    assert!(agent.wait(WAIT).success(), "{}", agent.stderr());
    let stored = objects(&s3, "flaky").await;
    let decoded = stored.iter().map(|(k, v)| (k.clone(), gunzip(v))).collect();
    check_ndjson(&decoded, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_permanent_and_the_events_go_to_the_dead_letter_output() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let sink = format!(
        "{}  dead:\n    type: file\n    inputs: [lake.dead_letter]\n    path: {}\n",
        s3_sink(&moto, "no-such-bucket", ""),
        dead.display()
    );
    let agent = run(dir.path(), &sink, 300);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    assert_eq!(lines[0]["_dead_letter"]["sink"], "lake");
    assert!(
        lines[0]["_dead_letter"]["reason"]
            .as_str()
            .unwrap()
            .contains("NoSuchBucket"),
        "{}",
        lines[0]
    );
    assert!(agent.stderr().contains("not retrying"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_that_the_bucket_answers() {
    let Some((moto, _s3, dir)) = emulator_with_bucket("present").await else {
        return;
    };
    let validate = |bucket: &str| {
        let config = format!(
            "sources:\n  in:\n    type: stdin\nsinks:\n{}",
            s3_sink(&moto, bucket, "")
        );
        let path = dir.path().join(format!("{bucket}.yaml"));
        std::fs::write(&path, config).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let ok = validate("present");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok: sinks.lake: healthcheck passed"));
    let missing = validate("absent-bucket");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("sinks.lake: healthcheck failed: bucket `absent-bucket`"),
        "{stderr}"
    );
}
