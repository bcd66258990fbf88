//! Crash test of the disk engine, through the `tidings` binary as built:
//! `tidings serve --data-dir <tmp> --listen 127.0.0.1:<port>` is killed with SIGKILL while 4
//! publishers publish and 20 subscribers stream, then started again on the same data dir
//! and port, three times. Every acknowledged event must reach every subscriber exactly
//! once, in order; an event whose publish was cut off may arrive or not, but never twice
//! and never out of order. And a corrupt data dir stops `tidings serve` at start-up with a
//! message naming it, leaving the file as it was.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

// The crash tests' helpers, and through them the hub's disk-test helpers (HTTP requests,
// subscribers, waiting): this test needs the built binary, so it lives in its crate.
mod crash_support;
use crash_support::disk_support::{free_port, request, wait_until};
use crash_support::{
    check_every_subscriber, connected_subscribers, spawn_serve, Hub, Publishers, TempDir,
};

const SUBSCRIBERS: usize = 20;
const PUBLISHERS: usize = 4;
const KILLS: usize = 3;

fn disk_args(data_dir: &Path) -> [&str; 2] {
    ["--data-dir", data_dir.to_str().expect("a UTF-8 temp path")]
}

fn spawn_disk_serve(data_dir: &Path, addr: SocketAddr, stderr_log: &Path) -> Child {
    spawn_serve(&disk_args(data_dir), addr, stderr_log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_exactly_once_in_order() {
    let dir = TempDir::new("disk-crash");
    let data_dir = dir.0.join("data");
    let log = dir.0.join("serve-stderr.log");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut hub = Hub::start(&disk_args(&data_dir), addr, &log).await;

    let subscribers = connected_subscribers(&[addr], SUBSCRIBERS).await;

    let publishers = Publishers::start(&[addr], PUBLISHERS);

    for round in 1..=KILLS {
        // Kill point: 150 more acknowledged events while all 20 subscribers stream, with
        // publishes in flight.
        publishers
            .wait_for(150, "publishes to be acknowledged")
            .await;
        hub.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub = Hub::start(&disk_args(&data_dir), addr, &log).await;
        wait_until(
            Duration::from_secs(30),
            "every subscriber to reconnect",
            || subscribers.iter().all(|s| s.opens() > round),
        )
        .await;
    }
    let acked = publishers.finish().await;
    check_every_subscriber(&subscribers, &acked, KILLS + 1).await;
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

    let mut child = spawn_disk_serve(&data_dir, addr, &log);
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
