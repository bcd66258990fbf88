//! What the disk engine does when the disk will not take writes, through the HTTP API:
//! a full disk answers publishes with 503 problem+json and acknowledges nothing while
//! subscribers keep their streams, and publishing works again once there is room; a data
//! dir on a read-only file system stops start-up with a message naming it, and its files
//! are left as they were.
//!
//! Both need a small file system to fill or make read-only: a 4 MiB tmpfs, mounted by the
//! test. Where mounting is not permitted the tests say so and skip; the engine's unit test
//! `a_failed_write_stores_nothing_and_the_engine_recovers` drives the same failure with
//! SQLite's `max_page_count` and runs everywhere.

mod disk_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tidings_hub::config::EngineKind;
use tidings_hub::{Server, Settings};

use disk_support::{publish, request, wait_until, Subscriber};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`, or says why not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn skip(test: &str, why: &str) {
    eprintln!(
        "SKIPPED {test}: mounting a tmpfs is not permitted here ({why}); \
         the engine test a_failed_write_stores_nothing_and_the_engine_recovers covers the failure path"
    );
}

fn disk_settings(data_dir: &Path) -> Settings {
    Settings {
        listen: ([127, 0, 0, 1], 0).into(),
        engine: EngineKind::Disk,
        data_dir: data_dir.to_owned(),
        retry: Duration::from_millis(100),
        ..Settings::default()
    }
}

/// Writes to `path` until the file system is full; returns how much it wrote.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    let mut written = 0;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.flush();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_acknowledges_nothing_and_streams_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = match Tmpfs::mount(&dir.path().join("mnt"), "4m") {
        Ok(mount) => mount,
        Err(why) => return skip("a_full_disk_answers_503", &why),
    };
    let data_dir = mount.path.join("data");
    let server = Server::bind(disk_settings(&data_dir))
        .await
        .expect("the hub starts");
    let addr = server.local_addr();
    let hub = Arc::clone(server.hub());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let subscribers: Vec<Subscriber> = (0..3).map(|_| Subscriber::start(addr, &["t"])).collect();
    wait_until(Duration::from_secs(10), "subscribers to connect", || {
        subscribers.iter().all(|s| s.opens() == 1)
    })
    .await;
    let before = publish(addr, "t", "before").await.expect("publish");
    assert_eq!(before.status, 200);
    let before_id = before.json()["id"].as_str().expect("id").to_owned();
    wait_until(Duration::from_secs(10), "the first event", || {
        subscribers.iter().all(|s| s.events().len() == 1)
    })
    .await;

    let filler = mount.path.join("filler");
    assert!(fill(&filler) > 0);
    let big = "x".repeat(512 * 1024);
    let refused = publish(addr, "t", &big).await.expect("an answer");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(refused.header("retry-after").is_some());
    let problem = refused.json();
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["type"], "urn:tidings:problem:engine-unavailable");
    let detail = problem["detail"].as_str().expect("detail");
    eprintln!("503 detail: {detail}");
    assert!(detail.contains("not stored"), "{detail}");
    assert!(detail.contains("full"), "{detail}");
    assert!(detail.contains(&data_dir.display().to_string()), "{detail}");

    // Nothing acknowledged: not in history, not delivered, the head did not move.
    let topics = request(addr, "GET", "/topics", None, b"")
        .await
        .expect("topics");
    assert!(
        topics.body.contains(&before_id),
        "the newest id is still {before_id}: {}",
        topics.body
    );
    assert_eq!(
        hub.engine().head().await.expect("head").to_string(),
        before_id
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(subscribers.iter().all(|s| s.events().len() == 1));
    // Subscribing (a read) still works while the disk is full.
    let late = Subscriber::start(addr, &["t"]);
    wait_until(Duration::from_secs(10), "a new subscriber", || {
        late.opens() == 1
    })
    .await;

    // Room again: publishing works, on the streams that never closed.
    std::fs::remove_file(&filler).expect("free the disk");
    let after = publish(addr, "t", "after").await.expect("publish");
    assert_eq!(after.status, 200, "{}", after.body);
    wait_until(
        Duration::from_secs(10),
        "the event after the failure",
        || {
            subscribers
                .iter()
                .chain([&late])
                .all(|s| s.events().last().is_some_and(|e| e.data == "after"))
        },
    )
    .await;
    for s in &subscribers {
        let data: Vec<String> = s.events().into_iter().map(|e| e.data).collect();
        assert_eq!(data, ["before", "after"]);
        assert_eq!(s.opens(), 1, "the stream was never interrupted");
    }

    drop(subscribers);
    drop(late);
    let _ = stop.send(());
    serving.await.expect("joined").expect("clean shutdown");
    drop(hub);
}

#[tokio::test]
async fn a_read_only_data_dir_stops_start_up_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = match Tmpfs::mount(&dir.path().join("mnt"), "4m") {
        Ok(mount) => mount,
        Err(why) => return skip("a_read_only_data_dir_stops_start_up", &why),
    };
    let data_dir = mount.path.join("data");
    {
        let server = Server::bind(disk_settings(&data_dir))
            .await
            .expect("the hub starts");
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let stored = publish(addr, "t", "kept").await.expect("publish");
        assert_eq!(stored.status, 200);
        let _ = stop.send(());
        serving.await.expect("joined").expect("clean shutdown");
    }
    let db = data_dir.join("tidings.sqlite3");
    let before = std::fs::read(&db).expect("db");
    mount.remount_read_only();

    let err = Server::bind(disk_settings(&data_dir))
        .await
        .expect_err("a read-only data dir cannot take publishes");
    assert_eq!(err.kind(), tidings_hub::ErrorKind::Engine);
    let message = err.to_string();
    eprintln!("start-up error: {message}");
    assert!(
        message.contains(&data_dir.display().to_string()),
        "{message}"
    );
    assert!(message.contains("writable"), "says what to do: {message}");
    assert!(
        std::fs::read(&db).expect("db") == before,
        "the database is untouched"
    );
}
