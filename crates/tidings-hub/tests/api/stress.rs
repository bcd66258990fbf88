//! Many seeds of publishers racing subscribers that come and go over overlapping topics
//! and patterns: the fan-out's runs (grown mid-pass, or masked per subscriber when their
//! events go to different subscribers), the hand-over from replay to live, and batches,
//! all at once, with each engine: the memory engine (its live feed comes from the
//! publishing task), one whose history reads are slow and whose feed arrives late
//! (`SlowReads`), and the disk engine (its feed comes from its writer thread).
//!
//! A seed fixes the test's choices (topics, batch sizes, pauses, how long each connection
//! stays), not the threads' interleaving: running many seeds is what makes the rare
//! interleavings happen. `TIDINGS_STRESS_SEEDS=N` runs N seeds (default 4),
//! `TIDINGS_STRESS_SEED=S` runs seed S alone; a failure names its seed.

use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use http::StatusCode;
use serde_json::json;
use tidings::EventId;
use tidings_hub::engine::{DiskEngine, DiskOptions, Engine, MemoryEngine};
use tidings_hub::Settings;

use crate::common::{publish_json_to, EventStream, SlowReads, TestHub, PATIENCE};
use crate::id;

/// The seeds to run: `TIDINGS_STRESS_SEED` alone, or `TIDINGS_STRESS_SEEDS` of them.
fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        let value = std::env::var(name).ok()?;
        Some(
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        )
    };
    match (
        number("TIDINGS_STRESS_SEED"),
        number("TIDINGS_STRESS_SEEDS"),
    ) {
        (Some(seed), _) => vec![seed],
        (None, count) => (1..=count.unwrap_or(4)).collect(),
    }
}

/// The topics one event goes to, one set picked per event.
const TOPIC_SETS: &[&[&str]] = &[
    &["a"],
    &["b"],
    &["c/x"],
    &["c/y"],
    &["a", "c/x"],
    &["b", "c/y"],
    &["a", "b", "c/y"],
];

/// What each subscriber asks for.
const SUBSCRIPTIONS: &[&[&str]] = &[&["a"], &["c/*"], &["a", "b"], &["b", "c/x"]];

/// Subscribers of everything besides the followers: more than a pass writes to between
/// two looks at the feed (64).
const BACKGROUND: usize = 80;

const PUBLISHERS: usize = 3;
const REQUESTS: usize = 50;

