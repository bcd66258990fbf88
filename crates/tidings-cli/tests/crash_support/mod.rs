//! Shared by the crash tests (`disk_crash.rs`, `redis_crash.rs`): `tidings serve` as a
//! child process killed with SIGKILL, publishers that record what was acknowledged, and
//! the check that every subscriber got every acknowledged event exactly once, in order.

#![allow(dead_code)] // each crash test uses its own part

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings::EventId;

#[path = "../../../tidings-hub/tests/disk_support/mod.rs"]
pub mod disk_support;

use disk_support::{publish, request, Subscriber};

/// The topic every crash test publishes to and subscribes to.
pub const TOPIC: &str = "crash";

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
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

/// Spawns `tidings serve ARGS --listen ADDR` (retry 100 ms, history for 100,000 events,
/// warnings only), its standard error appended to `stderr_log`.
pub fn spawn_serve(args: &[&str], addr: SocketAddr, stderr_log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .expect("stderr log");
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("serve")
        .args(args)
        .args(["--listen", &addr.to_string()])
        .args(["--retry", "100ms", "--history-max-events", "100000"])
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("tidings starts")
}

/// A running `tidings serve`.
pub struct Hub(Child);

impl Hub {
    /// Starts `tidings serve ARGS` on `addr` and waits until `/readyz` answers 200.
    pub async fn start(args: &[&str], addr: SocketAddr, stderr_log: &Path) -> Hub {
        let mut child = spawn_serve(args, addr, stderr_log);
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
    pub fn kill(mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

/// Acknowledged publishes: id -> data.
pub type Acked = Arc<Mutex<HashMap<EventId, String>>>;

/// Publishes `<p>-<n>` to [`TOPIC`] through `hubs` in turn until `stop` is set, recording
/// what was acknowledged. A publish that fails (a hub or its storage is gone) is not
/// acknowledged.
pub async fn publisher(hubs: Vec<SocketAddr>, p: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let data = format!("{p}-{n}");
        let addr = hubs[(n + p) % hubs.len()];
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

/// `n` subscribers to [`TOPIC`], spread over `hubs` in turn, once every one is connected.
pub async fn connected_subscribers(hubs: &[SocketAddr], n: usize) -> Vec<Subscriber> {
    let subscribers: Vec<Subscriber> = (0..n)
        .map(|i| Subscriber::start(hubs[i % hubs.len()], &[TOPIC]))
        .collect();
    disk_support::wait_until(
        Duration::from_secs(20),
        "every subscriber to connect",
        || subscribers.iter().all(|s| s.opens() >= 1),
    )
    .await;
    subscribers
}

/// [`publisher`]s running through the hubs, and what they got acknowledged.
pub struct Publishers {
    acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishers {
    /// Starts `n` [`publisher`]s through `hubs`.
    pub fn start(hubs: &[SocketAddr], n: usize) -> Publishers {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|p| {
                tokio::spawn(publisher(
                    hubs.to_vec(),
                    p,
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Publishers { acked, stop, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().expect("not poisoned").len()
    }

    /// Waits (at most 60 s) until `more` publishes beyond those so far are acknowledged.
    pub async fn wait_for(&self, more: usize, what: &str) {
        let target = self.acked_count() + more;
        disk_support::wait_until(Duration::from_secs(60), what, || {
            self.acked_count() >= target
        })
        .await;
    }

    /// Waits for 100 more acknowledged publishes (so the hubs work after the last
    /// restart), stops the publishers and returns what was acknowledged: id -> data.
    pub async fn finish(self) -> HashMap<EventId, String> {
        self.wait_for(100, "publishes after the last restart").await;
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("publisher");
        }
        let acked = self.acked.lock().expect("not poisoned").clone();
        acked
    }
}

/// Waits until every subscriber has the newest acknowledged event, then checks that each
/// got every acknowledged event once, in id order, with its data, and no gap or other
/// event, over at least `min_opens` connections.
pub async fn check_every_subscriber(
    subscribers: &[Subscriber],
    acked: &HashMap<EventId, String>,
    min_opens: usize,
) {
    let newest = *acked.keys().max().expect("acknowledged events");
    disk_support::wait_until(
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
            subscriber.opens() >= min_opens,
            "subscriber {i} connected {} times, expected at least {min_opens}",
            subscriber.opens()
        );
        if i == 0 {
            eprintln!(
                "subscriber 0: {} events ({} acknowledged, {} whose publish was cut off), {} connections",
                ids.len(),
                acked.len(),
                ids.len() - acked.len(),
                subscriber.opens()
            );
        }
    }
}
