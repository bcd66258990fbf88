//! Disk engine benchmarks: acknowledged (fsynced) publishes per second under concurrent
//! publishers, and the time to replay from a resume point as the store grows. The HTTP
//! set also runs the Redis engine, against a `redis-server` the bench starts with
//! `appendfsync always` in a temporary directory (so its acknowledged publishes are
//! fsynced too), when `redis-server` is installed.
//!
//! ```text
//! cargo bench -p tidings-hub --bench disk                 # everything (~4 minutes)
//! cargo bench -p tidings-hub --bench disk -- publish      # engine API only
//! cargo bench -p tidings-hub --bench disk -- http         # through POST /publish
//! cargo bench -p tidings-hub --bench disk -- replay       # 10k / 100k / 1M stored
//! ```
//!
//! Data goes to a temporary directory under `TMPDIR` (default `/tmp`): put it on the disk
//! you want to measure (a tmpfs makes fsync free and the numbers meaningless). Results and
//! the machine they were taken on are in `crates/tidings-hub/ENGINES.md`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use tidings::EventId;
use tidings_hub::config::EngineKind;
use tidings_hub::engine::{DiskEngine, DiskOptions, Engine, Limits, NewEvent, RetentionRules};
use tidings_hub::topics::{Topic, TopicFilter};
use tidings_hub::{Server, Settings};

const PUBLISHERS: usize = 16;
const RUNS: usize = 5;
const RUN_TIME: Duration = Duration::from_secs(3);
/// 64 bytes of data per event.
const DATA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "disk engine bench: {} cores, data in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::temp_dir().display()
    );
    fsync_probe();
    runtime.block_on(async {
        if wanted("publish") {
            publish_engine().await;
        }
        if wanted("http") {
            publish_http().await;
        }
        if wanted("replay") {
            replay().await;
        }
    });
}

/// What one fsync costs on this disk right now: every acknowledged publish waits for at
/// least one, so it bounds what any durable engine can do per commit.
fn fsync_probe() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    file.write_all(&vec![0u8; 1 << 20]).expect("write");
    file.sync_all().expect("fsync");
    let mut times = Vec::new();
    for i in 0..200u64 {
        file.seek(SeekFrom::Start((i % 256) * 4096)).expect("seek");
        file.write_all(&[i as u8; 4096]).expect("write");
        let started = Instant::now();
        file.sync_data().expect("fdatasync");
        times.push(started.elapsed());
    }
    println!(
        "fdatasync of a 4 KiB overwrite: median {:.0?}, p90 {:.0?} (200 samples)",
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.9)
    );
}

fn event(topic: &Topic) -> NewEvent {
    NewEvent {
        topics: vec![topic.clone()],
        event_type: None,
        data: DATA.to_owned(),
        retry: None,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or_default()
}

/// 16 publishers, each keeping `window` appends of `batch` events in flight, for
/// `RUN_TIME`; the hub's default retention (1000 events per topic) trims as they go.
async fn publish_engine() {
    println!("\n## acknowledged publishes/s, engine API, {PUBLISHERS} publishers, 64-byte events, median of {RUNS} x {RUN_TIME:?}");
    println!("| in flight per publisher | events per append | events/s (median) | runs | append latency p50 / p99 |");
    println!("|---|---|---|---|---|");
    for (window, batch) in [(1, 1), (4, 1), (16, 1), (64, 1), (1, 16)] {
        let mut rates = Vec::new();
        let mut latencies = Vec::new();
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().expect("temp dir");
            let engine =
                Arc::new(DiskEngine::open(dir.path(), DiskOptions::default()).expect("open"));
            let (count, mut lat) = drive_engine(&engine, window, batch).await;
            rates.push(count as f64 / RUN_TIME.as_secs_f64());
            latencies.append(&mut lat);
        }
        let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {window} | {batch} | {:.0} | {} | {:.1?} / {:.1?} |",
            median(&mut rates.clone()),
            runs.join(", "),
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
    }
}

