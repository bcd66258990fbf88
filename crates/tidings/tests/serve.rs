//! `tidings::server::serve` over raw TCP: what its lean path puts on the wire (head,
//! chunks, the last chunk, HTTP/1.0, errors), noticing a client that goes away, that
//! every other connection still reaches hyper (keep-alive, bodies, HTTP/2, pipelining),
//! and graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tidings::server::{Session, SessionConfig, SessionStream, SharedBytes, SlowClientPolicy};
use tidings::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
    stop: Option<oneshot::Sender<()>>,
    stopped: oneshot::Receiver<std::io::Result<()>>,
}

/// `/events` (a session, handed to the test; `?fail` answers 400 instead), `/hello`
/// (text) and `POST /echo`, served with the default lean test (`Accept:
/// text/event-stream`).
async fn start() -> Server {
    start_with(false).await
}

/// As [`start`], with `Serve::direct_writes(direct)`.
async fn start_with(direct: bool) -> Server {
    let (tx, sessions) = mpsc::unbounded_channel();
    let events = move |headers: HeaderMap, uri: Uri| {
        let tx = tx.clone();
        async move {
            if uri.query() == Some("fail") {
                return Err((StatusCode::BAD_REQUEST, "no such topic"));
            }
            let config = SessionConfig::from_request(&headers, &uri)
                .retry(Some(Duration::from_millis(1500)))
                .keep_alive(None)
                .max_queue_bytes(256 << 20);
            let (session, stream): (Session, SessionStream) = Session::new(config, ());
            tx.send(session).expect("the test is listening");
            Ok(stream)
        }
    };
    let app = Router::new()
        .route("/events", get(events))
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (done, stopped) = oneshot::channel();
    tokio::spawn(async move {
        let result = tidings::server::serve(listener, app)
            .direct_writes(direct)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
        let _ = done.send(result);
    });
    Server {
        addr,
        sessions,
        stop: Some(stop),
        stopped,
    }
}

impl Server {
    async fn session(&mut self) -> Session {
        tokio::time::timeout(GUARD, self.sessions.recv())
            .await
            .expect("a session within the guard")
            .expect("the server is running")
    }
}

const EVENTS: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n";

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Connects and sends `request` (raw bytes).
async fn send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut client = connect(addr).await;
    client.write_all(request).await.expect("write");
    client
}

/// Reads until `needle` has arrived (or fails at the guard); returns everything read.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    tokio::time::timeout(GUARD, async {
        while !contains(seen, needle) {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "connection closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the bytes within the guard");
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut all))
        .await
        .expect("the end within the guard")
        .expect("read");
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn an_event_stream_is_chunked_on_the_wire_and_ends_with_the_last_chunk() {
    let mut server = start().await;
    let mut client = send(server.addr, EVENTS).await;
    let session = server.session().await;
    assert_eq!(session.last_event_id(), Some("7"));

    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"retry: 1500\n\r\n").await;
    let wire = text(&seen);
    // The lean path's head: `date` first (hyper puts it last).
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{wire}");
    let (head, body) = wire.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase() + "\r\n";
    assert!(
        head.contains("\r\ncontent-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\ncache-control: no-cache, no-transform\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body, "c\r\nretry: 1500\n\r\n");

    session
        .push(&Event::new().id("8").data("one"))
        .expect("push");
    seen.clear();
    read_until(&mut client, &mut seen, b"data: one\n\n\r\n").await;
    assert_eq!(text(&seen), "11\r\nid: 8\ndata: one\n\n\r\n");

    session
        .push_batch(&[Event::new().data("a"), Event::new().data("b")])
        .expect("push");
    session.close();
    assert_eq!(
        text(&read_to_end(&mut client).await),
        "12\r\ndata: a\n\ndata: b\n\n\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn the_head_may_arrive_byte_by_byte() {
    let mut server = start().await;
    let mut client = connect(server.addr).await;
    for byte in EVENTS {
        client.write_all(&[*byte]).await.expect("write");
        tokio::task::yield_now().await;
    }
    let session = server.session().await;
    session.push(&Event::new().data("x")).expect("push");
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"data: x\n\n").await;
    // The lean path's head (hyper would put `date` last).
    let wire = text(&seen);
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{wire}");
    assert!(
        wire.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{wire}"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_closes_its_session() {
    let mut server = start().await;
    let mut client = send(server.addr, EVENTS).await;
    let session = server.session().await;
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"retry").await;
    drop(client);
    tokio::time::timeout(GUARD, session.closed())
        .await
        .expect("the session closes when its client goes away");
}

#[tokio::test]
async fn bytes_sent_on_an_open_stream_are_ignored() {
    let mut server = start().await;
    let mut client = send(server.addr, EVENTS).await;
    let session = server.session().await;
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    session
        .push(&Event::new().data("still here"))
        .expect("push");
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"data: still here\n\n").await;
    assert!(!session.is_closed());
}

