//! End-to-end tests of the hub's HTTP API over real sockets: the hub runs in-process on
//! 127.0.0.1:<free port> exactly as `tidings serve` runs it (`Server::run_until`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{request, SlowReads, TestHub, PATIENCE};
use tidings::EventId;
use tidings_hub::Settings;

fn id(text: &str) -> EventId {
    text.parse().expect("an event id")
}

#[tokio::test]
async fn publish_and_receive() {
    let hub = TestHub::start_default().await;
    let mut stream = hub.stream("/events?topic=news").await;
    assert_eq!(
        stream
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-cache, no-transform")
    );
    let first = hub
        .publish_form("topic=news&event=headline&data=line+one%0Aline+two")
        .await;
    let event = stream.expect_event().await;
    assert_eq!(event.id, first);
    assert_eq!(event.event, "headline");
    assert_eq!(event.data, "line one\nline two");

    let reply = hub
        .publish_json(&json!({"topic": "news", "data": {"n": 1}, "retry": 2500}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let second = reply.json()["id"].as_str().expect("id").to_owned();
    assert!(id(&second) > id(&first), "ids are ordered");
    let event = stream.expect_event().await;
    assert_eq!(
        (event.id.as_str(), event.event.as_str(), event.data.as_str()),
        (second.as_str(), "message", r#"{"n":1}"#)
    );
    assert_eq!(stream.retry, Some(2500), "retry published with the event");
}

#[tokio::test]
async fn several_topics_on_one_connection_and_an_event_to_two_topics_arrives_once() {
    let hub = TestHub::start_default().await;
    let mut stream = hub.stream("/events?topic=a&topic=b").await;
    let a = hub.publish("a", "to a").await;
    let b = hub.publish("b", "to b").await;
    let both = hub
        .publish_json(&json!({"topic": ["a", "b"], "data": "to both"}))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let _c = hub.publish("c", "to c, not subscribed").await;
    let last = hub.publish("a", "sentinel").await;

    let mut got = Vec::new();
    loop {
        let e = stream.expect_event().await;
        let done = e.id == last;
        got.push((e.id, e.data));
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        [
            (a, "to a".to_owned()),
            (b, "to b".to_owned()),
            (both, "to both".to_owned()),
            (last, "sentinel".to_owned()),
        ]
    );
}

#[tokio::test]
async fn patterns_match_topics_under_a_prefix_but_not_the_prefix_itself() {
    let hub = TestHub::start_default().await;
    let mut stream = hub.stream("/events?topic=chat/*").await;
    hub.publish("chat", "the parent: not matched").await;
    hub.publish("chatter/x", "another prefix: not matched")
        .await;
    let x = hub.publish("chat/x", "child").await;
    let xy = hub.publish("chat/x/y", "grandchild").await;
    let both = hub
        .publish_json(&json!({"topic": ["chat/x", "chat/y"], "data": "two children, once"}))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ids: Vec<String> = [
        stream.expect_event().await,
        stream.expect_event().await,
        stream.expect_event().await,
    ]
    .into_iter()
    .map(|e| e.id)
    .collect();
    assert_eq!(ids, [x, xy, both]);

    // `*` alone is every topic; a pattern and an exact topic combine.
    let mut all = hub.stream("/events?topic=*").await;
    let mut mixed = hub.stream("/events?topic=chat&topic=chat/*").await;
    let parent = hub.publish("chat", "parent").await;
    assert_eq!(all.expect_event().await.id, parent);
    assert_eq!(mixed.expect_event().await.id, parent);
}

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
    // `retry:` first, then an id-only block: the browser commits the head as its id.
    assert!(stream
        .next_block()
        .await
        .expect("retry")
        .starts_with("retry: "));
    assert_eq!(
        stream.next_block().await.expect("id block"),
        format!("id: {before}")
    );
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
        let body = json!({"topic": topics, "data": data});
        let reply = request(
            addr,
            Method::POST,
            "/publish",
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await;
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

#[tokio::test]
async fn bad_requests_are_problem_json() {
    let hub = TestHub::start(Settings {
        max_body_bytes: 256,
        ..Settings::default()
    })
    .await;
    let addr = hub.addr;
    let post = |ct: &'static str, body: &'static str| async move {
        request(
            addr,
            Method::POST,
            "/publish",
            &[("content-type", ct)],
            Bytes::from_static(body.as_bytes()),
        )
        .await
    };
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";

    // Missing topic: subscribe and publish.
    let d = hub.get("/events").await.assert_problem(400);
    assert!(d.contains("topic"), "{d}");
    post(JSON, r#"{"data":"x"}"#).await.assert_problem(400);
    post(FORM, "data=x").await.assert_problem(400);
    // Invalid topics and patterns.
    hub.get("/events?topic=a*").await.assert_problem(400);
    hub.get("/events?topic=a%0Ab").await.assert_problem(400);
    post(JSON, r#"{"topic":"chat/*","data":"x"}"#)
        .await
        .assert_problem(400);
    // Bad JSON, wrong shapes, unknown fields.
    let d = post(JSON, r#"{"topic":"a","data":"#)
        .await
        .assert_problem(400);
    assert!(d.contains("JSON"), "{d}");
    post(JSON, r#"{"topic":1,"data":"x"}"#)
        .await
        .assert_problem(400);
    post(JSON, r#"{"topic":"a","data":"x","id":"1-0"}"#)
        .await
        .assert_problem(400);
    post(FORM, "topic=a&data=x&retry=soon")
        .await
        .assert_problem(400);
    // An event type with a line break would inject fields.
    let d = post(FORM, "topic=a&data=x&event=a%0Ab")
        .await
        .assert_problem(400);
    assert!(d.contains("CR or LF"), "{d}");
    post(JSON, r#"{"topic":"a","data":"x","event":"a\r\nid: 9"}"#)
        .await
        .assert_problem(400);
    // A batch with one bad item stores nothing.
    post(
        JSON,
        r#"[{"topic":"half","data":"ok"},{"topic":"half","data":"x","event":"bad\n"}]"#,
    )
    .await
    .assert_problem(400);
    let topics = hub.get("/topics").await.json();
    assert_eq!(topics["topics"], json!([]), "nothing half-applied");
    // Wrong content type.
    post("text/plain", "hello").await.assert_problem(415);
    // Too large, with and without Content-Length.
    let big = "x".repeat(300);
    let reply = request(
        addr,
        Method::POST,
        "/publish",
        &[("content-type", FORM)],
        Bytes::from(format!("topic=a&data={big}")),
    )
    .await;
    let d = reply.assert_problem(413);
    assert!(d.contains("256"), "{d}");
    assert_eq!(chunked_publish_status(addr, &big).await, 413);
    // Unknown route, wrong method.
    let d = hub.get("/nope").await.assert_problem(404);
    assert!(d.contains("/nope"), "{d}");
    hub.get("/topics/a").await.assert_problem(404);
    let reply = request(addr, Method::DELETE, "/publish", &[], Bytes::new()).await;
    reply.assert_problem(405);
    assert_eq!(reply.header("allow"), Some("POST"));
    request(addr, Method::POST, "/events", &[], Bytes::new())
        .await
        .assert_problem(405);
    // Bad query parameters on history.
    hub.get("/topics/a/events?after=yesterday")
        .await
        .assert_problem(400);
    hub.get("/topics/a/events?limit=0")
        .await
        .assert_problem(400);
    hub.get("/topics/a/events?color=red")
        .await
        .assert_problem(400);
}

/// Sends a chunked publish (no Content-Length) and returns the status code.
async fn chunked_publish_status(addr: std::net::SocketAddr, filler: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = format!("topic=a&data={filler}");
    let request = format!(
        "POST /publish HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    assert!(text.contains("application/problem+json"), "{text}");
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

#[tokio::test]
async fn cors_preflight_allows_exactly_the_configured_origin() {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["http://allowed.test".to_owned()],
        ..Settings::default()
    })
    .await;
    let addr = hub.addr;
    let preflight = |origin: &'static str| async move {
        request(
            addr,
            Method::OPTIONS,
            "/events?topic=a",
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "last-event-id"),
            ],
            Bytes::new(),
        )
        .await
    };
    let ok = preflight("http://allowed.test").await;
    assert!(ok.status.is_success(), "{:?}", ok.status);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let allowed_headers = ok
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(
        allowed_headers.contains("last-event-id"),
        "{allowed_headers}"
    );

    let other = preflight("http://evil.test").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("access-control-allow-credentials"), None);

    let simple = request(
        hub.addr,
        Method::GET,
        "/topics",
        &[("origin", "http://allowed.test")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        Some("http://allowed.test")
    );
    let exposed = simple
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("last-event-id"), "{exposed}");
}

#[tokio::test]
async fn too_many_topics_is_400_and_too_many_connections_is_503() {
    let hub = TestHub::start(Settings {
        max_topics: 2,
        max_connections: 1,
        ..Settings::default()
    })
    .await;
    let d = hub
        .get("/events?topic=a&topic=b&topic=c")
        .await
        .assert_problem(400);
    assert!(d.contains("limit is 2"), "{d}");

    let first = hub.stream("/events?topic=a&topic=b").await;
    let full = hub.get("/events?topic=a").await;
    full.assert_problem(503);
    assert!(full.header("retry-after").is_some(), "Retry-After on 503");

    drop(first);
    // The slot frees once the hub notices the client left.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.get("/healthz").await.json()["connections"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = hub.stream("/events?topic=a").await;
    let id = hub.publish("a", "x").await;
    assert_eq!(again.expect_event().await.id, id);
}

#[tokio::test]
async fn graceful_shutdown_ends_streams_and_the_server_exits() {
    let mut hub = TestHub::start_default().await;
    let mut stream = hub.stream("/events?topic=a").await;
    let id = hub.publish("a", "last words").await;
    hub.shutdown().await.expect("clean shutdown");
    // Everything queued is flushed, then the stream ends.
    let rest = stream.rest().await;
    assert_eq!(
        rest.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let retry = stream.retry.expect("a retry was sent");
    assert!(
        (3000..=4000).contains(&retry),
        "base 3000 ms + 0-1000 ms jitter: {retry}"
    );
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err());
}

#[tokio::test]
async fn topics_history_and_health() {
    let hub = TestHub::start_default().await;
    let _watching = hub.stream("/events?topic=chat/*").await;
    let a1 = hub.publish("a", "1").await;
    let a2 = hub.publish("a", "2").await;
    let x = hub.publish("chat/room-1", "hi").await;

    let topics = hub.get("/topics").await.json();
    assert_eq!(topics["connections"], 1);
    assert_eq!(topics["head"], x.as_str());
    let rows = topics["topics"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["topic"], "a");
    assert_eq!(rows[0]["last_id"], a2.as_str());
    assert_eq!(rows[0]["published"], 2);
    assert_eq!(rows[0]["subscribers"], 0);
    assert_eq!(rows[1]["topic"], "chat/room-1");
    assert_eq!(rows[1]["subscribers"], 1, "a pattern subscriber counts");

    let history = hub
        .get(&format!("/topics/a/events?after={a1}"))
        .await
        .json();
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], a2.as_str());
    assert_eq!(events[0]["data"], "2");
    assert_eq!(history["more"], false);
    let limited = hub.get("/topics/a/events?limit=1").await.json();
    assert_eq!(limited["events"][0]["id"], a1.as_str());
    assert_eq!(limited["more"], true);
    for path in [
        "/topics/chat/room-1/events",
        "/topics/chat%2Froom-1/events",
        "/topics/chat/*/events",
    ] {
        let h = hub.get(path).await.json();
        assert_eq!(h["events"][0]["id"], x.as_str(), "{path}");
    }

    let health = hub.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let ready = hub.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["engine"], "memory");
}

#[tokio::test]
async fn presence_publishes_join_and_leave() {
    let hub = TestHub::start(Settings {
        presence: true,
        ..Settings::default()
    })
    .await;
    let mut watcher = hub.stream("/events?topic=room").await;
    let own_join = watcher.expect_event().await;
    assert_eq!(own_join.event, "join");

    let visitor = hub.stream("/events?topic=room&topic=other/*").await;
    let join = watcher.expect_event().await;
    assert_eq!(join.event, "join");
    let who: serde_json::Value = serde_json::from_str(&join.data).expect("JSON");
    assert!(who["session"].is_string());
    drop(visitor);
    let leave = watcher.expect_event().await;
    assert_eq!(leave.event, "leave");
    assert_eq!(leave.data, join.data, "the same session leaves");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served() {
    let hub = TestHub::start_default().await;
    let page = hub.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("EventSource"));
    for (path, ty) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let asset = hub.get(path).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert!(asset
            .header("content-type")
            .unwrap_or_default()
            .starts_with(ty));
        let text = asset.text();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}: nothing loaded from elsewhere"
        );
    }
}
