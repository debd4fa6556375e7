//! Load harness: runs the real `sluice` binary (release) on fixed-seed generated NDJSON
//! (~250-byte lines) and reports events/s, MiB/s, CPU seconds and peak RSS per scenario.
//!
//! Also file -> kafka and kafka -> blackhole against a local tansu broker (built by
//! `scripts/tansu.sh`; see `tests/common/kafka_broker.rs`), http_server -> memory or disk
//! buffer -> http sink, and the peak RSS of a disk backlog.
//!
//! Usage: `cargo bench --bench load` (env: `BENCH_LINES`, default 2,000,000;
//! `BENCH_CORES`, default 1: the agent is pinned with `taskset` and runs that many tokio
//! workers). Progress is read from the agent's own /metrics, so the harness does not perturb
//! the pipeline; CPU and peak RSS come from /proc. `BENCH_FILTER=kafka` (or `http`, `remap`,
//! ...) runs only the scenarios whose names contain it. `BENCH_SLUICE=/path/to/sluice` runs
//! another build of the agent (a saved "before" binary) through the same scenarios.

// The test suite's servers, shared; the harness uses only part of each.
#[allow(dead_code)]
#[path = "../tests/suite/common/kafka_broker.rs"]
mod kafka_broker;
#[allow(dead_code)]
#[path = "../tests/suite/common/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/suite/common/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/suite/common/proxy.rs"]
mod proxy;
// The generated input, shared with the in-process `pipeline` bench.
#[path = "common/input.rs"]
mod input;
// Certificates for the TLS scenario.
#[path = "../tests/suite/common/pki.rs"]
mod pki;

