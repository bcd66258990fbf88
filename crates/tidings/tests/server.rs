//! The server side over real TCP sockets: headers, preamble, keep-alive, replay and the
//! seam race, the gap event, every slow-client policy, disconnect detection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::Router;
use tidings::server::{
    Channel, HistoryLimits, Lifecycle, Session, SessionConfig, SessionStream, SlowClientPolicy,
    GAP_EVENT_TYPE,
};
use tidings::Event;

use common::{open, open_with, serve};

/// A generous guard so a broken test fails instead of hanging; never a performance bound.
const GUARD: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct App {
    channel: Channel,
    config: SessionConfig,
}

async fn events(State(app): State<App>, headers: HeaderMap, uri: Uri) -> SessionStream {
    let last = tidings::server::last_event_id_from_request(&headers, &uri);
    let (session, stream) = Session::new(app.config.clone().last_event_id(last), ());
    app.channel
        .register(&session)
        .expect("register an open session");
    stream
}

async fn start(channel: Channel, config: SessionConfig) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/events", get(events))
        .with_state(App { channel, config });
    serve(app).await
}

/// Broadcasts `e0`, `e1`, ... and returns their ids.
fn broadcast_numbered(channel: &Channel, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            channel
                .broadcast(&Event::new().data(format!("e{i}")))
                .expect("broadcast")
                .id
                .to_string()
        })
        .collect()
}

