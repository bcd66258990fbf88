//! Crash test of the disk engine, through the `tidings` binary as built:
//! `tidings serve --data-dir <tmp> --listen 127.0.0.1:<port>` is killed with SIGKILL while 4
//! publishers publish and 20 subscribers stream, then started again on the same data dir
//! and port, three times. Every acknowledged event must reach every subscriber exactly
//! once, in order; an event whose publish was cut off may arrive or not, but never twice
//! and never out of order. And a corrupt data dir stops `tidings serve` at start-up with a
//! message naming it, leaving the file as it was.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings::EventId;

// The hub's own disk-test helpers (HTTP requests, subscribers, waiting), shared rather
// than copied: this test needs the built binary, so it lives in the binary's crate.
#[path = "../../tidings-hub/tests/disk_support/mod.rs"]
mod disk_support;
use disk_support::{free_port, publish, request, wait_until, Subscriber};

const SUBSCRIBERS: usize = 20;
const PUBLISHERS: usize = 4;
const KILLS: usize = 3;
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

fn spawn_serve(data_dir: &Path, addr: SocketAddr, stderr_log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .expect("stderr log");
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
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
struct Hub(Child);

impl Hub {
    async fn start(data_dir: &Path, addr: SocketAddr, stderr_log: &Path) -> Hub {
        let mut child = spawn_serve(data_dir, addr, stderr_log);
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

    /// SIGKILL: no shutdown, no flush; only what is on disk survives.
    fn kill(mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaped");
    }
}

/// Acknowledged publishes: id -> data.
type Acked = Arc<Mutex<HashMap<EventId, String>>>;

/// Publishes `<publisher>-<n>` until `stop` is set, recording what was acknowledged. A
/// publish that fails (the hub is gone) is not acknowledged.
async fn publisher(addr: SocketAddr, p: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let data = format!("{p}-{n}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_exactly_once_in_order() {
    let dir = TempDir::new("disk-crash");
    let data_dir = dir.0.join("data");
    let log = dir.0.join("serve-stderr.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut hub = Hub::start(&data_dir, addr, &log).await;

    let subscribers: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|_| Subscriber::start(addr, &[TOPIC]))
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
        .map(|p| tokio::spawn(publisher(addr, p, Arc::clone(&acked), Arc::clone(&stop))))
        .collect();

    for round in 1..=KILLS {
        // Kill point: 150 more acknowledged events while all 20 subscribers stream, with
        // publishes in flight.
        let target = acked.lock().expect("not poisoned").len() + 150;
        wait_until(
            Duration::from_secs(60),
            "publishes to be acknowledged",
            || acked.lock().expect("not poisoned").len() >= target,
        )
        .await;
        hub.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub = Hub::start(&data_dir, addr, &log).await;
        wait_until(
            Duration::from_secs(30),
            "every subscriber to reconnect",
            || subscribers.iter().all(|s| s.opens() > round),
        )
        .await;
    }
    let before_stop = acked.lock().expect("not poisoned").len();
    wait_until(
        Duration::from_secs(60),
        "publishes after the last restart",
        || acked.lock().expect("not poisoned").len() >= before_stop + 100,
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
            subscriber.opens() > KILLS,
            "subscriber {i} reconnected after each kill"
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
    eprintln!(
        "{} acknowledged events over {KILLS} kill -9s reached all {SUBSCRIBERS} subscribers exactly once, in order",
        acked.len()
    );
    hub.kill();
}

#[tokio::test]
async fn a_corrupt_data_dir_stops_serve_at_start_up_and_is_left_alone() {
    let dir = TempDir::new("disk-corrupt");
    let data_dir = dir.0.join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let db = data_dir.join("tidings.sqlite3");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&db, &garbage).expect("garbage");
    let log = dir.0.join("serve-stderr.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();

    let mut child = spawn_serve(&data_dir, addr, &log);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("waited")
        .expect("exit status");
    assert_eq!(status.code(), Some(1), "start-up fails");
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    eprintln!("start-up error: {}", stderr.trim());
    assert!(stderr.contains("tidings serve:"), "{stderr}");
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "names the path: {stderr}"
    );
    assert!(stderr.contains("corrupt"), "says what is wrong: {stderr}");
    assert!(
        stderr.contains("nothing was changed"),
        "says it was left alone: {stderr}"
    );
    assert!(
        std::fs::read(&db).expect("db") == garbage,
        "the file is untouched"
    );
    assert!(
        request(addr, "GET", "/readyz", None, b"").await.is_err(),
        "nothing listens"
    );
}
