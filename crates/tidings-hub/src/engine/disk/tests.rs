//! The engine contract, as the memory engine's tests state it, plus what only a disk
//! engine promises: restarts, retention runs, failed writes and bad data dirs.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::engine::test_support::{
    self as test_support, data, fill_a_past_its_limit, filter, first_of_a_was_trimmed, new_event,
    next_stored, reads_merge_in_order,
};

/// Options with `max_events` per topic and no background trimming (tests run it).
fn options(max_events: u64) -> DiskOptions {
    let mut options = DiskOptions::new(RetentionRules::global(Limits {
        max_events,
        max_bytes: None,
        max_age: None,
    }));
    options.trim_interval = Duration::from_secs(3600);
    options
}

/// `err` is an engine error whose message says each of `says`.
fn assert_engine_error(err: &Error, says: &[&str]) {
    assert_eq!(err.kind(), ErrorKind::Engine);
    let message = err.to_string();
    for part in says {
        assert!(message.contains(part), "{part:?} in {message}");
    }
}

async fn append(engine: &DiskEngine, topics: &[&str], d: &str) -> EventId {
    engine
        .append(vec![new_event(topics, d)])
        .await
        .expect("append")[0]
        .id
}

#[tokio::test]
async fn ids_increase_across_topics_and_reads_merge_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(100)).expect("open");
    reads_merge_in_order(&engine).await;
}

#[tokio::test]
async fn merge_reads_page_through_many_topics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(10_000)).expect("open");
    // Round-robin over 5 topics, 400 events each: more than one merge page per topic.
    let events: Vec<NewEvent> = (0..2000)
        .map(|i| new_event(&[&format!("room/{}", i % 5)], &i.to_string()))
        .collect();
    let stored = engine.append(events).await.expect("append");
    let mut cursor = stored[99].id;
    let mut got: Vec<String> = Vec::new();
    loop {
        let batch = engine
            .read_after(&filter(&["room/*"]), cursor, 300)
            .await
            .expect("read");
        got.extend(batch.events.iter().map(|e| e.data.clone()));
        match batch.events.last() {
            Some(last) if batch.more => cursor = last.id,
            _ => break,
        }
    }
    let expected: Vec<String> = (100..2000).map(|i: i32| i.to_string()).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn count_retention_reports_what_was_trimmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(2)).expect("open");
    let (origin, ids) = fill_a_past_its_limit(&engine).await;
    let report = engine.run_retention().await.expect("trim");
    assert_eq!((report.deleted, report.events_removed), (1, 1));
    assert!(report.finished);
    first_of_a_was_trimmed(&engine, origin, &ids).await;
}

