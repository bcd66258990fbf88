//! The command line of `tidings bench`, and the small parsers its options need: source
//! address ranges and the publisher's body template.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

/// What `tidings bench --help` shows after the options.
const BENCH_HELP: &str = "\
How delivery is checked:
  Every event the subscribers receive is matched to the event the publisher sent by the
  sequence number inside its data. The receiver takes the unsigned integers in the event's
  data, in order, as the placeholders of --body in the order they appear there: with the
  default body `{seq} {ts}` the first integer is the sequence number and the second the
  send time. So the data must carry no other digits before them (JSON such as
  {\"seq\":{seq},\"ts\":{ts}} works; the topic name around it in the body does not matter,
  only the event's data is read).
  Per connection, an event whose sequence number was already seen is a duplicate, one
  lower than the highest seen so far is out of order, and every published event never seen
  is missing. Latency is receive time minus {ts}/{ts_us}, so publisher and subscribers
  share this machine's clock.

Body placeholders:
  {seq}      the sequence number, 0, 1, 2, ...
  {ts}       the send time, nanoseconds since the Unix epoch
  {ts_us}    the send time, microseconds since the Unix epoch
  {pad:N}    N bytes of `x` (padding to a given event size)
  Any other text, braces included, is sent as it is.

Examples:
  # 1,000 subscribers to a Tidings hub, 20 events/s for 10 s, 64 bytes of padding:
  tidings bench 'http://127.0.0.1:8080/events?topic=a' -c 1000 \\
      --publish-url http://127.0.0.1:8080/publish --content-type application/json \\
      --body '{\"topic\":\"a\",\"data\":\"{seq} {ts} {pad:64}\"}' --rate 20 --count 200

  # The same against nginx+nchan, whose publisher takes the raw data as the body:
  tidings bench 'http://127.0.0.1:8081/sub?topic=a' -c 1000 \\
      --publish-url 'http://127.0.0.1:8081/pub?topic=a' --body '{seq} {ts} {pad:64}' \\
      --rate 20 --count 200 --server-pid $(pgrep -d, -f 'nginx: worker')

  # 5,000 idle connections from 5 source addresses, and the server's memory per connection:
  tidings bench 'http://127.0.0.1:8080/events?topic=a' -c 5000 \\
      --source 127.0.0.2-127.0.0.6 --hold 3 --server-pid 1234

Exit codes:
  0  the run finished (its numbers may still show losses: read them)
  1  other failure
  2  usage: invalid arguments, URL, header, template or source address";

/// Options of `tidings bench`.
#[derive(Debug, Args)]
#[command(after_help = BENCH_HELP)]
pub struct BenchArgs {
    /// The event stream the subscribers open (http:// or https://; HTTP/1.1), e.g.
    /// http://127.0.0.1:8080/events?topic=a
    pub url: String,

    /// How many subscriber connections to open (at least 1: a bench measures delivery).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 100, value_parser = at_least_one)]
    pub connections: usize,

    /// Open at most this many connections per second.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 2000.0, value_parser = per_second)]
    pub connect_rate: f64,

    /// Give up on a connection that has not answered with its response head after this
    /// many seconds, and on a publish request that has not been answered (after three
    /// such publishes in a row, the rest are not sent).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub connect_timeout: f64,

    #[command(flatten)]
    pub cacert: crate::CaCertArg,

    /// Send this header with every subscribe request, written 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = crate::parse_header)]
    pub headers: Vec<(String, String)>,

    /// Bind each subscriber's socket to the next of these local addresses before
    /// connecting, to get past the ~28,000 ports one address has: a range
    /// `127.0.0.2-127.0.0.40` or a list `127.0.0.2,127.0.0.3` (repeatable).
    #[arg(long = "source", value_name = "ADDRS", value_parser = parse_sources)]
    pub sources: Vec<Vec<IpAddr>>,

    /// Where to publish (http:// or https://; HTTP/1.1). Without it the bench only
    /// connects and holds.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,

    /// The publish request's method.
    #[arg(long, value_name = "METHOD", default_value = "POST", value_parser = method)]
    pub method: String,

    /// The publish request's Content-Type.
    #[arg(long, value_name = "TYPE", default_value = "text/plain")]
    pub content_type: String,

    /// The publish request's body, with placeholders (see below).
    #[arg(long, value_name = "TEMPLATE", default_value = "{seq} {ts}", value_parser = Template::parse)]
    pub body: Template,

    /// Send this header with every publish request, written 'Name: value' (repeatable).
    #[arg(long = "publish-header", value_name = "NAME: VALUE", value_parser = crate::parse_header)]
    pub publish_headers: Vec<(String, String)>,

    /// Publish this many events per second; 0 sends them back to back (a burst).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10.0, value_parser = per_second)]
    pub rate: f64,

    /// Publish this many events.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub count: u64,

    /// Wait this long after the last connection opened before measuring memory and
    /// publishing, so the server settles.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5, value_parser = seconds)]
    pub settle: f64,

    /// Hold the connections open this long after they are all connected (and after the
    /// last delivery when publishing).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0, value_parser = seconds)]
    pub hold: f64,

    /// After the last publish, wait at most this long for the deliveries still on their
    /// way; whatever has not arrived by then is missing.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub drain_timeout: f64,

    /// The server's process id (repeatable, or comma-separated, for servers with several
    /// processes): report its memory per connection (VmRSS before connecting and after)
    /// and its CPU time per delivery (utime+stime while publishing), from /proc.
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// The largest event a subscriber accepts, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = tidings::wire::DEFAULT_MAX_EVENT_SIZE)]
    pub max_event_size: usize,

    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Every source address, in the order connections use them.
    pub fn source_addresses(&self) -> Vec<IpAddr> {
        self.sources.iter().flatten().copied().collect()
    }
}

/// A duration in seconds: a finite number from 0 up to a year.
fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(format!(
            "`{text}`: give a number of seconds from 0 to {MAX_SECONDS}"
        ));
    }
    Ok(value)
}

