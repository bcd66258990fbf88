//! Crash test of the Redis engine, through the `tidings` binary as built: two `tidings
//! serve --engine redis` hubs share a `redis-server` that fsyncs every write before it
//! answers. 4 publishers publish through both hubs and 20 subscribers stream from them
//! (10 on each) while, in turn, each hub and then Redis itself is killed with SIGKILL and
//! started again. Every acknowledged event must reach every subscriber exactly once, in
//! order, with no gap event; an event whose publish was cut off may arrive or not, but
//! never twice and never out of order.
//!
//! Needs `redis-server`; without it the test prints `skipped: … (install redis-server)` and
//! passes, unless `TIDINGS_REQUIRE_EXTERNAL=1`, when it fails.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings::EventId;

#[path = "../../tidings-hub/tests/disk_support/mod.rs"]
mod disk_support;
#[path = "../../tidings-hub/src/engine/redis/test_server.rs"]
mod redis_server;

use disk_support::{free_port, publish, request, wait_until, Subscriber};
use redis_server::RedisServer;

const SUBSCRIBERS: usize = 20;
const PUBLISHERS: usize = 4;
const TOPIC: &str = "crash";

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("tidings-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `tidings serve --engine redis`.
struct Hub(Child);

impl Hub {
    async fn start(redis_url: &str, addr: SocketAddr, stderr_log: &Path) -> Hub {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .expect("stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--engine", "redis", "--redis-url", redis_url])
            .args(["--listen", &addr.to_string()])
            .args(["--retry", "100ms", "--history-max-events", "100000"])
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tidings starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(stderr_log).unwrap_or_default();
                panic!("tidings serve exited at start-up ({status}): {log}");
            }
            if let Ok(response) = request(addr, "GET", "/readyz", None, b"").await {
                if response.status == 200 {
                    return Hub(child);
                }
            }
            assert!(
                Instant::now() < deadline,
                "tidings serve was not ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

/// Acknowledged publishes: id -> data.
type Acked = Arc<Mutex<HashMap<EventId, String>>>;

/// Publishes `<publisher>-<n>` through the hubs in turn until `stop` is set, recording what
/// was acknowledged. A publish that fails (a hub or Redis is gone) is not acknowledged.
async fn publisher(hubs: [SocketAddr; 2], p: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let data = format!("{p}-{n}");
        let addr = hubs[(n as usize + p) % 2];
        n += 1;
        match publish(addr, TOPIC, &data).await {
            Ok(response) if response.status == 200 => {
                let answer: serde_json::Value =
                    serde_json::from_str(&response.body).expect("JSON answer");
                let id: EventId = answer["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("an id in the answer");
                acked.lock().expect("not poisoned").insert(id, data);
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn acked_count(acked: &Acked) -> usize {
    acked.lock().expect("not poisoned").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_killed_hubs_and_a_killed_redis() {
    let dir = TempDir::new("redis-crash");
    let Some(mut redis) = RedisServer::start_durable("redis crash test", &dir.0) else {
        return;
    };
    let url = redis.url();
    let log = dir.0.join("serve-stderr.log");
    let addrs: [SocketAddr; 2] = [
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], free_port()).into(),
    ];
    let mut hubs = [
        Some(Hub::start(&url, addrs[0], &log).await),
        Some(Hub::start(&url, addrs[1], &log).await),
    ];

    let subscribers: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|i| Subscriber::start(addrs[i % 2], &[TOPIC]))
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every subscriber to connect",
        || subscribers.iter().all(|s| s.opens() >= 1),
    )
    .await;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publisher(addrs, p, Arc::clone(&acked), Arc::clone(&stop))))
        .collect();

    // Kill hub 0, hub 1, then Redis, each after 150 more acknowledged events, with
    // publishes in flight and every subscriber streaming.
    for victim in 0..3 {
        let target = acked_count(&acked) + 150;
        wait_until(
            Duration::from_secs(60),
            "publishes to be acknowledged",
            || acked_count(&acked) >= target,
        )
        .await;
        if victim < 2 {
            hubs[victim].take().expect("running").kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            hubs[victim] = Some(Hub::start(&url, addrs[victim], &log).await);
        } else {
            redis.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.start_again();
        }
    }
    let before_stop = acked_count(&acked);
    wait_until(
        Duration::from_secs(60),
        "publishes after the last restart",
        || acked_count(&acked) >= before_stop + 100,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for p in publishers {
        p.await.expect("publisher");
    }

    let acked = acked.lock().expect("not poisoned").clone();
    let newest = *acked.keys().max().expect("acknowledged events");
    wait_until(
        Duration::from_secs(60),
        "every subscriber to receive the newest acknowledged event",
        || {
            subscribers.iter().all(|s| {
                s.events()
                    .iter()
                    .any(|e| e.last_event_id == newest.to_string())
            })
        },
    )
    .await;

    for (i, subscriber) in subscribers.iter().enumerate() {
        let events = subscriber.events();
        let mut ids: Vec<EventId> = Vec::with_capacity(events.len());
        for event in &events {
            assert_eq!(
                event.event_type, "message",
                "subscriber {i}: no gap or other event expected, got {event:?}"
            );
            let id: EventId = event.last_event_id.parse().expect("an id on every event");
            if let Some(data) = acked.get(&id) {
                assert_eq!(&event.data, data, "subscriber {i}: event {id} has its data");
            }
            ids.push(id);
        }
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "subscriber {i}: ids strictly increase (no duplicate, none out of order)"
        );
        let received: HashSet<EventId> = ids.iter().copied().collect();
        let missing: Vec<&EventId> = acked.keys().filter(|id| !received.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "subscriber {i}: {} acknowledged events never arrived, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        assert!(
            subscriber.opens() >= 2,
            "subscriber {i} reconnected after its hub was killed"
        );
    }
    eprintln!(
        "{} acknowledged events, two hub kills and a Redis kill: all {SUBSCRIBERS} subscribers got each exactly once, in order",
        acked.len()
    );
    for hub in hubs.into_iter().flatten() {
        hub.kill();
    }
}
