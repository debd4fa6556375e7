//! Fuzzing in random-mutation mode (runs on the stable toolchain, no instrumentation): every
//! target of `sluice::fuzz` in process, plus the http_server request path against a real
//! `sluice` process over TCP on 127.0.0.1 (raw request bytes: request line, headers, body).
//!
//! Each target first replays its regression inputs (`tests/fuzz/regressions/<target>/`) and
//! seeds, then mutates them (bit flips, byte edits, splices, repeats, interesting numbers) for
//! `SLUICE_FUZZ_SECONDS` (default 6 per target in CI). `SLUICE_FUZZ_SEED` replays a run; the
//! seed is printed. A panic saves the input to `target/fuzz-findings/<target>-<hash>` and fails
//! with its path; an input that takes longer than 2 s is reported as a hang.
//! `scripts/fuzz.sh TARGET SECONDS` runs one target for longer.

use crate::common;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MAX_INPUT: usize = 4096;
const HANG: Duration = Duration::from_secs(2);

fn budget() -> Duration {
    let seconds = std::env::var("SLUICE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(seconds)
}

fn seed() -> u64 {
    common::seed_from("SLUICE_FUZZ_SEED")
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
                .collect()
        })
        .unwrap_or_default();
    inputs.sort();
    inputs.into_iter().map(|(_, bytes)| bytes).collect()
}

/// Values that often sit on a boundary: lengths, varint edges, signed limits.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    1 << 63,
];

/// One random mutation of `input`, sometimes spliced with another corpus entry.
fn mutate(rng: &mut StdRng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] = rng.random();
            }
            2 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                out.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let from = rng.random_range(0..len);
                let to = (from + rng.random_range(1..=32)).min(len);
                out.drain(from..to);
            }
            4 if len > 0 => {
                // Repeat a slice: deep nesting, long lines, many records.
                let from = rng.random_range(0..len);
                let to = (from + rng.random_range(1..=16)).min(len);
                let piece = out[from..to].to_vec();
                let times = rng.random_range(1..=64);
                let at = rng.random_range(0..=out.len());
                let repeated: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                out.splice(at..at, repeated);
            }
            5 if len >= 4 => {
                let at = rng.random_range(0..=len - 4);
                let value = INTERESTING[rng.random_range(0..INTERESTING.len())] as u32;
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => out.truncate(rng.random_range(0..len)),
            _ => {
                let at = rng.random_range(0..=len);
                let bytes = [b'\n', b'"', b'{', b'[', b'}', b']', b'\\', b':', b'$', 0];
                out.insert(at, bytes[rng.random_range(0..bytes.len())]);
            }
        }
    }
    out.truncate(MAX_INPUT);
    out
}

fn save_finding(target: &str, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{target}-{:08x}", crc32fast::hash(input)));
    std::fs::write(&path, input).unwrap();
    path
}

/// Runs `run` on the regressions, the seeds, then mutations until the time budget is spent.
/// Returns how many inputs ran.
fn fuzz(target: &str, seeds: Vec<Vec<u8>>, mut run: impl FnMut(&[u8])) -> u64 {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut corpus = regressions(target);
    corpus.extend(seeds);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let deadline = Instant::now() + budget();
    let mut executions = 0u64;
    let mut check = |input: &[u8], executions: &mut u64| {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(input)));
        *executions += 1;
        if let Err(panic) = outcome {
            let path = save_finding(target, input);
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{target}: input {} panicked: {message} (seed {seed})",
                path.display()
            );
        }
        if started.elapsed() > HANG {
            let path = save_finding(target, input);
            panic!(
                "{target}: input {} took {:?} (seed {seed})",
                path.display(),
                started.elapsed()
            );
        }
    };
    for input in corpus.clone() {
        check(&input, &mut executions);
    }
    while Instant::now() < deadline {
        let parent = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(&mut rng, parent, &corpus);
        check(&input, &mut executions);
        // Keep some mutants as parents: deeper mutations without coverage feedback.
        if rng.random_range(0..64) == 0 && corpus.len() < 512 {
            corpus.push(input);
        }
    }
    eprintln!("fuzz {target}: {executions} executions, seed {seed}, no finding");
    executions
}

