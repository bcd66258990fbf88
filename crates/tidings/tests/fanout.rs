//! One broadcast reaching 10,000 sessions over real sockets, nothing missing.
//!
//! 10,000 HTTP/1.1 connections would need 20,000 file descriptors in one process (client
//! and server ends), our machines' hard limit; HTTP/2 carries them as 10,000 streams
//! over 5 connections instead, each stream a full session.

mod common;

use std::time::Duration;

use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tidings::server::{Channel, Session, SessionConfig};
use tidings::Event;
use tokio::net::{TcpListener, TcpStream};

const SESSIONS: usize = 10_000;
const CONNECTIONS: usize = 5;
const EVENTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_ten_thousand_sessions() {
    let channel: Channel = Channel::new();
    let app = {
        let channel = channel.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::get(move || {
                let config = SessionConfig::new().retry(None).keep_alive(None);
                let (session, stream) = Session::new(config, ());
                channel.register(&session).expect("register");
                std::future::ready(stream)
            }),
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(SESSIONS as u32);
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });

    let mut readers = Vec::with_capacity(SESSIONS);
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        for _ in 0..SESSIONS / CONNECTIONS {
            let mut sender = sender.clone();
            readers.push(tokio::spawn(async move {
                let request = http::Request::get(format!("http://{addr}/events"))
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                let mut stream = common::Stream::from_response(response);
                let mut ids = Vec::with_capacity(EVENTS);
                while ids.len() < EVENTS {
                    match stream.next_event().await {
                        Some(event) => ids.push(event.id.expect("id")),
                        None => break,
                    }
                }
                ids
            }));
        }
    }

    tokio::time::timeout(Duration::from_secs(120), async {
        while channel.session_count() < SESSIONS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all sessions registered");

    let mut sent = Vec::new();
    for i in 0..EVENTS {
        let broadcast = channel
            .broadcast(&Event::new().data(i.to_string()))
            .expect("broadcast");
        assert_eq!(broadcast.recipients, SESSIONS);
        sent.push(broadcast.id.to_string());
    }
    let mut complete = 0;
    for reader in readers {
        let ids = tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("reader finished")
            .expect("reader task");
        assert_eq!(ids, sent, "every session got every event, in order");
        complete += 1;
    }
    assert_eq!(complete, SESSIONS);
    assert_eq!(channel.stats().deliveries, (SESSIONS * EVENTS) as u64);
}
