//! The `demo` source: generates realistic log lines (JSON access logs, Apache common log,
//! syslog) from a seeded generator, at a fixed interval or as fast as possible. For the default
//! config, examples and benchmarks.

use super::SourceContext;
use crate::event::{Event, EventBatch};
use crate::topology::{BuildError, ComponentError, RunFuture};
use bytes::{BufMut, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::io::Write;
use std::time::Duration;

/// The shape of the generated lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoFormat {
    /// JSON access log lines (default).
    #[default]
    Json,
    /// Apache common log format.
    ApacheCommon,
    /// RFC 5424 syslog lines.
    Syslog,
}

/// Generate demo log lines into `message`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// `json` (default), `apache_common` or `syslog`.
    #[serde(default)]
    pub format: DemoFormat,
    /// Seconds between events (default 1.0); `0` generates as fast as the pipeline takes them.
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Stop after this many events (default: never).
    #[serde(default)]
    pub count: Option<u64>,
    /// Seed of the generator, for reproducible output (default 0).
    #[serde(default)]
    pub seed: u64,
}

fn default_interval() -> f64 {
    1.0
}

const BATCH: u64 = 1000;
const SERVICES: &[&str] = &[
    "checkout", "catalog", "auth", "search", "payments", "gateway",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const PATHS: &[&str] = &[
    "/api/v1/items",
    "/api/v1/cart",
    "/login",
    "/api/v1/search?q=shoes",
    "/health",
    "/api/v1/orders/1234",
];
const STATUSES: &[u16] = &[200, 200, 200, 200, 201, 204, 301, 400, 404, 500, 503];
/// Levels of successful requests; failed ones are `warn` (4xx) or `error` (5xx).
const OK_LEVELS: &[&str] = &["info", "info", "info", "debug"];

/// The log level a service would give a request answered with `status`.
fn level_for(status: u16, rng: &mut StdRng) -> &'static str {
    match status {
        500.. => "error",
        400.. => "warn",
        _ => OK_LEVELS[rng.random_range(0..OK_LEVELS.len())],
    }
}

impl DemoConfig {
    pub fn build(&self, cx: SourceContext) -> Result<RunFuture, BuildError> {
        if !self.interval_secs.is_finite() || self.interval_secs < 0.0 {
            return Err(BuildError::new("interval_secs", "must be a number >= 0"));
        }
        Ok(Box::pin(generate(self.clone(), cx)))
    }
}

async fn generate(config: DemoConfig, mut cx: SourceContext) -> Result<(), ComponentError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut produced = 0u64;
    let fast = config.interval_secs == 0.0;
    let mut ticker =
        (!fast).then(|| tokio::time::interval(Duration::from_secs_f64(config.interval_secs)));
    let mut buf = BytesMut::new();
    loop {
        let remaining = config.count.map_or(u64::MAX, |c| c - produced);
        if remaining == 0 {
            break;
        }
        let n = if fast { BATCH.min(remaining) } else { 1 };
        if let Some(ticker) = &mut ticker {
            tokio::select! {
                _ = cx.shutdown.stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
        } else if cx.shutdown.stop.is_cancelled() {
            break;
        }
        let now = chrono::Utc::now();
        let mut events = Vec::with_capacity(n as usize);
        let mut bytes = 0;
        for _ in 0..n {
            buf.reserve(512);
            write_line(&mut rng, config.format, now, produced, &mut buf);
            let line = buf.split().freeze();
            bytes += line.len() + 1;
            events.push(Event::from_message(line));
            produced += 1;
        }
        cx.metrics.received(events.len(), bytes);
        if cx.out.send(EventBatch::new(events, bytes)).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn write_line(
    rng: &mut StdRng,
    format: DemoFormat,
    now: chrono::DateTime<chrono::Utc>,
    seq: u64,
    buf: &mut BytesMut,
) {
    let pick = |rng: &mut StdRng, items: &[&'static str]| items[rng.random_range(0..items.len())];
    let service = pick(rng, SERVICES);
    let method = pick(rng, METHODS);
    let path = pick(rng, PATHS);
    let status = STATUSES[rng.random_range(0..STATUSES.len())];
    let ip = format!(
        "10.{}.{}.{}",
        rng.random_range(0..255),
        rng.random_range(0..255),
        rng.random_range(1..255)
    );
    let bytes_sent = rng.random_range(120..48_000);
    let latency = rng.random_range(0.3..900.0f64);
    let mut w = buf.writer();
    let _ = match format {
        DemoFormat::Json => {
            let level = level_for(status, rng);
            write!(
                w,
                r#"{{"timestamp":"{}","level":"{level}","service":"{service}","host":"{service}-{}","method":"{method}","path":"{path}","status":{status},"bytes":{bytes_sent},"latency_ms":{latency:.2},"client_ip":"{ip}","seq":{seq},"message":"{method} {path} {status}"}}"#,
                now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                rng.random_range(1..9)
            )
        }
        DemoFormat::ApacheCommon => write!(
            w,
            r#"{ip} - - [{}] "{method} {path} HTTP/1.1" {status} {bytes_sent}"#,
            now.format("%d/%b/%Y:%H:%M:%S %z")
        ),
        DemoFormat::Syslog => write!(
            w,
            "<{}>1 {} {service}-{} {service} {} ID{} - {method} {path} returned {status} in {latency:.1}ms",
            rng.random_range(8..191),
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            rng.random_range(1..9),
            rng.random_range(1000..65000),
            rng.random_range(1..99)
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_give_levels_that_match_their_status() {
        let mut rng = StdRng::seed_from_u64(7);
        let now = chrono::Utc::now();
        let mut seen = std::collections::BTreeSet::new();
        for seq in 0..2000 {
            let mut buf = BytesMut::new();
            write_line(&mut rng, DemoFormat::Json, now, seq, &mut buf);
            let line: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            let status = line["status"].as_u64().unwrap();
            let level = line["level"].as_str().unwrap().to_string();
            let expected: &[&str] = match status {
                500.. => &["error"],
                400..=499 => &["warn"],
                _ => &["info", "debug"],
            };
            assert!(expected.contains(&level.as_str()), "{line}");
            seen.insert(level);
        }
        assert_eq!(seen.len(), 4, "every level occurs: {seen:?}");
    }
}
