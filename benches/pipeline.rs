//! The heavy per-event stages in one process, on the load harness's input: time per event,
//! MiB/s of input, and heap allocations per event (a counting wrapper around mimalloc, the
//! agent's allocator). Where this project replaced a library's path, the library's path runs
//! beside it on the same input, so one run shows before and after.
//!
//! Usage: `cargo bench --bench pipeline` (`BENCH_LINES`, default 200,000; `BENCH_ROUNDS`,
//! default 5, the best round is reported; `BENCH_FILTER` runs only the stages whose names
//! contain it). One thread, no I/O, events in batches of 1,000 as the sources make them: the
//! stages' own cost, which `cargo bench --bench load` then shows end to end. Wall time varies
//! ±20% between runs on a shared 2-core machine; for a before/after that must hold, count
//! instructions: `valgrind --tool=callgrind` with `BENCH_ROUNDS=1 BENCH_FILTER=<stage>`, minus
//! a run with a filter that matches nothing.

// Only the lines are used here; the load harness writes them to a file.
#[allow(dead_code)]
#[path = "common/input.rs"]
mod input;

use bytes::Bytes;
use sluice::codec::decoding::{Decoder, DecodingCodec, DecodingConfig, Values};
use sluice::codec::encoding::{Encoder, EncodingConfig};
use sluice::event::{Event, Value};
use sluice::transforms::vrl_program::{compile, Runner};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// mimalloc, counting allocations (and reallocations, which may move).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Events per batch, as the file source sends them.
const BATCH: usize = 1000;

/// The load harness's remap program.
const REMAP: &str = ". = parse_json!(.message)\n.pipeline = \"bench\"\ndel(.trace_id)\n";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: run with `cargo bench --bench pipeline`");
        return;
    }
    let count: usize = env_or("BENCH_LINES", 200_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let frames: Vec<Bytes> = input::lines(count).map(Bytes::from).collect();
    let input_bytes: usize = frames.iter().map(|f| f.len() + 1).sum();
    println!(
        "{count} events, {:.1} MiB, best of {rounds} rounds, one thread",
        input_bytes as f64 / 1048576.0
    );
    println!(
        "{:<48} {:>10} {:>9} {:>12}",
        "stage", "ns/event", "MiB/s", "allocs/event"
    );
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    let stage = |name: &str, run: &mut dyn FnMut() -> usize| {
        if !name.contains(filter.as_str()) {
            return;
        }
        let mut best = Duration::MAX;
        let mut allocations = 0;
        for _ in 0..rounds {
            let before = ALLOCATIONS.load(Relaxed);
            let start = Instant::now();
            let produced = std::hint::black_box(run());
            best = best.min(start.elapsed());
            allocations = ALLOCATIONS.load(Relaxed) - before;
            assert_eq!(produced, count, "{name}: every event must come out");
        }
        println!(
            "{name:<48} {:>10.0} {:>9.0} {:>12.2}",
            best.as_nanos() as f64 / count as f64,
            input_bytes as f64 / 1048576.0 / best.as_secs_f64(),
            allocations as f64 / count as f64
        );
    };

    // Decoding a JSON frame into an event: VRL's `Value` deserializer (what the codec used)
    // and the codec as it is.
    stage("decode json: VRL's deserializer", &mut || {
        let mut count = 0;
        for batch in frames.chunks(BATCH) {
            let events: Vec<Event> = batch
                .iter()
                .map(|f| Event::from(serde_json::from_slice::<Value>(f).unwrap()))
                .collect();
            count += events.len();
        }
        count
    });
    // The codec building each value, and keeping each object as checked text (what a source
    // does whose events only go to JSON-writing sinks).
    for (name, values) in [
        ("decode json: codec", Values::Built),
        ("decode json: codec, values on demand", Values::OnDemand),
    ] {
        let decoder = Decoder::new(
            &DecodingConfig {
                codec: DecodingCodec::Json,
                on_error: None,
            },
            values,
        );
        stage(name, &mut || {
            let mut count = 0;
            for batch in frames.chunks(BATCH) {
                let mut events = Vec::with_capacity(batch.len());
                for frame in batch {
                    decoder.decode(frame, &mut events).unwrap();
                }
                count += events.len();
            }
            count
        });
    }

    // The remap program on `{ "message": line }`, with VRL's own parse_json and with the
    // agent's function set.
    let vrl_program = vrl::compiler::compile(REMAP, &vrl::stdlib::all())
        .unwrap()
        .program;
    let program = compile("bench", REMAP).unwrap();
    let mut runner = Runner::default();
    for (name, program) in [
        (
            "remap(parse_json, add, del): VRL's parse_json",
            &vrl_program,
        ),
        ("remap(parse_json, add, del): agent", &program),
    ] {
        stage(name, &mut || {
            let mut count = 0;
            for batch in frames.chunks(BATCH) {
                let mut events = messages(batch);
                for event in &mut events {
                    runner.run(program, event.value_mut()).unwrap();
                }
                count += events.len();
            }
            count
        });
    }

    // Encoding remapped events as NDJSON into a buffer, as the file sink does (one batch of
    // remapped events, encoded over and over).
    let mut remapped = messages(&frames[..BATCH.min(count)]);
    for event in &mut remapped {
        runner.run(&program, event.value_mut()).unwrap();
    }
    let encoder = Encoder::new(&EncodingConfig::default());
    let mut buffer = Vec::with_capacity(1 << 20);
    stage("encode ndjson", &mut || {
        let mut count = 0;
        while count < frames.len() {
            buffer.clear();
            for event in remapped.iter().take(frames.len() - count) {
                encoder.encode_line(event, &mut buffer).unwrap();
                count += 1;
            }
        }
        count
    });

    // All three, batch by batch, as file -> remap -> file runs them, minus the I/O.
    stage("frame -> remap -> ndjson", &mut || {
        let mut count = 0;
        for batch in frames.chunks(BATCH) {
            buffer.clear();
            let mut events = messages(batch);
            for event in &mut events {
                runner.run(&program, event.value_mut()).unwrap();
                encoder.encode_line(event, &mut buffer).unwrap();
            }
            count += events.len();
        }
        count
    });
}

/// `{ "message": frame }` events, as a source without decoding makes them.
fn messages(frames: &[Bytes]) -> Vec<Event> {
    frames.iter().cloned().map(Event::from_message).collect()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