/// Whether an event to `topics` is for a subscription to `wanted`.
fn wants(wanted: &[&str], topics: &[&str]) -> bool {
    topics.iter().any(|topic| {
        wanted.iter().any(|w| match w.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => w == topic,
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_come_and_go_get_exactly_their_events_once_in_order() {
    // History that keeps every event of a run (SlowReads keeps 100,000 of its own).
    let settings = Settings {
        history_max_events: 100_000,
        history_max_age: None,
        ..Settings::default()
    };
    for seed in seeds() {
        for engine in ["memory", "slow reads", "disk"] {
            let context = format!("seed {seed}, {engine} engine");
            let dir = tempfile::tempdir().expect("a temporary directory");
            let engine: Arc<dyn Engine> = match engine {
                "memory" => Arc::new(MemoryEngine::new(
                    settings.history_max_events,
                    settings.history_max_age,
                )),
                "slow reads" => Arc::new(SlowReads::new()),
                _ => Arc::new(
                    DiskEngine::open(
                        dir.path(),
                        DiskOptions::from_settings(&settings).expect("valid"),
                    )
                    .expect("opens"),
                ),
            };
            let mut hub = TestHub::start_with_engine(settings.clone(), engine).await;
            run(&hub, seed, &context).await;
            hub.shutdown().await.expect("the hub stops cleanly");
        }
    }
}

async fn run(hub: &TestHub, seed: u64, context: &str) {
    // Readers of everything, registered first: a pass then reaches the followers after
    // the point where a run grows with the events that arrived meanwhile.
    let mut background = Vec::new();
    for _ in 0..BACKGROUND {
        let mut stream = hub.stream("/events?topic=a&topic=b&topic=c/*").await;
        background.push(tokio::spawn(async move {
            while let Some(event) = stream.next_event().await {
                if event.data == "end" {
                    return;
                }
            }
        }));
    }
    // Each follower's first connection is registered before the first publish.
    let mut followers = Vec::new();
    for (s, wanted) in SUBSCRIPTIONS.iter().enumerate() {
        let path = path(wanted);
        let first = hub.stream(&path).await;
        let rng = Rng::with_seed(seed ^ (s as u64 + 1) << 40);
        followers.push(tokio::spawn(follow(hub.addr, path, first, rng)));
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let addr = hub.addr;
            let mut rng = Rng::with_seed(seed ^ (p as u64 + 1) << 32);
            tokio::spawn(async move {
                let mut published: Vec<(EventId, &'static [&'static str])> = Vec::new();
                for r in 0..REQUESTS {
                    let sets: Vec<&'static [&'static str]> = (0..1 + rng.usize(..4))
                        .map(|_| TOPIC_SETS[rng.usize(..TOPIC_SETS.len())])
                        .collect();
                    let events: Vec<_> = sets
                        .iter()
                        .enumerate()
                        .map(|(e, topics)| json!({"topic": topics, "data": format!("{p}/{r}/{e}")}))
                        .collect();
                    let body = match events.as_slice() {
                        [one] => one.clone(),
                        _ => json!(events),
                    };
                    let reply = publish_json_to(addr, &body).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                    let answer = reply.json();
                    let ids: Vec<EventId> = match answer.get("ids") {
                        Some(ids) => ids
                            .as_array()
                            .expect("ids")
                            .iter()
                            .map(|i| id(i.as_str().expect("an id")))
                            .collect(),
                        None => vec![id(answer["id"].as_str().expect("an id"))],
                    };
                    published.extend(ids.into_iter().zip(sets));
                    if rng.u64(..3) == 0 {
                        tokio::time::sleep(Duration::from_micros(rng.u64(..1500))).await;
                    }
                }
                published
            })
        })
        .collect();
    let mut published = Vec::new();
    for publisher in publishers {
        published.extend(publisher.await.expect("a publisher"));
    }
    // Published last, to every topic: a subscriber that reaches it has had its chance at
    // everything else.
    let end = json!({"topic": ["a", "b", "c/x", "c/y"], "data": "end"});
    let reply = hub.publish_json(&end).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    published.sort_by_key(|(id, _)| *id);

    for reader in background {
        tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap_or_else(|_| panic!("{context}: a background reader stalled"))
            .expect("a background reader");
    }
    for (s, follower) in followers.into_iter().enumerate() {
        let wanted = SUBSCRIPTIONS[s];
        let (seen, connections) = tokio::time::timeout(PATIENCE * 2, follower)
            .await
            .unwrap_or_else(|_| panic!("{context}: subscriber {wanted:?} stalled"))
            .expect("a subscriber");
        let expected: Vec<EventId> = published
            .iter()
            .filter(|(_, topics)| wants(wanted, topics))
            .map(|(id, _)| *id)
            .collect();
        // Where they part: the first id that differs, or the end of the shorter.
        let first_difference = seen
            .iter()
            .zip(&expected)
            .position(|(s, e)| s != e)
            .unwrap_or(seen.len().min(expected.len()));
        assert!(
            seen == expected,
            "{context}: subscriber {wanted:?}, over {connections} connections, saw {} events of \
             {}; the first difference at {first_difference}",
            seen.len(),
            expected.len()
        );
    }
}

fn path(wanted: &[&str]) -> String {
    let topics: Vec<String> = wanted.iter().map(|t| format!("topic={t}")).collect();
    format!("/events?{}", topics.join("&"))
}

/// A subscriber that reads a few events, drops its connection and resumes from its last
/// id, until the `end` event: the ids it saw, and over how many connections.
async fn follow(
    addr: std::net::SocketAddr,
    path: String,
    mut stream: EventStream,
    mut rng: Rng,
) -> (Vec<EventId>, usize) {
    let mut seen = Vec::new();
    let mut connections = 1;
    loop {
        let stay = [1, 4, 15, 60, 300][rng.usize(..5)];
        for _ in 0..stay {
            let Some(event) = stream.next_event().await else {
                break; // closed by the hub (a slow subscriber): resume as a browser would
            };
            if event.data == "end" {
                return (seen, connections);
            }
            seen.push(id(&event.id));
            if rng.u64(..8) == 0 {
                tokio::time::sleep(Duration::from_micros(rng.u64(..2000))).await;
            }
        }
        let last = stream.last_id.clone();
        drop(stream);
        stream = EventStream::open(addr, &path, &[("last-event-id", &last)]).await;
        connections += 1;
    }
}
