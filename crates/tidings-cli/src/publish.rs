//! `tidings publish`: sends events to a hub's `POST /publish` and prints the id the hub
//! assigned to each, one per line.
//!
//! One event from the command line, or with `--stdin` (or data `-`) one event per line of
//! standard input, sent in batches as JSON arrays so that a million lines are not a million
//! requests.

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::exit;

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

    /// With --stdin, how many lines to send per request.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,

    /// Give up on a request that gets no answer within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
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

/// An RFC 9457 problem, as the hub reports errors.
#[derive(Debug, Default, Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

/// Why publishing stopped, with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
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
    let batch_size = args.batch as usize;
    let mut lines = io::stdin().lock().lines();
    loop {
        let mut batch: Vec<String> = Vec::with_capacity(batch_size);
        for line in lines.by_ref().take(batch_size) {
            let line = line.map_err(|e| {
                Failure::new(exit::FAILURE, format!("could not read standard input: {e}"))
            })?;
            batch.push(line);
        }
        if batch.is_empty() {
            break;
        }
        let events: Vec<Publish<'_>> = batch.iter().map(|line| event(&args, line)).collect();
        let body = serde_json::to_vec(&events).map_err(internal)?;
        let answer: PublishedBatch = hub.post(body).await?;
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

/// The largest answer read from the hub: ids for a batch fit easily.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The hub's publish endpoint and an HTTP client for it (plain or TLS).
struct Hub {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl Hub {
    fn new(args: &PublishArgs) -> Result<Hub, Failure> {
        let usage = |message: String| Failure::new(exit::USAGE, message);
        let endpoint: Uri = format!("{}/publish", args.url.trim_end_matches('/'))
            .parse()
            .map_err(|_| usage(format!("`{}` is not a valid URL", args.url)))?;
        if !matches!(endpoint.scheme_str(), Some("http" | "https")) || endpoint.host().is_none() {
            return Err(usage(format!(
                "`{}` is not an http:// or https:// URL",
                args.url
            )));
        }
        let headers = args
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| usage(format!("`{name}` is not a valid header name")))?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    usage(format!("the value of `{name}` is not a valid header value"))
                })?;
                Ok((name, value))
            })
            .collect::<Result<_, Failure>>()?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::new(exit::FAILURE, format!("could not set up TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(Hub {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint,
            headers,
            timeout: Duration::from_secs(args.timeout),
        })
    }

    /// POSTs one JSON body and reads the JSON answer, turning every failure into the
    /// message and exit code a person needs.
    async fn post<T: for<'de> Deserialize<'de>>(&self, body: Vec<u8>) -> Result<T, Failure> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.endpoint.clone();
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));

        let endpoint = &self.endpoint;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                Failure::new(
                    exit::CONNECTION,
                    format!("could not reach the hub at {endpoint}: {}", error_chain(&e)),
                )
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Failure::new(
                        exit::CONNECTION,
                        format!(
                            "the connection to {endpoint} failed while reading the answer: {e}"
                        ),
                    )
                })?
                .to_bytes();
            Ok::<_, Failure>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Failure::new(
                    exit::CONNECTION,
                    format!(
                        "{endpoint} did not answer within {} s",
                        self.timeout.as_secs()
                    ),
                )
            })??;

        if !status.is_success() {
            let problem: Problem = serde_json::from_slice(&body).unwrap_or_default();
            let reason = problem.detail.or(problem.title).unwrap_or_else(|| {
                String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(500)
                    .collect()
            });
            return Err(Failure::new(
                exit::STATUS,
                format!("the hub answered {status}: {reason}"),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                exit::CONTENT_TYPE,
                format!("the hub's answer ({status}) is not the expected JSON: {e}"),
            )
        })
    }
}

/// An error and its sources on one line ("client error (Connect): connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

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
