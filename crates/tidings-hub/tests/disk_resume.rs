//! Resuming over HTTP on the disk engine: history survives a restart, and a resume point
//! that retention trimmed gets a gap event before the events that are left.

mod disk_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tidings::client::{EventSource, Item};
use tidings::server::GAP_EVENT_TYPE;
use tidings::wire::MessageEvent;
use tidings_hub::config::EngineKind;
use tidings_hub::{Server, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use disk_support::{publish, request};

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), tidings_hub::Error>>,
}

async fn start(data_dir: &Path, history_max_events: usize) -> Running {
    let settings = Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        engine: EngineKind::Disk,
        data_dir: data_dir.to_owned(),
        history_max_events,
        ..Settings::default()
    };
    let server = Server::bind(settings).await.expect("the hub starts");
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop,
        serving,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.expect("joined").expect("clean shutdown");
    }
}

async fn publish_ids(addr: SocketAddr, topic: &str, data: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for d in data {
        let response = publish(addr, topic, d).await.expect("publish");
        assert_eq!(response.status, 200, "{}", response.body);
        ids.push(response.json()["id"].as_str().expect("id").to_owned());
    }
    ids
}

/// The first `n` events of a stream resumed after `last_event_id`.
async fn resume(addr: SocketAddr, topic: &str, last_event_id: &str, n: usize) -> Vec<MessageEvent> {
    use futures_util::StreamExt;
    let mut source = EventSource::builder(&format!("http://{addr}/events?topic={topic}"))
        .last_event_id(last_event_id)
        .reconnect(false)
        .build()
        .expect("url");
    let mut events = Vec::new();
    let read = async {
        while let Some(item) = source.next().await {
            if let Item::Event(event) = item {
                events.push(event);
                if events.len() == n {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("events in time");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = start(dir.path(), 1000).await;
    let ids = publish_ids(first.addr, "news", &["one", "two", "three"]).await;
    first.stop().await;

    let second = start(dir.path(), 1000).await;
    let events = resume(second.addr, "news", &ids[0], 2).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["two", "three"]);
    assert_eq!(events[1].last_event_id, ids[2]);
    let newer = publish_ids(second.addr, "news", &["four"]).await;
    assert!(
        newer[0].parse::<tidings::EventId>().expect("id")
            > ids[2].parse::<tidings::EventId>().expect("id"),
        "ids keep increasing across the restart"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_resume_point_gets_a_gap_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = start(dir.path(), 3).await;
    let data: Vec<String> = (1..=10).map(|i| format!("e{i}")).collect();
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    let ids = publish_ids(hub.addr, "t", &data).await;
    // The writer trims every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let topics = request(hub.addr, "GET", "/topics", None, b"")
            .await
            .expect("topics")
            .json();
        if topics["topics"][0]["retained"] == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "trimmed in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let events = resume(hub.addr, "t", &ids[1], 4).await;
    assert_eq!(events[0].event_type, GAP_EVENT_TYPE, "{events:?}");
    let gap: serde_json::Value = serde_json::from_str(&events[0].data).expect("gap json");
    assert_eq!(gap["reason"], "expired", "{gap}");
    assert_eq!(gap["oldest_id"], ids[7].as_str(), "{gap}");
    let rest: Vec<&str> = events[1..].iter().map(|e| e.data.as_str()).collect();
    assert_eq!(rest, ["e8", "e9", "e10"]);

    let untouched = resume(hub.addr, "t", &ids[7], 2).await;
    let data: Vec<&str> = untouched.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["e9", "e10"], "no gap from a point still kept");
    hub.stop().await;
}
