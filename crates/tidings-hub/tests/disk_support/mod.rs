//! Helpers for the disk engine's tests: a tiny HTTP/1.1 client for publishing, and
//! subscribers built on `tidings::client::EventSource` that record what they receive.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use tidings::client::{EventSource, Item, ReadyState};
use tidings::wire::MessageEvent;

/// One HTTP response, whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let content_type = content_type
            .map(|t| format!("Content-Type: {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{content_type}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 20 s"))?
}

/// `POST /publish` of one JSON event.
pub async fn publish(addr: SocketAddr, topic: &str, data: &str) -> std::io::Result<Response> {
    let body = serde_json::json!({ "topic": topic, "data": data }).to_string();
    request(
        addr,
        "POST",
        "/publish",
        Some("application/json"),
        body.as_bytes(),
    )
    .await
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// What one subscriber has seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every event, in the order received.
    pub events: Vec<MessageEvent>,
    /// How many times the connection opened.
    pub opens: usize,
}

/// A subscriber: an `EventSource` read by a task into [`Seen`].
pub struct Subscriber {
    pub seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `topics` (query string entries) on the hub at `addr`.
    pub fn start(addr: SocketAddr, topics: &[&str]) -> Subscriber {
        let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
        let url = format!("http://{addr}/events?{}", query.join("&"));
        let mut source = EventSource::builder(&url)
            .max_backoff(Duration::from_millis(300))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a valid URL");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Some(item) = source.next().await {
                    let mut seen = seen.lock().expect("not poisoned");
                    match item {
                        Item::Event(event) => seen.events.push(event),
                        Item::State(ReadyState::Open) => seen.opens += 1,
                        _ => {}
                    }
                }
            })
        };
        Subscriber { seen, task }
    }

    /// A copy of the events seen so far.
    pub fn events(&self) -> Vec<MessageEvent> {
        self.seen.lock().expect("not poisoned").events.clone()
    }

    /// How many times the connection opened.
    pub fn opens(&self) -> usize {
        self.seen.lock().expect("not poisoned").opens
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
