//! The `aws_kinesis_streams` and `aws_kinesis_firehose` sinks against moto's emulator (real
//! HTTP on 127.0.0.1, through a proxy that can cut the network). Records are read back with
//! the AWS SDK: GetShardIterator + GetRecords per shard, and the S3 objects moto's Firehose
//! writes into its destination bucket. Shard splits are tested against kinesalite (npm), which
//! implements SplitShard (moto keeps writing to the closed parent).

use crate::common::{kinesalite, moto};

use crate::common::{wait_until, Agent};
use aws_sdk_kinesis::types::ShardIteratorType;
use moto::Moto;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn line(i: usize) -> String {
    format!(
        "{{\"id\":{i},\"service\":\"s{}\",\"msg\":\"event {i}\"}}\n",
        i % 5
    )
}

/// Starts the agent with a stdin source and `sinks:` YAML, and writes `input` to it.
fn start(dir: &Path, sinks: &str, input: &str) -> Agent {
    let config = format!(
        "data_dir: {}\nsources:\n  in:\n    type: stdin\n    max_line_bytes: 4194304\n    decoding:\n      codec: json\nsinks:\n{sinks}",
        dir.join("data").display()
    );
    let mut agent = Agent::start_with(dir, &config, Stdio::piped(), Stdio::null());
    let mut stdin = agent.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    agent
}

pub(crate) async fn create_stream(kinesis: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let summary = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if summary
            .stream_description_summary()
            .unwrap()
            .stream_status()
            .as_str()
            == "ACTIVE"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become active");
}

