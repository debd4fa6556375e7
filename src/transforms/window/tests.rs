//! Deterministic tests of the window transform: event times are injected through the events,
//! the wall clock through `with_clock`; no test waits on real time.

use super::*;
use crate::event::BatchNotifier;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

struct Harness {
    window: Window,
    clock: Arc<AtomicI64>,
}

impl Harness {
    fn new(yaml: &str) -> Harness {
        let config: WindowConfig = serde_yaml::from_str(&format!("inputs: [x]\n{yaml}")).unwrap();
        let clock = Arc::new(AtomicI64::new(1_000_000));
        let reading = clock.clone();
        let window =
            config
                .build("w")
                .unwrap()
                .with_clock(crate::transforms::support::Clock::from_fn(move || {
                    reading.load(Ordering::SeqCst)
                }));
        Harness { window, clock }
    }

    fn outputs() -> Vec<Emitted> {
        vec![Emitted::default(), Emitted::default()]
    }

    /// Feeds events given as JSON; returns (emitted, late).
    fn feed(&mut self, events: &[&str]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        let events = events
            .iter()
            .map(|e| Event::from(serde_json::from_str::<Value>(e).unwrap()))
            .collect();
        let mut out = Self::outputs();
        self.window.transform(EventBatch::new(events, 0), &mut out);
        split(out)
    }

    fn tick(&mut self, advance_ms: i64) -> Vec<serde_json::Value> {
        self.clock.fetch_add(advance_ms, Ordering::SeqCst);
        let mut out = Self::outputs();
        self.window.tick(&mut out);
        split(out).0
    }

    fn finish(&mut self) -> Vec<serde_json::Value> {
        let mut out = Self::outputs();
        self.window.finish(&mut out);
        split(out).0
    }
}

fn split(out: Vec<Emitted>) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let json = |e: &Emitted| {
        e.events
            .iter()
            .map(|e| serde_json::to_value(e.value()).unwrap())
            .collect()
    };
    (json(&out[0]), json(&out[1]))
}

/// An event at `secs` seconds past 2024-01-01T00:00:00Z.
fn at(secs: f64, rest: &str) -> String {
    let t = 1_704_067_200.0 + secs;
    format!("{{\"ts\":{t},{rest}}}")
}

const BASE: &str = "2024-01-01T00:";

#[test]
fn tumbling_windows_aggregate_per_key_and_emit_when_the_watermark_passes() {
    let mut h = Harness::new(
        "kind: tumbling\nsize_secs: 60\ntime_field: ts\ngroup_by: [service]\naggregations:\n  n: {op: count}\n  bytes: {op: sum, field: bytes}\n  low: {op: min, field: ms}\n  high: {op: max, field: ms}\n  avg: {op: mean, field: ms}\n  first: {op: first, field: path}\n  last: {op: last, field: path}\n  ips: {op: distinct_count, field: ip}\n  p50: {op: percentile, field: ms, quantile: 0.5}\n",
    );
    let (emitted, _) = h.feed(&[
        &at(
            1.0,
            r#""service":"a","bytes":10,"ms":5.0,"path":"/x","ip":"1""#,
        ),
        &at(
            30.0,
            r#""service":"b","bytes":1,"ms":1.0,"path":"/b","ip":"9""#,
        ),
        &at(
            20.0,
            r#""service":"a","bytes":20,"ms":15.0,"path":"/y","ip":"2""#,
        ),
        &at(
            59.0,
            r#""service":"a","bytes":30,"ms":10.0,"path":"/z","ip":"1""#,
        ),
    ]);
    assert!(emitted.is_empty(), "the first minute is still open");
    let (emitted, _) = h.feed(&[&at(
        61.0,
        r#""service":"a","bytes":1,"ms":1.0,"path":"/q","ip":"3""#,
    )]);
    assert_eq!(emitted.len(), 2, "{emitted:?}");
    let a = &emitted[0];
    assert_eq!(a["window_start"], format!("{BASE}00:00Z"));
    assert_eq!(a["window_end"], format!("{BASE}01:00Z"));
    assert_eq!(a["service"], "a");
    assert_eq!(a["n"], 3);
    assert_eq!(a["bytes"], 60, "integer sums stay integers");
    assert_eq!(
        (a["low"].as_f64(), a["high"].as_f64()),
        (Some(5.0), Some(15.0))
    );
    assert_eq!(a["avg"], 10.0);
    assert_eq!(
        (a["first"].as_str(), a["last"].as_str()),
        (Some("/x"), Some("/z")),
        "by event time, not arrival"
    );
    assert_eq!(a["ips"], 2);
    let p50 = a["p50"].as_f64().unwrap();
    assert!((p50 - 10.0).abs() <= 0.1, "p50 within 1% of 10: {p50}");
    assert_eq!(emitted[1]["service"], "b");
    assert_eq!(emitted[1]["n"], 1);
}

