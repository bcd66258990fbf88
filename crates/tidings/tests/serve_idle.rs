//! `server::serve`'s hyper path lets no connection sit idle for ever: with no request in
//! progress for the idle timeout (or an HTTP/1 request head that takes longer), HTTP/1
//! closes and HTTP/2 sends `GOAWAY` and closes. An event stream is a request in progress:
//! it stays open however quiet it is.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tidings::server::{Session, SessionConfig, SessionStream};
use tidings::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The idle timeout these tests serve with.
const IDLE: Duration = Duration::from_millis(300);
/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

/// Serves `/ping` (a small answer) and `/stream` (an event stream, through hyper: nothing
/// takes the lean path) with [`IDLE`] as the idle timeout.
async fn serve() -> (SocketAddr, mpsc::UnboundedReceiver<Session>) {
    let (tx, sessions) = mpsc::unbounded_channel();
    let stream = move || {
        let tx = tx.clone();
        async move {
            let config = SessionConfig::new().keep_alive(None);
            let (session, stream): (Session, SessionStream) = Session::new(config, ());
            tx.send(session).expect("the test is listening");
            stream
        }
    };
    let app = axum::Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/stream", get(stream));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        tidings::server::serve(listener, app)
            .lean_when(|_| false)
            .idle_timeout(IDLE)
            .await
            .expect("serve");
    });
    (addr, sessions)
}

/// Reads until the server closes `client`; how long that took.
async fn closed_after(client: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 1024];
    tokio::time::timeout(GUARD, async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await
    .expect("the server closes the connection");
    start.elapsed()
}

async fn ping(client: &mut TcpStream) {
    client
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut answer = vec![0u8; 1024];
    let n = client.read(&mut answer).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("pong"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_the_timeout() {
    let (addr, _sessions) = serve().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    ping(&mut client).await;
    ping(&mut client).await; // kept alive between requests
    let waited = closed_after(&mut client).await;
    assert!(waited >= IDLE / 2, "not before the timeout: {waited:?}");
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_given_up_on() {
    let (addr, _sessions) = serve().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    ping(&mut client).await;
    client
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");
    closed_after(&mut client).await;
}

#[tokio::test]
async fn an_http2_connection_without_streams_gets_goaway_and_is_closed() {
    let (addr, _sessions) = serve().await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}/ping"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("answered");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"pong");
    // Nothing more: the server ends the connection, and the client's task with it.
    tokio::time::timeout(GUARD, connection)
        .await
        .expect("the server ends an idle HTTP/2 connection")
        .expect("the connection task does not panic")
        .expect("a graceful end (GOAWAY), not an error");
}

#[tokio::test]
async fn a_quiet_event_stream_is_a_request_in_progress_and_stays_open() {
    let (addr, mut sessions) = serve().await;
    let mut stream = common::open(addr, "/stream", &[("accept", "text/event-stream")]).await;
    let session = tokio::time::timeout(GUARD, sessions.recv())
        .await
        .expect("a session")
        .expect("a session");
    // Several idle timeouts without a byte (no keep-alive comments), then an event.
    tokio::time::sleep(IDLE * 4).await;
    session
        .push(&Event::new().data("still here"))
        .expect("the session is open");
    let event = tokio::time::timeout(GUARD, stream.next_event())
        .await
        .expect("the event arrives")
        .expect("the stream is open");
    assert_eq!(event.data, "still here");
}

#[tokio::test]
async fn an_http2_client_that_never_answers_is_dropped_after_its_goaway() {
    let (addr, _sessions) = serve().await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    // The preface and an empty SETTINGS frame; then the client reads but never writes, so
    // it acknowledges neither the server's SETTINGS nor its GOAWAY.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("send the preface");
    let waited = closed_after(&mut client).await;
    assert!(waited >= IDLE, "not before the idle timeout: {waited:?}");
}
