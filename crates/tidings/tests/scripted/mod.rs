//! A scripted event-stream server for the client tests: it answers its N-th connection
//! with the N-th script (exact bytes cut into chosen chunks, with pauses), records every
//! request, and answers connections past the script with 204.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tidings::client::{EventSource, Item, ReadyState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted response.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes and flush.
    Send(Vec<u8>),
    /// Wait this many milliseconds.
    Pause(u64),
    /// Keep the connection open, silent, until the test ends.
    Hold,
    /// Abort the connection with a TCP reset instead of a clean close.
    Reset,
}

pub fn send(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}

pub const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
pub const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";

/// A 200 event stream whose body is `chunks`, each sent as its own write with a pause after
/// it, then closed.
pub fn stream(chunks: &[&[u8]]) -> Vec<Step> {
    let mut steps = vec![send(SSE_HEAD)];
    for chunk in chunks {
        steps.push(send(chunk));
        steps.push(Step::Pause(20));
    }
    steps
}

/// What a scripted server saw of one request.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

pub async fn scripted(scripts: Vec<Vec<Step>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(listener, scripts)
}

pub fn serve(listener: TcpListener, scripts: Vec<Vec<Step>>) -> Server {
    let addr = listener.local_addr().expect("address");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut scripts = scripts.into_iter();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let script = scripts.next().unwrap_or_else(|| vec![send(NO_CONTENT)]);
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move { answer(socket, script, recorded).await });
        }
    });
    Server { addr, requests }
}

pub async fn answer(mut socket: TcpStream, script: Vec<Step>, recorded: Arc<Mutex<Vec<Request>>>) {
    socket.set_nodelay(true).expect("nodelay");
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    recorded.lock().expect("not poisoned").push(request);
    for step in script {
        match step {
            Step::Send(bytes) => {
                if socket.write_all(&bytes).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
            }
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Step::Hold => tokio::time::sleep(Duration::from_secs(3600)).await,
            Step::Reset => {
                socket.set_zero_linger().expect("SO_LINGER");
                return;
            }
        }
    }
}

/// Reads one request head from `socket`: `None` when the client goes away first.
pub async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        assert!(head.len() < 64 * 1024, "request head too long");
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let target = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Request {
        target,
        headers,
        at: Instant::now(),
    })
}

/// Items in a form that is easy to compare.
pub fn describe(item: &Item) -> String {
    match item {
        Item::Event(event) => format!(
            "event {} {:?} id={:?}",
            event.event_type, event.data, event.last_event_id
        ),
        Item::State(ReadyState::Connecting) => "connecting".to_owned(),
        Item::State(ReadyState::Open) => "open".to_owned(),
        Item::State(ReadyState::Closed) => "closed".to_owned(),
        Item::Error(error) => format!("error {:?}", error.kind()),
    }
}

/// Every item until the stream ends (generous time limit: the scripts end it quickly).
pub async fn all_items(source: EventSource) -> Vec<Item> {
    let collect = source.collect::<Vec<Item>>();
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the stream should end by itself")
}

pub async fn all_described(source: EventSource) -> Vec<String> {
    all_items(source).await.iter().map(describe).collect()
}

/// The events (described, without state changes or errors) a quick source reads from
/// `server` until its script ends.
pub async fn events_from(server: &Server) -> Vec<String> {
    let source = quick(&server.url("/")).build().expect("valid");
    let mut items = all_described(source).await;
    items.retain(|item| item.starts_with("event"));
    items
}

/// A source that reconnects quickly, for scripts with several connections.
pub fn quick(url: &str) -> tidings::client::Builder {
    EventSource::builder(url).retry(Duration::from_millis(10))
}
