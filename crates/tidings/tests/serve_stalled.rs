//! A client that stops reading, under the `disconnect` policy, on `server::serve`'s lean
//! path and on its hyper path: once the policy closes its session, the server drops the
//! connection at once instead of waiting forever for a socket the client never drains.
//!
//! A test binary of its own: it counts this process's open file descriptors.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use tidings::server::PushOutcome;
use tidings::Event;
use tokio::net::TcpSocket;

/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_when_the_policy_disconnects_it() {
    let paths = [
        ("/events", false),
        ("/events", true),
        (common::VIA_HYPER, false),
    ];
    for (path, direct_writes) in paths {
        let (addr, mut sessions) = common::serve_sessions(direct_writes, |config| {
            config.keep_alive(None).max_queue_bytes(16 * 1024)
        })
        .await;

        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut client = socket.connect(addr).await.expect("connect");
        let session = common::open_session_at(&mut client, &mut sessions, path).await;
        let with_connection = open_fds();

        // The client never reads: the socket fills, then the queue, then the policy acts.
        let data = "x".repeat(1000);
        let mut disconnected = false;
        for pushed in 0..1_000_000 {
            match session.push(&Event::new().data(data.as_str())) {
                Ok(PushOutcome::Disconnected) | Err(_) => {
                    disconnected = true;
                    break;
                }
                Ok(_) if pushed % 64 == 0 => tokio::task::yield_now().await,
                Ok(_) => {}
            }
        }
        assert!(
            disconnected,
            "the disconnect policy acts ({path}, direct writes: {direct_writes})"
        );

        tokio::time::timeout(GUARD, async {
            while open_fds() >= with_connection {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the server keeps the connection of a disconnected client ({path}, direct writes: {direct_writes})")
        });
        assert!(session.is_closed());
        drop(client);
    }
}