use kafka_broker::Broker;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    /// Topology after the file source `in`; `{out}` is replaced by an output path.
    rest: &'static str,
    /// The component whose `component_sent_events_total` reaching the input count means done.
    done_component: &'static str,
    done_metric: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "file -> blackhole (passthrough)",
        rest: "sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
        done_component: "out",
        done_metric: "component_received_events_total",
    },
    Scenario {
        name: "file -> remap(parse_json, add, del) -> file ndjson",
        rest: "transforms:\n  parse:\n    type: remap\n    inputs: [in]\n    drop_on_error: true\n    source: |\n      . = parse_json!(.message)\n      .pipeline = \"bench\"\n      del(.trace_id)\nsinks:\n  out:\n    type: file\n    inputs: [parse]\n    path: {out}\n    encoding:\n      codec: ndjson\n",
        done_component: "out",
        done_metric: "component_sent_events_total",
    },
];

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this is a no-op.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load harness: run with `cargo bench --bench load`");
        return;
    }
    let lines: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let cores: usize = std::env::var("BENCH_CORES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let input = work.join("input.ndjson");
    let bytes = input::write(&input, lines);
    println!(
        "input: {lines} lines, {:.1} MiB ({} B/line), {cores} core(s)",
        mib(bytes),
        bytes / lines as u64
    );
    println!(
        "{:<52} {:>12} {:>9} {:>8} {:>12} {:>10}",
        "scenario", "events/s", "MiB/s", "CPU s", "MiB/CPU-s", "peak RSS"
    );
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    let wanted = |name: &str| name.contains(filter.as_str());
    for scenario in SCENARIOS.iter().filter(|s| wanted(s.name)) {
        let result = run(scenario, &work, &input, lines, cores);
        report(scenario.name, lines, bytes, &result);
    }
    if wanted("kafka") {
        kafka_scenarios(&work, &input, lines, bytes, cores);
    }
    if wanted("s3") {
        s3_scenarios(&work, &input, lines, bytes, cores);
    }
    if wanted("iceberg") {
        iceberg_scenarios(&work, &input, lines, bytes, cores);
    }
    if wanted("postgres") {
        postgres_scenarios(&work, &input, lines, bytes, cores);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if wanted("idle") {
        runtime.block_on(idle_rss(&work, lines.min(100_000), cores));
    }
    if !wanted("http") {
        return;
    }

    // http_server -> blackhole: 8 clients posting ~1 MiB NDJSON bodies, plaintext and TLS.
    for (name, tls) in [
        (
            "http_server (1 MiB NDJSON bodies, json) -> blackhole",
            false,
        ),
        ("http_server over TLS, same load -> blackhole", true),
    ] {
        let (result, sent) = runtime.block_on(http_ingest(&work, lines, cores, tls));
        report(name, lines, sent, &result);
    }

    // http -> buffer -> http: requests of 500 events from 4 concurrent clients, acknowledgements
    // on (a request is answered once its events are delivered, or fsynced into the disk buffer).
    let http_events = (lines / 4).max(500);
    for (name, buffer) in [
        ("http -> memory buffer -> http", "      type: memory\n"),
        (
            "http -> disk buffer (fsync 200 ms) -> http",
            "      type: disk\n      fsync_interval_ms: 200\n",
        ),
    ] {
        let (result, sent) = runtime.block_on(http_run(&work, buffer, http_events, cores, false));
        report(name, http_events, sent, &result);
    }
    // A backlog on disk while the endpoint is down: memory must not grow with it.
    let (result, sent) = runtime.block_on(http_run(
        &work,
        "      type: disk\n      max_size: 4294967296\n",
        http_events,
        cores,
        true,
    ));
    println!(
        "disk backlog of {:.0} MiB built while the endpoint was down, then drained: peak RSS {:.1} MiB",
        mib(sent),
        result.peak_rss_kib as f64 / 1024.0
    );
}

/// file (JSON) -> aws_s3 partitioned by service (6 prefixes), NDJSON + zstd and Parquet
/// (inferred schema, snappy), written to a local directory and to moto's S3 emulator on
/// 127.0.0.1 (skipped when `SLUICE_SKIP_MOTO=1`).
fn s3_scenarios(work: &Path, input: &Path, lines: usize, bytes: u64, cores: usize) {
    let source = format!(
        "  in:\n    type: file\n    include: [{}]\n    decoding:\n      codec: json\n",
        input.display()
    );
    let formats = [
        ("ndjson + zstd", "    compression: zstd\n"),
        ("parquet", "    encoding:\n      codec: parquet\n"),
    ];
    // The baseline: what JSON decoding alone costs.
    let baseline = Scenario {
        name: "file (JSON decoding) -> blackhole",
        rest: "sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
        done_component: "out",
        done_metric: "component_received_events_total",
    };
    let result = run_with(&baseline, work, &source, baseline.rest, lines, cores);
    report(baseline.name, lines, bytes, &result);
    let lake = work.join("lake");
    let scenario = Scenario {
        name: "file -> aws_s3",
        rest: "",
        done_component: "out",
        done_metric: "component_sent_events_total",
    };
    let sink = |target: &str, format: &str| {
        format!("sinks:\n  out:\n    type: aws_s3\n    inputs: [in]\n    bucket: bench\n    key_prefix: \"service={{{{ service }}}}/\"\n    batch:\n      timeout_secs: 0.2\n{target}{format}")
    };
    for (name, format) in formats {
        let target = format!("    local_directory: {}\n", lake.display());
        let result = run_with(
            &scenario,
            work,
            &source,
            &sink(&target, format),
            lines,
            cores,
        );
        report(
            &format!("file -> aws_s3 {name} (local directory)"),
            lines,
            bytes,
            &result,
        );
        let _ = std::fs::remove_dir_all(&lake);
    }
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        moto.s3()
            .await
            .create_bucket()
            .bucket("bench")
            .send()
            .await
            .unwrap();
    });
    for (name, format) in formats {
        let target = format!("    force_path_style: true\n{}", moto.yaml("    "));
        let result = run_with(
            &scenario,
            work,
            &source,
            &sink(&target, format),
            lines,
            cores,
        );
        report(
            &format!("file -> aws_s3 {name} (moto)"),
            lines,
            bytes,
            &result,
        );
    }
}

