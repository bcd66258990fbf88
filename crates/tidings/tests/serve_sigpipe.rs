//! A client that goes away while events are still written to it must cost the server one
//! stream, never the process: with `SIGPIPE` at its default action (as in a program that
//! does not ignore it, unlike Rust's own `main`), writing to the dead socket must give
//! `EPIPE`, not a signal that kills the server.
//!
//! A test binary of its own: it changes this process's `SIGPIPE` disposition.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use tidings::Event;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_to_a_client_that_has_gone_ends_the_stream_without_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` only changes the process's disposition for SIGPIPE;
    // no handler runs, and no other test shares this binary.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR, "SIGPIPE set to its default action");

    for direct_writes in [false, true] {
        let (addr, mut sessions) =
            common::serve_sessions(direct_writes, |config| config.keep_alive(None)).await;

        let mut client = TcpStream::connect(addr).await.expect("connect");
        let session = common::open_session(&mut client, &mut sessions).await;
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
    }
}