#[tokio::test]
async fn http_10_streams_end_by_closing_the_connection() {
    let mut server = start().await;
    let mut client = send(
        server.addr,
        b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    let session = server.session().await;
    session.push(&Event::new().data("x")).expect("push");
    session.close();
    let wire = text(&read_to_end(&mut client).await);
    let (head, body) = wire.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body, "retry: 1500\ndata: x\n\n");
}

#[tokio::test]
async fn an_error_on_the_lean_path_has_a_length_and_closes() {
    let server = start().await;
    let mut client = send(
        server.addr,
        b"GET /events?fail HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    let wire = text(&read_to_end(&mut client).await);
    assert!(wire.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{wire}");
    assert!(wire.contains("\r\ncontent-length: 13\r\n"), "{wire}");
    assert!(wire.contains("\r\nconnection: close\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nno such topic"), "{wire}");
}

#[tokio::test]
async fn other_connections_reach_hyper_with_keep_alive_bodies_and_pipelining() {
    let server = start().await;
    let mut client = connect(server.addr).await;
    // Two requests in one write (pipelined), then a third with a body on the same
    // connection.
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"hello").await;
    while seen.windows(5).filter(|w| w == b"hello").count() < 2 {
        read_until(&mut client, &mut seen, b"hellohello").await;
    }
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
        )
        .await
        .expect("write");
    let rest = text(&read_to_end(&mut client).await);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("ping"), "{rest}");
    // An event stream asked without `Accept: text/event-stream` also works, through hyper.
    let mut curl_like = send(
        server.addr,
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text(&read_to_end(&mut curl_like).await).ends_with("hello"));
}

/// A body that arrives in pieces wakes the connection from the socket between polls,
/// and many pipelined requests make hyper yield: neither may stall the connection (it
/// is polled with a waker that turns wake-ups during a poll into another poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_pieces_and_a_long_pipeline_are_answered() {
    let server = start().await;
    let mut client = connect(server.addr).await;
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nabcd")
        .await
        .expect("write");
    for piece in [b"efgh", b"ijkl"] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(piece).await.expect("write");
    }
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"abcdefghijkl").await;

    let pipeline = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".repeat(300);
    client.write_all(&pipeline).await.expect("write");
    client
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let rest = text(&read_to_end(&mut client).await);
    assert_eq!(rest.matches("HTTP/1.1 200 OK").count(), 301, "{rest}");
}

#[tokio::test]
async fn http2_streams_go_through_hyper() {
    let mut server = start().await;
    let io = hyper_util::rt::TokioIo::new(connect(server.addr).await);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/events", server.addr))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let session = server.session().await;
    session.push(&Event::new().data("over h2")).expect("push");
    session.close();
    let body = tokio::time::timeout(GUARD, response.into_body().collect())
        .await
        .expect("the body within the guard")
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"retry: 1500\ndata: over h2\n\n");
}

