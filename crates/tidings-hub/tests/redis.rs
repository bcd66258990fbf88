//! Several hubs on one Redis, over real sockets: an event published on one hub reaches
//! the subscribers of another, a client resumes on any hub with an id from another, when
//! Redis goes away publishing answers 503 until it is back, then delivery goes on, and
//! when Redis comes back without its data, streams end and resumes report the gap.
//!
//! Each test starts a `redis-server` of its own on a free loopback port. Without it
//! installed they print `skipped: … (install redis-server)` and pass, unless
//! `TIDINGS_REQUIRE_EXTERNAL=1`, when they fail.

mod common;
#[path = "../src/engine/redis/test_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use common::{TestHub, PATIENCE};
use redis_server::RedisServer;
use tidings_hub::config::EngineKind;
use tidings_hub::engine::{RedisEngine, RedisOptions};
use tidings_hub::Settings;

fn redis_settings(server: &RedisServer) -> Settings {
    Settings {
        engine: EngineKind::Redis,
        redis_url: server.url(),
        redis_prefix: "hubs".into(),
        ..Settings::default()
    }
}

/// A hub on the Redis engine, as `tidings serve --engine redis` opens it.
async fn hub(server: &RedisServer) -> TestHub {
    hub_with(redis_settings(server)).await
}

/// Publishes `data` to `topic`, trying again every 100 ms while the hub answers 503 (its
/// Redis is coming back), and returns the id.
async fn publish_once_redis_is_back(hub: &TestHub, topic: &str, data: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = hub
            .publish_json(&json!({ "topic": topic, "data": data }))
            .await;
        if reply.status == StatusCode::OK {
            return reply.json()["id"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not recover: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hub_with(settings: Settings) -> TestHub {
    let options = RedisOptions::from_settings(&settings).expect("valid settings");
    let engine = RedisEngine::connect(options).await.expect("redis engine");
    TestHub::start_with_engine(settings, Arc::new(engine)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_share_topics_and_a_client_resumes_on_another_hub() {
    let Some(server) = RedisServer::start("two hubs on one redis") else {
        return;
    };
    let a = hub(&server).await;
    let b = hub(&server).await;

    let mut on_b = b.stream("/events?topic=chat/*").await;
    let first = a.publish("chat/lobby", "hello from a").await;
    let got = on_b.expect_event().await;
    assert_eq!(
        (got.id.as_str(), got.data.as_str()),
        (first.as_str(), "hello from a")
    );

    let second = b.publish("chat/lobby", "from b").await;
    let third = a.publish("chat/other", "from a again").await;
    for (id, data) in [(&second, "from b"), (&third, "from a again")] {
        let got = on_b.expect_event().await;
        assert_eq!((&got.id, got.data.as_str()), (id, data));
    }
    drop(on_b);

    // The client moves to hub a with the first id it got from b: the rest, in order.
    let mut on_a = a
        .stream_with("/events?topic=chat/*", &[("last-event-id", &first)])
        .await;
    for id in [&second, &third] {
        assert_eq!(&on_a.expect_event().await.id, id);
    }

    // Both hubs list the same topics (subscribers are counted per hub).
    let listed = |json: serde_json::Value| -> Vec<(String, String, u64)> {
        json["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .map(|t| {
                let text = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                (
                    text("topic"),
                    text("last_id"),
                    t["published"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let topics_a = listed(a.get("/topics").await.json());
    assert_eq!(topics_a, listed(b.get("/topics").await.json()));
    assert_eq!(
        topics_a,
        [
            ("chat/lobby".to_owned(), second.clone(), 2),
            ("chat/other".to_owned(), third.clone(), 1)
        ]
    );
    let ready = a.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_publishing_is_503_and_delivery_goes_on_when_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut server) = RedisServer::start_durable("redis outage", dir.path()) else {
        return;
    };
    let a = hub(&server).await;
    let b = hub(&server).await;
    let mut on_b = b.stream("/events?topic=news").await;
    a.publish("news", "before").await;
    assert_eq!(on_b.expect_event().await.data, "before");

    server.stop();
    let refused = a
        .publish_json(&json!({ "topic": "news", "data": "while down" }))
        .await;
    let detail = refused.assert_problem(503);
    assert!(detail.contains("Redis"), "{detail}");
    assert_eq!(
        a.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Back, with its data (it keeps an append-only file). Publishing works again once the
    // connection is re-made, and b's subscriber gets the event without reconnecting.
    server.start_again();
    let after = publish_once_redis_is_back(&a, "news", "after").await;
    let got = on_b.expect_event().await;
    assert_eq!((got.id, got.data.as_str()), (after, "after"));
}

/// Publishers on two hubs at once while a subscriber moves from one hub to the other in
/// the middle: it gets every acknowledged event exactly once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moving_between_hubs_under_concurrent_publishing_misses_nothing() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 150;
    let Some(server) = RedisServer::start("moving between hubs") else {
        return;
    };
    let hubs = Arc::new([hub(&server).await, hub(&server).await]);
    let mut stream = hubs[1].stream("/events?topic=load/*").await;

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hubs = Arc::clone(&hubs);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..EACH {
                    let topic = format!("load/{p}");
                    ids.push(hubs[i % 2].publish(&topic, &format!("{p}-{i}")).await);
                }
                ids
            })
        })
        .collect();

    let total = PUBLISHERS * EACH;
    let mut received: Vec<String> = Vec::new();
    while received.len() < total / 3 {
        received.push(stream.expect_event().await.id);
    }
    // The connection drops; the client resumes on the other hub with its last id.
    drop(stream);
    let last = received.last().expect("some events").clone();
    let mut stream = hubs[0]
        .stream_with("/events?topic=load/*", &[("last-event-id", &last)])
        .await;
    while received.len() < total {
        let event = stream.expect_event().await;
        assert_ne!(event.event, "tidings.gap", "no gap: {}", event.data);
        received.push(event.id);
    }

    let mut acknowledged = Vec::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.expect("publisher"));
    }
    let parse = |id: &String| id.parse::<tidings::EventId>().expect("an id");
    let mut expected: Vec<tidings::EventId> = acknowledged.iter().map(parse).collect();
    expected.sort();
    let got: Vec<tidings::EventId> = received.iter().map(parse).collect();
    assert_eq!(got, expected, "every acknowledged event once, in id order");
}

/// Redis loses its data under an open stream (`FLUSHALL`, or a restart without
/// persistence): the hub cannot tell what its subscribers missed, so it ends the stream,
/// and the client's resume gets a gap event before the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_redis_data_ends_open_streams_and_the_resume_reports_the_gap() {
    let Some(server) = RedisServer::start("wiped redis data") else {
        return;
    };
    let a = hub(&server).await;
    let mut stream = a.stream("/events?topic=news").await;
    let before = a.publish("news", "before").await;
    assert_eq!(stream.expect_event().await.id, before);

    redis_command(&server, "FLUSHALL").await;
    let after = a.publish("news", "after").await;

    assert!(
        stream.rest().await.is_empty(),
        "the stream ends without the event after the wipe"
    );
    let mut resumed = a
        .stream_with("/events?topic=news", &[("last-event-id", &before)])
        .await;
    let gap = resumed.expect_event().await;
    assert_eq!(gap.event, "tidings.gap", "{gap:?}");
    let next = resumed.expect_event().await;
    assert_eq!((next.id, next.data.as_str()), (after, "after"));
}

/// Presence events from hubs sharing a Redis name their sessions apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_sessions_of_different_hubs_differ() {
    let Some(server) = RedisServer::start("presence across hubs") else {
        return;
    };
    let settings = Settings {
        presence: true,
        ..redis_settings(&server)
    };
    let a = hub_with(settings.clone()).await;
    let b = hub_with(settings).await;
    let mut watcher = b.stream("/events?topic=room").await;
    let own = watcher.expect_event().await;
    assert_eq!(own.event, "join");
    let _visitor = a.stream("/events?topic=room").await;
    let visitor = watcher.expect_event().await;
    assert_eq!(visitor.event, "join");
    let session = |data: &str| -> String {
        let json: serde_json::Value = serde_json::from_str(data).expect("JSON");
        json["session"].as_str().expect("a session").to_owned()
    };
    assert_ne!(
        session(&own.data),
        session(&visitor.data),
        "each hub's first session, told apart"
    );
}

