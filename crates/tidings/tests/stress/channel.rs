//! Clients that drop and resume while threads broadcast on a channel (see the crate docs).

use std::net::SocketAddr;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use fastrand::Rng;
use tidings::server::{Channel, HistoryLimits, Session, SessionConfig, SessionStream};
use tidings::{Event, EventId};

use crate::session::roomy;
use crate::{assert_same_sequence, common, pick, seeds, GUARD};

/// A channel whose sessions come from `GET /events` (resuming from `Last-Event-ID`).
async fn channel_server(channel: Channel) -> SocketAddr {
    async fn events(State(channel): State<Channel>, headers: HeaderMap, uri: Uri) -> SessionStream {
        let config = roomy(SessionConfig::from_request(&headers, &uri));
        let (session, stream) = Session::new(config, ());
        channel.register(&session).expect("registers");
        stream
    }
    let app = axum::Router::new()
        .route("/events", get(events))
        .with_state(channel);
    common::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_come_and_go_while_threads_broadcast_see_every_id_once() {
    const BROADCASTERS: usize = 3;
    const COUNT: usize = 200;
    const CLIENTS: usize = 3;
    for seed in seeds() {
        let channel = Channel::builder()
            .history(HistoryLimits::new().max_events(BROADCASTERS * COUNT + 10))
            .build();
        let addr = channel_server(channel.clone()).await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(follow(addr, Rng::with_seed(seed ^ (c as u64 + 1) << 48))))
            .collect();
        // Every client's first connection is registered before the first broadcast.
        tokio::time::timeout(GUARD, async {
            while channel.session_count() < CLIENTS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the clients connect");
        let broadcasters: Vec<_> = (0..BROADCASTERS)
            .map(|b| {
                let channel = channel.clone();
                let mut rng = Rng::with_seed(seed ^ (b as u64 + 1) << 40);
                thread::spawn(move || {
                    let mut ids = Vec::with_capacity(COUNT);
                    for i in 0..COUNT {
                        let sent = channel
                            .broadcast(&Event::new().data(format!("{b}/{i}")))
                            .expect("broadcast");
                        ids.push(sent.id);
                        if rng.u64(..4) == 0 {
                            thread::sleep(Duration::from_micros(rng.u64(..400)));
                        }
                    }
                    ids
                })
            })
            .collect();
        let mut all: Vec<EventId> = Vec::new();
        for b in broadcasters {
            all.extend(b.join().expect("a broadcaster"));
        }
        all.sort();
        // Broadcast last, so a client that reaches it has had its chance at the rest.
        channel
            .broadcast(&Event::new().data("end"))
            .expect("broadcast");
        for (c, client) in clients.into_iter().enumerate() {
            let (seen, connections) = tokio::time::timeout(GUARD, client)
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: client {c} stalled"))
                .expect("a client");
            let context = format!("seed {seed}: client {c}, over {connections} connections");
            assert_same_sequence(&seen, &all, &context);
        }
    }
}

/// A client that reads a few events, drops its connection and resumes from its last id,
/// until the `end` event: the ids it saw, and over how many connections.
async fn follow(addr: SocketAddr, mut rng: Rng) -> (Vec<EventId>, usize) {
    let mut seen = Vec::new();
    let mut last: Option<String> = None;
    let mut connections = 0;
    loop {
        let headers: Vec<(&str, &str)> = last
            .as_deref()
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        let mut stream = common::open(addr, "/events", &headers).await;
        connections += 1;
        let stay = pick(&mut rng, &[1, 3, 10, 40, 150]);
        for _ in 0..stay {
            let event = stream.next_event().await.expect("the stream stays open");
            if event.data == "end" {
                return (seen, connections);
            }
            let id = event.id.expect("every event has an id");
            seen.push(EventId::from_str(&id).expect("an event id"));
            last = Some(id);
        }
    }
}
