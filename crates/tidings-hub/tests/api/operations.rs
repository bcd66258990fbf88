//! Running the hub: shutdown, the look-around routes, presence, the page.

use crate::common::TestHub;
use http::StatusCode;
use tidings_hub::Settings;

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
