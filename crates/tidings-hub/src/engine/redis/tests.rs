//! The Redis engine against a real `redis-server` of the tests' own (skipped, with a
//! visible line, when it is not installed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Value;
use tidings::EventId;

use super::test_server::RedisServer;
use super::*;
use crate::engine::test_support::{
    data, fill_a_past_its_limit, filter, first_of_a_was_trimmed, live_feed_is_in_id_order,
    new_event, next_stored, reads_merge_in_order,
};

/// A prefix no other test in this process uses, so tests can share a server.
fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Options for `url` under `prefix`, keeping 10 events per topic, no age limit.
fn options(url: &str, prefix: &str) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        max_events_per_topic: 10,
        max_age: None,
    }
}

async fn engine_at(url: &str, prefix: &str) -> Result<RedisEngine, Error> {
    RedisEngine::connect(options(url, prefix)).await
}

/// An engine on `server` under `prefix`, keeping `max_events` per topic.
async fn engine(server: &RedisServer, prefix: &str, max_events: usize) -> RedisEngine {
    RedisEngine::connect(RedisOptions {
        max_events_per_topic: max_events,
        ..options(&server.url(), prefix)
    })
    .await
    .expect("connect")
}

/// Everything stored for the topics and patterns `entries`, from the start.
async fn read_all(engine: &RedisEngine, entries: &[&str]) -> ReadBatch {
    engine
        .read_after(&filter(entries), EventId::ZERO, 10)
        .await
        .expect("read")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

async fn next_live(live: &mut broadcast::Receiver<LiveEvent>) -> Arc<StoredEvent> {
    tokio::time::timeout(Duration::from_secs(5), next_stored(live))
        .await
        .expect("a live event within 5 s")
}

#[tokio::test]
async fn keeps_the_engine_contract() {
    let Some(server) = RedisServer::start("redis engine contract") else {
        return;
    };
    reads_merge_in_order(&engine(&server, &fresh_prefix(), 10).await).await;
    live_feed_is_in_id_order(&engine(&server, &fresh_prefix(), 10).await).await;
    let trimmed = engine(&server, &fresh_prefix(), 2).await;
    let (origin, ids) = fill_a_past_its_limit(&trimmed).await;
    first_of_a_was_trimmed(&trimmed, origin, &ids).await;
}

#[tokio::test]
async fn fields_survive_the_round_trip() {
    let Some(server) = RedisServer::start("redis engine fields") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 10).await;
    let mut event = new_event(&["a", "b/c"], "line 1\nline 2\n\n ünïcode");
    event.event_type = Some("update".into());
    event.retry = Some(Duration::from_millis(2500));
    let stored = engine.append(vec![event.clone()]).await.expect("append");
    let read = read_all(&engine, &["b/*"]).await;
    let got = &read.events[0];
    assert_eq!(got.id, stored[0].id);
    assert_eq!(got.topics, event.topics);
    assert_eq!(got.data, event.data);
    assert_eq!(got.event_type, event.event_type);
    assert_eq!(got.retry, event.retry);
    assert_eq!(
        got.encoded().expect("encode"),
        stored[0].encoded().expect("encode")
    );
}

#[tokio::test]
async fn hubs_on_one_redis_share_ids_history_and_live_events() {
    let Some(server) = RedisServer::start("redis engine sharing") else {
        return;
    };
    let prefix = fresh_prefix();
    let a = engine(&server, &prefix, 10).await;
    let b = engine(&server, &prefix, 10).await;
    let mut live_a = a.subscribe_live();
    let mut live_b = b.subscribe_live();

    let first = a
        .append(vec![new_event(&["t"], "from a")])
        .await
        .expect("append");
    let second = b
        .append(vec![new_event(&["t"], "from b")])
        .await
        .expect("append");
    assert!(first[0].id < second[0].id, "one id space");
    for live in [&mut live_a, &mut live_b] {
        assert_eq!(next_live(live).await.data, "from a");
        assert_eq!(next_live(live).await.data, "from b");
    }
    let read = read_all(&b, &["t"]).await;
    assert_eq!(data(&read), ["from a", "from b"]);
    assert_eq!(a.head().await.expect("head"), second[0].id);

    // Another prefix is another hub family: it sees none of it.
    let other = engine(&server, &fresh_prefix(), 10).await;
    let read = read_all(&other, &["*"]).await;
    assert!(read.events.is_empty());
}

