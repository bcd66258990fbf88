//! A client that goes away while events are still written to it must cost the server one
//! stream, never the process: with `SIGPIPE` at its default action (as in a program that
//! does not ignore it, unlike Rust's own `main`), writing to the dead socket must give
//! `EPIPE`, not a signal that kills the server.
//!
//! A test binary of its own: it changes this process's `SIGPIPE` disposition.
#![cfg(target_os = "linux")]

use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::Router;
use tidings::server::{Session, SessionConfig, SessionStream};
use tidings::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_a_client_that_has_gone_ends_the_stream_without_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` only changes the process's disposition for SIGPIPE;
    // no handler runs, and no other test shares this binary.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR, "SIGPIPE set to its default action");

    for direct_writes in [false, true] {
        let (tx, mut sessions) = mpsc::unbounded_channel();
        let events = move |headers: HeaderMap, uri: Uri| {
            let tx = tx.clone();
            async move {
                let config = SessionConfig::from_request(&headers, &uri).keep_alive(None);
                let (session, stream): (Session, SessionStream) = Session::new(config, ());
                tx.send(session).expect("the test is listening");
                stream
            }
        };
        let app = Router::new().route("/events", get(events));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            tidings::server::serve(listener, app)
                .direct_writes(direct_writes)
                .await
        });

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .expect("write");
        let session = tokio::time::timeout(GUARD, sessions.recv())
            .await
            .expect("a session within the guard")
            .expect("a session");
        session.push(&Event::new().data("first")).expect("open");
        let mut seen = Vec::new();
        tokio::time::timeout(GUARD, async {
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&seen).contains("data: first") {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "the stream ended before its first event");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the first event within the guard");

        // Gone. Pushed at once from this thread, before the connection's task can see the
        // close: one write meets the client's reset, the ones after it a broken pipe.
        drop(client);
        for _ in 0..100 {
            let _ = session.push(&Event::new().data("into the void"));
        }
        tokio::time::timeout(GUARD, async {
            while !session.is_closed() {
                let _ = session.push(&Event::new().data("into the void"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the session of a gone client closes (direct writes: {direct_writes})")
        });
        server.abort();
    }
}