async fn drive_engine(
    engine: &Arc<DiskEngine>,
    window: usize,
    batch: usize,
) -> (u64, Vec<Duration>) {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let engine = Arc::clone(engine);
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let topic = Topic::new(&format!("bench/{p}")).expect("topic");
            let engine: &DiskEngine = &engine;
            let mut latencies = Vec::new();
            let mut in_flight = FuturesUnordered::new();
            let append = |topic: &Topic| {
                let events = (0..batch).map(|_| event(topic)).collect();
                let started = Instant::now();
                async move { (engine.append(events).await, started.elapsed()) }
            };
            for _ in 0..window {
                in_flight.push(append(&topic));
            }
            while let Some((result, latency)) = in_flight.next().await {
                let stored = result.expect("append");
                acked.fetch_add(stored.len() as u64, Ordering::Relaxed);
                latencies.push(latency);
                if !stop.load(Ordering::Relaxed) {
                    in_flight.push(append(&topic));
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(RUN_TIME).await;
    let count = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("publisher"));
    }
    (count, latencies)
}

/// 16 publishers through `POST /publish` on keep-alive HTTP/1.1 connections (one request
/// in flight per connection), client and hub in one process on the same cores.
async fn publish_http() {
    println!("\n## acknowledged publishes/s, HTTP POST /publish (JSON), {PUBLISHERS} publishers, 64-byte events, median of {RUNS} x {RUN_TIME:?}");
    println!(
        "| engine | connections per publisher | events per request | events/s (median) | runs | request latency p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|");
    let redis = DurableRedis::start();
    let mut cases = vec![
        (EngineKind::Memory, 1, 1),
        (EngineKind::Disk, 1, 1),
        (EngineKind::Memory, 4, 1),
        (EngineKind::Disk, 4, 1),
        (EngineKind::Disk, 16, 1),
        (EngineKind::Disk, 1, 16),
    ];
    if redis.is_some() {
        cases.extend([
            (EngineKind::Redis, 1, 1),
            (EngineKind::Redis, 4, 1),
            (EngineKind::Redis, 1, 16),
        ]);
    }
    let mut run_number = 0;
    for (engine, connections, batch) in cases {
        let mut rates = Vec::new();
        let mut latencies = Vec::new();
        for _ in 0..RUNS {
            run_number += 1;
            let dir = tempfile::tempdir().expect("temp dir");
            let settings = Settings {
                listen: ([127, 0, 0, 1], 0).into(),
                engine,
                data_dir: dir.path().to_owned(),
                redis_url: redis.as_ref().map_or_else(String::new, DurableRedis::url),
                redis_prefix: format!("bench{run_number}:"),
                ..Settings::default()
            };
            let server = Server::bind(settings).await.expect("hub");
            let addr = server.local_addr();
            let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(server.run_until(async {
                let _ = stopped.await;
            }));
            let (count, mut lat) = drive_http(addr, connections, batch).await;
            rates.push(count as f64 / RUN_TIME.as_secs_f64());
            latencies.append(&mut lat);
            let _ = stop_server.send(());
            let _ = serving.await;
        }
        let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {engine:?} | {connections} | {batch} | {:.0} | {} | {:.1?} / {:.1?} |",
            median(&mut rates.clone()),
            runs.join(", "),
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99)
        );
    }
}

