//! `tidings listen URL`: prints an event stream's events as they arrive, reconnecting the
//! way a browser's EventSource does (it is [`tidings::client::EventSource`] underneath).

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;
use tidings::client::{EventSource, Item, ReadyState};
use tidings::wire::MessageEvent;
use tidings::ErrorKind;

use crate::exit;

/// Options of `tidings listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The event stream's URL (http:// or https://).
    url: String,

    /// Print one JSON object per line: {"event", "data", "last_event_id"}.
    #[arg(long)]
    json: bool,

    /// Send this header with every request, written 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = crate::parse_header)]
    headers: Vec<(String, String)>,

    #[command(flatten)]
    token: crate::TokenArg,

    #[command(flatten)]
    cacert: crate::CaCertArg,

    /// Resume after this event id: sent as Last-Event-ID on the first request.
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,

    /// Exit (0) when the stream ends instead of reconnecting; a failed connection exits
    /// with its error code instead of being retried.
    #[arg(long)]
    no_reconnect: bool,

    /// Exit (0) after printing this many events.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,

    /// Reconnect when nothing at all (not even a comment, nor a response to the request)
    /// arrives for this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: Option<u64>,

    /// Give up on a connection attempt (and try again later) that gets no response head
    /// within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,

    /// The largest event to accept, in bytes of the stream: no line (field name included)
    /// nor an event's data may be longer. A larger one exits with code 6.
    #[arg(long, value_name = "BYTES", default_value_t = tidings::wire::DEFAULT_MAX_EVENT_SIZE)]
    max_event_size: usize,

    /// Speak HTTP/2 directly on http:// URLs (h2c with prior knowledge).
    #[arg(long)]
    http2_prior_knowledge: bool,
}

/// One event as `--json` prints it: exactly these keys.
#[derive(Serialize)]
struct JsonEvent<'a> {
    event: &'a str,
    data: &'a str,
    last_event_id: &'a str,
}

/// Runs `tidings listen`.
pub fn run(args: ListenArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tidings listen: could not start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    runtime.block_on(listen(args))
}

async fn listen(args: ListenArgs) -> ExitCode {
    let mut builder = EventSource::builder(&args.url).reconnect(!args.no_reconnect);
    let headers = match args.token.add_to(&args.headers) {
        Ok(headers) => headers,
        Err(message) => {
            eprintln!("tidings listen: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    if let Some(id) = &args.last_event_id {
        builder = builder.last_event_id(id.clone());
    }
    if let Some(seconds) = args.idle_timeout {
        builder = builder.idle_timeout(Duration::from_secs(seconds));
    }
    builder = builder
        .connect_timeout(Duration::from_secs(args.connect_timeout))
        .max_event_size(args.max_event_size);
    builder = builder.http2_prior_knowledge(args.http2_prior_knowledge);
    match args.cacert.load() {
        Ok(certificates) => {
            for der in certificates {
                builder = builder.add_root_certificate(der);
            }
        }
        Err(message) => {
            eprintln!("tidings listen: {message}");
            return ExitCode::from(exit::USAGE);
        }
    }
    let mut source = match builder.build() {
        Ok(source) => source,
        Err(error) => {
            eprintln!("tidings listen: {error}");
            return ExitCode::from(exit_code(error.kind()));
        }
    };

    let mut stdout = io::stdout().lock();
    let mut printed = 0u64;
    // The error reported just before the stream closes decides the exit code; an error
    // followed by a reconnect does not.
    let mut failure: Option<ErrorKind> = None;
    let mut opened_before = false;
    while let Some(item) = source.next().await {
        match item {
            Item::Event(event) => {
                if let Err(error) = print_event(&mut stdout, &event, args.json) {
                    return if error.kind() == io::ErrorKind::BrokenPipe {
                        // The reader went away (`| head`): nothing left to do.
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("tidings listen: could not write to standard output: {error}");
                        ExitCode::from(exit::FAILURE)
                    };
                }
                printed += 1;
                if args.max_events.is_some_and(|max| printed >= max) {
                    return ExitCode::SUCCESS;
                }
            }
            Item::State(ReadyState::Open) => {
                if opened_before {
                    eprintln!("tidings listen: reconnected to {}", args.url);
                }
                opened_before = true;
            }
            Item::State(ReadyState::Connecting) => {
                if failure.take().is_some() || opened_before {
                    eprintln!("tidings listen: reconnecting...");
                }
            }
            Item::State(ReadyState::Closed) => break,
            Item::Error(error) if error.kind() == ErrorKind::EventTooLarge => {
                eprintln!(
                    "tidings listen: the stream sent an event or a line longer than {} bytes; \
                     raise the limit with --max-event-size BYTES",
                    args.max_event_size
                );
                failure = Some(error.kind());
            }
            Item::Error(error) => {
                eprintln!("tidings listen: {error}");
                failure = Some(error.kind());
            }
        }
    }
    match failure {
        Some(kind) => ExitCode::from(exit_code(kind)),
        None => ExitCode::SUCCESS,
    }
}

/// The exit code for the error a stream closed with.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Connect | ErrorKind::Io | ErrorKind::IdleTimeout => exit::CONNECTION,
        ErrorKind::Status => exit::STATUS,
        ErrorKind::ContentType => exit::CONTENT_TYPE,
        ErrorKind::EventTooLarge => exit::EVENT_TOO_LARGE,
        ErrorKind::InvalidRequest => exit::USAGE,
        _ => exit::FAILURE,
    }
}

/// Prints one event, flushing at once: a listener is read live.
///
/// The readable form is a header line (the type, and the id when there is one) followed by
/// the data lines indented by two spaces, then a blank line.
fn print_event(out: &mut impl Write, event: &MessageEvent, json: bool) -> io::Result<()> {
    if json {
        let line = JsonEvent {
            event: &event.event_type,
            data: &event.data,
            last_event_id: &event.last_event_id,
        };
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    } else {
        if event.last_event_id.is_empty() {
            writeln!(out, "{}", event.event_type)?;
        } else {
            writeln!(out, "{}  (id {})", event.event_type, event.last_event_id)?;
        }
        for line in event.data.split('\n') {
            writeln!(out, "  {line}")?;
        }
        writeln!(out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str, id: &str) -> MessageEvent {
        MessageEvent {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: id.to_owned(),
        }
    }

    fn printed(event: &MessageEvent, json: bool) -> String {
        let mut out = Vec::new();
        print_event(&mut out, event, json).expect("writes to a Vec");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn json_has_exactly_three_keys_on_one_line() {
        let line = printed(&event("chat", "a\n\"b\"", "1-0"), true);
        assert_eq!(
            line,
            "{\"event\":\"chat\",\"data\":\"a\\n\\\"b\\\"\",\"last_event_id\":\"1-0\"}\n"
        );
    }

    #[test]
    fn readable_form_shows_type_id_and_indented_data() {
        assert_eq!(
            printed(&event("chat", "hello\nworld", "1-0"), false),
            "chat  (id 1-0)\n  hello\n  world\n\n"
        );
        assert_eq!(
            printed(&event("message", "x", ""), false),
            "message\n  x\n\n"
        );
    }

    #[test]
    fn every_failure_has_its_own_code() {
        assert_eq!(exit_code(ErrorKind::Connect), 3);
        assert_eq!(exit_code(ErrorKind::IdleTimeout), 3);
        assert_eq!(exit_code(ErrorKind::Status), 4);
        assert_eq!(exit_code(ErrorKind::ContentType), 5);
        assert_eq!(exit_code(ErrorKind::EventTooLarge), 6);
        assert_eq!(exit_code(ErrorKind::InvalidRequest), 2);
    }
}