#[tokio::test]
async fn an_event_in_two_topics_lives_while_one_keeps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let chat = RetentionOverride {
        max_events: Some(1),
        ..RetentionOverride::default()
    };
    let rules = RetentionRules::new(
        Limits {
            max_events: 100,
            max_bytes: None,
            max_age: None,
        },
        [("short", &chat)],
    )
    .expect("rules");
    let mut options = DiskOptions::new(rules);
    options.trim_interval = Duration::from_secs(3600);
    let engine = DiskEngine::open(dir.path(), options).expect("open");
    let both = append(&engine, &["short", "long"], "both").await;
    append(&engine, &["short"], "later").await;
    let report = engine.run_retention().await.expect("trim");
    assert_eq!((report.deleted, report.events_removed), (1, 0));
    let short = engine
        .read_after(&filter(&["short"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&short), ["later"]);
    assert_eq!(short.complete_after, both);
    let long = engine
        .read_after(&filter(&["long"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&long), ["both"], "still held by `long`");
}

#[tokio::test]
async fn age_and_byte_retention() {
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = {
        let now = Arc::clone(&now);
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = DiskOptions::new(RetentionRules::global(Limits {
        max_events: 100,
        max_bytes: Some(3 * (24 + 1 + 10)),
        max_age: Some(Duration::from_secs(10)),
    }))
    .with_clock(clock);
    options.trim_interval = Duration::from_secs(3600);
    let engine = DiskEngine::open(dir.path(), options).expect("open");
    let old = append(&engine, &["a"], "old-event!").await;
    now.fetch_add(6_000, Ordering::SeqCst);
    append(&engine, &["a"], "new-event!").await;
    now.fetch_add(6_000, Ordering::SeqCst);
    engine.run_retention().await.expect("trim");
    let a = engine
        .read_after(&filter(&["a"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&a), ["new-event!"]);
    assert_eq!(a.complete_after, old);

    // Each event is 24 + 1 (topic) + 10 (data) bytes; three fit.
    let mut ids = Vec::new();
    for d in ["b-event-01", "b-event-02", "b-event-03", "b-event-04"] {
        ids.push(append(&engine, &["b"], d).await);
    }
    engine.run_retention().await.expect("trim");
    let b = engine
        .read_after(&filter(&["b"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&b), ["b-event-02", "b-event-03", "b-event-04"]);
    assert_eq!(b.complete_after, ids[0]);
}

#[tokio::test]
async fn retention_runs_are_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options(10);
    options.trim_batch = 25;
    let engine = DiskEngine::open(dir.path(), options).expect("open");
    let events: Vec<NewEvent> = (0..100)
        .map(|i| new_event(&["a"], &i.to_string()))
        .collect();
    engine.append(events).await.expect("append");
    let first = engine.run_retention().await.expect("trim");
    assert_eq!(first.deleted, 25, "stopped at its budget");
    assert!(!first.finished);
    let mut total = first.deleted;
    let mut runs = 1;
    loop {
        let report = engine.run_retention().await.expect("trim");
        assert!(report.deleted <= 25);
        total += report.deleted;
        runs += 1;
        if report.finished {
            break;
        }
    }
    assert_eq!(runs, 4, "90 entries in runs of 25");
    let a = engine
        .read_after(&filter(&["a"]), EventId::ZERO, 100)
        .await
        .expect("read");
    assert_eq!(a.events.len(), 10);
    assert_eq!(a.events[0].data, "90");
    assert_eq!(total, 90);
}

#[tokio::test]
async fn live_feed_is_in_id_order_after_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(10)).expect("open");
    test_support::live_feed_is_in_id_order(&engine).await;
}

#[tokio::test]
async fn concurrent_appends_share_commits_and_keep_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(DiskEngine::open(dir.path(), options(10_000)).expect("open"));
    let mut live = engine.subscribe_live();
    let mut tasks = Vec::new();
    for publisher in 0..16 {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                let stored = engine
                    .append(vec![new_event(&["t"], &format!("{publisher}-{n}"))])
                    .await
                    .expect("append");
                ids.push(stored[0].id);
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        let ids = task.await.expect("task");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one publisher's ids increase"
        );
        acked.extend(ids);
    }
    acked.sort();
    let stored = engine
        .read_after(&filter(&["t"]), EventId::ZERO, 1000)
        .await
        .expect("read");
    let stored_ids: Vec<EventId> = stored.events.iter().map(|e| e.id).collect();
    assert_eq!(
        stored_ids, acked,
        "every acknowledged event, once, in id order"
    );
    for id in &acked {
        assert_eq!(next_stored(&mut live).await.id, *id);
    }
}

#[tokio::test]
async fn reopening_keeps_events_and_ids_keep_increasing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(|| 5_000_000u64);
    let first = {
        let engine =
            DiskEngine::open(dir.path(), options(100).with_clock(clock.clone())).expect("open");
        append(&engine, &["a"], "before").await
    };
    // The clock went back an hour while the hub was down.
    let engine = DiskEngine::open(dir.path(), options(100).with_clock(Arc::new(|| 1_400_000)))
        .expect("reopen");
    assert_eq!(engine.head().await.expect("head"), first);
    let second = append(&engine, &["a"], "after").await;
    assert!(second > first, "{second} after {first}");
    let a = engine
        .read_after(&filter(&["a"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&a), ["before", "after"]);
    let info = engine.topics().await.expect("topics");
    assert_eq!(info[0].published, 2, "counts persist");
}

