//! `tidings publish`: sends events to a hub's `POST /publish` and prints the id the hub
//! assigned to each, one per line.
//!
//! One event from the command line, or with `--stdin` (or data `-`) one event per line of
//! standard input, sent in batches as JSON arrays so that a million lines are not a million
//! requests.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::exit;
use hub::Hub;

mod hub;

/// Options of `tidings publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The event's data; `-` reads standard input instead, one event per line.
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    data: Option<String>,

    /// Publish one event per line of standard input.
    #[arg(long)]
    stdin: bool,

    /// The topic to publish to (repeat to publish one event to several topics).
    #[arg(long = "topic", short = 't', value_name = "TOPIC", required = true)]
    topics: Vec<String>,

    /// The event type (browsers dispatch it to addEventListener(TYPE)); default `message`.
    #[arg(long, value_name = "TYPE")]
    event: Option<String>,

    /// Ask subscribers to wait this many milliseconds before reconnecting.
    #[arg(long, value_name = "MS")]
    retry: Option<u64>,

    /// The hub's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        env = "TIDINGS_URL"
    )]
    url: String,

    /// Send this header with every request, written 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = crate::parse_header)]
    headers: Vec<(String, String)>,

    #[command(flatten)]
    token: crate::TokenArg,

    #[command(flatten)]
    cacert: crate::CaCertArg,

    /// With --stdin, how many lines to send per request (at most).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,

    /// With --stdin, the largest request body to send, in bytes (a batch ends early to stay
    /// under it; a single longer line goes alone). Keep it under the hub's max_body_bytes
    /// (1 MiB by default).
    #[arg(long, value_name = "BYTES", default_value_t = 512 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    batch_bytes: u64,

    /// Give up on a request that gets no answer within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// One event in the hub's publish API.
#[derive(Debug, Serialize)]
struct Publish<'a> {
    topic: Topics<'a>,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
}

/// `"topic": "a"` for one topic, `"topic": ["a", "b"]` for several.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Topics<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Debug, Deserialize)]
struct Published {
    id: String,
}

#[derive(Debug, Deserialize)]
struct PublishedBatch {
    ids: Vec<String>,
}

/// Why publishing stopped, with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
    /// The hub refused the request body as too large (413).
    too_large: bool,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            too_large: false,
        }
    }
}

