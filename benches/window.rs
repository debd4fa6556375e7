//! Micro benchmark of the `window` transform alone, on one thread: a tumbling 1-minute window
//! grouped by a field with 1,000 distinct values, computing count + sum + p99. Events are built
//! before the clock starts; the figure is events/s through `transform`, including emission.
//!
//! Usage: `cargo bench --bench window` (env `BENCH_EVENTS`, default 2,000,000).

use sluice::event::{Event, EventBatch, ObjectMap, Value};
use sluice::transforms::window::WindowConfig;
use sluice::transforms::{Emitted, StatefulTransform};
use std::time::Instant;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("window benchmark: run with `cargo bench --bench window`");
        return;
    }
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let config: WindowConfig = serde_yaml::from_str(
        "inputs: [x]\nkind: tumbling\nsize_secs: 60\ntime_field: time\ngroup_by: [service]\naggregations:\n  n: {op: count}\n  bytes: {op: sum, field: bytes}\n  p99: {op: percentile, field: latency_ms, quantile: 0.99}\n",
    )
    .unwrap();
    let mut window = config.build("bench").unwrap();
    let services: Vec<Value> = (0..1000)
        .map(|i| Value::Bytes(format!("service-{i}").into()))
        .collect();
    let start = chrono::DateTime::from_timestamp(1_735_689_600, 0).unwrap();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut batches = Vec::with_capacity(total / 1000);
    for b in 0..total / 1000 {
        let mut events = Vec::with_capacity(1000);
        for i in 0..1000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = b * 1000 + i;
            let mut map = ObjectMap::new();
            // 10,000 events per second of event time: a window closes every 600,000 events.
            map.insert(
                "time".into(),
                Value::Timestamp(start + chrono::Duration::milliseconds(n as i64 / 10)),
            );
            map.insert("service".into(), services[(state % 1000) as usize].clone());
            map.insert(
                "bytes".into(),
                Value::Integer((state >> 10) as i64 % 50_000),
            );
            let latency = ((state >> 20) % 100_000) as f64 / 100.0;
            map.insert(
                "latency_ms".into(),
                Value::Float(vrl::prelude::NotNan::new(latency).unwrap()),
            );
            events.push(Event::from(Value::Object(map)));
        }
        batches.push(EventBatch::new(events, 0));
    }
    let mut outputs = vec![Emitted::default(), Emitted::default()];
    let mut emitted = 0;
    let started = Instant::now();
    for batch in batches {
        window.transform(batch, &mut outputs);
        emitted += outputs[0].events.len();
        outputs[0].events.clear();
    }
    window.finish(&mut outputs);
    emitted += outputs[0].events.len();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "window: {total} events, 1,000 keys, count+sum+p99, tumbling 60 s: {:.2} M events/s on one thread ({emitted} results)",
        total as f64 / secs / 1e6
    );
}