/// file (JSON) -> iceberg: a local warehouse and SQLite catalog, 8 typed columns, partitioned
/// by day and service, zstd Parquet data files, one snapshot a second (the harness waits for the commit).
fn iceberg_scenarios(work: &Path, input: &Path, lines: usize, bytes: u64, cores: usize) {
    let lake = work.join("iceberg");
    let _ = std::fs::remove_dir_all(&lake);
    let source = format!(
        "  in:\n    type: file\n    include: [{}]\n    decoding:\n      codec: json\n",
        input.display()
    );
    let sink = format!(
        "sinks:\n  out:\n    type: iceberg\n    inputs: [in]\n    catalog: {{type: sql, uri: \"sqlite://{lake}/catalog.db\"}}\n    warehouse: {lake}/warehouse\n    namespace: bench\n    table: requests\n    schema:\n      - {{name: timestamp, type: timestamp}}\n      - {{name: service, type: string}}\n      - {{name: host, type: string}}\n      - {{name: method, type: string}}\n      - {{name: path, type: string}}\n      - {{name: status, type: int64}}\n      - {{name: bytes, type: int64}}\n      - {{name: latency_ms, type: float64}}\n    partition_by:\n      - {{field: timestamp, transform: day}}\n      - {{field: service, transform: identity}}\n    commit_interval_secs: 1\n",
        lake = lake.display()
    );
    let scenario = Scenario {
        name: "file -> iceberg",
        rest: "",
        done_component: "out",
        done_metric: "component_sent_events_total",
    };
    let result = run_with(&scenario, work, &source, &sink, lines, cores);
    report(
        "file -> iceberg (local, zstd, 2 partition fields)",
        lines,
        bytes,
        &result,
    );
}

/// file (JSON) -> postgres, 10 columns, binary COPY in transactions of 10,000 rows, into a
/// server started here on 127.0.0.1 (not pinned: it takes the other core). Skipped when
/// `SLUICE_SKIP_POSTGRES=1`.
fn postgres_scenarios(work: &Path, input: &Path, lines: usize, bytes: u64, cores: usize) {
    let Some(pg) = postgres::Postgres::start() else {
        return;
    };
    pg.execute(
        "CREATE TABLE requests (timestamp timestamptz, level text, service text, host text, \
         method text, path text, status integer, bytes bigint, latency_ms double precision, \
         message text)",
    );
    let source = format!(
        "  in:\n    type: file\n    include: [{}]\n    decoding:\n      codec: json\n",
        input.display()
    );
    let sink = format!(
        "sinks:\n  out:\n    type: postgres\n    inputs: [in]\n    endpoint: {}\n    table: requests\n    columns: {{timestamp: timestamp, level: level, service: service, host: host, method: method, path: path, status: status, bytes: bytes, latency_ms: latency_ms, message: message}}\n    batch: {{max_events: 10000, timeout_secs: 1}}\n",
        pg.url()
    );
    let scenario = Scenario {
        name: "file -> postgres",
        rest: "",
        done_component: "out",
        done_metric: "component_sent_events_total",
    };
    let result = run_with(&scenario, work, &source, &sink, lines, cores);
    report("file -> postgres (COPY, 10 columns)", lines, bytes, &result);
    let rows = pg.scalar("SELECT count(*) FROM requests");
    assert_eq!(rows, lines as i64, "every line is a row");
}

