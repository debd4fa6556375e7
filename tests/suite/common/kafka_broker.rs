//! Kafka-protocol brokers for tests and benchmarks: librdkafka's in-process mock cluster, or a
//! real `tansu` broker process on 127.0.0.1 (memory storage), which `scripts/test.sh` builds
//! once into a cache directory (see `scripts/tansu.sh`) and hands over as `SLUICE_TANSU`.
//! Included with `#[path]` (with `proxy.rs` beside it as the crate's `proxy` module) by the
//! Kafka tests and `benches/load.rs`.
//!
//! An outage of the tansu broker is a network outage: clients reach tansu through a TCP proxy
//! in this process (tansu advertises the proxy's address), and [`Broker::down`] closes every
//! connection and refuses new ones. Killing tansu itself would not do: its memory storage
//! forgets topics and producer ids, which a real Kafka cluster keeps across restarts, and
//! librdkafka's idempotent producer then retries forever against `UNKNOWN_PRODUCER_ID`.

use super::proxy::Proxy;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where to find tansu when `SLUICE_TANSU` is unset: the cache `scripts/tansu.sh` fills.
fn default_tansu() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".cache/sluice/tansu-0.6.0/bin/tansu");
    path.exists().then_some(path)
}

/// The tansu binary, or `None` when the caller opted out with `SLUICE_SKIP_TANSU=1`.
/// Panics (fails loudly) when it is missing without the opt-out.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_TANSU") {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = default_tansu() {
        return Some(path);
    }
    if std::env::var("SLUICE_SKIP_TANSU").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_TANSU=1: skipping a test against the real broker");
        return None;
    }
    panic!(
        "tansu (a real Kafka-protocol broker) not found: run scripts/test.sh (which builds it \
         once with scripts/tansu.sh), set SLUICE_TANSU=/path/to/tansu, or set \
         SLUICE_SKIP_TANSU=1 to skip these tests locally"
    );
}

/// A broker the tests produce to and consume from over TCP.
pub enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(Tansu),
}

impl Broker {
    /// librdkafka's mock cluster, in this process.
    pub fn mock() -> Option<Broker> {
        Some(Broker::Mock(
            MockCluster::new(1).expect("mock cluster starts"),
        ))
    }

    /// A tansu process behind a proxy that can cut it off (None when skipped by
    /// `SLUICE_SKIP_TANSU=1`).
    pub fn tansu() -> Option<Broker> {
        let binary = tansu_binary()?;
        Some(Broker::Tansu(Tansu::start(binary, true, None)))
    }

    /// A tansu process that clients reach directly (for benchmarks: no proxy in the path;
    /// [`Broker::down`] is not available). Used by `benches/load.rs`.
    #[allow(dead_code)]
    pub fn tansu_direct() -> Option<Broker> {
        let binary = tansu_binary()?;
        Some(Broker::Tansu(Tansu::start(binary, false, None)))
    }

    /// A tansu process that advertises `port` (a proxy the test runs in front of it, e.g. one
    /// terminating TLS) instead of its own; [`Broker::plaintext_port`] is where it listens.
    pub fn tansu_advertising(binary: PathBuf, port: u16) -> Broker {
        Broker::Tansu(Tansu::start(binary, false, Some(port)))
    }

    /// The port tansu itself listens on, without TLS or proxy.
    pub fn plaintext_port(&self) -> u16 {
        match self {
            Broker::Mock(_) => panic!("the mock cluster has no separate plaintext port"),
            Broker::Tansu(tansu) => tansu.port,
        }
    }

    pub fn servers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Tansu(tansu) => format!("127.0.0.1:{}", tansu.advertised_port()),
        }
    }

    /// The broker's process id, when it runs as its own process. Used by `benches/load.rs`.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        match self {
            Broker::Mock(_) => None,
            Broker::Tansu(tansu) => tansu.child.as_ref().map(Child::id),
        }
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        match self {
            Broker::Mock(cluster) => cluster.create_topic(name, partitions, 1).unwrap(),
            Broker::Tansu(tansu) => {
                tansu.create_topic(name, partitions);
            }
        }
    }

    /// The broker stops answering: connections are closed and new ones refused.
    pub fn down(&mut self) {
        match self {
            Broker::Mock(cluster) => cluster.broker_down(1).unwrap(),
            Broker::Tansu(tansu) => tansu.proxy().set_up(false),
        }
    }

    /// The broker answers again on the same address, with everything it had.
    pub fn up(&mut self) {
        match self {
            Broker::Mock(cluster) => cluster.broker_up(1).unwrap(),
            Broker::Tansu(tansu) => tansu.proxy().set_up(true),
        }
    }
}

