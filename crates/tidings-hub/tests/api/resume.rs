//! Reconnecting: replay after Last-Event-ID, gap events, and the seam under racing publishes.

use crate::common::{publish_json_to, SlowReads, TestHub};
use crate::id;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tidings_hub::Settings;

#[tokio::test]
async fn resume_after_reconnect_replays_across_topics_in_order_then_goes_live() {
    let hub = TestHub::start_default().await;
    let mut stream = hub.stream("/events?topic=a&topic=b/*").await;
    hub.publish("a", "1").await;
    let seen = hub.publish("b/x", "2").await;
    stream.expect_event().await;
    assert_eq!(stream.expect_event().await.id, seen);
    drop(stream);

    let missed = [
        hub.publish("a", "3").await,
        hub.publish("b/y", "4").await,
        hub.publish("c", "not subscribed").await,
        hub.publish("a", "5").await,
    ];
    // A browser sends the header; polyfills send the query parameter. Both resume.
    let mut by_header = hub
        .stream_with("/events?topic=a&topic=b/*", &[("last-event-id", &seen)])
        .await;
    let mut by_query = hub
        .stream(&format!("/events?topic=a&topic=b/*&lastEventId={seen}"))
        .await;
    for stream in [&mut by_header, &mut by_query] {
        let replayed: Vec<String> = vec![
            stream.expect_event().await.id,
            stream.expect_event().await.id,
            stream.expect_event().await.id,
        ];
        assert_eq!(
            replayed,
            [missed[0].clone(), missed[1].clone(), missed[3].clone()]
        );
    }
    let live = hub.publish("b/z", "6").await;
    assert_eq!(by_header.expect_event().await.id, live);
    assert_eq!(by_query.expect_event().await.id, live);
}

#[tokio::test]
async fn a_fresh_connection_is_given_the_head_so_nothing_is_lost_before_its_first_event() {
    let hub = TestHub::start_default().await;
    let before = hub.publish("a", "before").await;
    let mut stream = hub.stream("/events?topic=a").await;
    // `retry:` first, then the id: one block without data, so the browser commits the
    // head as its id and fires no event.
    let first = stream.next_block().await.expect("retry and id");
    let (retry, id) = first.split_once('\n').expect("two lines");
    assert!(retry.starts_with("retry: "), "{first:?}");
    assert_eq!(id, format!("id: {before}"));
    drop(stream);
    let while_away = hub.publish("a", "while away").await;
    let mut again = hub
        .stream_with("/events?topic=a", &[("last-event-id", &before)])
        .await;
    assert_eq!(again.expect_event().await.id, while_away);
}

#[tokio::test]
async fn gap_event_when_history_no_longer_reaches_back() {
    let hub = TestHub::start(Settings {
        history_max_events: 2,
        ..Settings::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(hub.publish("a", &n.to_string()).await);
    }
    let mut stream = hub
        .stream_with("/events?topic=a", &[("last-event-id", &ids[0])])
        .await;
    let gap = stream.expect_event().await;
    assert_eq!(gap.event, "tidings.gap");
    let body: serde_json::Value = serde_json::from_str(&gap.data).expect("JSON gap");
    assert_eq!(body["reason"], "expired");
    assert_eq!(body["last_event_id"], ids[0].as_str());
    assert_eq!(body["oldest_id"], ids[3].as_str());
    assert_eq!(stream.expect_event().await.id, ids[3]);
    assert_eq!(stream.expect_event().await.id, ids[4]);
    let live = hub.publish("a", "6").await;
    assert_eq!(stream.expect_event().await.id, live);
    drop(stream);

    // Resuming from where the client got to reports no gap.
    let next = hub.publish("a", "7").await;
    let mut resumed = hub
        .stream_with("/events?topic=a", &[("last-event-id", &live)])
        .await;
    assert_eq!(resumed.expect_event().await.id, next);
}

#[tokio::test]
async fn gap_event_for_an_unknown_or_future_id_then_all_retained_history() {
    let hub = TestHub::start(Settings {
        history_max_events: 2,
        ..Settings::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(hub.publish("a", &n.to_string()).await);
    }
    for bad in ["not-an-id", "99999999999999-0"] {
        let mut stream = hub
            .stream_with("/events?topic=a", &[("last-event-id", bad)])
            .await;
        let gap = stream.expect_event().await;
        assert_eq!(gap.event, "tidings.gap");
        let body: serde_json::Value = serde_json::from_str(&gap.data).expect("JSON gap");
        assert_eq!(body["reason"], "unknown", "{bad}");
        assert_eq!(body["last_event_id"], bad);
        assert_eq!(body["oldest_id"], ids[1].as_str());
        assert_eq!(gap.id, "", "a gap event moves no id");
        assert_eq!(stream.expect_event().await.id, ids[1]);
        assert_eq!(stream.expect_event().await.id, ids[2]);
    }
}

/// Many publishes race a subscriber that keeps dropping and resuming: across all its
/// connections it must see every id exactly once, in id order. The engine's history reads
/// are slowed so that publishes land in every window of the resume: before the read
/// (stored events are then both history and buffered live events), and between the read
/// and the hand-over (buffered live events only).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_racing_concurrent_publishes_sees_every_id_once_in_order() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    let hub = TestHub::start_with_engine(Settings::default(), Arc::new(SlowReads::new())).await;
    let path = "/events?topic=a&topic=b";
    let mut stream = hub.stream(path).await; // registered once the headers are back

    let addr = hub.addr;
    let publish = move |topics: serde_json::Value, data: String| async move {
        let reply = publish_json_to(addr, &json!({"topic": topics, "data": data})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["id"].as_str().expect("id").to_owned()
    };
    let publishing = tokio::spawn(async move {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                tokio::spawn(async move {
                    let mut ids = Vec::with_capacity(PER_PUBLISHER);
                    for i in 0..PER_PUBLISHER {
                        let topics = match (p + i) % 3 {
                            0 => json!("a"),
                            1 => json!("b"),
                            _ => json!(["a", "b"]),
                        };
                        ids.push(publish(topics, format!("{p}/{i}")).await);
                        // Spread the publishes over the resumes (not a timing assertion).
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    ids
                })
            })
            .collect();
        let mut published = Vec::new();
        for p in publishers {
            published.extend(p.await.expect("publisher"));
        }
        // Published last, so a subscriber that reaches it has had its chance at the rest.
        let sentinel = publish(json!("a"), "sentinel".to_owned()).await;
        (published, sentinel)
    });

    let mut seen: Vec<String> = Vec::new();
    let mut reconnects = 0;
    'resuming: loop {
        // Short and long stays, so duplicates queued behind a replay would be read too.
        for _ in 0..[2, 5, 11, 23, 40][reconnects % 5] {
            let event = stream.expect_event().await;
            if event.data == "sentinel" {
                break 'resuming;
            }
            seen.push(event.id);
        }
        let last = stream.last_id.clone();
        drop(stream);
        stream = hub.stream_with(path, &[("last-event-id", &last)]).await;
        reconnects += 1;
    }
    let (mut published, _sentinel) = publishing.await.expect("publishing");
    published.sort_by_key(|s| id(s));
    assert_eq!(
        seen, published,
        "every id once, in order, across {reconnects} reconnects"
    );
    assert!(reconnects > 10, "{reconnects} reconnects");
}