#[tokio::test]
async fn graceful_shutdown_waits_for_streams_and_closes_idle_connections() {
    let mut server = start().await;
    let mut stream = send(server.addr, EVENTS).await;
    let session = server.session().await;
    let mut idle = connect(server.addr).await;
    tokio::task::yield_now().await;

    server
        .stop
        .take()
        .expect("not stopped yet")
        .send(())
        .expect("stop");
    // A connection that never sent a request is closed.
    assert!(read_to_end(&mut idle).await.is_empty());
    // The stream goes on until its session ends; then the server is done.
    session.push(&Event::new().data("last")).expect("push");
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, b"data: last\n\n").await;
    assert!(matches!(
        server.stopped.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    ));
    session.close();
    assert!(text(&read_to_end(&mut stream).await).ends_with("0\r\n\r\n"));
    tokio::time::timeout(GUARD, &mut server.stopped)
        .await
        .expect("the server stops within the guard")
        .expect("the server reports")
        .expect("the server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_keep_every_event_in_order_when_the_socket_fills() {
    // HTTP/1.1: a chunked body; HTTP/1.0: a body that ends when the connection closes.
    for http_10 in [false, true] {
        fill_and_drain(http_10).await;
    }
}

async fn fill_and_drain(http_10: bool) {
    let mut server = start_with(true).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut client = socket.connect(server.addr).await.expect("connect");
    let request = if http_10 {
        b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".as_slice()
    } else {
        EVENTS
    };
    client.write_all(request).await.expect("write");
    let session = server.session().await;
    let mut wire = Vec::new();
    read_until(&mut client, &mut wire, b"retry: 1500\n").await;

    // The client reads only while `reading` says so.
    let (reading, mut may_read) = tokio::sync::watch::channel(true);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            may_read
                .wait_for(|on| *on)
                .await
                .expect("the test is running");
            let n = client.read(&mut buf).await.expect("read");
            if n == 0 {
                return wire;
            }
            wire.extend_from_slice(&buf[..n]);
        }
    });
    // Sizes from 1 byte to 12 KB. Phases: the client reads (direct writes, whole); it
    // stops (the socket fills: a direct write is partial or refused, then events queue);
    // it reads again (the queue drains, direct writes resume); and once more. Pushes of
    // one event alternate with joined pushes of one to three (bytes shared with other
    // sessions, which the wire writes in their own pre-framed form).
    let mut sent = 0;
    let mut push = |count: usize| {
        let target = sent + count;
        while sent < target {
            let event = |n: usize| {
                let pad = "x".repeat((n * 7919) % 12_000);
                Event::new().data(format!("{n} {pad}"))
            };
            let joined = sent % 4;
            if joined == 0 {
                session.push(&event(sent)).expect("push");
                sent += 1;
                continue;
            }
            let parts: Vec<Bytes> = (sent..sent + joined)
                .map(|n| event(n).encode().expect("encode"))
                .collect();
            let shared = SharedBytes::new(parts.concat().into());
            session
                .push_bytes_joined(&parts, &shared, SlowClientPolicy::Disconnect)
                .expect("joined push");
            sent += joined;
        }
    };
    for _ in 0..2 {
        push(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        reading.send_replace(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        push(2000);
        reading.send_replace(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    push(200);
    let sent = sent;
    session.close();
    let wire = tokio::time::timeout(GUARD, reader)
        .await
        .expect("the stream ends within the guard")
        .expect("the reader finishes");

    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let body = if http_10 {
        wire[head_end..].to_vec()
    } else {
        let (body, clean) = common::dechunk(&wire[head_end..]);
        assert!(clean, "the body ends with its last chunk");
        body
    };
    let body = String::from_utf8(body).expect("utf-8");
    let body = body
        .strip_prefix("retry: 1500\n")
        .expect("the preamble first");
    let numbers: Vec<usize> = body
        .split_terminator("\n\n")
        .map(|event| {
            let data = event.strip_prefix("data: ").expect("a data line");
            data.split(' ')
                .next()
                .expect("a number")
                .parse()
                .expect("a number")
        })
        .collect();
    assert_eq!(numbers, (0..sent).collect::<Vec<_>>());
}
