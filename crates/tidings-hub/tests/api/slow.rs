//! Slow clients through the whole hub: a subscriber that stops reading meets the
//! configured policy, is counted in `/healthz`, and never slows the others.

use std::time::Duration;

use tidings::server::SlowClientPolicy;
use tidings_hub::Settings;

use crate::common::{SseEvent, TestHub};

const EVENTS: usize = 400;

/// Publishes `EVENTS` 16 KiB events while one subscriber reads and one does not, then
/// lets the stalled one read what it still gets. Returns (what it got, `/healthz`).
async fn stall(policy: SlowClientPolicy) -> (Vec<SseEvent>, serde_json::Value) {
    let settings = Settings {
        slow_client: policy,
        max_queue_bytes: 64 * 1024,
        ..Settings::default()
    };
    let hub = TestHub::start(settings).await;
    let mut stalled = hub.stream("/events?topic=t").await;
    let mut fast = hub.stream("/events?topic=t").await;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < EVENTS {
            match tokio::time::timeout(Duration::from_secs(20), fast.next_event()).await {
                Ok(Some(_)) => n += 1,
                _ => break,
            }
        }
        n
    });
    let padding = "x".repeat(16 * 1024);
    for i in 0..EVENTS {
        hub.publish("t", &format!("{i}:{padding}")).await;
    }
    assert_eq!(
        reader.await.expect("reader"),
        EVENTS,
        "the reading subscriber got everything"
    );

    let mut got = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_secs(2), stalled.next_event()).await
    {
        got.push(event);
    }
    let health = hub.get("/healthz").await.json();
    (got, health)
}

fn numbers(events: &[SseEvent]) -> Vec<usize> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| {
            e.data
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("numbered")
        })
        .collect()
}

/// The events the gap events in `got` say are missing; each gap must give `reason`.
fn announced(got: &[SseEvent], reason: &str) -> u64 {
    got.iter()
        .filter(|e| e.event == "tidings.gap")
        .map(|e| {
            let gap: serde_json::Value = serde_json::from_str(&e.data).expect("gap JSON");
            assert_eq!(gap["reason"], reason);
            gap["dropped"].as_u64().expect("a count")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_announces_every_drop_in_band() {
    let (got, health) = stall(SlowClientPolicy::DropOldest).await;
    let dropped = announced(&got, "dropped");
    let seq = numbers(&got);
    assert!(dropped > 0, "the stalled subscriber fell behind");
    assert_eq!(
        seq.len() as u64 + dropped,
        EVENTS as u64,
        "received + dropped = published"
    );
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(seq.last(), Some(&(EVENTS - 1)), "the newest arrives");
    assert_eq!(health["fanout"]["dropped_oldest"].as_u64(), Some(dropped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_only_keeps_the_newest_and_announces_what_it_replaced() {
    let (got, health) = stall(SlowClientPolicy::LatestOnly).await;
    let seq = numbers(&got);
    let replaced = health["fanout"]["replaced"].as_u64().expect("counter");
    assert!(replaced > 0, "the stalled subscriber fell behind");
    assert_eq!(
        announced(&got, "replaced"),
        replaced,
        "every replacement announced in band"
    );
    assert_eq!(
        seq.len() as u64 + replaced,
        EVENTS as u64,
        "received + replaced = published"
    );
    assert_eq!(seq.last(), Some(&(EVENTS - 1)), "the newest arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_ends_the_stalled_stream_and_counts_it() {
    let (got, health) = stall(SlowClientPolicy::Disconnect).await;
    let seq = numbers(&got);
    assert!(seq.len() < EVENTS, "the stalled subscriber was cut off");
    assert_eq!(
        seq,
        (0..seq.len()).collect::<Vec<_>>(),
        "what it got is a prefix, in order"
    );
    assert_eq!(health["fanout"]["disconnected_slow"].as_u64(), Some(1));
}
