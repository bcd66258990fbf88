//! What the bench counts: per connection, which sequence numbers arrived (to find the
//! missing, duplicate and out-of-order ones), latency in an HDR histogram, and the server's
//! memory and CPU time from /proc.

use std::time::Instant;

use hdrhistogram::Histogram;

use super::args::Field;

/// Latencies are recorded in microseconds, from 1 µs to one minute, 3 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Counters shared by every subscriber connection (the bench runs on one thread).
#[derive(Debug)]
pub struct Tally {
    /// Subscriber connections that got a 200 text/event-stream answer.
    pub connected: u64,
    /// Subscriber connections that could not connect or were refused, by reason.
    pub failed: Vec<String>,
    /// Connections whose stream ended (or failed) before the bench closed them.
    pub ended_early: u64,
    /// Every event received.
    pub received: u64,
    /// Events whose sequence number had not been seen before on their connection.
    pub delivered: u64,
    /// Events whose sequence number had been seen before on their connection.
    pub duplicate: u64,
    /// New events with a sequence number lower than the highest seen on their connection.
    pub out_of_order: u64,
    /// Events whose data held no sequence number, or one that was never published.
    pub unparsed: u64,
    /// Publish-to-receive latency of every delivered event, in microseconds.
    pub latency_us: Histogram<u64>,
    /// When the last event arrived.
    pub last_delivery: Option<Instant>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            connected: 0,
            failed: Vec::new(),
            ended_early: 0,
            received: 0,
            delivered: 0,
            duplicate: 0,
            out_of_order: 0,
            unparsed: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("constant bounds are valid"),
            last_delivery: None,
        }
    }
}

/// One connection's view of the sequence numbers: a bit per published event.
#[derive(Debug)]
pub struct Seen {
    /// The connection got its `200 text/event-stream` answer.
    pub connected: bool,
    bits: Vec<u64>,
    count: u64,
    highest: Option<u64>,
}

/// How one received event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, in order.
    InOrder,
    /// First time seen, after a higher sequence number.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Outside the published range.
    Unknown,
}

impl Seen {
    /// Room for sequence numbers `0..count`.
    pub fn new(count: u64) -> Seen {
        Seen {
            connected: false,
            bits: vec![0; count.div_ceil(64) as usize],
            count,
            highest: None,
        }
    }

    /// Records `seq` and says how it counts.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.count {
            return Arrival::Unknown;
        }
        let word = &mut self.bits[(seq / 64) as usize];
        let bit = 1u64 << (seq % 64);
        if *word & bit != 0 {
            return Arrival::Duplicate;
        }
        *word |= bit;
        match self.highest {
            Some(highest) if seq < highest => Arrival::OutOfOrder,
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }

    /// How many of the published sequence numbers (`published[seq]` is true) never came.
    pub fn missing(&self, published: &[bool]) -> u64 {
        published
            .iter()
            .enumerate()
            .filter(|(seq, sent)| **sent && self.bits[seq / 64] & (1u64 << (seq % 64)) == 0)
            .count() as u64
    }
}

/// Reads the numbers the template put in an event's data: the unsigned integers, in order,
/// matched to `fields`. Returns the sequence number and the send time in microseconds
/// since the epoch (if the template has one).
pub fn read_fields(data: &str, fields: &[Field]) -> Option<(u64, Option<u64>)> {
    let mut seq = None;
    let mut sent_us = None;
    let mut numbers = data
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    for field in fields {
        let number = numbers.next()?;
        match field {
            Field::Seq => seq = Some(number.parse().ok()?),
            Field::TimestampNs => sent_us = Some(number.parse::<u128>().ok()? / 1000),
            Field::TimestampUs => sent_us = Some(number.parse::<u128>().ok()?),
        }
    }
    Some((seq?, sent_us.map(|us| us.min(u64::MAX as u128) as u64)))
}

/// A server's resource use at one moment, summed over its processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    /// Resident memory, in KiB (VmRSS).
    pub rss_kib: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Linux reports /proc times in USER_HZ, which is 100 on every architecture it supports
/// (the kernel's own HZ may differ; the ABI value does not).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Samples `/proc/PID/status` and `/proc/PID/stat` for each pid.
///
/// # Errors
/// A process is gone or its files cannot be read.
pub fn sample_server(pids: &[u32]) -> Result<ServerSample, String> {
    let mut total = ServerSample::default();
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("server pid {pid}: {e}"))?;
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("server pid {pid}: no VmRSS in /proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("server pid {pid}: {e}"))?;
        total.rss_kib += rss;
        total.cpu_ticks += cpu_ticks(&stat)
            .ok_or_else(|| format!("server pid {pid}: unreadable /proc/{pid}/stat"))?;
    }
    Ok(total)
}

/// utime + stime from a `/proc/PID/stat` line: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_classified_per_connection() {
        let mut seen = Seen::new(6);
        let arrivals: Vec<_> = [0, 1, 3, 2, 2, 5, 9].map(|s| seen.record(s)).to_vec();
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::Duplicate,
                Arrival::InOrder,
                Arrival::Unknown
            ]
        );
        assert_eq!(seen.missing(&[true; 6]), 1);
        assert_eq!(seen.missing(&[true, true, true, true, false, true]), 0);
    }

    #[test]
    fn fields_come_out_of_text_and_json_data() {
        let fields = [Field::Seq, Field::TimestampNs];
        assert_eq!(
            read_fields("7 1700000000123456789 xxxx", &fields),
            Some((7, Some(1_700_000_000_123_456)))
        );
        assert_eq!(
            read_fields(r#"{"seq":7,"ts":1700000000123456789,"pad":"xx"}"#, &fields),
            Some((7, Some(1_700_000_000_123_456)))
        );
        assert_eq!(read_fields("no numbers", &fields), None);
        assert_eq!(read_fields("12", &[Field::Seq]), Some((12, None)));
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }
}