/// A duration in seconds that is not zero (a timeout).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match seconds(text)? {
        0.0 => Err(format!("`{text}`: a timeout of 0 s would give up at once")),
        value => Ok(value),
    }
}

/// A rate: a finite number of events per second, 0 or at least one per day.
fn per_second(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number per second"))?;
    if !(value == 0.0 || (1.0 / MAX_SECONDS..=1e9).contains(&value)) {
        return Err(format!(
            "`{text}`: give a rate from {:.0e} to 1e9 per second, or 0",
            1.0 / MAX_SECONDS
        ));
    }
    Ok(value)
}

/// A connection count: a whole number, at least 1.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("`0`: a bench needs at least one subscriber to measure delivery".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// The longest time any of the bench's durations may be (a year).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// An HTTP method token (RFC 9110 section 9).
fn method(text: &str) -> Result<String, String> {
    http::Method::from_bytes(text.as_bytes())
        .map(|m| m.to_string())
        .map_err(|_| format!("`{text}` is not an HTTP method"))
}

/// Parses `--source`: `A-B` (an IPv4 range, both ends included) or `A,B,C`.
fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
    if let Some((first, last)) = text.split_once('-') {
        let first: Ipv4Addr = first
            .trim()
            .parse()
            .map_err(|_| format!("`{first}` is not an IPv4 address"))?;
        let last: Ipv4Addr = last
            .trim()
            .parse()
            .map_err(|_| format!("`{last}` is not an IPv4 address"))?;
        let (first, last) = (u32::from(first), u32::from(last));
        if first > last {
            return Err(format!("`{text}`: the range ends before it starts"));
        }
        if last - first >= 65_536 {
            return Err(format!("`{text}`: more than 65,536 addresses"));
        }
        return Ok((first..=last)
            .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            .collect());
    }
    text.split(',')
        .map(|one| {
            one.trim()
                .parse()
                .map_err(|_| format!("`{one}` is not an IP address"))
        })
        .collect()
}

/// The publisher's body: literal text and placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// One part of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Seq,
    TimestampNs,
    TimestampUs,
    Pad(usize),
}

/// The numbers a subscriber reads back out of an event's data, in template order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The sequence number.
    Seq,
    /// The send time in nanoseconds since the epoch.
    TimestampNs,
    /// The send time in microseconds since the epoch.
    TimestampUs,
}

