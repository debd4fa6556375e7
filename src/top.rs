//! `sluice top`: a refreshing table of per-component rates read from a running agent's
//! `/metrics` (the api must be enabled). Rates are the difference of two scrapes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One component's counters at one scrape.
#[derive(Debug, Default, Clone)]
struct Sample {
    kind: String,
    received_events: f64,
    sent_events: f64,
    sent_bytes: f64,
    errors: f64,
    discarded: f64,
    buffer_events: f64,
    /// Kafka sources: messages behind the end of their partitions, summed.
    lag: Option<f64>,
}

/// `GET /metrics` over a plain TCP connection (the api speaks HTTP/1.1).
fn scrape(api: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(3))
        .map_err(|e| format!("cannot reach the api at {api}: {e} (is `api.enabled: true`?)"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("reading /metrics: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("a malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "/metrics answered {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Per-component counters out of Prometheus text.
fn parse(text: &str) -> BTreeMap<String, Sample> {
    let mut out: BTreeMap<String, Sample> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let Some(id) = label(labels, "component_id") else {
            continue;
        };
        // Internal parts (the api) and named outputs (a sink's dead letters) are not rows of
        // their own, nor part of their component's delivered events.
        if label(labels, "component_type") == Some(crate::observe::metrics::INTERNAL)
            || label(labels, "output").is_some()
        {
            continue;
        }
        let sample = out.entry(id.to_string()).or_default();
        if let Some(kind) = label(labels, "component_type") {
            sample.kind = kind.to_string();
        }
        match name {
            "component_received_events_total" => sample.received_events += value,
            "component_sent_events_total" => sample.sent_events += value,
            "component_sent_bytes_total" => sample.sent_bytes += value,
            "component_errors_total" => sample.errors += value,
            "component_discarded_events_total" => sample.discarded += value,
            "buffer_events" => sample.buffer_events += value,
            "kafka_consumer_lag" => *sample.lag.get_or_insert(0.0) += value,
            _ => {}
        }
    }
    out
}

fn human(rate: f64) -> String {
    match rate {
        r if r >= 1e9 => format!("{:.1}G", r / 1e9),
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

fn table(before: &BTreeMap<String, Sample>, after: &BTreeMap<String, Sample>, secs: f64) -> String {
    let mut out = format!(
        "{:<24} {:<20} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8}\n",
        "component",
        "type",
        "in ev/s",
        "out ev/s",
        "out B/s",
        "errors",
        "discarded",
        "buffer",
        "lag"
    );
    for (id, now) in after {
        let then = before.get(id).cloned().unwrap_or_default();
        let rate = |a: f64, b: f64| ((a - b) / secs).max(0.0);
        out.push_str(&format!(
            "{:<24} {:<20} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8}\n",
            id,
            now.kind,
            human(rate(now.received_events, then.received_events)),
            human(rate(now.sent_events, then.sent_events)),
            human(rate(now.sent_bytes, then.sent_bytes)),
            now.errors,
            now.discarded,
            now.buffer_events,
            now.lag.map_or("-".to_string(), human)
        ));
    }
    out
}

/// Prints a table every `interval` (`iterations` times, or until interrupted).
pub fn run(api: SocketAddr, interval: Duration, iterations: Option<u32>) -> Result<(), String> {
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut before = parse(&scrape(api)?);
    let mut at = Instant::now();
    let mut shown = 0;
    while iterations.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let after = parse(&scrape(api)?);
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let mut text = table(&before, &after, secs);
        if clear {
            text.insert_str(0, "\x1b[2J\x1b[H");
        }
        print!("{text}");
        println!();
        let _ = std::io::stdout().flush();
        before = after;
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_scrapes() {
        let first = parse("component_sent_events_total{component_id=\"out\",component_type=\"http\"} 100\ncomponent_errors_total{component_id=\"out\",component_type=\"http\",error_type=\"x\"} 2\n");
        let second = parse("# HELP x\ncomponent_sent_events_total{component_id=\"out\",component_type=\"http\"} 1100\ncomponent_errors_total{component_id=\"out\",component_type=\"http\",error_type=\"x\"} 3\nbuffer_events{component_id=\"out\",component_type=\"http\"} 7\n");
        let text = table(&first, &second, 2.0);
        let row = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["out", "http", "0", "500", "0", "3", "0", "7", "-"]);
    }

    #[test]
    fn kafka_sources_show_their_lag_summed_over_partitions() {
        let text = "component_received_events_total{component_id=\"in\",component_type=\"kafka\"} 10\nkafka_consumer_lag{component_id=\"in\",partition=\"0\",topic=\"t\"} 1200\nkafka_consumer_lag{component_id=\"in\",partition=\"1\",topic=\"t\"} 300\n";
        let sample = parse(text);
        let table = table(&sample, &sample, 1.0);
        let cells: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells.last(), Some(&"1.5k"));
    }
}
