//! Helpers for tests over real sockets: serve an axum app on loopback, open event streams
//! with a real HTTP client, and read events from them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tidings::server::{Session, SessionConfig, SessionStream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Serves `app` on 127.0.0.1 on a free port with `tidings::server::serve`: requests to
/// `/events` take its lean path (HTTP/1) with direct writes, everything else goes through
/// hyper.
pub async fn serve(app: axum::Router) -> SocketAddr {
    serve_with(app, true).await
}

async fn serve_with(app: axum::Router, direct_writes: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        tidings::server::serve(listener, app)
            .lean_when(|request| request.uri.path() == "/events")
            .direct_writes(direct_writes)
            .await
            .expect("serve");
    });
    addr
}

/// Serves, as [`serve`] does but with `direct_writes` as given, an app whose `/events`
/// opens a session (its config from the request, then `configure`) and hands it to the
/// test through the returned receiver.
pub async fn serve_sessions(
    direct_writes: bool,
    configure: fn(SessionConfig) -> SessionConfig,
) -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let (tx, sessions) = mpsc::unbounded_channel();
    let events = move |headers: HeaderMap, uri: Uri| {
        let tx = tx.clone();
        async move {
            let config = configure(SessionConfig::from_request(&headers, &uri));
            let (session, stream): (Session, SessionStream) = Session::new(config, ());
            tx.send(session).expect("the test is listening");
            stream
        }
    };
    let app = axum::Router::new()
        .route("/events", get(events.clone()))
        .route(VIA_HYPER, get(events));
    let addr = serve_with(app, direct_writes).await;
    (addr, sessions)
}

/// A route of [`serve_sessions`] that opens the same sessions as `/events`, but is not
/// picked for the lean path: its streams are served by hyper.
pub const VIA_HYPER: &str = "/events-via-hyper";

/// Sends `GET /events` on `client` (a raw socket to [`serve_sessions`]) and returns the
/// session the server opened for it.
pub async fn open_session(
    client: &mut TcpStream,
    sessions: &mut mpsc::UnboundedReceiver<Session>,
) -> Session {
    open_session_at(client, sessions, "/events").await
}

/// As [`open_session`], for `GET path`.
pub async fn open_session_at(
    client: &mut TcpStream,
    sessions: &mut mpsc::UnboundedReceiver<Session>,
    path: &str,
) -> Session {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    client
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    tokio::time::timeout(Duration::from_secs(20), sessions.recv())
        .await
        .expect("a session within 20 s")
        .expect("a session")
}

/// One event as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open event stream over HTTP/1.1.
pub struct Stream {
    pub head: http::response::Parts,
    body: Incoming,
    buf: BytesMut,
}

/// Opens `GET path` with extra headers, over a socket with a small receive buffer when
/// `small_rcvbuf` (so a client that stops reading stalls the server quickly).
pub async fn open_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    small_rcvbuf: bool,
) -> Stream {
    let socket = TcpSocket::new_v4().expect("socket");
    if small_rcvbuf {
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
    }
    let tcp: TcpStream = socket.connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = http::Request::get(path).header("host", addr.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (head, body) = response.into_parts();
    Stream {
        head,
        body,
        buf: BytesMut::new(),
    }
}

pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Stream {
    open_with(addr, path, headers, false).await
}

impl Stream {
    /// Wraps a response already received (e.g. over HTTP/2).
    pub fn from_response(response: http::Response<Incoming>) -> Stream {
        let (head, body) = response.into_parts();
        Stream {
            head,
            body,
            buf: BytesMut::new(),
        }
    }

    /// Reads until at least `n` bytes are buffered or the stream ends; returns them all.
    pub async fn read_raw(&mut self, n: usize) -> Bytes {
        while self.buf.len() < n {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
        self.buf.split().freeze()
    }

    /// The next block (up to a blank line), without its blank line; `None` at the end.
    pub async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = self.buf.split_to(end + 2);
                return Some(String::from_utf8_lossy(&block[..end]).into_owned());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next event with data (skipping comments and retry-only blocks); `None` at the
    /// end of the stream.
    pub async fn next_event(&mut self) -> Option<WireEvent> {
        loop {
            let block = self.next_block().await?;
            if let Some(event) = parse_block(&block) {
                return Some(event);
            }
        }
    }

    /// Like `next_event`, but `None` if nothing arrives within `wait`.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<WireEvent> {
        tokio::time::timeout(wait, self.next_event())
            .await
            .ok()
            .flatten()
    }
}

/// Reads one block written by our encoder (LF line ends, `name: value`).
pub fn parse_block(block: &str) -> Option<WireEvent> {
    let mut event = WireEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.split('\n') {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

/// The payload of a chunked HTTP/1.1 body (everything after the head), and whether it
/// ended with the last chunk; a body cut short yields what its whole chunks held.
/// Panics on bytes that are not chunked framing.
pub fn dechunk(mut wire: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = wire.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let len = std::str::from_utf8(&wire[..line_end])
            .ok()
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("a chunk length, not {:?}", &wire[..line_end]));
        wire = &wire[line_end + 2..];
        if len == 0 {
            assert!(b"\r\n".starts_with(wire), "nothing after the last chunk");
            return (body, wire.len() == 2);
        }
        if wire.len() < len + 2 {
            return (body, false);
        }
        body.extend_from_slice(&wire[..len]);
        assert_eq!(&wire[len..len + 2], b"\r\n", "a chunk ends with CRLF");
        wire = &wire[len + 2..];
    }
}