impl Template {
    /// Parses a template; `{seq}`, `{ts}`, `{ts_us}` and `{pad:N}` are placeholders and
    /// anything else is literal text.
    ///
    /// # Errors
    /// A `{pad:N}` whose N is not a number (below 64 MiB), or a template without `{seq}`
    /// (delivery could not be checked).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            rest = &rest[open..];
            let close = rest.find('}').map(|i| i + 1).unwrap_or(rest.len());
            let piece = match &rest[..close] {
                "{seq}" => Some(Piece::Seq),
                "{ts}" => Some(Piece::TimestampNs),
                "{ts_us}" => Some(Piece::TimestampUs),
                tag if tag.starts_with("{pad:") => {
                    let n = tag[5..tag.len() - 1]
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n < 64 << 20)
                        .ok_or_else(|| {
                            format!(
                                "`{tag}`: the padding must be a number of bytes below 64 MiB \
                                 ({{pad:BYTES}})"
                            )
                        })?;
                    Some(Piece::Pad(n))
                }
                _ => None,
            };
            match piece {
                Some(piece) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    rest = &rest[close..];
                }
                None => {
                    literal.push('{');
                    rest = &rest[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if !pieces.contains(&Piece::Seq) {
            return Err("the body has no {seq}: delivery could not be checked".to_owned());
        }
        Ok(Template { pieces })
    }

    /// The numbers the receiver reads from the data, in order.
    pub fn fields(&self) -> Vec<Field> {
        self.pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Seq => Some(Field::Seq),
                Piece::TimestampNs => Some(Field::TimestampNs),
                Piece::TimestampUs => Some(Field::TimestampUs),
                Piece::Literal(_) | Piece::Pad(_) => None,
            })
            .collect()
    }

    /// The body of event `seq`, stamped with the current time.
    pub fn render(&self, seq: u64) -> Vec<u8> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut body = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => body.extend_from_slice(text.as_bytes()),
                Piece::Seq => body.extend_from_slice(seq.to_string().as_bytes()),
                Piece::TimestampNs => {
                    body.extend_from_slice(since_epoch.as_nanos().to_string().as_bytes())
                }
                Piece::TimestampUs => {
                    body.extend_from_slice(since_epoch.as_micros().to_string().as_bytes())
                }
                Piece::Pad(n) => body.resize(body.len() + n, b'x'),
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ranges_or_lists() {
        assert_eq!(
            parse_sources("127.0.0.2-127.0.0.4").unwrap(),
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(parse_sources("127.0.0.9,::1").unwrap().len(), 2);
        assert!(parse_sources("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_sources("localhost").is_err());
    }

    #[test]
    fn templates_fill_placeholders_and_keep_other_braces() {
        let template = Template::parse(r#"{"topic":"a","data":"{seq} {ts_us} {pad:3}"}"#).unwrap();
        assert_eq!(template.fields(), [Field::Seq, Field::TimestampUs]);
        let body = String::from_utf8(template.render(42)).unwrap();
        let data = body
            .strip_prefix(r#"{"topic":"a","data":"42 "#)
            .expect("literal prefix and seq");
        let (ts, rest) = data.split_once(' ').unwrap();
        assert!(ts.parse::<u64>().unwrap() > 1_600_000_000_000_000);
        assert_eq!(rest, r#"xxx"}"#);
    }

    #[test]
    fn a_template_needs_seq_and_numeric_padding() {
        assert!(Template::parse("{ts}").is_err());
        assert!(Template::parse("{seq}{pad:x}").is_err());
    }

    #[test]
    fn a_bench_has_at_least_one_connection() {
        assert_eq!(at_least_one("5000"), Ok(5000));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert!(at_least_one("many").is_err());
    }

    #[test]
    fn durations_rates_and_methods_are_checked() {
        assert_eq!(seconds("1.5"), Ok(1.5));
        assert_eq!(seconds("0"), Ok(0.0));
        for bad in ["nan", "inf", "-1", "1e30", "x"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(positive_seconds("0").is_err());
        assert_eq!(positive_seconds("0.5"), Ok(0.5));
        assert_eq!(per_second("0"), Ok(0.0));
        assert_eq!(per_second("500"), Ok(500.0));
        for bad in ["nan", "inf", "-3", "1e-300", "1e30"] {
            assert!(per_second(bad).is_err(), "{bad}");
        }
        assert_eq!(method("PUT").as_deref(), Ok("PUT"));
        assert!(method("BAD METHOD").is_err());
        assert_eq!(
            Template::parse("{seq}{unknown}").unwrap().render(7),
            b"7{unknown}"
        );
    }
}