/// Every record of every shard: (shard, partition key, JSON value), in shard order.
async fn read_stream(
    kinesis: &aws_sdk_kinesis::Client,
    name: &str,
) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    let shards = kinesis
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        // Bounded: each call returns up to 10,000 records; stop at the first empty page.
        for _ in 0..1000 {
            let Some(current) = iterator.take() else {
                break;
            };
            let page = kinesis
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .unwrap();
            if page.records().is_empty() {
                break;
            }
            for record in page.records() {
                out.push((
                    shard.shard_id().to_string(),
                    record.partition_key().unwrap_or_default().to_string(),
                    serde_json::from_slice(record.data().as_ref()).unwrap(),
                ));
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    out
}

/// Each id in `0..count` once, with its input content and its service as partition key, in
/// input order within each partition key.
fn check_records(records: &[(String, String, serde_json::Value)], count: usize) {
    let mut seen = vec![0; count];
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (shard, key, value) in records {
        let id = value["id"].as_u64().unwrap();
        let expected: serde_json::Value = serde_json::from_str(&line(id as usize)).unwrap();
        assert_eq!(value, &expected);
        assert_eq!(key, expected["service"].as_str().unwrap());
        if let Some(previous) = last.insert(key, id) {
            assert!(
                previous < id,
                "{id} after {previous} for key {key} in {shard}"
            );
        }
        seen[id as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n == 1), "every record exactly once");
}

fn streams_sink(moto: &Moto, extra: &str) -> String {
    format!(
        "  out:\n    type: aws_kinesis_streams\n    inputs: [in]\n    stream_name: events\n    partition_key_field: service\n{}{extra}",
        moto.yaml("    ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_stream_keyed_by_field_and_oversize_ones_are_dead_lettered() {
    let Some(moto) = Moto::start() else { return };
    let kinesis = moto.kinesis().await;
    create_stream(&kinesis, "events", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let sinks = format!(
        "{}  dead:\n    type: file\n    inputs: [out.dead_letter]\n    path: {}\n",
        streams_sink(&moto, ""),
        dead.display()
    );
    let mut input: String = (0..1200).map(line).collect();
    input.push_str(&format!(
        "{{\"id\":99999,\"service\":\"s0\",\"msg\":\"{}\"}}\n",
        "y".repeat(1 << 20)
    ));
    let mut agent = start(dir.path(), &sinks, &input);
    drop(agent.child.stdin.take());
    assert!(agent.wait(WAIT).success(), "{}", agent.stderr());

    let records = read_stream(&kinesis, "events").await;
    assert_eq!(records.len(), 1200);
    check_records(&records, 1200);
    let shards: std::collections::BTreeSet<&String> = records.iter().map(|r| &r.0).collect();
    assert_eq!(shards.len(), 2, "five keys spread over both shards");
    let dead_letters = std::fs::read_to_string(&dead).unwrap();
    let dead_letter: serde_json::Value =
        serde_json::from_str(dead_letters.lines().next().unwrap()).unwrap();
    assert_eq!(dead_letters.lines().count(), 1);
    assert_eq!(dead_letter["id"], 99999);
    assert!(dead_letter["_dead_letter"]["reason"]
        .as_str()
        .unwrap()
        .contains("exceeds the service's limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_out_an_unreachable_stream_and_lose_nothing() {
    let Some(moto) = Moto::start() else { return };
    let kinesis = moto.kinesis().await;
    create_stream(&kinesis, "events", 1).await;
    moto.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let sink = streams_sink(
        &moto,
        "    request:\n      retry_initial_backoff_ms: 50\n      retry_max_backoff_secs: 0.5\n",
    );
    let input: String = (0..1500).map(line).collect();
    let mut agent = start(dir.path(), &sink, &input);
    drop(agent.child.stdin.take());
    wait_until(WAIT, "the sink retrying", || {
        agent.stderr().contains("request failed; retrying")
    });
    moto.set_up(true);
    assert!(agent.wait(WAIT).success(), "{}", agent.stderr());
    check_records(&read_stream(&kinesis, "events").await, 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_delivers_every_record_into_its_s3_destination() {
    let Some(moto) = Moto::start() else { return };
    let s3 = moto.s3().await;
    s3.create_bucket()
        .bucket("firehose-out")
        .send()
        .await
        .unwrap();
    let firehose = moto.firehose().await;
    firehose
        .create_delivery_stream()
        .delivery_stream_name("to-lake")
        .extended_s3_destination_configuration(
            aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .bucket_arn("arn:aws:s3:::firehose-out")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "  out:\n    type: aws_kinesis_firehose\n    inputs: [in]\n    stream_name: to-lake\n{}",
        moto.yaml("    ")
    );
    let input: String = (0..1300).map(line).collect();
    let mut agent = start(dir.path(), &sink, &input);
    drop(agent.child.stdin.take());
    assert!(agent.wait(WAIT).success(), "{}", agent.stderr());

    let listed = s3
        .list_objects_v2()
        .bucket("firehose-out")
        .send()
        .await
        .unwrap();
    let mut seen = vec![0; 1300];
    let mut objects = 0;
    for object in listed.contents() {
        objects += 1;
        let body = s3
            .get_object()
            .bucket("firehose-out")
            .key(object.key().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        for text in String::from_utf8(body.to_vec()).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let id = value["id"].as_u64().unwrap() as usize;
            assert_eq!(
                value,
                serde_json::from_str::<serde_json::Value>(&line(id)).unwrap()
            );
            seen[id] += 1;
        }
    }
    assert!(seen.iter().all(|n| *n == 1), "every record exactly once");
    // moto writes one object per PutRecordBatch: 1300 records need at least 3 (≤ 500 each).
    assert!(objects >= 3, "{objects} objects");
}

/// Puts records `ids` (JSON `{"id": i}`) with partition keys `k0`..`k{keys-1}`.
pub(crate) async fn put(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    ids: std::ops::Range<usize>,
    keys: usize,
) {
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(500) {
        let entries = chunk
            .iter()
            .map(|i| {
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                        "{{\"id\":{i}}}"
                    )))
                    .partition_key(format!("k{}", i % keys))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

fn source_config(moto: &Moto, dir: &Path, stream: &str) -> String {
    source_config_at(&moto.yaml("    "), dir, stream)
}

/// The source config with `endpoint` YAML (endpoint, region, auth) of either emulator.
fn source_config_at(endpoint: &str, dir: &Path, stream: &str) -> String {
    format!(
        "data_dir: {}\nsources:\n  in:\n    type: aws_kinesis\n    stream_name: {stream}\n    start_position: trim_horizon\n    poll_interval_ms: 50\n    shard_refresh_secs: 0.5\n    decoding:\n      codec: json\n{}sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {}\n    batch:\n      timeout_secs: 0.05\n",
        dir.join("data").display(),
        endpoint,
        dir.join("out.ndjson").display()
    )
}

/// The output's events in file order (lines torn by kill -9 are skipped).
pub(crate) fn output(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Each partition key's ids ascend through `events` (in the order they were read).
pub(crate) fn assert_each_key_ascends(events: &[serde_json::Value], otherwise: &str) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let key = event["partition_key"].as_str().unwrap();
        let id = event["id"].as_u64().unwrap();
        if let Some(previous) = last.insert(key, id) {
            assert!(
                previous < id,
                "{id} after {previous} for {key}: {otherwise}"
            );
        }
    }
}

pub(crate) fn id_counts(events: &[serde_json::Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event["id"].as_u64().unwrap()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reads_every_shard_and_resumes_from_its_checkpoint() {
    let Some(moto) = Moto::start() else { return };
    let kinesis = moto.kinesis().await;
    create_stream(&kinesis, "src", 3).await;
    put(&kinesis, "src", 0..600, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = source_config(&moto, dir.path(), "src");
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "600 records", || {
        id_counts(&output(dir.path())).len() >= 600
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());

    put(&kinesis, "src", 600..1000, 10).await;
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "1000 records", || {
        id_counts(&output(dir.path())).len() >= 1000
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());

    let events = output(dir.path());
    let counts = id_counts(&events);
    assert_eq!(counts.len(), 1000);
    assert!(
        counts.values().all(|n| *n == 1),
        "a clean restart resumes after the checkpoint: no duplicates"
    );
    let shards: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(shards.len(), 3);
    let first = &events[0];
    assert_eq!(
        first["partition_key"],
        format!("k{}", first["id"].as_u64().unwrap() % 10)
    );
    assert!(first["sequence_number"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_reading_loses_nothing() {
    let Some(moto) = Moto::start() else { return };
    let kinesis = moto.kinesis().await;
    create_stream(&kinesis, "crash", 2).await;
    let total = 6000;
    put(&kinesis, "crash", 0..total, 7).await;
    let dir = tempfile::tempdir().unwrap();
    let config = source_config(&moto, dir.path(), "crash")
        .replace("    decoding:", "    max_records: 200\n    decoding:");
    let mut kills = Vec::new();
    for _ in 0..3 {
        let mut agent = Agent::start(dir.path(), &config);
        let before = id_counts(&output(dir.path())).len();
        if before >= total {
            break;
        }
        wait_until(WAIT, "progress", || {
            id_counts(&output(dir.path())).len() > before
        });
        std::thread::sleep(Duration::from_millis(rand::random_range(0..600)));
        unsafe {
            libc::kill(agent.child.id() as i32, libc::SIGKILL);
        }
        agent.wait(WAIT);
        kills.push(id_counts(&output(dir.path())).len());
    }
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "every record", || {
        id_counts(&output(dir.path())).len() >= total
    });
    assert!(agent.terminate(WAIT).success());
    let counts = id_counts(&output(dir.path()));
    assert_eq!(counts.len(), total, "nothing lost");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("kills at {kills:?} distinct records: {duplicates} duplicates of {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_keeps_its_place_through_an_unreachable_stream() {
    let Some(moto) = Moto::start() else { return };
    let kinesis = moto.kinesis().await;
    create_stream(&kinesis, "gap", 2).await;
    put(&kinesis, "gap", 0..300, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &source_config(&moto, dir.path(), "gap"));
    wait_until(WAIT, "300 records", || {
        id_counts(&output(dir.path())).len() >= 300
    });
    moto.set_up(false);
    wait_until(WAIT, "the readers retrying", || {
        agent.stderr().contains("Kinesis read failed; retrying")
    });
    moto.set_up(true);
    put(&kinesis, "gap", 300..600, 4).await;
    wait_until(WAIT, "600 records", || {
        id_counts(&output(dir.path())).len() >= 600
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    let counts = id_counts(&output(dir.path()));
    assert_eq!(counts.len(), 600);
    assert!(
        counts.values().all(|n| *n == 1),
        "no record twice, none lost"
    );
}

/// Splits the only shard of `stream` in two halves of the hash range and waits until the
/// children are listed; returns the parent's id.
pub(crate) async fn split_the_only_shard(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> String {
    let parent = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_string();
    kinesis
        .split_shard()
        .stream_name(stream)
        .shard_to_split(&parent)
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let shards = kinesis.list_shards().stream_name(stream).send().await;
        if shards.is_ok_and(|s| s.shards().len() == 3) {
            return parent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the split of {parent} did not take effect within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shard_is_read_parent_first_so_each_key_stays_in_order() {
    let Some(emulator) = kinesalite::Kinesalite::start() else {
        return;
    };
    let kinesis = emulator.kinesis().await;
    create_stream(&kinesis, "split", 1).await;
    put(&kinesis, "split", 0..300, 6).await;
    split_the_only_shard(&kinesis, "split").await;
    put(&kinesis, "split", 300..900, 6).await;
    // The agent starts with the closed parent (300 records) and both children (600) listed
    // at once: only reading the parent to its end first keeps each key in order.
    let dir = tempfile::tempdir().unwrap();
    let config = source_config_at(&emulator.yaml("    "), dir.path(), "split");
    let mut agent = Agent::start(dir.path(), &config);
    wait_until(WAIT, "900 records", || {
        id_counts(&output(dir.path())).len() >= 900
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    assert!(
        agent.stderr().contains("shard closed and read to its end"),
        "{}",
        agent.stderr()
    );

    let events = output(dir.path());
    let counts = id_counts(&events);
    assert_eq!(counts.len(), 900);
    assert!(counts.values().all(|n| *n == 1), "each record once");
    assert_each_key_ascends(&events, "children read before their parent finished");
    let shards: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(shards.len(), 3, "parent and both children: {shards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_that_the_streams_exist() {
    let Some(moto) = Moto::start() else { return };
    create_stream(&moto.kinesis().await, "events", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let validate = |kind: &str, stream: &str| {
        let config = format!(
            "sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: {kind}\n    inputs: [in]\n    stream_name: {stream}\n{}",
            moto.yaml("    ")
        );
        let path = dir.path().join("check.yaml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(validate("aws_kinesis_streams", "events").0);
    let (ok, stderr) = validate("aws_kinesis_streams", "nope");
    assert!(
        !ok && stderr.contains("healthcheck failed: stream `nope`: ResourceNotFoundException"),
        "{stderr}"
    );
    let (ok, stderr) = validate("aws_kinesis_firehose", "nope");
    assert!(
        !ok && stderr.contains("healthcheck failed: stream `nope`"),
        "{stderr}"
    );
}