#[tokio::test]
async fn a_tail_announces_a_hole_in_the_log_and_the_topics_still_hold_it() {
    let Some(server) = RedisServer::start("redis engine tail hole") else {
        return;
    };
    let prefix = fresh_prefix();
    let engine = engine(&server, &prefix, 10).await;
    let start = engine.head().await.expect("head");
    let mut ids = Vec::new();
    for (topic, d) in [("a", "1"), ("b", "2"), ("a", "3")] {
        ids.push(
            engine
                .append(vec![new_event(&[topic], d)])
                .await
                .expect("append")[0]
                .id,
        );
    }
    // The log loses its first two entries, as if trimmed before a tail read them.
    let mut conn = raw(&server).await;
    let log = format!("{{{prefix}}}:log");
    let _: u64 = redis::cmd("XDEL")
        .arg(&log)
        .arg(ids[0].to_string())
        .arg(ids[1].to_string())
        .query_async(&mut conn)
        .await
        .expect("xdel");
    let reply: Value = redis::cmd("XREAD")
        .arg("STREAMS")
        .arg(&log)
        .arg(start.to_string())
        .query_async(&mut conn)
        .await
        .expect("xread");

    let (live, mut receiver) = broadcast::channel(16);
    let mut last = start;
    tail::pass_on(reply, &engine.store, &live, &mut last)
        .await
        .expect("pass on");
    let got: Vec<Option<EventId>> =
        std::iter::from_fn(|| receiver.try_recv().ok().map(|e| e.stored().map(|e| e.id))).collect();
    assert_eq!(
        got,
        [None, Some(ids[2])],
        "a skip, then the entry after the hole"
    );
    assert_eq!(last, ids[2]);
    // What the fan-out then reads back: the two events the log lost.
    let read = engine
        .read_after(&TopicFilter::all(), start, 10)
        .await
        .expect("read");
    assert_eq!(data(&read), ["1", "2", "3"]);
    assert_eq!(
        read.complete_after, start,
        "nothing of it trimmed from the topics"
    );
}

#[tokio::test]
async fn wiped_data_is_a_gap_for_older_ids() {
    let Some(server) = RedisServer::start("redis engine wiped data") else {
        return;
    };
    let prefix = fresh_prefix();
    let engine = engine(&server, &prefix, 10).await;
    let stored = engine
        .append(vec![new_event(&["a"], "1")])
        .await
        .expect("append");
    let mut conn = raw(&server).await;
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    tokio::time::sleep(Duration::from_millis(5)).await;

    let read = engine
        .read_after(&filter(&["a"]), stored[0].id, 10)
        .await
        .expect("read");
    assert!(
        read.complete_after > stored[0].id,
        "a resume from before the wipe is a gap"
    );
    let next = engine
        .append(vec![new_event(&["a"], "2")])
        .await
        .expect("append");
    assert!(
        next[0].id > read.complete_after,
        "new ids come after the new origin"
    );
    assert!(engine.head().await.expect("head") >= next[0].id);
}

#[tokio::test]
async fn pages_through_many_topics_without_skipping() {
    let Some(server) = RedisServer::start("redis engine paging") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 100).await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let topics: &[&str] = match i % 3 {
            0 => &["x/1"],
            1 => &["x/2", "x/1"],
            _ => &["x/3"],
        };
        let stored = engine
            .append(vec![new_event(topics, &i.to_string())])
            .await
            .expect("append");
        expected.push(stored[0].id);
    }
    let mut got = Vec::new();
    let mut after = EventId::ZERO;
    loop {
        let batch = engine
            .read_after(&filter(&["x/*"]), after, 4)
            .await
            .expect("read");
        if batch.more {
            assert_eq!(batch.events.len(), 4, "a page with more after it is full");
        }
        got.extend(batch.events.iter().map(|e| e.id));
        if let Some(last) = batch.events.last() {
            after = last.id;
        }
        if !batch.more {
            break;
        }
    }
    assert_eq!(got, expected, "every event once, in id order");
}

#[tokio::test]
async fn age_limit_trims_quiet_topics_on_read() {
    let Some(server) = RedisServer::start("redis engine age limit") else {
        return;
    };
    let engine = RedisEngine::connect(RedisOptions {
        max_age: Some(Duration::from_millis(200)),
        ..options(&server.url(), &fresh_prefix())
    })
    .await
    .expect("connect");
    let stored = engine
        .append(vec![new_event(&["q"], "old")])
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let read = read_all(&engine, &["q"]).await;
    assert!(read.events.is_empty(), "expired");
    assert_eq!(read.complete_after, stored[0].id, "and reported as trimmed");
    let topics = engine.topics().await.expect("topics");
    assert_eq!((topics[0].retained, topics[0].published), (0, 1));
}