#[tokio::test]
async fn a_failed_write_stores_nothing_and_the_engine_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(100)).expect("open");
    let kept = append(&engine, &["a"], "kept").await;
    let mut live = engine.subscribe_live();
    // The database may not grow: the next write of new pages fails with SQLITE_FULL,
    // exactly as on a full disk.
    engine
        .execute("PRAGMA max_page_count = 1")
        .await
        .expect("pragma");
    let big = "x".repeat(256 * 1024);
    let err = engine
        .append(vec![new_event(&["a"], &big), new_event(&["b"], "small")])
        .await
        .expect_err("the disk is full");
    let dir_name = dir.path().display().to_string();
    assert_engine_error(&err, &["not stored", "full", &dir_name]);
    assert_eq!(
        engine.head().await.expect("head"),
        kept,
        "nothing acknowledged"
    );
    assert!(live.try_recv().is_err(), "nothing on the live feed");
    let all = engine
        .read_after(&filter(&["*"]), EventId::ZERO, 10)
        .await
        .expect("reads still work");
    assert_eq!(data(&all), ["kept"]);

    engine
        .execute("PRAGMA max_page_count = 1073741823")
        .await
        .expect("pragma");
    let after = append(&engine, &["b"], "after").await;
    assert!(after > kept);
    assert_eq!(next_stored(&mut live).await.id, after);
    let all = engine
        .read_after(&filter(&["*"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(
        data(&all),
        ["kept", "after"],
        "the failed group left nothing"
    );
}

#[tokio::test]
async fn a_failed_fsync_is_not_acknowledged_and_stops_publishing_until_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kept;
    {
        let engine = DiskEngine::open(dir.path(), options(100)).expect("open");
        kept = append(&engine, &["a"], "kept").await;
        let mut live = engine.subscribe_live();
        engine.break_sync().await;
        let err = engine
            .append(vec![new_event(&["a"], "unconfirmed")])
            .await
            .expect_err("the fsync failed");
        let dir_name = dir.path().display().to_string();
        assert_engine_error(&err, &["may not be stored", "restart the hub", &dir_name]);
        // Committed before the fsync: subscribers had it (the documented trade-off).
        assert_eq!(next_stored(&mut live).await.data, "unconfirmed");

        let err = engine
            .append(vec![new_event(&["b"], "later")])
            .await
            .expect_err("no publish after a failed fsync");
        assert_engine_error(&err, &["not stored", "restart the hub"]);
        assert!(live.try_recv().is_err(), "nothing more on the live feed");
    }
    // A restart recovers what reached the disk (here all of it) and takes publishes again.
    let engine = DiskEngine::open(dir.path(), options(100)).expect("reopen");
    let after = append(&engine, &["b"], "after").await;
    assert!(after > kept);
    let all = engine
        .read_after(&filter(&["*"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&all), ["kept", "unconfirmed", "after"]);
}

#[test]
fn a_data_dir_that_is_a_file_or_holds_an_unwritable_database_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let message = DiskEngine::open(&file, options(10))
        .expect_err("a file")
        .to_string();
    assert!(message.contains("is a file, not a directory"), "{message}");

    // A database "file" that cannot be opened for writing (here a directory, since tests
    // may run as root, for whom permissions do not stop a write) stops the start, rather
    // than SQLite quietly opening it read-only and every publish failing.
    std::fs::create_dir(dir.path().join(store::DB_FILE)).expect("mkdir");
    let message = DiskEngine::open(dir.path(), options(10))
        .expect_err("not writable")
        .to_string();
    assert!(message.contains("cannot be written"), "{message}");
    assert!(message.contains(store::DB_FILE), "{message}");
}

#[test]
fn a_corrupt_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join(store::DB_FILE);
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&db, &garbage).expect("write");
    let err = DiskEngine::open(dir.path(), options(10)).expect_err("corrupt");
    assert_eq!(err.kind(), ErrorKind::Engine);
    let message = err.to_string();
    assert!(message.contains("corrupt"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(
        std::fs::read(&db).expect("read") == garbage,
        "file untouched"
    );
    assert!(!dir.path().join("tidings.sqlite3-wal").exists());
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join(store::DB_FILE);
    {
        let conn = Connection::open(&db).expect("sqlite");
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
            .expect("create");
    }
    let before = std::fs::read(&db).expect("read");
    let message = DiskEngine::open(dir.path(), options(10))
        .expect_err("foreign")
        .to_string();
    assert!(message.contains("not a Tidings database"), "{message}");
    assert!(
        std::fs::read(&db).expect("read") == before,
        "file untouched"
    );
}

#[test]
fn one_hub_per_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = DiskEngine::open(dir.path(), options(10)).expect("open");
    let message = DiskEngine::open(dir.path(), options(10))
        .expect_err("locked")
        .to_string();
    assert!(
        message.contains("in use by another tidings hub"),
        "{message}"
    );
    drop(engine);
    DiskEngine::open(dir.path(), options(10)).expect("free again once closed");
}