/// Redis comes back with older data (a snapshot, or `appendfsync everysec` losing its last
/// second): events the hub had acknowledged and delivered are gone from Redis. Open
/// streams, which got them, go on; a client resuming from before them gets a gap event,
/// not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_older_data_is_a_gap_for_resumes_from_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut server) =
        RedisServer::start_with_snapshots("redis back with older data", dir.path())
    else {
        return;
    };
    let a = hub(&server).await;
    let mut stream = a.stream("/events?topic=t").await;
    let kept = a.publish("t", "kept").await;
    assert_eq!(stream.expect_event().await.id, kept);
    redis_command(&server, "SAVE").await;
    let lost = a.publish("t", "lost").await;
    assert_eq!(stream.expect_event().await.id, lost);

    server.stop();
    server.start_again();
    let next = publish_once_redis_is_back(&a, "t", "next").await;
    let got = stream.expect_event().await;
    assert_eq!(
        got.id, next,
        "the open stream goes on: it had the lost event"
    );

    let mut resumed = a
        .stream_with("/events?topic=t", &[("last-event-id", &kept)])
        .await;
    let gap = resumed.expect_event().await;
    assert_eq!(
        gap.event, "tidings.gap",
        "the lost event is reported: {gap:?}"
    );
    assert_eq!(resumed.expect_event().await.id, next);
}

/// Runs a bare command (`FLUSHALL`, `SAVE`) on `server` over a connection of its own.
async fn redis_command(server: &RedisServer, name: &str) {
    let mut conn = redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let () = redis::cmd(name)
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}