#[tokio::test]
async fn a_dropped_connection_costs_no_request() {
    let Some(server) = RedisServer::start("redis engine dropped connection") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 10).await;
    let mut live = engine.subscribe_live();
    engine
        .append(vec![new_event(&["a"], "1")])
        .await
        .expect("append");
    assert_eq!(next_live(&mut live).await.data, "1");

    // Redis ends every connection but this one (as a Redis restart, a CLIENT KILL or an
    // idle `timeout` does): each next request still gets through, and the tail goes on.
    let mut conn = raw(&server).await;
    for round in 0..3 {
        let _: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut conn)
            .await
            .expect("client kill");
        match round {
            0 => engine.ready().await.expect("ready after the drop"),
            1 => {
                engine.head().await.expect("head after the drop");
            }
            _ => {
                let stored = engine
                    .append(vec![new_event(&["a"], "2")])
                    .await
                    .expect("append after the drop");
                assert_eq!(next_live(&mut live).await.id, stored[0].id);
            }
        }
    }
    let read = read_all(&engine, &["a"]).await;
    assert_eq!(
        data(&read),
        ["1", "2"],
        "the retried append stored its event once"
    );
}

#[tokio::test]
async fn an_append_run_twice_with_one_token_stores_once() {
    let Some(server) = RedisServer::start("redis engine append token") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 10).await;
    let events = [new_event(&["a"], "1"), new_event(&["a", "b"], "2")];
    let first = engine
        .store
        .append("token-1", &events)
        .await
        .expect("append");
    let again = engine
        .store
        .append("token-1", &events)
        .await
        .expect("append");
    assert_eq!(
        first, again,
        "the second run answers with the first one's ids"
    );
    let other = engine
        .store
        .append("token-2", &events)
        .await
        .expect("append");
    assert_ne!(first, other);
    let read = read_all(&engine, &["a"]).await;
    assert_eq!(data(&read), ["1", "2", "1", "2"]);
}