/// file -> kafka and kafka -> blackhole against a real tansu broker process on 127.0.0.1
/// (librdkafka's mock cluster when `SLUICE_SKIP_TANSU=1`: produce only, as the mock broker
/// keeps just 100k messages per partition).
fn kafka_scenarios(work: &Path, input: &Path, lines: usize, bytes: u64, cores: usize) {
    let (mut broker, label) = match Broker::tansu_direct() {
        Some(broker) => (broker, "tansu"),
        None => (Broker::mock().unwrap(), "mock broker"),
    };
    broker.create_topic("bench", 4);
    let servers = broker.servers();
    let produce = Scenario {
        name: "file -> kafka",
        rest: "",
        done_component: "out",
        done_metric: "component_sent_events_total",
    };
    let sink = format!("sinks:\n  out:\n    type: kafka\n    inputs: [in]\n    bootstrap_servers: \"{servers}\"\n    topic: bench\n    encoding:\n      codec: text\n");
    let source = format!(
        "  in:\n    type: file\n    include: [{}]\n",
        input.display()
    );
    let broker_cpu = || broker.pid().map_or(0.0, cpu_seconds);
    let before = broker_cpu();
    let result = run_with(&produce, work, &source, &sink, lines, cores);
    report(&format!("file -> kafka ({label})"), lines, bytes, &result);
    let produced = broker_cpu();
    if label != "tansu" {
        return;
    }
    let consume = Scenario {
        name: "kafka -> blackhole",
        rest: "sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
        done_component: "out",
        done_metric: "component_received_events_total",
    };
    let source = format!("  in:\n    type: kafka\n    bootstrap_servers: \"{servers}\"\n    topics: [bench]\n    group_id: bench\n    auto_offset_reset: earliest\n    fetch_wait_max_ms: 10\n");
    let result = run_with(&consume, work, &source, consume.rest, lines, cores);
    report(
        &format!("kafka -> blackhole ({label})"),
        lines,
        bytes,
        &result,
    );
    println!(
        "  broker CPU s (tansu, on the other core): {:.2} while producing, {:.2} while consuming",
        produced - before,
        broker_cpu() - produced
    );
}

