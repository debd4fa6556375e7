//! Micro benchmark of the `schema` transform alone, on one thread: a 10-field JSON Schema
//! (types, ranges, a pattern, an enum, required fields) against valid events, the common case.
//! Events are built before the clock starts; the figure is events/s through `transform`,
//! including the conversion of each event for the validator.
//!
//! Usage: `cargo bench --bench schema` (env `BENCH_EVENTS`, default 1,000,000).

use sluice::event::{Event, ObjectMap, Value};
use sluice::transforms::schema::SchemaConfig;
use sluice::transforms::Transform;
use std::time::Instant;

const SCHEMA: &str = r#"
inputs: [x]
json_schema:
  type: object
  required: [id, time, service, method, path, status, bytes, latency_ms, ok, region]
  properties:
    id: {type: integer, minimum: 0}
    time: {type: string, minLength: 20}
    service: {type: string, pattern: "^svc-[0-9]+$"}
    method: {enum: [GET, POST, PUT, DELETE]}
    path: {type: string, maxLength: 200}
    status: {type: integer, minimum: 100, maximum: 599}
    bytes: {type: integer, minimum: 0}
    latency_ms: {type: number, minimum: 0}
    ok: {type: boolean}
    region: {type: string, minLength: 2, maxLength: 20}
"#;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("schema benchmark: run with `cargo bench --bench schema`");
        return;
    }
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let config: SchemaConfig = serde_yaml::from_str(SCHEMA).unwrap();
    let mut transform = config.build("bench").unwrap();
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let mut batches: Vec<Vec<Event>> = Vec::with_capacity(total / 1000);
    for b in 0..total / 1000 {
        let mut events = Vec::with_capacity(1000);
        for i in 0..1000 {
            let n = (b * 1000 + i) as i64;
            let mut map = ObjectMap::new();
            map.insert("id".into(), Value::Integer(n));
            map.insert("time".into(), Value::from("2026-12-01T10:00:00.000Z"));
            map.insert("service".into(), Value::from(format!("svc-{}", n % 20)));
            map.insert("method".into(), Value::from(methods[n as usize % 4]));
            map.insert(
                "path".into(),
                Value::from(format!("/api/items/{}", n % 997)),
            );
            map.insert("status".into(), Value::Integer(200 + n % 5));
            map.insert("bytes".into(), Value::Integer(n % 50_000));
            map.insert(
                "latency_ms".into(),
                Value::Float(vrl::prelude::NotNan::new((n % 1000) as f64 / 10.0).unwrap()),
            );
            map.insert("ok".into(), Value::Boolean(n % 7 != 0));
            map.insert("region".into(), Value::from("eu-west-1"));
            events.push(Event::from(Value::Object(map)));
        }
        batches.push(events);
    }
    let mut outputs = vec![Vec::new(), Vec::new()];
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    for events in batches {
        transform.transform(events, &mut outputs);
        assert!(outputs[1].is_empty(), "every event is valid");
        outputs[0].clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started;
    println!(
        "schema (10 fields, valid events): {total} events in {secs:.2} s = {:.0} events/s ({cpu:.2} CPU s)",
        total as f64 / secs
    );
}

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