#[tokio::test]
async fn a_batch_that_cannot_be_stored_whole_is_not_stored_at_all() {
    let Some(server) = RedisServer::start("redis engine all or nothing") else {
        return;
    };
    let prefix = fresh_prefix();
    let engine = engine(&server, &prefix, 10).await;
    let head = engine.head().await.expect("head");
    let mut conn = raw(&server).await;
    let () = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:topic:taken"))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .expect("set");

    let err = engine
        .append(vec![new_event(&["ok"], "1"), new_event(&["taken"], "2")])
        .await
        .expect_err("a topic key of another type");
    assert_eq!(err.kind(), ErrorKind::Engine);
    let message = err.to_string();
    assert!(
        message.contains("WRONGTYPE") && message.contains("nothing was stored"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "errors reach HTTP clients: no server address: {message}"
    );
    let read = read_all(&engine, &["*"]).await;
    assert!(
        read.events.is_empty(),
        "the first event was not stored either"
    );
    assert_eq!(engine.head().await.expect("head"), head);
    assert!(engine.topics().await.expect("topics").is_empty());
}

async fn command(server: &RedisServer, args: &[&str]) -> Value {
    let mut conn = raw(server).await;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.expect("raw command")
}

#[tokio::test]
async fn a_replica_or_a_user_that_may_not_tail_is_refused_at_start() {
    let (Some(primary), Some(replica)) = (
        RedisServer::start("redis engine replica"),
        RedisServer::start("redis engine replica"),
    ) else {
        return;
    };
    let port = primary.port().to_string();
    command(&replica, &["REPLICAOF", "127.0.0.1", &port]).await;
    let err = engine_at(&replica.url(), &fresh_prefix())
        .await
        .expect_err("a replica");
    assert!(err.to_string().contains("is a replica"), "{err}");

    command(
        &primary,
        &[
            "ACL", "SETUSER", "notail", "on", ">pw", "~*", "&*", "+@all", "-xread",
        ],
    )
    .await;
    let url = format!("redis://notail:pw@127.0.0.1:{port}/");
    let err = engine_at(&url, &fresh_prefix())
        .await
        .expect_err("no XREAD");
    let message = err.to_string();
    assert!(
        message.contains("refused the redis engine") && message.contains("XREAD"),
        "{message}"
    );
    assert!(!message.contains("pw@"), "{message}");
}

#[tokio::test]
async fn a_user_not_allowed_a_command_of_the_scripts_is_refused_at_start() {
    let Some(server) = RedisServer::start("redis engine acl") else {
        return;
    };
    let port = server.port();
    for command_name in [
        "xadd",
        "hset",
        "xrange",
        "xtrim",
        "hget",
        "xrevrange",
        "zadd",
        "zrangebylex",
    ] {
        let user = format!("no{command_name}");
        let denied = format!("-{command_name}");
        command(
            &server,
            &[
                "ACL", "SETUSER", &user, "on", ">pw", "~*", "&*", "+@all", &denied,
            ],
        )
        .await;
        let url = format!("redis://{user}:pw@127.0.0.1:{port}/");
        let err = engine_at(&url, &fresh_prefix())
            .await
            .expect_err(command_name);
        let message = err.to_string();
        assert!(
            message.contains("refused a command the redis engine needs")
                && message.contains(&command_name.to_uppercase()),
            "{command_name}: {message}"
        );
    }
    let err = engine_at(&format!("redis://127.0.0.1:{port}/99"), &fresh_prefix())
        .await
        .expect_err("database 99");
    assert!(err.to_string().contains("has no such database"), "{err}");

    // The probe leaves nothing behind.
    let prefix = fresh_prefix();
    let _engine = engine(&server, &prefix, 10).await;
    let mut conn = raw(&server).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}:probe:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn readiness_follows_the_role_and_the_tail() {
    let Some(server) = RedisServer::start("redis engine readiness") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 10).await;
    engine.ready().await.expect("ready");

    // Made a replica at run time (of a server that does not answer): writes are refused.
    command(&server, &["REPLICAOF", "127.0.0.1", "1"]).await;
    let err = engine.ready().await.expect_err("a replica now");
    assert!(err.to_string().contains("replica"), "{err}");
    command(&server, &["REPLICAOF", "NO", "ONE"]).await;
    engine.ready().await.expect("a primary again");

    // The tail may not read the log any more: not ready, and says why.
    command(&server, &["ACL", "SETUSER", "default", "-xread"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match engine.ready().await {
            Err(err) => break err,
            Ok(()) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "still ready after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        err.to_string()
            .contains("live events from Redis are not flowing"),
        "{err}"
    );
    command(&server, &["ACL", "SETUSER", "default", "+xread"]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while engine.ready().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_prefix_that_starts_with_another_shares_nothing_with_it() {
    let Some(server) = RedisServer::start("redis engine nested prefixes") else {
        return;
    };
    let base = fresh_prefix();
    let outer = engine(&server, &base, 10).await;
    let inner = engine(&server, &format!("{base}:topic"), 10).await;
    let mut inner_live = inner.subscribe_live();
    // Topics named like the other family's keys.
    for topic in ["log", "id", "origin", "last"] {
        outer
            .append(vec![new_event(&[topic], topic)])
            .await
            .expect("append");
    }
    inner
        .append(vec![new_event(&["q"], "inner")])
        .await
        .expect("append");
    assert_eq!(
        next_live(&mut inner_live).await.data,
        "inner",
        "none of the outer family's"
    );
    let inner_read = inner
        .read_after(&TopicFilter::all(), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&inner_read), ["inner"]);
    let outer_read = outer
        .read_after(&TopicFilter::all(), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&outer_read), ["log", "id", "origin", "last"]);
}

#[tokio::test]
async fn connect_says_what_is_wrong() {
    let not_a_url = RedisEngine::connect(RedisOptions {
        url: "http://example.com".into(),
        ..RedisOptions::default()
    })
    .await
    .expect_err("not redis");
    assert_eq!(not_a_url.kind(), ErrorKind::Config);
    assert!(not_a_url.to_string().contains("redis_url"), "{not_a_url}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let nobody = RedisEngine::connect(RedisOptions {
        url: format!("redis://:secret@127.0.0.1:{port}/"),
        ..RedisOptions::default()
    })
    .await
    .expect_err("nothing listens");
    assert_eq!(nobody.kind(), ErrorKind::Engine);
    let message = nobody.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("secret"),
        "the password is not shown: {message}"
    );
}

#[test]
fn servers_are_shown_without_credentials_or_query() {
    use redis::IntoConnectionInfo;
    let shown = |url: &str| describe(&url.into_connection_info().expect("a Redis URL"));
    assert_eq!(shown("redis://:pw@h:1/3"), "redis://h:1/3");
    assert_eq!(shown("rediss://user:pw@h"), "rediss://h:6379/0");
    assert_eq!(shown("redis://user@h"), "redis://h:6379/0");
    assert_eq!(
        shown("redis+unix:///run/r.sock?pass=secret&db=2"),
        "redis+unix:///run/r.sock?db=2"
    );
    assert_eq!(
        shown("unix:///run/r.sock?password=secret"),
        "redis+unix:///run/r.sock?db=0"
    );
}

#[tokio::test]
async fn a_timeout_says_the_write_may_still_be_done() {
    let Some(server) = RedisServer::start("redis engine timeout message") else {
        return;
    };
    let engine = engine(&server, &fresh_prefix(), 10).await;
    let timed_out = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let message = engine
        .store
        .engine_error("store events", timed_out)
        .to_string();
    assert!(message.contains("did not answer in time"), "{message}");
    assert!(message.contains("may still be done"), "{message}");
    let refused =
        redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    let message = engine
        .store
        .engine_error("store events", refused)
        .to_string();
    assert!(
        message.starts_with("Redis failed to store events"),
        "{message}"
    );
}