fn report(name: &str, events: usize, bytes: u64, result: &Measured) {
    println!(
        "{:<52} {:>12.0} {:>9.1} {:>8.2} {:>12.1} {:>7.1} MiB",
        name,
        events as f64 / result.wall,
        mib(bytes) / result.wall,
        result.cpu,
        mib(bytes) / result.cpu,
        result.peak_rss_kib as f64 / 1024.0
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Measured {
    wall: f64,
    cpu: f64,
    peak_rss_kib: u64,
}

impl Measured {
    /// The agent `pid`'s CPU time and peak RSS so far, and the wall time since `started`.
    fn of(pid: u32, started: Instant) -> Measured {
        Measured {
            wall: started.elapsed().as_secs_f64(),
            cpu: cpu_seconds(pid),
            peak_rss_kib: peak_rss_kib(pid),
        }
    }
}

fn run(scenario: &Scenario, work: &Path, input: &Path, lines: usize, cores: usize) -> Measured {
    let source = format!(
        "  in:\n    type: file\n    include: [{}]\n",
        input.display()
    );
    run_with(scenario, work, &source, scenario.rest, lines, cores)
}

/// Runs a pipeline whose source is `source` (YAML under `sources:`) and the rest `rest`,
/// until `scenario.done_metric` of its done component reaches `lines`.
fn run_with(
    scenario: &Scenario,
    work: &Path,
    source: &str,
    rest: &str,
    lines: usize,
    cores: usize,
) -> Measured {
    let dir = work.join(format!("run-{}", Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    let api_port = free_port();
    let config = format!(
        "data_dir: {data}\napi:\n  enabled: true\n  address: 127.0.0.1:{api_port}\nsources:\n{source}{rest}",
        data = dir.join("data").display(),
        rest = rest.replace("{out}", &dir.join("out.ndjson").display().to_string())
    );
    let (started, mut child) = start_agent(&dir, &config, cores);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(25));
        if metric(api_port, scenario.done_metric, scenario.done_component) >= lines as f64 {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            panic!("scenario `{}` did not finish", scenario.name);
        }
    }
    let measured = Measured::of(pid, started);
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

fn stop(child: &mut std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// Runs http_server -> (buffer) -> http sink against an in-process receiver. With
/// `endpoint_down_first`, the receiver answers 503 until every event is accepted (a backlog
/// builds in the buffer), then recovers. Returns the measurements and the bytes sent.
async fn http_run(
    work: &Path,
    buffer: &str,
    events: usize,
    cores: usize,
    endpoint_down_first: bool,
) -> (Measured, u64) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let received = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(endpoint_down_first));
    let app = {
        let (received, down) = (received.clone(), down.clone());
        axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (received, down) = (received.clone(), down.clone());
                async move {
                    if down.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    received.fetch_add(
                        body.iter().filter(|b| **b == b'\n').count(),
                        Ordering::SeqCst,
                    );
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = work.join(format!("http-{}", Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    let source_port = free_port();
    let config = format!(
        "data_dir: {data}\nsources:\n  in:\n    type: http_server\n    address: 127.0.0.1:{source_port}\n    ack_timeout_secs: 600\nsinks:\n  out:\n    type: http\n    inputs: [in]\n    uri: http://127.0.0.1:{sink_port}/\n    request:\n      retry_initial_backoff_ms: 50\n      retry_max_backoff_secs: 0.5\n    buffer:\n{buffer}",
        data = dir.join("data").display()
    );
    let (started, mut child) = start_agent(&dir, &config, cores);
    let pid = child.id();
    let url = format!("http://127.0.0.1:{source_port}/");
    let client = reqwest::Client::new();
    while client.post(&url).body("").send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let per_request = 500;
    let requests = events.div_ceil(per_request);
    let next = Arc::new(AtomicUsize::new(0));
    let sent_bytes = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, url, next, sent_bytes) = (
            client.clone(),
            url.clone(),
            next.clone(),
            sent_bytes.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, Ordering::SeqCst);
                if r >= requests {
                    break;
                }
                let body: String = (r * per_request..(r + 1) * per_request)
                    .map(http_line)
                    .collect();
                sent_bytes.fetch_add(body.len(), Ordering::SeqCst);
                post_until_accepted(&client, &url, body.into()).await;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    down.store(false, Ordering::SeqCst);
    let total = requests * per_request;
    while received.load(Ordering::SeqCst) < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let measured = Measured::of(pid, started);
    stop(&mut child);
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    (measured, sent_bytes.load(Ordering::SeqCst) as u64)
}

/// http_server (newline framing, JSON decoding) -> blackhole under 8 concurrent clients, each
/// posting the input in ~1 MiB bodies, over plaintext or TLS (a server certificate signed by a
/// CA made here; rustls in the agent and in the clients, which run on the other core). The
/// clock starts at the first body, once the agent answers; returns the bytes posted.
async fn http_ingest(work: &Path, lines: usize, cores: usize, tls: bool) -> (Measured, u64) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = work.join(format!("ingest-{}", Instant::now().elapsed().as_nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tls_config, client, scheme) = if tls {
        let ca = pki::Pki::ca(&dir, "ca");
        pki::Pki::leaf(&dir, "server", &ca);
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let config = format!(
            "    tls:\n      crt_file: {d}/server.crt\n      key_file: {d}/server.key\n",
            d = dir.display()
        );
        (config, client, "https")
    } else {
        (String::new(), reqwest::Client::new(), "http")
    };
    let bodies = one_mib_bodies(lines);
    let sent: usize = bodies.iter().map(|b| b.len()).sum();
    let (port, api_port) = (free_port(), free_port());
    let config = http_to_blackhole(&dir, port, api_port, &tls_config);
    let (_, mut child) = start_agent(&dir, &config, cores);
    let pid = child.id();
    let url = format!("{scheme}://localhost:{port}/");
    wait_until_answering(&client, &url).await;
    let started = Instant::now();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, url, bodies, next) =
            (client.clone(), url.clone(), bodies.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::SeqCst)) {
                post_until_accepted(&client, &url, body.clone()).await;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while metric(api_port, "component_received_events_total", "out") < lines as f64 {
        assert!(Instant::now() < deadline, "http ingest did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let measured = Measured::of(pid, started);
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    (measured, sent as u64)
}

/// The resident memory of an idle http_server (JSON decoding) -> blackhole agent: once it
/// answers, 10 s later (after it gave back its startup pages, `src/resident.rs`), and 10 s
/// after it took `lines` events in 1 MiB bodies. Prints the split into anonymous memory (heap,
/// stacks, relocated data) and file pages (the binary's code and constants, libraries).
async fn idle_rss(work: &Path, lines: usize, cores: usize) {
    let dir = work.join("idle");
    std::fs::create_dir_all(&dir).unwrap();
    let (port, api_port) = (free_port(), free_port());
    let config = http_to_blackhole(&dir, port, api_port, "");
    let (_, mut child) = start_agent(&dir, &config, cores);
    let pid = child.id();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    wait_until_answering(&client, &url).await;
    let show = |when: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "{:<52} {:>8.1} MiB (anonymous {:.1}, file {:.1})",
            format!("http_server -> blackhole, idle RSS {when}"),
            kib("VmRSS:") / 1024.0,
            kib("RssAnon:") / 1024.0,
            kib("RssFile:") / 1024.0
        );
    };
    show("when ready");
    tokio::time::sleep(Duration::from_secs(10)).await;
    show("10 s later");
    for body in one_mib_bodies(lines) {
        post_until_accepted(&client, &url, body).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(api_port, "component_received_events_total", "out") < lines as f64 {
        assert!(
            Instant::now() < deadline,
            "the idle agent did not take its events"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    show(&format!("10 s after {lines} events"));
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
}

/// http_server on `port` (JSON decoding, `tls` lines under it) -> blackhole, with the api on
/// `api_port` for the harness to read progress from.
fn http_to_blackhole(dir: &Path, port: u16, api_port: u16, tls: &str) -> String {
    format!(
        "data_dir: {data}\napi:\n  enabled: true\n  address: 127.0.0.1:{api_port}\nsources:\n  in:\n    type: http_server\n    address: 127.0.0.1:{port}\n    decoding:\n      codec: json\n{tls}sinks:\n  out:\n    type: blackhole\n    inputs: [in]\n",
        data = dir.join("data").display()
    )
}

/// The first `lines` input lines as NDJSON bodies of ~1 MiB each.
fn one_mib_bodies(lines: usize) -> Vec<bytes::Bytes> {
    let mut bodies = Vec::new();
    let mut body = String::with_capacity(1 << 21);
    for line in input::lines(lines) {
        body.push_str(&line);
        body.push('\n');
        if body.len() >= 1 << 20 {
            bodies.push(std::mem::replace(&mut body, String::with_capacity(1 << 21)).into());
        }
    }
    if !body.is_empty() {
        bodies.push(body.into());
    }
    bodies
}

/// Waits (up to 30 s) until the agent's http_server answers an empty POST at `url`.
async fn wait_until_answering(client: &reqwest::Client, url: &str) {
    let ready_by = Instant::now() + Duration::from_secs(30);
    while client.post(url).body("").send().await.is_err() {
        assert!(
            Instant::now() < ready_by,
            "the agent did not answer on {url}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Posts `body` until the agent answers 2xx (it answers 503 while its pipeline is full).
async fn post_until_accepted(client: &reqwest::Client, url: &str, body: bytes::Bytes) {
    loop {
        match client.post(url).body(body.clone()).send().await {
            Ok(response) if response.status().is_success() => return,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One ~250-byte JSON event for the HTTP scenarios.
fn http_line(i: usize) -> String {
    format!("{{\"seq\":{i},\"service\":\"checkout\",\"level\":\"info\",\"path\":\"/api/v1/items/{i}\",\"status\":200,\"message\":\"{}\"}}\n", "m".repeat(150))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `config` into `dir` and starts the agent on it; returns when it started and the child.
fn start_agent(dir: &Path, config: &str, cores: usize) -> (Instant, std::process::Child) {
    let config_path = dir.join("bench.yaml");
    std::fs::write(&config_path, config).unwrap();
    let started = Instant::now();
    let child = sluice_command(cores)
        .args(["run", "--config"])
        .arg(&config_path)
        .spawn()
        .expect("start sluice");
    (started, child)
}

/// The agent, pinned to `cores` CPUs (with `taskset`, when present) with that many tokio workers.
fn sluice_command(cores: usize) -> Command {
    // `BENCH_SLUICE=/path/to/sluice`: another build (a saved "before" binary), for before/after
    // comparisons in one run.
    let bin = std::env::var("BENCH_SLUICE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").into());
    let cpus = (0..cores)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut command = if Command::new("taskset").arg("--version").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpus]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    command
        .env("TOKIO_WORKER_THREADS", cores.to_string())
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null());
    command
}

fn metric(port: u16, name: &str, component: &str) -> f64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let label = format!("component_id=\"{component}\"");
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