async fn wait_for_sessions(channel: &Channel, n: usize) {
    tokio::time::timeout(GUARD, async {
        while channel.session_count() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("sessions registered in time");
}

#[tokio::test]
async fn headers_and_preamble() {
    let channel = Channel::new();
    let addr = start(channel.clone(), SessionConfig::new().padding(true)).await;
    let mut stream = open(addr, "/events", &[("accept", "text/event-stream")]).await;
    let h = &stream.head.headers;
    assert_eq!(stream.head.status, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("connection").is_none());
    let mut expected = vec![b':'];
    expected.extend(std::iter::repeat_n(b' ', 2048));
    expected.extend_from_slice(b"\nretry: 3000\n");
    let got = stream.read_raw(expected.len()).await;
    assert_eq!(&got[..], &expected[..]);

    wait_for_sessions(&channel, 1).await;
    let sent = channel
        .broadcast(&Event::new().event("t").data("a\nb"))
        .expect("broadcast");
    let raw = stream.read_raw(1).await;
    assert_eq!(
        raw,
        format!("id: {}\nevent: t\ndata: a\ndata: b\n\n", sent.id)
    );
}

#[tokio::test]
async fn no_retry_no_padding_still_opens_at_once() {
    let channel = Channel::new();
    let addr = start(channel, SessionConfig::new().retry(None)).await;
    let mut stream = open(addr, "/events", &[]).await;
    assert_eq!(&stream.read_raw(2).await[..], b":\n");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keep_alive_after_quiet_period_reset_by_events() {
    let channel = Channel::new();
    let period = Duration::from_secs(15);
    let addr = start(
        channel.clone(),
        SessionConfig::new().retry(None).keep_alive(Some(period)),
    )
    .await;
    let mut stream = open(addr, "/events", &[]).await;
    let opened = tokio::time::Instant::now();
    assert_eq!(&stream.read_raw(2).await[..], b":\n");
    wait_for_sessions(&channel, 1).await;

    // Quiet: a comment comes one period after the opening write.
    assert_eq!(&stream.read_raw(2).await[..], b":\n");
    let first = tokio::time::Instant::now();
    assert!(
        first - opened >= period,
        "keep-alive came after {:?}",
        first - opened
    );

    // An event 10 s later resets the quiet period: the next comment is 15 s after it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    channel
        .broadcast(&Event::new().data("x"))
        .expect("broadcast");
    let event_at = tokio::time::Instant::now();
    assert_eq!(
        stream.next_event().await.map(|e| e.data).as_deref(),
        Some("x")
    );
    assert_eq!(&stream.read_raw(2).await[..], b":\n");
    let second = tokio::time::Instant::now();
    assert!(
        second - event_at >= period,
        "keep-alive {:?} after an event",
        second - event_at
    );
    assert!(second - first >= Duration::from_secs(25));
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed() {
    let channel = Channel::builder().history(HistoryLimits::new()).build();
    let addr = start(channel.clone(), SessionConfig::new()).await;
    let ids = broadcast_numbered(&channel, 10);

    // Header form.
    let mut stream = open(addr, "/events", &[("last-event-id", &ids[6])]).await;
    for (i, id) in ids.iter().enumerate().skip(7) {
        let event = stream.next_event().await.expect("replayed event");
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
        assert_eq!(event.data, format!("e{i}"));
    }
    let live = channel
        .broadcast(&Event::new().data("live"))
        .expect("broadcast");
    let event = stream.next_event().await.expect("live event");
    assert_eq!(event.id, Some(live.id.to_string()));

    // Query-parameter form (polyfills).
    let mut stream = open(addr, &format!("/events?lastEventId={}", ids[8]), &[]).await;
    assert_eq!(
        stream.next_event().await.and_then(|e| e.id),
        Some(ids[9].clone())
    );
    assert_eq!(
        stream.next_event().await.and_then(|e| e.id),
        Some(live.id.to_string())
    );
}

#[tokio::test]
async fn gap_event_when_history_no_longer_reaches_back() {
    let channel = Channel::builder()
        .history(HistoryLimits::new().max_events(5))
        .build();
    let addr = start(channel.clone(), SessionConfig::new()).await;
    let ids = broadcast_numbered(&channel, 20);

    let mut stream = open(addr, "/events", &[("last-event-id", &ids[1])]).await;
    let gap = stream.next_event().await.expect("gap event");
    assert_eq!(gap.event.as_deref(), Some(GAP_EVENT_TYPE));
    assert_eq!(
        gap.id, None,
        "a gap event does not move the client's last event id"
    );
    let body: serde_json::Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(body["reason"], "expired");
    assert_eq!(body["last_event_id"], ids[1].as_str());
    assert_eq!(body["oldest_id"], ids[15].as_str());
    for id in &ids[15..] {
        assert_eq!(
            stream.next_event().await.and_then(|e| e.id).as_ref(),
            Some(id)
        );
    }

    let mut stream = open(addr, "/events", &[("last-event-id", "not-an-id")]).await;
    let gap = stream.next_event().await.expect("gap event");
    let body: serde_json::Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(body["reason"], "unknown");
}

/// Broadcasts race a client that drops and resumes, many times: every event is received
/// exactly once, in order, across the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seam_race_no_gap_no_duplicate() {
    const TOTAL: usize = 3000;
    let channel = Channel::builder()
        .history(HistoryLimits::new().max_events(TOTAL))
        .build();
    let addr = start(channel.clone(), SessionConfig::new()).await;
    // The first connection is in before anything is published; every later one resumes.
    let mut first = Some(open(addr, "/events", &[]).await);
    wait_for_sessions(&channel, 1).await;
    let publisher = {
        let channel = channel.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(TOTAL);
            for i in 0..TOTAL {
                ids.push(
                    channel
                        .broadcast(&Event::new().data(i.to_string()))
                        .expect("broadcast")
                        .id
                        .to_string(),
                );
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        })
    };

    let mut received: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    let result = tokio::time::timeout(GUARD, async {
        let mut round = 0usize;
        loop {
            let headers: Vec<(&str, &str)> = last
                .iter()
                .map(|id| ("last-event-id", id.as_str()))
                .collect();
            let mut stream = match first.take() {
                Some(stream) => stream,
                None => open(addr, "/events", &headers).await,
            };
            // Read a varying number of events, then drop the connection mid-stream.
            let take = 1 + (round * 37) % 211;
            for _ in 0..take {
                match stream.next_event().await {
                    Some(event) => {
                        let id = event.id.expect("every broadcast has an id");
                        received.push(id.clone());
                        last = Some(id);
                    }
                    None => break,
                }
                if received.len() == TOTAL {
                    return;
                }
            }
            round += 1;
        }
    })
    .await;
    let sent = publisher.await.expect("publisher");
    if result.is_err() {
        let missing: Vec<_> = sent.iter().filter(|id| !received.contains(id)).collect();
        panic!(
            "timed out with {} received; missing {:?}",
            received.len(),
            &missing[..missing.len().min(10)]
        );
    }
    assert_eq!(received, sent, "every event exactly once, in order");
}

async fn slow_client_case(
    policy: SlowClientPolicy,
) -> (
    Vec<common::WireEvent>,
    u64,
    tidings::server::ChannelStats,
    usize,
) {
    const EVENTS: usize = 300;
    let channel = Channel::builder()
        .history(HistoryLimits::new().max_events(10))
        .slow_client_policy(policy)
        .build();
    let addr = start(
        channel.clone(),
        SessionConfig::new().max_queue_bytes(256 * 1024),
    )
    .await;
    let mut fast = open(addr, "/events", &[]).await;
    let mut stalled = open_with(addr, "/events", &[], true).await;
    wait_for_sessions(&channel, 2).await;

    // The publisher keeps pace with the fast client (as a real one would with its
    // slowest healthy reader), so only the stalled client falls behind.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let big = "x".repeat(64 * 1024);
    let fast_reader = tokio::spawn(async move {
        let mut n = 0;
        while n < EVENTS {
            match fast.next_event_within(GUARD).await {
                Some(e) if e.event.is_none() => {
                    n += 1;
                    let _ = progress_tx.send(n);
                }
                Some(_) => {}
                None => break,
            }
        }
        n
    });
    for i in 0..EVENTS {
        channel
            .broadcast(&Event::new().data(format!("{i}:{big}")))
            .expect("broadcast");
        let _ = tokio::time::timeout(GUARD, progress.wait_for(|n| *n > i)).await;
    }
    let fast_got = tokio::time::timeout(GUARD, fast_reader)
        .await
        .expect("fast reader in time")
        .expect("task");
    let stats = channel.stats();

    // Now the stalled client reads everything it can.
    let mut got = Vec::new();
    while let Some(event) = stalled.next_event_within(Duration::from_secs(2)).await {
        got.push(event);
    }
    let dropped_in_band: u64 = got
        .iter()
        .filter(|e| e.event.as_deref() == Some(GAP_EVENT_TYPE))
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).expect("gap JSON");
            let expected = match policy {
                SlowClientPolicy::LatestOnly => "replaced",
                _ => "dropped",
            };
            assert_eq!(v["reason"], expected);
            v["dropped"].as_u64().expect("count")
        })
        .sum();
    (got, dropped_in_band, stats, fast_got)
}

