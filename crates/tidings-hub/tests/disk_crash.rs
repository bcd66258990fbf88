//! Crash test: the hub as a child process on the disk engine, killed with SIGKILL while
//! publishers publish and 20 subscribers stream, then restarted on the same data dir and
//! port. Every acknowledged event must reach every subscriber exactly once, in order;
//! events whose publish was cut off may arrive or not, but never twice, never out of order.
//!
//! The child is this test binary run again with only [`hub_process`] selected and the
//! hub's arguments in `TIDINGS_TEST_HUB_ARGS`: it runs `tidings_hub::serve_blocking`, the
//! whole of `tidings serve` (the `tidings` binary's `serve` glue is not on this branch; a
//! test in `crates/tidings-cli` can run `CARGO_BIN_EXE_tidings serve` the same way once it
//! is).

mod disk_support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tidings::EventId;

use disk_support::{free_port, publish, request, wait_until, Subscriber};

const ARGS_ENV: &str = "TIDINGS_TEST_HUB_ARGS";
/// Separates arguments in `TIDINGS_TEST_HUB_ARGS` (paths may hold spaces).
const ARG_SEPARATOR: char = '\u{1f}';
const SUBSCRIBERS: usize = 20;
const PUBLISHERS: usize = 4;
const KILLS: usize = 3;
const TOPIC: &str = "crash";

#[derive(Parser)]
struct HubArgs {
    #[command(flatten)]
    config: tidings_hub::Config,
}

/// The child: runs the hub with the arguments in `TIDINGS_TEST_HUB_ARGS`; without them
/// (an ordinary test run) it does nothing.
#[test]
fn hub_process() {
    let Ok(args) = std::env::var(ARGS_ENV) else {
        return;
    };
    let args = std::iter::once("tidings").chain(args.split(ARG_SEPARATOR));
    let config = match HubArgs::try_parse_from(args) {
        Ok(parsed) => parsed.config,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = tidings_hub::serve_blocking(config) {
        eprintln!("tidings serve: {err}");
        std::process::exit(1);
    }
}

/// A hub child process and how to reach it.
struct Hub {
    child: Child,
}

fn spawn_hub(data_dir: &Path, addr: SocketAddr, stderr_log: &Path) -> Child {
    let args = [
        "--data-dir",
        &data_dir.display().to_string(),
        "--listen",
        &addr.to_string(),
        "--retry",
        "100ms",
        "--history-max-events",
        "100000",
        "--log",
        "warn",
    ]
    .join(&ARG_SEPARATOR.to_string());
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .expect("stderr log");
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["hub_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(ARGS_ENV, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("the hub starts")
}

impl Hub {
    async fn start(data_dir: &Path, addr: SocketAddr, stderr_log: &Path) -> Hub {
        let mut child = spawn_hub(data_dir, addr, stderr_log);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(stderr_log).unwrap_or_default();
                panic!("the hub exited at start-up ({status}): {log}");
            }
            if let Ok(response) = request(addr, "GET", "/readyz", None, b"").await {
                if response.status == 200 {
                    return Hub { child };
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hub was not ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what is on disk survives.
    fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

/// Acknowledged publishes: id -> data.
type Acked = Arc<Mutex<HashMap<EventId, String>>>;

/// Publishes `<publisher>-<n>` until `stop` is set, recording what was acknowledged.
/// A publish that fails (the hub is gone) is not acknowledged; the publisher then waits
/// for the hub to come back.
async fn publisher(addr: SocketAddr, p: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let data = format!("{p}-{n}");
        n += 1;
        match publish(addr, TOPIC, &data).await {
            Ok(response) if response.status == 200 => {
                let id: EventId = response.json()["id"]
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
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let log = dir.path().join("hub-stderr.log");
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
    // A last stretch after the final restart, then stop publishing.
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
        eprintln!(
            "subscriber {i}: {} events ({} acknowledged, {} whose publish was cut off), {} connections",
            ids.len(),
            acked.len(),
            ids.len() - acked.len(),
            subscriber.opens()
        );
    }
    eprintln!(
        "{} acknowledged events over {KILLS} kills reached all {SUBSCRIBERS} subscribers exactly once, in order",
        acked.len()
    );
    hub.kill();
}

/// A corrupt database stops start-up with a message naming the path, and the file is left
/// exactly as it was.
#[tokio::test]
async fn a_corrupt_data_dir_stops_start_up_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let db = data_dir.join("tidings.sqlite3");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&db, &garbage).expect("garbage");
    let log = dir.path().join("hub-stderr.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();

    let mut child = spawn_hub(&data_dir, addr, &log);
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