/// Runs `tidings publish`.
pub fn run(args: PublishArgs) -> ExitCode {
    let result = crate::runtime()
        .map_err(|e| Failure::new(exit::FAILURE, format!("could not start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(publish(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("tidings publish: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn publish(args: PublishArgs) -> Result<(), Failure> {
    let hub = Hub::new(&args)?;
    let mut stdout = io::stdout().lock();

    let from_stdin = args.stdin || args.data.as_deref() == Some("-");
    if !from_stdin {
        let data = args.data.as_deref().unwrap_or_default();
        let body = serde_json::to_vec(&event(&args, data)).map_err(internal)?;
        let answer: Published = hub.post(body).await?;
        return print_ids(&mut stdout, [answer.id]);
    }

    let progress = progress_bar();
    let mut batches = Batches::new(&args);
    let mut lines = io::stdin().lock().lines();
    loop {
        let mut batch = Vec::new();
        for line in lines.by_ref() {
            let line = line.map_err(|e| {
                Failure::new(exit::FAILURE, format!("could not read standard input: {e}"))
            })?;
            if let Some(full) = batches.add(line)? {
                batch = full;
                break;
            }
        }
        if batch.is_empty() {
            batch = batches.rest();
        }
        if batch.is_empty() {
            break;
        }
        let body = batch_body(&batch);
        let answer: PublishedBatch = hub.post(body).await.map_err(|failure| {
            let hint = match batch.len() {
                _ if !failure.too_large => return failure,
                1 => "this one line is too long for the hub by itself".to_owned(),
                n => format!("a batch of {n} events; lower --batch-bytes"),
            };
            Failure::new(failure.code, format!("{} ({hint})", failure.message))
        })?;
        if answer.ids.len() != batch.len() {
            return Err(Failure::new(
                exit::CONTENT_TYPE,
                format!(
                    "the hub answered {} ids for {} events",
                    answer.ids.len(),
                    batch.len()
                ),
            ));
        }
        progress.suspend(|| print_ids(&mut stdout, answer.ids))?;
        progress.inc(batch.len() as u64);
        // Only long inputs get a progress line: after the first batch.
        if progress.is_hidden() && io::stderr().is_terminal() {
            progress.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// Groups lines of standard input into batches of at most `--batch` events and
/// `--batch-bytes` bytes of JSON, each event encoded as it is read.
struct Batches<'a> {
    args: &'a PublishArgs,
    /// The encoded events of the batch being filled.
    events: Vec<Vec<u8>>,
    /// The size of `events` as one JSON array.
    bytes: u64,
}

impl<'a> Batches<'a> {
    fn new(args: &'a PublishArgs) -> Batches<'a> {
        Batches {
            args,
            events: Vec::new(),
            bytes: 2,
        }
    }

    /// Adds one line; returns the batch it completes, if any (the line then starts the
    /// next one when it did not fit).
    fn add(&mut self, line: String) -> Result<Option<Vec<Vec<u8>>>, Failure> {
        let encoded = serde_json::to_vec(&event(self.args, &line)).map_err(internal)?;
        // The separating comma.
        let size = encoded.len() as u64 + 1;
        let mut full = None;
        if !self.events.is_empty() && self.bytes + size > self.args.batch_bytes {
            full = Some(self.rest());
        }
        self.bytes += size;
        self.events.push(encoded);
        if full.is_none() && self.events.len() >= self.args.batch as usize {
            full = Some(self.rest());
        }
        Ok(full)
    }

    /// The events gathered so far (possibly none), starting a new batch.
    fn rest(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 2;
        std::mem::take(&mut self.events)
    }
}

/// Joins encoded events into one JSON array.
fn batch_body(events: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.push(b']');
    body
}

/// The event the hub gets for one piece of data.
fn event<'a>(args: &'a PublishArgs, data: &'a str) -> Publish<'a> {
    Publish {
        topic: match args.topics.as_slice() {
            [one] => Topics::One(one),
            many => Topics::Many(many),
        },
        data,
        event: args.event.as_deref(),
        retry: args.retry,
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {human_pos} events published in {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

fn print_ids(out: &mut impl Write, ids: impl IntoIterator<Item = String>) -> Result<(), Failure> {
    let written = ids
        .into_iter()
        .try_for_each(|id| writeln!(out, "{id}"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        // The reader went away; the events are published all the same.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(
            exit::FAILURE,
            format!("could not write to standard output: {e}"),
        )),
    }
}

fn internal(error: serde_json::Error) -> Failure {
    Failure::new(
        exit::FAILURE,
        format!("could not encode the request: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_at_the_count_or_before_the_byte_limit() {
        let args = |batch: u32, batch_bytes: u64| PublishArgs {
            data: None,
            stdin: true,
            topics: vec!["t".to_owned()],
            event: None,
            retry: None,
            url: String::new(),
            headers: Vec::new(),
            token: crate::TokenArg::default(),
            cacert: crate::CaCertArg::default(),
            batch,
            batch_bytes,
            timeout: 1,
        };
        // Each event encodes as {"topic":"t","data":"<100 x>"}: 125 bytes, 126 with its comma.
        let line = "x".repeat(100);
        let by_bytes = args(500, 2 + 126 * 3);
        let mut batches = Batches::new(&by_bytes);
        let mut sizes = Vec::new();
        for _ in 0..10 {
            if let Some(full) = batches.add(line.clone()).expect("encodes") {
                assert!(batch_body(&full).len() as u64 <= by_bytes.batch_bytes);
                sizes.push(full.len());
            }
        }
        sizes.push(batches.rest().len());
        assert_eq!(sizes, [3, 3, 3, 1]);

        let by_count = args(4, 1 << 20);
        let mut batches = Batches::new(&by_count);
        let full: Vec<usize> = (0..9)
            .filter_map(|_| batches.add(line.clone()).expect("encodes"))
            .map(|b| b.len())
            .collect();
        assert_eq!(full, [4, 4]);
        assert_eq!(batches.rest().len(), 1);

        // A line longer than the limit goes alone.
        let mut batches = Batches::new(&by_bytes);
        assert!(batches.add("short".to_owned()).expect("encodes").is_none());
        let full = batches.add("y".repeat(1000)).expect("encodes");
        assert_eq!(full.map(|b| b.len()), Some(1));
        assert_eq!(batches.rest().len(), 1);
    }

    #[test]
    fn batch_bodies_are_json_arrays() {
        let body = batch_body(&[b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(parsed, serde_json::json!([{"a": 1}, {"b": 2}]));
    }

    #[test]
    fn one_topic_is_a_string_several_are_an_array() {
        let one = Publish {
            topic: Topics::One("a"),
            data: "x",
            event: None,
            retry: None,
        };
        assert_eq!(
            serde_json::to_string(&one).expect("encodes"),
            r#"{"topic":"a","data":"x"}"#
        );
        let topics = ["a".to_owned(), "b".to_owned()];
        let many = Publish {
            topic: Topics::Many(&topics),
            data: "x",
            event: Some("t"),
            retry: Some(3000),
        };
        assert_eq!(
            serde_json::to_string(&many).expect("encodes"),
            r#"{"topic":["a","b"],"data":"x","event":"t","retry":3000}"#
        );
    }
}