fn sequence(events: &[common::WireEvent]) -> Vec<usize> {
    events
        .iter()
        .filter(|e| e.event.is_none())
        .map(|e| {
            e.data
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("numbered event")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_disconnect_policy() {
    let (got, _, stats, fast_got) = slow_client_case(SlowClientPolicy::Disconnect).await;
    assert_eq!(fast_got, 300, "the fast client got everything");
    assert_eq!(stats.slow_disconnects, 1, "{stats:?}");
    let seq = sequence(&got);
    assert!(seq.len() < 300, "the stalled client was cut off");
    assert_eq!(
        seq,
        (0..seq.len()).collect::<Vec<_>>(),
        "what it got is a prefix, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_drop_oldest_policy() {
    let (got, dropped, stats, fast_got) = slow_client_case(SlowClientPolicy::DropOldest).await;
    assert_eq!(fast_got, 300);
    assert!(stats.dropped_events > 0, "{stats:?}");
    assert_eq!(
        dropped, stats.dropped_events,
        "every drop announced in band"
    );
    let seq = sequence(&got);
    assert_eq!(
        seq.len() as u64 + dropped,
        300,
        "received + dropped = sent: nothing silent"
    );
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(seq.last(), Some(&299), "the newest arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_latest_only_policy() {
    let (got, replaced, stats, fast_got) = slow_client_case(SlowClientPolicy::LatestOnly).await;
    assert_eq!(fast_got, 300);
    assert!(stats.replaced_events > 0, "{stats:?}");
    assert_eq!(
        replaced, stats.replaced_events,
        "every replacement announced in band"
    );
    let seq = sequence(&got);
    assert_eq!(
        seq.len() as u64 + stats.replaced_events,
        300,
        "received + replaced = sent"
    );
    assert_eq!(seq.last(), Some(&299), "the latest arrives");
}

#[tokio::test]
async fn client_going_away_is_noticed_promptly() {
    let channel = Channel::new();
    let mut lifecycle = channel.lifecycle();
    let sessions: Arc<std::sync::Mutex<Vec<Session>>> = Arc::default();
    let app = {
        let sessions = Arc::clone(&sessions);
        let channel = channel.clone();
        Router::new().route(
            "/events",
            get(move || {
                let (session, stream) = Session::new(SessionConfig::new().keep_alive(None), ());
                channel.register(&session).expect("register");
                sessions.lock().expect("lock").push(session);
                std::future::ready(stream)
            }),
        )
    };
    let addr = serve(app).await;
    let mut stream = open(addr, "/events", &[]).await;
    stream.read_raw(1).await;
    let registered = lifecycle.recv().await.expect("lifecycle");
    let session = sessions.lock().expect("lock")[0].clone();
    assert_eq!(registered, Lifecycle::Registered(session.id()));

    drop(stream); // the client goes away, with no keep-alive and no event to write
    tokio::time::timeout(GUARD, session.closed())
        .await
        .expect("closed() resolves");
    assert_eq!(
        lifecycle.recv().await.expect("lifecycle"),
        Lifecycle::Deregistered(session.id())
    );
    assert_eq!(channel.session_count(), 0);
}

#[tokio::test]
async fn server_initiated_close_flushes_then_ends() {
    let channel = Channel::new();
    let addr = start(channel.clone(), SessionConfig::new().retry(None)).await;
    let mut stream = open(addr, "/events", &[]).await;
    wait_for_sessions(&channel, 1).await;
    channel
        .broadcast(&Event::new().data("last words"))
        .expect("broadcast");
    channel.close_all();
    assert_eq!(
        stream.next_event().await.map(|e| e.data).as_deref(),
        Some("last words")
    );
    assert_eq!(stream.next_event().await, None, "the stream ended");
    wait_for_sessions(&channel, 0).await;
}

#[tokio::test]
async fn batch_is_one_write_and_stream_applies_back_pressure() {
    let sessions: Arc<std::sync::Mutex<Vec<Session>>> = Arc::default();
    let app = {
        let sessions = Arc::clone(&sessions);
        Router::new().route(
            "/events",
            get(move || {
                let (session, stream) =
                    Session::new(SessionConfig::new().retry(None).max_queue_bytes(1024), ());
                sessions.lock().expect("lock").push(session);
                std::future::ready(stream)
            }),
        )
    };
    let addr = serve(app).await;
    let mut stream = open(addr, "/events", &[]).await;
    assert_eq!(&stream.read_raw(2).await[..], b":\n");
    let session = sessions.lock().expect("lock")[0].clone();

    session
        .push_batch(&[Event::new().data("1"), Event::new().data("2")])
        .expect("batch");
    assert_eq!(&stream.read_raw(1).await[..], b"data: 1\n\ndata: 2\n\n");

    // 2,000 events through a 1 KiB queue: back-pressure, not the slow-client policy.
    let producer = {
        let session = session.clone();
        tokio::spawn(async move {
            let events =
                futures_util::stream::iter((0..2000).map(|i| Event::new().data(i.to_string())));
            session.stream(events).await
        })
    };
    for i in 0..2000 {
        assert_eq!(
            stream.next_event().await.map(|e| e.data),
            Some(i.to_string())
        );
    }
    producer
        .await
        .expect("task")
        .expect("stream sent everything");
    assert!(!session.stats().disconnected_slow);
}

/// No axum: a plain hyper service answering with `SessionStream::into_response`.
#[tokio::test]
async fn plain_hyper_service() {
    let channel: Channel = Channel::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = channel.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let config =
                    SessionConfig::from_request(request.headers(), request.uri()).retry(None);
                let (session, stream) = Session::new(config, ());
                let registered = serving.register(&session);
                async move { registered.map(|()| stream.into_response()) }
            });
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
    let mut stream = open(addr, "/", &[]).await;
    assert_eq!(stream.head.headers["content-type"], "text/event-stream");
    wait_for_sessions(&channel, 1).await;
    channel
        .broadcast(&Event::new().data("plain"))
        .expect("broadcast");
    assert_eq!(
        stream.next_event().await.map(|e| e.data).as_deref(),
        Some("plain")
    );
}

/// A resume that replays more than the session's queue bound is not a client falling
/// behind: the next live event is queued behind the replay, not a reason to disconnect.
#[tokio::test]
async fn a_long_replay_is_not_falling_behind() {
    let channel: Channel = Channel::builder().history(HistoryLimits::new()).build();
    let payload = "x".repeat(1000);
    let first = channel
        .broadcast(&Event::new().data(payload.as_str()))
        .expect("broadcast")
        .id;
    for _ in 0..499 {
        channel
            .broadcast(&Event::new().data(payload.as_str()))
            .expect("broadcast");
    }
    let config = SessionConfig::new().last_event_id(Some(first.to_string()));
    let (session, _stream) = Session::new(config, ());
    channel.register(&session).expect("register");
    assert!(
        session.stats().queued_bytes > 256 * 1024,
        "the replay is larger than the default bound"
    );
    let live = channel
        .broadcast(&Event::new().data("live"))
        .expect("broadcast");
    assert_eq!(live.recipients, 1);
    assert!(!session.is_closed());
    assert_eq!(channel.stats().slow_disconnects, 0);
}