fn library_target(name: &str) -> fn(&[u8]) {
    sluice::fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

fn run_library_target(name: &str, seeds: Vec<Vec<u8>>) {
    // Panics are caught and reported with their input; keep the default hook's noise out.
    let executions = fuzz(name, seeds, library_target(name));
    assert!(executions > 0);
}

fn text(seeds: &[&str]) -> Vec<Vec<u8>> {
    seeds.iter().map(|s| s.as_bytes().to_vec()).collect()
}

#[test]
fn lines_json() {
    let mut seeds = text(&[
        "\x04{\"a\":1}\n{\"b\":[1,2,{\"c\":null}]}\nplain\n",
        "\x00[1,2,3]\n\"str\"\n{\"x\":1.5e300}\r\n",
        "\x05{\"k\":\"\\ud800\"}\n{\"deep\":[[[[[[]]]]]]}\n",
    ]);
    seeds.push(b"\x0f{\"bytes\":\"\xff\xfe\"}\n".to_vec());
    run_library_target("lines_json", seeds);
}

#[test]
fn json_value() {
    let mut seeds = text(&[
        r#"{"timestamp":"2026-01-01T00:00:00.000Z","level":"info","status":200,"latency_ms":420.51}"#,
        r#"{"esc":"a\"b\\c\n\u00e9\ud83d\ude00\/","n":[-0,-1.5e-3,1E400,12345678901234567890]}"#,
        r#"  [true, false, null, {"a": {"b": [[], {}]}}, "x"]  "#,
        r#"{"dup":1,"dup":"two","":{}}"#,
    ]);
    seeds.push(b"{\"bytes\":\"\xc3\xa9\xff\"}".to_vec());
    run_library_target("json_value", seeds);
}

#[test]
fn remap_text() {
    let mut seeds = text(&[
        "\x01{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"trace_id\":\"64f0\",\"status\":200,\"latency_ms\":420.51}",
        "\x02 { \"a\" : [1, {\"b\": \",\"}] , \"c\":\"}\",\"a\":2 ,\"d\":-1.5e3} ",
        "\x03{\"\":1,\"é\":\"x\\\"y\",\"b\":{\"a\":null},\"a\":true}",
        "\x00{\"dup\":1,\"dup\":\"two\",\"n\":-0}",
    ]);
    seeds.push(b"\x01{\"bytes\":\"\xc3\xa9\xff\"}".to_vec());
    run_library_target("remap_text", seeds);
}

#[test]
fn decompress() {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut gzip = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&vec![b'a'; 100_000]).unwrap();
    let mut gz_seed = vec![0u8];
    gz_seed.extend(gzip.finish().unwrap());
    let mut zstd_seed = vec![1u8];
    zstd_seed.extend(zstd::encode_all(&b"{\"a\":1}\n".repeat(1000)[..], 3).unwrap());
    run_library_target(
        "decompress",
        vec![gz_seed, zstd_seed, b"\x03plain".to_vec()],
    );
}

#[test]
fn config() {
    let seeds = text(&[
        "sources:\n  in:\n    type: demo\n    interval_secs: 0.1\ntransforms:\n  r:\n    type: remap\n    inputs: [in]\n    source: '.a = 1'\nsinks:\n  out:\n    type: console\n    inputs: [r]\n",
        "data_dir: ${HOME:-/tmp}\nsources:\n  f:\n    type: file\n    include: [\"/var/log/*.log\"]\nsinks:\n  b:\n    type: blackhole\n    inputs: [f]\n    buffer:\n      type: disk\n      max_size: 1000\n",
        "sources:\n  s:\n    type: stdin\nsinks:\n  h:\n    type: http\n    inputs: [s]\n    uri: ${file:/nonexistent}\n    auth:\n      strategy: bearer\n      token: ${file:/dev/zero}\n",
        "sources:\n  k:\n    type: kafka\n    bootstrap_servers: 127.0.0.1:9\n    topics: [\"^a.*\"]\n    group_id: g\nsinks:\n  h:\n    type: http\n    inputs: [k]\n    uri: http://127.0.0.1:1/\n    auth:\n      strategy: bearer\n      token: ${TOKEN}\n",
    ]);
    run_library_target("config", seeds);
}

