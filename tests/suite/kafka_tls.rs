//! Kafka over mutual TLS against a real broker: a `tansu` process on 127.0.0.1 (plaintext)
//! behind a TLS-terminating proxy in this process (`common/tls_proxy.rs`: tokio-rustls,
//! client certificates required), with tansu advertising the proxy's address, so every
//! connection librdkafka makes — bootstrap and partition leader — is TLS. Certificates are
//! made in the test with rcgen. The `sluice` child process produces through its kafka sink; the
//! test consumes with rdkafka over the same TLS.

use crate::common::{kafka_broker, pki, tls_proxy};
use crate::common::{wait_until, Agent};
use kafka_broker::Broker;
use pki::Pki;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tls_proxy::TlsProxy;

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "secure";

/// stdin -> kafka sink over TLS, presenting `identity` (`<name>.crt`/`.key` in `dir`).
fn sink_config(dir: &Path, servers: &str, identity: &str) -> String {
    let file = |name: String| dir.join(name).display().to_string();
    format!(
        "data_dir: {data}\nshutdown_timeout_secs: 3\nsources:\n  in:\n    type: stdin\n    decoding:\n      codec: json\nsinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: \"{servers}\"\n    topic: {TOPIC}\n    key_field: id\n    tls:\n      ca_file: {ca}\n      crt_file: {cert}\n      key_file: {key}\n",
        data = dir.join(format!("data-{identity}")).display(),
        ca = file("ca.crt".into()),
        cert = file(format!("{identity}.crt")),
        key = file(format!("{identity}.key")),
    )
}

fn tls_client(dir: &Path, servers: &str) -> ClientConfig {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", file("ca.crt"))
        .set("ssl.certificate.location", file("client.crt"))
        .set("ssl.key.location", file("client.key"));
    config
}

/// Every message in the topic, by id, read over TLS until `expected` ids were seen.
fn consume(dir: &Path, servers: &str, expected: usize) -> BTreeMap<u64, usize> {
    let consumer: BaseConsumer = tls_client(dir, servers)
        .set("group.id", format!("check-{expected}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            *seen.entry(value["id"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

/// Produces one message with `id` over TLS, as a marker of the topic's end (one partition).
fn produce_marker(dir: &Path, servers: &str, id: u64) {
    let producer: BaseProducer = tls_client(dir, servers).create().unwrap();
    let payload = format!(r#"{{"id":{id}}}"#);
    producer
        .send(BaseRecord::<(), _>::to(TOPIC).payload(&payload))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// An agent with the kafka sink presenting `identity`, fed the events `ids` on stdin (closed
/// after them).
fn sink_agent(dir: &Path, servers: &str, identity: &str, ids: std::ops::Range<u64>) -> Agent {
    let mut agent = Agent::start_with(
        dir,
        &sink_config(dir, servers, identity),
        Stdio::piped(),
        Stdio::null(),
    );
    let mut stdin = agent.child.stdin.take().unwrap();
    for id in ids {
        writeln!(stdin, r#"{{"id":{id},"msg":"over tls"}}"#).unwrap();
    }
    agent
}

#[test]
fn the_sink_delivers_over_mutual_tls_and_a_client_without_a_valid_certificate_is_refused() {
    let Some(binary) = kafka_broker::tansu_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::ca(dir.path(), "ca");
    Pki::leaf(dir.path(), "broker", &ca);
    Pki::leaf(dir.path(), "client", &ca);
    let rogue = Pki::ca(dir.path(), "rogue-ca");
    Pki::leaf(dir.path(), "intruder", &rogue);

    let mut proxy = TlsProxy::bind();
    let mut broker = Broker::tansu_advertising(binary, proxy.port);
    proxy.serve(
        &dir.path().join("broker.crt"),
        &dir.path().join("broker.key"),
        &dir.path().join("ca.crt"),
        broker.plaintext_port(),
    );
    broker.create_topic(TOPIC, 1);
    let servers = broker.servers();

    // A client certificate the broker's CA signed: every event is delivered, once.
    let mut agent = sink_agent(dir.path(), &servers, "client", 0..300);
    let status = agent.wait(WAIT);
    assert!(status.success(), "{}", agent.stderr());
    let seen = consume(dir.path(), &servers, 300);
    assert_eq!(seen.len(), 300, "every event arrived");
    assert!(seen.values().all(|&n| n == 1), "and only once");
    assert!(proxy.accepted() > 0);
    assert_eq!(proxy.refused(), 0, "no handshake failed for valid clients");

    // A certificate from another CA: the handshake is refused, nothing is produced, and the
    // agent says why.
    let mut intruder = sink_agent(dir.path(), &servers, "intruder", 1000..1010);
    wait_until(WAIT, "a refused handshake", || proxy.refused() > 0);
    wait_until(WAIT, "the agent to log the TLS failure", || {
        intruder.stderr().contains("alert certificate required")
    });
    intruder.terminate(WAIT);
    // Everything in the topic up to a marker produced now: the 300, none of the intruder's.
    const MARKER: u64 = 9999;
    produce_marker(dir.path(), &servers, MARKER);
    let seen = consume(dir.path(), &servers, 301);
    assert!(seen.contains_key(&MARKER), "the marker arrived");
    let ids: Vec<u64> = seen.keys().copied().filter(|&id| id != MARKER).collect();
    assert_eq!(
        ids,
        (0..300).collect::<Vec<_>>(),
        "the intruder produced nothing"
    );
}