/// A `redis-server` with `appendonly yes` and `appendfsync always` in a temporary
/// directory, on a free loopback port; ended (by its pid) when dropped.
struct DurableRedis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl DurableRedis {
    fn start() -> Option<DurableRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let Ok(child) = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            println!("(redis-server is not installed: no Redis engine rows; apt-get install redis-server)");
            return None;
        };
        let redis = DurableRedis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn drive_http(addr: SocketAddr, connections: usize, batch: usize) -> (u64, Vec<Duration>) {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS * connections {
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let one = format!(
                "{{\"topic\":\"bench/{}\",\"data\":\"{DATA}\"}}",
                p % PUBLISHERS
            );
            // A batch is a JSON array: one request, one commit, `batch` events.
            let body = if batch == 1 {
                one
            } else {
                format!("[{}]", vec![one; batch].join(","))
            };
            let request = format!(
                "POST /publish HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut stream = BufReader::new(stream);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                stream
                    .get_mut()
                    .write_all(request.as_bytes())
                    .await
                    .expect("write");
                let status = read_response(&mut stream).await;
                assert_eq!(status, 200);
                latencies.push(started.elapsed());
                acked.fetch_add(batch as u64, Ordering::Relaxed);
            }
            latencies
        }));
    }
    tokio::time::sleep(RUN_TIME).await;
    let count = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("publisher"));
    }
    (count, latencies)
}

/// Reads one response with a `content-length` body; returns its status.
async fn read_response(stream: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await.expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("body");
    status
}

/// Replay from a resume point 1,000 events back, with 10 thousand, 100 thousand and
/// 1 million events stored (10 topics, round-robin), one store grown in steps.
async fn replay() {
    const TOPICS: usize = 10;
    const ITERATIONS: usize = 200;
    println!("\n## replay 1,000 events from a resume point (read_after, limit 1000), {TOPICS} topics round-robin, median / p90 of {ITERATIONS} reads");
    println!("| events stored | `*` (global log) | one topic (its index) | `room/*` ({TOPICS} topics merged) | data dir size |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = DiskOptions::new(RetentionRules::global(Limits {
        max_events: u64::MAX,
        max_bytes: None,
        max_age: None,
    }));
    options.trim_interval = Duration::from_secs(3600);
    let engine = DiskEngine::open(dir.path(), options).expect("open");
    let topics: Vec<Topic> = (0..TOPICS)
        .map(|t| Topic::new(&format!("room/{t}")).expect("topic"))
        .collect();
    let mut ids: Vec<EventId> = Vec::new();
    let fill_started = Instant::now();
    for target in [10_000usize, 100_000, 1_000_000] {
        while ids.len() < target {
            let n = (target - ids.len()).min(8192);
            let events = (ids.len()..ids.len() + n)
                .map(|i| event(&topics[i % TOPICS]))
                .collect();
            ids.extend(
                engine
                    .append(events)
                    .await
                    .expect("fill")
                    .iter()
                    .map(|e| e.id),
            );
        }
        let all = TopicFilter::all();
        let one = TopicFilter::parse(["room/7"]).expect("filter");
        let pattern = TopicFilter::parse(["room/*"]).expect("filter");
        // 1,000 events back: globally, and within room/7 (10,000 back globally).
        let global_point = ids[target - 1001];
        // At 10,000 stored, room/7 holds exactly 1,000: read it from its start.
        let topic_point = (target - 3)
            .checked_sub(1000 * TOPICS)
            .map_or(EventId::ZERO, |i| ids[i]);
        let global = time_reads(&engine, &all, global_point, ITERATIONS).await;
        let topic = time_reads(&engine, &one, topic_point, ITERATIONS).await;
        let merged = time_reads(&engine, &pattern, global_point, ITERATIONS).await;
        let size: u64 = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "| {target} | {} | {} | {} | {} MB |",
            global,
            topic,
            merged,
            size / 1_000_000
        );
    }
    println!(
        "(filled 1,000,000 events in {:.1?}, 8192 per append)",
        fill_started.elapsed()
    );
}

/// Reads 1,000 events after `after` `iterations` times; "median / p90".
async fn time_reads(
    engine: &DiskEngine,
    filter: &TopicFilter,
    after: EventId,
    iterations: usize,
) -> String {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let batch = engine.read_after(filter, after, 1000).await.expect("read");
        times.push(started.elapsed());
        assert_eq!(
            batch.events.len(),
            1000,
            "1,000 events after the resume point"
        );
    }
    format!(
        "{} µs / {} µs",
        percentile(&mut times, 0.5).as_micros(),
        percentile(&mut times, 0.9).as_micros()
    )
}
