//! The results of a run: one [`Report`], printed as a table for people or as JSON (the
//! field names below are the JSON keys, stable for scripts such as `bench/compare`).

use std::collections::BTreeMap;

use serde::Serialize;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The subscriber connections.
    pub subscribers: Subscribers,
    /// The publisher (absent when the run only held connections).
    pub publisher: Option<Publisher>,
    /// What arrived, checked per connection.
    pub delivery: Delivery,
    /// Publish-to-receive latency of delivered events, in microseconds (absent when the
    /// body has no timestamp or nothing was delivered).
    pub latency_us: Option<Latency>,
    /// The server's memory and CPU (absent without `--server-pid`).
    pub server: Option<Server>,
}

/// Subscriber connections.
#[derive(Debug, Serialize)]
pub struct Subscribers {
    /// Connections asked for.
    pub requested: u64,
    /// Connections that got a `200 text/event-stream` answer.
    pub connected: u64,
    /// Connections that did not, counted by reason.
    pub failed: BTreeMap<String, u64>,
    /// Connected streams that ended before the bench closed them.
    pub ended_early: u64,
    /// Seconds from the first connect to the last answer.
    pub connect_seconds: f64,
}

/// The publisher's side.
#[derive(Debug, Serialize)]
pub struct Publisher {
    /// Events the server accepted (2xx).
    pub published: u64,
    /// Events it did not, counted by reason.
    pub failed: BTreeMap<String, u64>,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Accepted events per second.
    pub per_second: f64,
}

/// What the subscribers received.
#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Connected subscribers times published events: what a perfect server delivers.
    pub expected: u64,
    /// Events received for the first time on their connection (duplicates not counted).
    pub delivered: u64,
    /// Published events that never arrived on a connected subscriber.
    pub missing: u64,
    /// Events that arrived again on the same connection.
    pub duplicate: u64,
    /// Events that arrived after a higher sequence number on the same connection (each is
    /// also counted in `delivered`).
    pub out_of_order: u64,
    /// Events whose data held no sequence number, or one that was never published.
    pub unparsed: u64,
    /// Every event received, whatever it was.
    pub received: u64,
    /// Deliveries per second, from the first publish to the last delivery.
    pub per_second: f64,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// The server's resources, summed over the `--server-pid` processes.
#[derive(Debug, Serialize)]
pub struct Server {
    /// The processes sampled.
    pub pids: Vec<u32>,
    /// Resident memory before the subscribers connected, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every subscriber connected (after `--settle`), KiB.
    pub rss_connected_kib: u64,
    /// (connected - before) / connected subscribers, in bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds (user + system) from just before the first publish to the end of the
    /// drain.
    pub cpu_seconds: f64,
    /// `cpu_seconds` / delivered events, in microseconds.
    pub cpu_per_delivery_us: Option<f64>,
}

impl Report {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let s = &self.subscribers;
        rows.push((
            "connections".into(),
            format!(
                "{} of {} in {:.2} s",
                s.connected, s.requested, s.connect_seconds
            ),
        ));
        for (reason, n) in &s.failed {
            rows.push(("  failed".into(), format!("{n} × {reason}")));
        }
        if s.ended_early > 0 {
            rows.push(("  ended early".into(), s.ended_early.to_string()));
        }
        if let Some(p) = &self.publisher {
            rows.push((
                "published".into(),
                format!(
                    "{} in {:.2} s ({:.1}/s)",
                    p.published, p.seconds, p.per_second
                ),
            ));
            for (reason, n) in &p.failed {
                rows.push(("  failed".into(), format!("{n} × {reason}")));
            }
            let d = &self.delivery;
            rows.push((
                "delivered".into(),
                format!("{} of {} ({:.0}/s)", d.delivered, d.expected, d.per_second),
            ));
            rows.push(("missing".into(), d.missing.to_string()));
            rows.push(("duplicate".into(), d.duplicate.to_string()));
            rows.push(("out of order".into(), d.out_of_order.to_string()));
            if d.unparsed > 0 {
                rows.push(("unparsed".into(), d.unparsed.to_string()));
            }
        }
        if let Some(l) = &self.latency_us {
            rows.push((
                "latency p50/p99/max".into(),
                format!("{} / {} / {}", micros(l.p50), micros(l.p99), micros(l.max)),
            ));
        }
        if let Some(server) = &self.server {
            rows.push((
                "server RSS".into(),
                format!(
                    "{} KiB -> {} KiB",
                    server.rss_before_kib, server.rss_connected_kib
                ),
            ));
            if let Some(per) = server.rss_per_connection_bytes {
                rows.push(("  per connection".into(), format!("{per:.0} B")));
            }
            rows.push(("server CPU".into(), format!("{:.2} s", server.cpu_seconds)));
            if let Some(per) = server.cpu_per_delivery_us {
                rows.push(("  per delivery".into(), format!("{per:.3} µs")));
            }
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

/// Microseconds, written in the unit that reads best.
fn micros(us: u64) -> String {
    match us {
        0..=9_999 => format!("{us} µs"),
        10_000..=9_999_999 => format!("{:.1} ms", us as f64 / 1000.0),
        _ => format!("{:.2} s", us as f64 / 1_000_000.0),
    }
}

/// Counts each distinct reason.
pub fn count_reasons(reasons: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason.clone()).or_insert(0) += 1;
    }
    counts
}
