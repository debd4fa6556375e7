//! The benches' input: fixed-seed NDJSON request logs, ~257 bytes per line, 11 fields (7
//! strings, 3 integers, 1 float), the same every run.

use std::io::{BufWriter, Write};
use std::path::Path;

/// The lines of the input, in order, each without its newline.
pub fn lines(count: usize) -> impl Iterator<Item = String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let services = [
        "checkout", "catalog", "auth", "search", "payments", "gateway",
    ];
    let methods = ["GET", "GET", "POST", "PUT", "DELETE"];
    let statuses = [200, 200, 200, 201, 204, 404, 500];
    (0..count).map(move |i| {
        let r = next();
        format!(
            r#"{{"timestamp":"2026-01-01T00:{:02}:{:02}.{:03}Z","level":"info","service":"{}","host":"node-{}","method":"{}","path":"/api/v1/items/{}","status":{},"bytes":{},"latency_ms":{}.{:02},"trace_id":"{:016x}{:016x}","message":"request {i}"}}"#,
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1000,
            services[(r % 6) as usize],
            r % 50,
            methods[(r >> 8) as usize % 5],
            r % 100_000,
            statuses[(r >> 16) as usize % 7],
            (r >> 20) % 50_000,
            (r >> 30) % 900,
            (r >> 40) % 100,
            next(),
            next()
        )
    })
}

/// Writes `count` lines to `path`, one per line; returns the bytes written.
pub fn write(path: &Path, count: usize) -> u64 {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut total = 0u64;
    for line in lines(count) {
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
        total += line.len() as u64 + 1;
    }
    out.flush().unwrap();
    total
}
