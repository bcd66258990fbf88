//! Test helpers: a hub running in-process on a real socket, a tiny HTTP/1.1 client, and
//! an event-stream reader that splits on blank lines (test-only; enough for the hub's
//! own output, which always ends lines with LF).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tidings::EventId;
use tidings_hub::engine::{
    Engine, LiveEvent, MemoryEngine, NewEvent, ReadBatch, StoredEvent, TopicInfo,
};
use tidings_hub::topics::TopicFilter;
use tidings_hub::{Error, Hub, Server, Settings};

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A hub served on 127.0.0.1:<free port>, as `tidings serve` runs it.
pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl TestHub {
    pub async fn start(settings: Settings) -> TestHub {
        let engine = Arc::new(MemoryEngine::new(
            settings.history_max_events,
            settings.history_max_age,
        ));
        TestHub::start_with_engine(settings, engine).await
    }

    pub async fn start_with_engine(settings: Settings, engine: Arc<dyn Engine>) -> TestHub {
        let settings = Settings {
            listen: "127.0.0.1:0".parse().expect("address"),
            ..settings
        };
        let server = Server::bind_with_engine(settings, engine)
            .await
            .expect("hub binds");
        let addr = server.local_addr();
        let hub = Arc::clone(server.hub());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        TestHub {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn start_default() -> TestHub {
        TestHub::start(Settings::default()).await
    }

    /// Asks the server to shut down (as SIGTERM does) and waits for it to return.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic")
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(self.addr, Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn publish_form(&self, body: &str) -> String {
        let reply = request(
            self.addr,
            Method::POST,
            "/publish",
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "publish {body}: {}",
            reply.text()
        );
        reply.json()["id"].as_str().expect("an id").to_owned()
    }

    pub async fn publish_json(&self, value: &serde_json::Value) -> Reply {
        publish_json_to(self.addr, value).await
    }

    /// Publishes `data` to `topic` and returns its id.
    pub async fn publish(&self, topic: &str, data: &str) -> String {
        let reply = self
            .publish_json(&serde_json::json!({ "topic": topic, "data": data }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["id"].as_str().expect("an id").to_owned()
    }

    pub async fn stream(&self, path: &str) -> EventStream {
        EventStream::open(self.addr, path, &[]).await
    }

    pub async fn stream_with(&self, path: &str, headers: &[(&str, &str)]) -> EventStream {
        EventStream::open(self.addr, path, headers).await
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `POST /publish` of `value` as JSON to the hub at `addr` (for tasks that outlive a
/// borrow of the [`TestHub`]).
pub async fn publish_json_to(addr: SocketAddr, value: &serde_json::Value) -> Reply {
    request(
        addr,
        Method::POST,
        "/publish",
        &[("content-type", "application/json")],
        Bytes::from(value.to_string()),
    )
    .await
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, and returns its detail.
    pub fn assert_problem(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "content type of a {status}"
        );
        let json = self.json();
        assert_eq!(json["status"], status, "{json}");
        for member in ["type", "title", "detail"] {
            assert!(
                json[member].as_str().is_some_and(|s| !s.is_empty()),
                "problem member {member} missing: {json}"
            );
        }
        json["detail"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends one request on a new connection and returns the response head and body stream.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> http::Response<Incoming> {
    let tcp = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response")
}

/// Sends a request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = send(addr, builder.body(Full::new(body)).expect("request")).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// One event as a browser would dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

/// An open `text/event-stream` response, read block by block.
pub struct EventStream {
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    /// The last event id committed so far (id-only blocks included), as a browser keeps it.
    pub last_id: String,
    /// The last `retry:` seen.
    pub retry: Option<u64>,
}

impl EventStream {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut builder = Request::builder()
            .uri(path)
            .header("host", addr.to_string())
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = send(
            addr,
            builder.body(Full::new(Bytes::new())).expect("request"),
        )
        .await;
        let status = response.status();
        let (parts, body) = response.into_parts();
        if status != StatusCode::OK {
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            panic!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        assert_eq!(
            parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        EventStream {
            headers: parts.headers,
            body,
            buf: Vec::new(),
            last_id: String::new(),
            retry: None,
        }
    }

    /// The next block (up to a blank line), without its final blank line; `None` at the
    /// end of the stream.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(String::from_utf8_lossy(&block[..end]).into_owned());
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("stream produced nothing in time")?;
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The next dispatched event (blocks without data — comments, `retry:`, id-only —
    /// update the state and are skipped); `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let block = self.next_block().await?;
            let mut data: Option<String> = None;
            let mut event = String::new();
            for line in block.split('\n') {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "data" => {
                        let d = data.get_or_insert_with(String::new);
                        d.push_str(value);
                        d.push('\n');
                    }
                    "event" => event = value.to_owned(),
                    "id" => self.last_id = value.to_owned(),
                    "retry" => self.retry = value.parse().ok(),
                    _ => {}
                }
            }
            if let Some(mut data) = data {
                data.pop();
                return Some(SseEvent {
                    id: self.last_id.clone(),
                    event: if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event
                    },
                    data,
                });
            }
        }
    }

    /// The next event; fails the test at the end of the stream.
    pub async fn expect_event(&mut self) -> SseEvent {
        self.next_event()
            .await
            .expect("an event, not the end of the stream")
    }

    /// Reads until the end of the stream, returning the events still delivered.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event().await {
            out.push(e);
        }
        out
    }
}

/// A memory engine that is slow in the ways that matter to a resume: history reads take a
/// little while before and after reading, and the live feed reaches the fan-out late. This
/// widens every window in which publishes race a subscriber's resume: events stored
/// between registration and the read (seen as history and buffered live), between the read
/// and the hand-over (buffered live only), and events read as history whose live copy
/// reaches the fan-out only after the hand-over.
pub struct SlowReads {
    inner: Arc<MemoryEngine>,
    live: tokio::sync::broadcast::Sender<LiveEvent>,
    calls: std::sync::atomic::AtomicU64,
}

impl SlowReads {
    /// Must be called inside a tokio runtime (it spawns the delayed live feed).
    pub fn new() -> SlowReads {
        let inner = Arc::new(MemoryEngine::new(100_000, None));
        let (live, _) = tokio::sync::broadcast::channel(100_000);
        let mut from = inner.subscribe_live();
        let to = live.clone();
        tokio::spawn(async move {
            let mut n: u64 = 0;
            while let Ok(event) = from.recv().await {
                n += 1;
                tokio::time::sleep(Duration::from_micros(700 * (n % 3))).await;
                let _ = to.send(event);
            }
        });
        SlowReads {
            inner,
            live,
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn pause(&self) {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_micros(500 * (1 + n % 6))).await;
    }
}

#[async_trait::async_trait]
impl Engine for SlowReads {
    fn name(&self) -> &'static str {
        "slow-reads"
    }
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        self.inner.append(events).await
    }
    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        self.pause().await;
        let batch = self.inner.read_after(filter, after, limit).await;
        self.pause().await;
        batch
    }
    async fn head(&self) -> Result<EventId, Error> {
        self.inner.head().await
    }
    async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        self.inner.topics().await
    }
    fn subscribe_live(&self) -> tokio::sync::broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }
}

/// A memory engine whose live feed holds only two events, so a batch publish makes the
/// fan-out lag behind the feed and catch up by reading the engine. (Feed order is only
/// guaranteed for one publisher at a time: enough for the test that uses it.)
pub struct TinyFeed {
    inner: MemoryEngine,
    live: tokio::sync::broadcast::Sender<LiveEvent>,
}

impl TinyFeed {
    pub fn new() -> TinyFeed {
        let (live, _) = tokio::sync::broadcast::channel(2);
        TinyFeed {
            inner: MemoryEngine::new(100_000, None),
            live,
        }
    }
}

#[async_trait::async_trait]
impl Engine for TinyFeed {
    fn name(&self) -> &'static str {
        "tiny-feed"
    }
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        let stored = self.inner.append(events).await?;
        for event in &stored {
            let _ = self.live.send(LiveEvent::Stored(Arc::clone(event)));
        }
        Ok(stored)
    }
    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        self.inner.read_after(filter, after, limit).await
    }
    async fn head(&self) -> Result<EventId, Error> {
        self.inner.head().await
    }
    async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        self.inner.topics().await
    }
    fn subscribe_live(&self) -> tokio::sync::broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }
}