#[test]
fn out_of_order_events_within_the_bound_land_in_their_window() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 10\ntime_field: ts\nmax_out_of_orderness_secs: 5\naggregations:\n  n: {op: count}\n");
    let (emitted, _) = h.feed(&[&at(12.0, r#""k":1"#)]);
    assert!(
        emitted.is_empty(),
        "watermark 7 s: window [0,10) stays open"
    );
    let (emitted, late) = h.feed(&[&at(3.0, r#""k":1"#), &at(14.0, r#""k":1"#)]);
    assert!(late.is_empty());
    assert!(emitted.is_empty(), "watermark 9 s");
    let (emitted, _) = h.feed(&[&at(16.0, r#""k":1"#)]);
    assert_eq!(emitted.len(), 1);
    assert_eq!(
        emitted[0]["n"], 1,
        "only the out-of-order event at 3 s is in [0,10)"
    );
}

#[test]
fn late_events_within_lateness_re_emit_and_later_ones_go_to_the_late_output() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 10\ntime_field: ts\nallowed_lateness_secs: 20\naggregations:\n  n: {op: count}\n");
    h.feed(&[&at(1.0, r#""k":1"#), &at(2.0, r#""k":1"#)]);
    let (emitted, _) = h.feed(&[&at(15.0, r#""k":1"#)]);
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0]["n"], 2);
    assert!(emitted[0].get("window_update").is_none());

    let (emitted, late) = h.feed(&[&at(5.0, r#""k":1"#)]);
    assert!(late.is_empty());
    assert_eq!(
        emitted.len(),
        1,
        "watermark 15 < 10 + 20: update and re-emit"
    );
    assert_eq!(emitted[0]["n"], 3);
    assert_eq!(emitted[0]["window_update"], true);

    h.feed(&[&at(45.0, r#""k":1"#)]); // watermark 45: [0,10) expired at 30
    let (emitted, late) = h.feed(&[&at(6.0, r#""k":"late""#)]);
    assert!(emitted.is_empty());
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["k"], "late");
}

#[test]
fn hopping_windows_count_an_event_in_each_window_it_falls_in() {
    let mut h = Harness::new("kind: hopping\nsize_secs: 30\nhop_secs: 10\ntime_field: ts\naggregations:\n  n: {op: count}\n");
    h.feed(&[&at(25.0, r#""k":1"#)]);
    let (emitted, _) = h.feed(&[&at(100.0, r#""k":1"#)]);
    let starts: Vec<&str> = emitted
        .iter()
        .map(|e| e["window_start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        vec![
            format!("{BASE}00:00Z"),
            format!("{BASE}00:10Z"),
            format!("{BASE}00:20Z")
        ]
    );
    assert!(emitted.iter().all(|e| e["n"] == 1));
}

#[test]
fn sessions_close_after_the_gap_and_merge_when_an_event_bridges_them() {
    let mut h = Harness::new("kind: session\ngap_secs: 5\ntime_field: ts\nmax_out_of_orderness_secs: 30\ngroup_by: [user]\naggregations:\n  n: {op: count}\n");
    h.feed(&[
        &at(0.0, r#""user":"u""#),
        &at(2.0, r#""user":"u""#),
        &at(10.0, r#""user":"u""#),
        &at(1.0, r#""user":"v""#),
    ]);
    // u has sessions [0,7) and [10,15); an event at 6 s bridges them.
    h.feed(&[&at(6.0, r#""user":"u""#)]);
    let (emitted, _) = h.feed(&[&at(100.0, r#""user":"w""#)]);
    let mut sessions: Vec<(String, String, String, i64)> = emitted
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap().into(),
                e["window_start"].as_str().unwrap().into(),
                e["window_end"].as_str().unwrap().into(),
                e["n"].as_i64().unwrap(),
            )
        })
        .collect();
    sessions.sort();
    assert_eq!(
        sessions,
        vec![
            (
                "u".into(),
                format!("{BASE}00:00Z"),
                format!("{BASE}00:15Z"),
                4
            ),
            (
                "v".into(),
                format!("{BASE}00:01Z"),
                format!("{BASE}00:06Z"),
                1
            )
        ]
    );
}

#[test]
fn keys_beyond_max_keys_are_dropped_and_state_stays_bounded() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 10\ntime_field: ts\ngroup_by: [id]\nmax_keys: 100\naggregations:\n  n: {op: count}\n");
    for round in 0..5 {
        let events: Vec<String> = (0..10_000)
            .map(|i| at(round as f64 * 10.0 + 1.0, &format!("\"id\":{i}")))
            .collect();
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let (emitted, _) = h.feed(&refs);
        if round > 0 {
            assert_eq!(
                emitted.len(),
                100,
                "the previous window, capped at max_keys"
            );
        }
        assert!(h.window.windows.len() <= 2, "closed windows are forgotten");
        assert!(h.window.windows.values().all(|w| w.keys.len() <= 100));
    }
}

#[test]
fn an_idle_input_does_not_hold_a_window_open_forever() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 10\ntime_field: ts\nidle_timeout_secs: 30\naggregations:\n  n: {op: count}\n");
    h.feed(&[&at(1.0, r#""k":1"#), &at(2.0, r#""k":1"#)]);
    assert!(
        h.tick(29_000).is_empty(),
        "not idle yet: the window waits for later events"
    );
    // Idle for 31 s: event time is taken to have moved on with the wall clock since the last
    // arrival, so the watermark is 2 s + 31 s and [0, 10) closes.
    let emitted = h.tick(2_000);
    assert_eq!(
        emitted.len(),
        1,
        "watermark passed 10 s by wall-clock progress"
    );
    assert_eq!(emitted[0]["n"], 2);
}

#[test]
fn processing_time_windows_close_on_the_wall_clock() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 10\naggregations:\n  n: {op: count}\n");
    h.clock.store(1_700_000_000_000, Ordering::SeqCst); // a multiple of 10 s
    h.feed(&[r#"{"a":1}"#, r#"{"a":2}"#]);
    assert!(h.tick(5_000).is_empty());
    let emitted = h.tick(5_000);
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0]["n"], 2);
}

#[test]
fn shutdown_flushes_open_windows_or_drops_them_when_asked() {
    let mut h = Harness::new("kind: tumbling\nsize_secs: 60\ntime_field: ts\ngroup_by: [k]\naggregations:\n  n: {op: count}\n");
    h.feed(&[&at(1.0, r#""k":"a""#), &at(2.0, r#""k":"b""#)]);
    let flushed = h.finish();
    assert_eq!(flushed.len(), 2);

    let mut h = Harness::new("kind: tumbling\nsize_secs: 60\ntime_field: ts\non_shutdown: drop\naggregations:\n  n: {op: count}\n");
    h.feed(&[&at(1.0, r#""k":"a""#)]);
    assert!(h.finish().is_empty());
}

#[test]
fn input_acknowledgements_wait_for_the_window_result() {
    let mut h = Harness::new(
        "kind: tumbling\nsize_secs: 10\ntime_field: ts\naggregations:\n  n: {op: count}\n",
    );
    let (notifier, mut rx) = BatchNotifier::new();
    let mut batch = EventBatch::new(
        vec![Event::from(
            serde_json::from_str::<Value>(&at(1.0, r#""k":1"#)).unwrap(),
        )],
        10,
    );
    batch.finalizers = Finalizers::new(notifier);
    let mut out = Harness::outputs();
    h.window.transform(batch, &mut out);
    assert!(rx.try_recv().is_err(), "held by the open window");
    let (emitted_later, _) = {
        let mut out = Harness::outputs();
        let event = Event::from(serde_json::from_str::<Value>(&at(20.0, r#""k":1"#)).unwrap());
        h.window
            .transform(EventBatch::new(vec![event], 0), &mut out);
        assert!(rx.try_recv().is_err(), "now carried by the emitted result");
        let carried = std::mem::take(&mut out[0].finalizers);
        drop(carried);
        split(out)
    };
    assert_eq!(emitted_later.len(), 1);
    assert_eq!(rx.try_recv().unwrap(), crate::event::BatchStatus::Delivered);
}

#[test]
fn events_without_a_usable_time_are_counted_not_aggregated() {
    let mut h = Harness::new(
        "kind: tumbling\nsize_secs: 10\ntime_field: ts\naggregations:\n  n: {op: count}\n",
    );
    h.feed(&[
        r#"{"ts":"not a time"}"#,
        r#"{"other":1}"#,
        &at(1.0, r#""k":1"#),
    ]);
    let flushed = h.finish();
    assert_eq!(flushed[0]["n"], 1);
}