#[test]
fn buffer_record() {
    use sluice::buffer::disk::record;
    use sluice::event::{Event, EventBatch};
    let value: serde_json::Value = serde_json::json!({
        "message": "hello", "n": 42, "f": 1.5, "ok": true, "none": null,
        "list": [1, "two", {"three": 3}]
    });
    let batch = EventBatch::new(
        vec![
            Event::from(sluice::event::Value::from(value)),
            Event::from_message(bytes::Bytes::from_static(b"\xff raw")),
        ],
        64,
    );
    let mut seed = Vec::new();
    record::encode_record(&batch, &mut seed);
    record::encode_record(&batch, &mut seed);
    let payload_only = seed[record::HEADER..].to_vec();
    run_library_target("buffer_record", vec![seed, payload_only]);
}

#[test]
fn checkpoint() {
    let seeds = text(&[
        "{\"version\":1,\"files\":{\"0000002a12345678\":{\"offset\":120,\"path\":\"/var/log/a.log\"}},\"crc32c\":1}",
        "{\"version\":1,\"files\":{}}",
        "{\"version\":1,\"shards\":{\"shardId-000000000000\":{\"sequence\":\"4960\",\"closed\":false}}}",
    ]);
    run_library_target("checkpoint", seeds);
}

#[test]
fn dead_letter_object() {
    let ndjson = b"\x00{\"a\":1}\n{\"b\":\"x\"}\n".to_vec();
    let json = b"\x01[{\"a\":1},{\"b\":2}]".to_vec();
    let mut gz = vec![0x04u8];
    gz.extend(
        sluice::codec::Compression::Gzip
            .compress(b"{\"a\":1}\n")
            .unwrap()
            .into_owned(),
    );
    let mut parquet = vec![3u8];
    parquet.extend(b"PAR1\x15\x00PAR1");
    run_library_target("dead_letter_object", vec![ndjson, json, gz, parquet]);
}

/// Raw HTTP requests to a real http_server source (NDJSON, JSON decoding, gzip/zstd, a body
/// limit of 64 KiB, header limit 8 KiB): whatever arrives, the agent answers or closes the
/// connection, keeps serving, and exits cleanly at the end.
#[test]
fn http_request() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let api = common::free_port();
    let config = format!(
        r#"
data_dir: {data}
api:
  enabled: true
  address: 127.0.0.1:{api}
sources:
  in:
    type: http_server
    address: 127.0.0.1:{port}
    max_body_bytes: 65536
    decoding:
      codec: json
sinks:
  out:
    type: blackhole
    inputs: [in]
"#,
        data = dir.path().join("data").display()
    );
    let mut agent = common::Agent::start(dir.path(), &config);
    common::wait_for_port(port);
    let request = |body: &str, extra: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut gzip_request =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 26\r\n\r\n"
            .to_vec();
    gzip_request.extend(
        sluice::codec::Compression::Gzip
            .compress(b"{\"a\":1}\n")
            .unwrap()
            .into_owned(),
    );
    let seeds = vec![
        request("{\"a\":1}\n{\"b\":2}\n", ""),
        request("[1,2,3]", "Transfer-Encoding: chunked\r\n"),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\"}\r\n0\r\n\r\n".to_vec(),
        gzip_request,
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
    ];
    let mut answered = 0u64;
    let executions = fuzz("http_request", seeds, |input| {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            panic!("the http_server stopped accepting connections");
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let _ = stream.write_all(input);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        if response.starts_with(b"HTTP/1.1 ") {
            answered += 1;
        }
    });
    let (status, _) = common::http_get(([127, 0, 0, 1], api).into(), "/health");
    assert_eq!(
        status, 200,
        "the agent is still healthy after {executions} requests"
    );
    assert!(answered > 0, "some requests were answered");
    assert!(
        agent.terminate(Duration::from_secs(20)).success(),
        "{}",
        agent.stderr()
    );
    eprintln!("http_request: {answered} of {executions} inputs answered with a status");
}