pub struct Tansu {
    binary: PathBuf,
    port: u16,
    proxy: Option<Proxy>,
    /// Advertised instead of `port` (and of the proxy's port).
    advertised: Option<u16>,
    child: Option<Child>,
}

impl Tansu {
    fn start(binary: PathBuf, proxied: bool, advertised: Option<u16>) -> Tansu {
        let port = free_port();
        let mut tansu = Tansu {
            binary,
            port,
            proxy: proxied.then(|| Proxy::start(port)),
            advertised,
            child: None,
        };
        tansu.spawn();
        tansu
    }

    fn advertised_port(&self) -> u16 {
        self.advertised
            .or(self.proxy.as_ref().map(|proxy| proxy.port))
            .unwrap_or(self.port)
    }

    fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("an outage needs the broker started with Broker::tansu()")
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let url = self.url();
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised_port());
        let child = Command::new(&self.binary)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited at start with {status} (port {})", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let output = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &self.url()])
            .output()
            .expect("tansu topic create runs");
        assert!(
            output.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Produces each body as one record in a record batch of its own (keys `k0`, `k1`, ...), so
/// that every committed offset is a batch start (see tests/suite/kafka_delivery.rs for why tansu
/// needs it).
pub fn produce_one_per_batch(servers: &str, topic: &str, bodies: impl Iterator<Item = String>) {
    use rdkafka::producer::{BaseProducer, BaseRecord};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (n, body) in bodies.enumerate() {
        let key = format!("k{n}");
        let record = BaseRecord::to(topic).payload(&body).key(&key);
        send_retrying(&producer, record);
        producer.poll(Duration::ZERO);
    }
    flush_while_delivering(&producer);
}

/// Waits until `producer` has delivered everything it holds, for as long as deliveries keep
/// coming: tens of thousands of single-record batches take longer on a loaded machine (CI once
/// missed a fixed 30 s flush by doing so), so the bound is progress, not a total time. Fails
/// after 30 s without a single delivery, or 10 min in all.
pub fn flush_while_delivering(producer: &rdkafka::producer::BaseProducer) {
    use rdkafka::producer::Producer;
    const STALL: Duration = Duration::from_secs(30);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut left = producer.in_flight_count();
    let mut progress_at = Instant::now();
    while left > 0 {
        let _ = producer.flush(Duration::from_secs(1));
        let now = producer.in_flight_count();
        if now < left {
            left = now;
            progress_at = Instant::now();
        }
        assert!(
            progress_at.elapsed() < STALL && Instant::now() < deadline,
            "the producer still holds {now} undelivered messages; no delivery for {:?}",
            progress_at.elapsed()
        );
    }
}

/// Sends `record`, polling while the producer's queue is full.
pub fn send_retrying<'a>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'a, String, String>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// A producer thread writing `{"id": n}` (n = 0, 1, 2, ...) one record per batch, `chunk`
/// records every `pause`, until [`SteadyProducer::finish`]: tests that kill consumers while
/// loading stop it once their kills are done, however fast loading went.
pub struct SteadyProducer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl SteadyProducer {
    pub fn start(servers: &str, topic: &str, chunk: u64, pause: Duration) -> SteadyProducer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (servers, topic, flag) = (servers.to_string(), topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut produced = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let ids = produced..produced + chunk;
                produce_one_per_batch(&servers, &topic, ids.map(|id| format!("{{\"id\":{id}}}")));
                produced += chunk;
                std::thread::sleep(pause);
            }
            produced
        });
        SteadyProducer { stop, thread }
    }

    /// Stops producing; returns how many records were produced (ids `0..n`).
    pub fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The `session_timeout_ms` the kill tests give their kafka sources.
pub const KILL_TEST_SESSION: Duration = Duration::from_secs(6);

/// Waits until a member killed with -9 can no longer be handed partitions, before another
/// member starts. tansu 0.6 drops a member whose session expired without starting a rebalance:
/// a member that joins while a killed one is still listed is given a share as if the dead
/// one were alive (possibly nothing), and the dead one's partitions then stay unowned until
/// the next join (seen: group Stable, one member, no partitions; and a chaos run with two
/// partitions unread for minutes). Kafka and librdkafka's mock cluster rebalance when a
/// session expires; against them the wait only costs time.
pub fn wait_out_killed_session() {
    std::thread::sleep(KILL_TEST_SESSION + Duration::from_secs(1));
}
