//! At-least-once from Kafka under the hard cases: offsets that jump, rejected batches, a sink
//! down longer than `max.poll.interval.ms`, incremental rebalancing, and members killed with
//! -9 at random while a producer keeps writing. Each scenario runs against librdkafka's mock
//! cluster (`mock::`, in this process, real protocol over TCP) and a real `tansu` broker
//! process (`tansu::`) on 127.0.0.1; `sluice` runs as child processes, and the test side
//! produces, commits and reads committed offsets with rdkafka.
//!
//! tansu 0.6 answers a fetch at an offset *inside* a record batch with the *next* batch, so a
//! consumer restarting from a mid-batch commit skips the rest of that batch. Every test here
//! that restarts consumers therefore produces one record per batch (`batch.num.messages: 1`),
//! so every commit lands on a batch start; only the gap test produces multi-record batches, on
//! purpose, and shows the broker's behaviour (it fails once tansu is fixed, and the workaround
//! can go then).

use crate::common::kafka_broker;
use crate::common::{free_port, metric, wait_until, wait_until_async, Agent, Mode, Receiver};
use kafka_broker::Broker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

macro_rules! scenarios_against {
    ($kind:ident) => {
        mod $kind {
            use super::*;
            fn broker() -> Option<Broker> {
                Broker::$kind()
            }
            #[test]
            fn an_offset_gap_after_a_mid_batch_commit_is_logged_and_counted() {
                if let Some(broker) = broker() {
                    super::an_offset_gap_after_a_mid_batch_commit_is_logged_and_counted(broker);
                }
            }
            #[test]
            fn a_rejected_batch_freezes_its_partition_while_the_others_advance() {
                if let Some(broker) = broker() {
                    super::a_rejected_batch_freezes_its_partition_while_the_others_advance(broker);
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_sink_down_three_poll_intervals_causes_no_rebalance_and_loses_nothing() {
                if let Some(broker) = broker() {
                    super::a_sink_down_three_poll_intervals_causes_no_rebalance_and_loses_nothing(
                        broker,
                    )
                    .await;
                }
            }
            #[test]
            fn cooperative_sticky_moves_only_the_joining_members_share() {
                if let Some(broker) = broker() {
                    super::cooperative_sticky_moves_only_the_joining_members_share(broker);
                }
            }
        }
    };
}
scenarios_against!(mock);
scenarios_against!(tansu);

/// Produces `{"id": i}` for each i, `per_batch` records to a record batch (flushed after each
/// batch), to one partition or spread by key.
fn produce(
    servers: &str,
    topic: &str,
    partition: Option<i32>,
    range: std::ops::Range<u64>,
    per_batch: usize,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("batch.num.messages", per_batch.to_string())
        .set("linger.ms", if per_batch > 1 { "1000" } else { "0" })
        .create()
        .unwrap();
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(per_batch) {
        for id in chunk {
            let body = format!("{{\"id\":{id}}}");
            let key = format!("k{id}");
            let mut record = BaseRecord::to(topic).payload(&body).key(&key);
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            kafka_broker::send_retrying(&producer, record);
        }
        if per_batch > 1 {
            producer.flush(Duration::from_secs(30)).unwrap();
        } else {
            producer.poll(Duration::ZERO);
        }
    }
    kafka_broker::flush_while_delivering(&producer);
}

fn consumer(servers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

/// The group's committed offset of each partition (-1 when none).
fn committed(servers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer = consumer(servers, group);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let list = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(
            |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

/// A kafka source feeding `sinks` (YAML under `sinks:`, input `in`), with the api on.
fn config(
    dir: &Path,
    servers: &str,
    topic: &str,
    group: &str,
    api: u16,
    extra: &str,
    rest: &str,
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
    bootstrap_servers: "{servers}"
    topics: [{topic}]
    group_id: {group}
    auto_offset_reset: earliest
    session_timeout_ms: 6000
    commit_interval_ms: 200
    statistics_interval_ms: 500
    decoding:
      codec: json
{extra}
{rest}
"#,
        data = dir.join("data").display(),
    )
}

fn file_sink(dir: &Path, name: &str) -> String {
    format!(
        "sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {}\n    batch:\n      timeout_secs: 0.05\n",
        dir.join(name).display()
    )
}

/// How often each id arrived at the HTTP receiver.
fn received(receiver: &Receiver) -> BTreeMap<u64, usize> {
    count_ids(receiver.lines().iter().map(String::as_str))
}

/// How often each id stands in a file sink's output.
fn ids(path: &Path) -> BTreeMap<u64, usize> {
    count_ids(std::fs::read_to_string(path).unwrap_or_default().lines())
}

fn count_ids<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        if let Some(id) = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["id"].as_u64())
        {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

/// 20 record batches of 10 on one partition; the group's offset committed at 5, inside the
/// first batch. The mock cluster (like Kafka) resumes at 5: no gap. tansu resumes at 10, the
/// next batch: the agent logs and counts the jump.
fn an_offset_gap_after_a_mid_batch_commit_is_logged_and_counted(mut broker: Broker) {
    let tansu = matches!(broker, Broker::Tansu(_));
    broker.create_topic("gaps", 1);
    let servers = broker.servers();
    produce(&servers, "gaps", Some(0), 0..200, 10);
    let setter = consumer(&servers, "gap-group");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("gaps", 0, Offset::Offset(5))
        .unwrap();
    setter.commit(&at, CommitMode::Sync).unwrap();
    drop(setter);
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let out = dir.path().join("out.ndjson");
    let mut agent = Agent::start(
        dir.path(),
        &config(
            dir.path(),
            &servers,
            "gaps",
            "gap-group",
            api,
            "",
            &file_sink(dir.path(), "out.ndjson"),
        ),
    );
    wait_until(WAIT, "the partition read to its end", || {
        ids(&out).contains_key(&199)
    });
    let gaps = metric(api, "kafka_offset_gaps_total", "topic=\"gaps\"");
    assert!(agent.terminate(WAIT).success());
    let first = *ids(&out).keys().next().unwrap();
    if tansu {
        assert_eq!(
            first, 10,
            "tansu skips the rest of the batch holding offset 5"
        );
        assert_eq!(gaps, 1.0, "one jump, from 5 to 10");
        assert!(
            agent.stderr().contains("offsets jumped"),
            "{}",
            agent.stderr()
        );
    } else {
        assert_eq!(first, 5, "resumes exactly at the committed offset");
        assert_eq!(gaps, 0.0, "no gap where the broker does not skip");
        assert_eq!(ids(&out).len(), 195);
    }
}

/// Partition 0 goes to an HTTP endpoint that rejects its first request, partition 1 to a file.
/// The rejection freezes partition 0: its later batches are delivered, but its committed
/// offset never passes the rejected messages, while partition 1 commits to its end. Fails
/// without the freeze (later acknowledgements stored past the rejected batch).
fn a_rejected_batch_freezes_its_partition_while_the_others_advance(mut broker: Broker) {
    broker.create_topic("freeze", 2);
    let servers = broker.servers();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(Receiver::start());
    receiver.set_mode(Mode::Reject);
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let rest = format!(
        r#"transforms:
  p0:
    type: filter
    inputs: [in]
    condition: .partition == 0
  p1:
    type: filter
    inputs: [in]
    condition: .partition == 1
sinks:
  rejecting:
    type: http
    inputs: [p0]
    uri: {uri}
    batch:
      timeout_secs: 0.05
  files:
    type: file
    inputs: [p1]
    path: {out}
    batch:
      timeout_secs: 0.05
"#,
        uri = receiver.uri(),
        out = dir.path().join("p1.ndjson").display()
    );
    produce(&servers, "freeze", Some(0), 0..50, 1);
    let mut agent = Agent::start(
        dir.path(),
        &config(
            dir.path(),
            &servers,
            "freeze",
            "freeze-group",
            api,
            "",
            &rest,
        ),
    );
    wait_until(WAIT, "the rejection", || {
        metric(
            api,
            "component_errors_total",
            "error_type=\"delivery_rejected\"",
        ) >= 1.0
    });
    receiver.set_mode(Mode::Accept);
    produce(&servers, "freeze", Some(0), 50..100, 1);
    produce(&servers, "freeze", Some(1), 100..200, 1);
    let p1 = dir.path().join("p1.ndjson");
    wait_until(WAIT, "partition 0's later messages delivered", || {
        received(&receiver).contains_key(&99)
    });
    wait_until(WAIT, "partition 1 delivered and committed", || {
        ids(&p1).len() >= 100 && committed(&servers, "freeze-group", "freeze", 2)[1] == 100
    });
    assert!(agent.terminate(WAIT).success(), "{}", agent.stderr());
    let offsets = committed(&servers, "freeze-group", "freeze", 2);
    assert_eq!(offsets[1], 100, "partition 1 committed to its end");
    assert!(
        offsets[0] <= 0,
        "partition 0 never committed past its rejected first batch: {offsets:?}"
    );
    assert!(agent.stderr().contains("offsets stay before them"));
}

/// The sink's endpoint hangs for 30 s while `max.poll.interval.ms` is 10 s. The source pauses
/// its partitions and keeps polling, so the member stays in the group: no revocation, no
/// nothing lost. Without the pause and the polling the member is thrown out after 10 s and the
/// group rebalances: I checked that mutation.
async fn a_sink_down_three_poll_intervals_causes_no_rebalance_and_loses_nothing(
    mut broker: Broker,
) {
    broker.create_topic("slow", 2);
    let servers = broker.servers();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let rest = format!(
        r#"sinks:
  out:
    type: http
    inputs: [in]
    uri: {uri}
    batch:
      max_events: 100
      timeout_secs: 0.05
    request:
      timeout_secs: 120
    buffer:
      type: memory
      max_events: 200
"#,
        uri = receiver.uri()
    );
    let extra = "    librdkafka_options:\n      max.poll.interval.ms: \"10000\"\n";
    // A first part delivered and committed (lag is measured from the committed offset), then
    // the endpoint hangs and the rest piles up.
    produce(&servers, "slow", None, 0..500, 1);
    let mut agent = Agent::start(
        dir.path(),
        &config(
            dir.path(),
            &servers,
            "slow",
            "slow-group",
            api,
            extra,
            &rest,
        ),
    );
    wait_until_async(WAIT, "the first part committed", || {
        metric(api, "kafka_committed_offset", "topic=\"slow\"") == 500.0
    })
    .await;
    receiver.set_mode(Mode::Hang);
    tokio::task::block_in_place(|| produce(&servers, "slow", None, 500..5000, 1));
    // The pipeline is full once the source has paused its partitions. (Not a queue-depth
    // threshold: a batch wider than the free room waits for it, so a full pipeline may hold
    // only a few events in the sink's queue; CI once saw 6 queued, the source paused.)
    let deadline = Instant::now() + WAIT;
    while !agent.stderr().contains("pipeline full: partitions paused") {
        assert!(
            Instant::now() < deadline,
            "the pipeline never filled: buffer {} received {} lag {}; log:\n{}",
            metric(api, "buffer_events", "component_id=\"out\""),
            metric(
                api,
                "component_received_events_total",
                "component_id=\"in\""
            ),
            metric(api, "kafka_consumer_lag", "topic=\"slow\""),
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = Instant::now();
    wait_until_async(WAIT, "the lag gauge shows the backlog", || {
        metric(api, "kafka_consumer_lag", "topic=\"slow\"") > 0.0
    })
    .await;
    let outage = Duration::from_secs(30).saturating_sub(paused.elapsed());
    tokio::time::sleep(outage).await; // the outage itself, by design
    receiver.set_mode(Mode::Accept);
    wait_until_async(WAIT, "every message delivered", || {
        received(&receiver).len() >= 5000
    })
    .await;
    wait_until_async(WAIT, "committed offsets and lag gauges caught up", || {
        metric(api, "kafka_committed_offset", "topic=\"slow\"") == 5000.0
            && metric(api, "kafka_consumer_lag", "topic=\"slow\"") == 0.0
    })
    .await;
    let stderr = agent.stderr();
    tokio::task::block_in_place(|| agent.terminate(WAIT));
    eprintln!("sink down {:.0?}", paused.elapsed());
    assert!(
        !stderr.contains("partitions revoked"),
        "no rebalance:\n{stderr}"
    );
    assert!(!stderr.contains("maximum poll interval"), "{stderr}");
    assert!(stderr.contains("partitions paused"), "{stderr}");
    let counts = received(&receiver);
    assert_eq!(counts.len(), 5000, "nothing lost");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("{duplicates} duplicates (hung requests retried after the endpoint came back)");
}

/// Partitions named in an agent's log lines of one kind ("partitions assigned" / "revoked").
fn logged(agent: &Agent, what: &str, key: &str) -> Vec<String> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains(what))
        .flat_map(|l| listed(l, key))
        .collect()
}

/// The comma-separated `key=` list of one log line.
fn listed(line: &str, key: &str) -> Vec<String> {
    line.split(&format!("{key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// The partitions an agent owns now: its assignment and revocation log lines replayed in
/// order (a partition revoked and later assigned again is owned).
fn owned(agent: &Agent) -> std::collections::BTreeSet<String> {
    let mut owned = std::collections::BTreeSet::new();
    for line in agent.stderr().lines() {
        if line.contains("partitions assigned") {
            owned.extend(listed(line, "assigned"));
        } else if line.contains("partitions revoked") {
            for gone in listed(line, "revoked") {
                owned.remove(&gone);
            }
        }
    }
    owned
}

/// Waits until every member owns `share` partitions; on timeout, fails with what each owns
/// and its rebalance log.
fn wait_for_shares(members: &[(&str, &Agent)], share: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while !members.iter().all(|(_, agent)| owned(agent).len() == share) {
        if std::time::Instant::now() > deadline {
            let report: Vec<String> = members
                .iter()
                .map(|(name, agent)| {
                    let rebalances: Vec<String> = agent
                        .stderr()
                        .lines()
                        .filter(|l| l.contains("partitions "))
                        .map(String::from)
                        .collect();
                    format!("{name} owns {:?}:\n{}", owned(agent), rebalances.join("\n"))
                })
                .collect();
            panic!(
                "timed out after {WAIT:?} waiting for {share} partitions each:\n{}",
                report.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two members share 6 partitions 3/3 with `cooperative-sticky`; a third joins. Only the two
/// partitions it takes are revoked from the others — every other partition stays with its
/// owner throughout — and every message is delivered.
fn cooperative_sticky_moves_only_the_joining_members_share(mut broker: Broker) {
    broker.create_topic("coop", 6);
    let servers = broker.servers();
    let dir = tempfile::tempdir().unwrap();
    let extra = "    assignment_strategy: cooperative-sticky\n";
    let start = |name: &str| {
        let member = dir.path().join(name);
        std::fs::create_dir_all(&member).unwrap();
        let api = free_port();
        Agent::start(
            &member,
            &config(
                &member,
                &servers,
                "coop",
                "coop-group",
                api,
                extra,
                &file_sink(&member, "out.ndjson"),
            ),
        )
    };
    let mut a = start("a");
    let mut b = start("b");
    wait_for_shares(&[("a", &a), ("b", &b)], 3);
    produce(&servers, "coop", None, 0..3000, 1);
    let before = (owned(&a), owned(&b));
    let revoked_before = (
        logged(&a, "partitions revoked", "revoked").len(),
        logged(&b, "partitions revoked", "revoked").len(),
    );
    let mut c = start("c");
    wait_for_shares(&[("a", &a), ("b", &b), ("c", &c)], 2);
    produce(&servers, "coop", None, 3000..6000, 1);
    let out = |name: &str| ids(&dir.path().join(name).join("out.ndjson"));
    let union = || {
        let mut all = out("a");
        for name in ["b", "c"] {
            for (id, n) in out(name) {
                *all.entry(id).or_default() += n;
            }
        }
        all
    };
    wait_until(WAIT, "every message delivered", || union().len() >= 6000);
    let revoked_after = (
        logged(&a, "partitions revoked", "revoked"),
        logged(&b, "partitions revoked", "revoked"),
    );
    let moved: Vec<String> = revoked_after.0[revoked_before.0..]
        .iter()
        .chain(&revoked_after.1[revoked_before.1..])
        .cloned()
        .collect();
    let taken = owned(&c);
    assert_eq!(
        moved.len(),
        2,
        "only two partitions changed owner: {moved:?}"
    );
    assert!(
        moved.iter().all(|p| taken.contains(p)),
        "{moved:?} went to the new member {taken:?}"
    );
    assert!(owned(&a).is_subset(&before.0) && owned(&b).is_subset(&before.1));
    for agent in [&mut a, &mut b, &mut c] {
        assert!(agent.terminate(WAIT).success());
    }
    assert_eq!(union().len(), 6000, "nothing lost");
}

/// The chaos test: three members in one group on 6 partitions, killed with -9 and restarted at
/// random points while a producer keeps writing; at the end every message was delivered at
/// least once. `SLUICE_KAFKA_CHAOS_ROUNDS` sets the rounds (default 6; `scripts/kafka-chaos.sh
/// ROUNDS` runs the long version).
#[test]
fn chaos_members_killed_at_random_while_producing_lose_nothing() {
    let Some(mut broker) = Broker::tansu() else {
        return;
    };
    let rounds: usize = std::env::var("SLUICE_KAFKA_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    broker.create_topic("chaos", 6);
    let servers = broker.servers();
    let dir = tempfile::tempdir().unwrap();
    // Killed members linger until the coordinator gives up on them: a bounded rebalance
    // timeout keeps each rejoin short.
    let extra = "    librdkafka_options:\n      max.poll.interval.ms: \"10000\"\n";
    let members: Vec<std::path::PathBuf> =
        (0..3).map(|i| dir.path().join(format!("m{i}"))).collect();
    let start = |member: &Path| {
        std::fs::create_dir_all(member).unwrap();
        Agent::start(
            member,
            &config(
                member,
                &servers,
                "chaos",
                "chaos-group",
                free_port(),
                extra,
                &file_sink(member, "out.ndjson"),
            ),
        )
    };
    let union = || {
        let mut all: BTreeMap<u64, usize> = BTreeMap::new();
        for member in &members {
            for (id, n) in ids(&member.join("out.ndjson")) {
                *all.entry(id).or_default() += n;
            }
        }
        all
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let (stop, produced, servers) = (stop.clone(), produced.clone(), servers.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                produce(&servers, "chaos", None, next..next + 200, 1);
                next += 200;
                produced.store(next, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut agents: Vec<Agent> = members.iter().map(|m| start(m)).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = seed | 1;
    let mut random = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..rounds {
        let before = union().len();
        wait_until(WAIT, &format!("round {round}: progress"), || {
            union().len() > before
        });
        std::thread::sleep(Duration::from_millis(200 + random(1500)));
        let victim = random(3) as usize;
        unsafe {
            libc::kill(agents[victim].child.id() as i32, libc::SIGKILL);
        }
        agents[victim].wait(Duration::from_secs(10));
        kafka_broker::wait_out_killed_session();
        agents[victim] = start(&members[victim]);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producer.join().unwrap();
    let total = produced.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + 3 * WAIT;
    let mut dumped = false;
    while (union().len() as u64) < total {
        if !dumped && Instant::now() + 2 * WAIT > deadline {
            // One long run of 25 rounds once stalled here: two partitions owned by no live
            // member for minutes (nothing lost; the tail was never read) — tansu's missing
            // rebalance on session expiry, now waited out before each restart (see
            // wait_out_killed_session). Should it happen again, the members' stacks say where
            // they were (best effort: needs gdb).
            dumped = true;
            for (i, agent) in agents.iter().enumerate() {
                let pid = agent.child.id().to_string();
                let batch = ["-p", &pid, "-batch", "-ex", "thread apply all bt 40"];
                if let Ok(out) = std::process::Command::new("gdb").args(batch).output() {
                    let path = dir.path().join(format!("stack-{i}.txt"));
                    let _ = std::fs::write(&path, &out.stdout);
                    eprintln!("member {i} stack: {}", String::from_utf8_lossy(&out.stdout));
                }
            }
        }
        let logs: String = agents
            .iter()
            .map(|a| a.stderr())
            .collect::<Vec<_>>()
            .join("\n---\n");
        assert!(
            Instant::now() < deadline,
            "{} of {total} delivered; logs:\n{}",
            union().len(),
            &logs[logs.len().saturating_sub(20_000)..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for agent in &mut agents {
        assert!(agent.terminate(WAIT).success());
    }
    let all = union();
    let missing: Vec<u64> = (0..total).filter(|id| !all.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let duplicates: usize = all.values().map(|c| c - 1).sum();
    eprintln!("{rounds} kill rounds: {total} messages, none lost, {duplicates} duplicates");
}
