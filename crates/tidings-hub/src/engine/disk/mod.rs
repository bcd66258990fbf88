//! The disk engine: durable history in an embedded SQLite database in a data dir.
//!
//! - **Acknowledged means durable.** [`Engine::append`] returns only after the events are
//!   committed in write-ahead-log mode and the log is fsynced, so a crash (even `kill -9`
//!   or a power cut, given a disk that honours fsync) after the answer loses nothing.
//! - **Delivery does not wait for the disk.** The live feed gets the events as soon as
//!   the commit returns, while the log's fsync runs; only the publisher waits for it (see
//!   `writer.rs`, also for what a failed fsync does).
//! - **Group commit.** One writer thread takes every append queued while the previous
//!   commit was running and stores them in one transaction, so many concurrent publishers
//!   share each fsync (see `writer.rs`). Ids are assigned in commit order and the live feed
//!   gets the events after the commit, in id order.
//! - **Seeks, not scans.** Events are keyed by [`EventId::to_be_bytes`] (byte order is id
//!   order), with a per-topic index on `(topic, id)`: a resume point is a B-tree seek,
//!   whether 10 thousand or 10 million events are stored. Patterns merge the matching
//!   topics' indexes, so a read costs what it returns plus one seek per matching topic.
//! - **Ids survive restarts.** The newest id is read at open and ids continue after it
//!   ([`tidings::IdGenerator::after`]), even if the wall clock went back.
//! - **Retention** per topic by count, bytes and age ([`RetentionRules`]), trimmed by the
//!   writer every `trim_interval`, at most `trim_batch` entries per run. A read reports
//!   what was trimmed ([`ReadBatch::complete_after`]) from the same snapshot it read
//!   events from, so a resume point that was trimmed gets a gap event.
//! - **Failures.** When the disk cannot take a write (full, read-only, I/O error) the
//!   append fails with [`crate::ErrorKind::Engine`] (the HTTP API answers 503
//!   problem+json): nothing of the failed group is stored or acknowledged, subscribers
//!   keep their streams, and publishing works again once the disk does. A data dir that
//!   cannot be opened, is locked by another hub, or holds a corrupt or foreign database
//!   stops [`DiskEngine::open`] with a message naming the path and what to do; nothing in
//!   it is ever deleted or rewritten to "repair" it.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tidings::EventId;
//! use tidings_hub::engine::{DiskEngine, DiskOptions, Engine, NewEvent};
//! use tidings_hub::topics::{Topic, TopicFilter};
//!
//! let dir = tempfile::tempdir().expect("temp dir");
//! let stored = {
//!     let engine = DiskEngine::open(dir.path(), DiskOptions::default())?;
//!     engine
//!         .append(vec![NewEvent {
//!             topics: vec![Topic::new("orders")?],
//!             event_type: None,
//!             data: "order 1 shipped".into(),
//!             retry: None,
//!         }])
//!         .await?
//! }; // dropped: closed
//!
//! // Opened again, it still has the event, and new ids come after it.
//! let engine = DiskEngine::open(dir.path(), DiskOptions::default())?;
//! assert_eq!(engine.head().await?, stored[0].id);
//! let batch = engine.read_after(&TopicFilter::parse(["orders"])?, EventId::ZERO, 10).await?;
//! assert_eq!(batch.events[0].data, "order 1 shipped");
//! # Ok::<(), tidings_hub::Error>(())
//! # }).unwrap();
//! ```

mod read;
mod retention;
mod store;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use tidings::EventId;

use super::{Engine, LiveEvent, NewEvent, ReadBatch, StoredEvent, TopicInfo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind};
use crate::topics::TopicFilter;
use store::DataDir;
use writer::{Request, Writer, WriterConfig};

pub use retention::{Limits, RetentionOverride, RetentionRules};

/// How many stored events the live feed holds for a slow fan-out before it lags (and the
/// fan-out catches up from history).
const LIVE_FEED_CAPACITY: usize = 16_384;
/// Read connections; each read takes one for its snapshot.
const READERS: usize = 4;
/// Default time between retention runs.
pub const DEFAULT_TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Default most index entries one retention run deletes.
pub const DEFAULT_TRIM_BATCH: usize = 10_000;

/// Milliseconds since the Unix epoch.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How a [`DiskEngine`] keeps history.
#[derive(Clone)]
pub struct DiskOptions {
    /// Per-topic limits.
    pub retention: RetentionRules,
    /// Time between retention runs (a run also follows sooner while a backlog remains).
    pub trim_interval: Duration,
    /// Most index entries (one per topic an event is in) deleted per retention run, so a
    /// publish never waits long behind a trim.
    pub trim_batch: usize,
    clock: Clock,
}

impl std::fmt::Debug for DiskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskOptions")
            .field("retention", &self.retention)
            .field("trim_interval", &self.trim_interval)
            .field("trim_batch", &self.trim_batch)
            .finish_non_exhaustive()
    }
}

impl Default for DiskOptions {
    /// The hub's default history (the newest 1000 events per topic, at most one hour old),
    /// trimmed every second.
    fn default() -> DiskOptions {
        DiskOptions::new(RetentionRules::global(Limits {
            max_events: super::DEFAULT_MAX_EVENTS_PER_TOPIC as u64,
            max_bytes: None,
            max_age: Some(super::DEFAULT_MAX_AGE),
        }))
    }
}

impl DiskOptions {
    /// Options with these retention rules and the default trimming schedule.
    pub fn new(retention: RetentionRules) -> DiskOptions {
        DiskOptions {
            retention,
            trim_interval: DEFAULT_TRIM_INTERVAL,
            trim_batch: DEFAULT_TRIM_BATCH,
            clock: Arc::new(wall_clock_ms),
        }
    }

    /// Options from the hub's settings: `history_max_events`, `history_max_bytes` and
    /// `history_max_age` as the global limits, `[retention."<pattern>"]` tables as
    /// overrides.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when a retention table is invalid.
    pub fn from_settings(settings: &Settings) -> Result<DiskOptions, Error> {
        let global = Limits {
            max_events: settings.history_max_events as u64,
            max_bytes: settings.history_max_bytes,
            max_age: settings.history_max_age,
        };
        let rules = RetentionRules::new(global, settings.retention.iter())?;
        Ok(DiskOptions::new(rules))
    }

    /// As these options with a clock giving milliseconds since the Unix epoch (for tests
    /// of age-based retention; ids are taken from it too).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> DiskOptions {
        self.clock = clock;
        self
    }
}

/// What one retention run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Index entries deleted (one per topic an event was trimmed from).
    pub deleted: u64,
    /// Events deleted because no topic holds them any more.
    pub events_removed: u64,
    /// Whether every topic is within its limits now (`false`: the run stopped at its
    /// budget and another follows shortly).
    pub finished: bool,
}

/// Events stored in SQLite in a data dir (group commit, seeks by id; see `ENGINES.md`).
pub struct DiskEngine {
    shared: Arc<Shared>,
    /// `None` only while dropping (closing it stops the writer).
    requests: Option<mpsc::Sender<Request>>,
    live: broadcast::Sender<LiveEvent>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What reads share with the engine.
struct Shared {
    dir: DataDir,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    origin: EventId,
    head: Arc<Mutex<EventId>>,
}

impl Shared {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        // A panic mid-read leaves the connection usable: the next read opens a new
        // transaction (an unfinished one is rolled back when the next begins).
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for DiskEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskEngine")
            .field("data_dir", &self.shared.dir.path())
            .finish_non_exhaustive()
    }
}

impl DiskEngine {
    /// Opens the data dir at `path`, creating it (and an empty database) on first use.
    ///
    /// Blocks while it opens the database and loads the topics (one seek per topic).
    ///
    /// # Errors
    /// [`ErrorKind::Engine`] with a message naming the path and what to do when the dir
    /// cannot be created or written, another hub holds it, or its database is corrupt, of
    /// another program, or of a newer format. The dir is left as it was.
    pub fn open(path: impl AsRef<Path>, options: DiskOptions) -> Result<DiskEngine, Error> {
        let path = path.as_ref();
        let dir = DataDir::lock(path)?;
        let (conn, meta) = store::open_writer(&dir, (options.clock)())?;
        let readers = (0..READERS)
            .map(|_| store::open_reader(&dir).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (live, _) = broadcast::channel(LIVE_FEED_CAPACITY);
        let head = Arc::new(Mutex::new(meta.last_id));
        let writer = Writer::new(
            conn,
            meta,
            WriterConfig {
                dir: path.to_owned(),
                rules: options.retention,
                live: live.clone(),
                head: Arc::clone(&head),
                clock: options.clock,
                trim_interval: options.trim_interval,
                trim_batch: options.trim_batch,
            },
        )
        .map_err(|e| store::sql_open_error(path, &dir.db_path(), e))?;
        let topics = writer.topic_count();
        let (requests, receiver) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tidings-disk-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| {
                Error::with_source(ErrorKind::Engine, "cannot start the disk writer thread", e)
            })?;
        tracing::info!(data_dir = %path.display(), topics, head = %meta.last_id, "disk engine open");
        Ok(DiskEngine {
            shared: Arc::new(Shared {
                dir,
                readers,
                next_reader: AtomicUsize::new(0),
                origin: meta.origin,
                head,
            }),
            requests: Some(requests),
            live,
            writer: Some(handle),
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.shared.dir.path()
    }

    /// Runs one retention run now (the writer also runs them on its own schedule).
    ///
    /// # Errors
    /// [`ErrorKind::Engine`] when the run could not be written; then nothing was trimmed.
    pub async fn run_retention(&self) -> Result<TrimReport, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Retain { reply })?;
        answer.await.map_err(|_| writer_stopped())?
    }

    fn send(&self, request: Request) -> Result<(), Error> {
        self.requests
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(request)
            .map_err(|_| writer_stopped())
    }

    /// Runs `f` with a read connection on the blocking pool.
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Shared) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.reader();
            f(&mut conn, &shared)
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Engine, "a history read did not finish", e))?
    }

    /// Runs SQL on the write connection (tests use it to make writes fail).
    #[cfg(test)]
    async fn execute(&self, sql: &str) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Execute {
            sql: sql.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Makes the writer's next fsync of the log fail (tests only).
    #[cfg(test)]
    async fn break_sync(&self) {
        let (reply, answer) = oneshot::channel();
        self.send(Request::BreakSync { reply })
            .expect("writer runs");
        answer.await.expect("writer answers");
    }
}

impl Drop for DiskEngine {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the request it is on; joining it means
        // the database is closed and the lock can be taken again when this returns.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[async_trait]
impl Engine for DiskEngine {
    fn name(&self) -> &'static str {
        "disk"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append { events, reply })?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error> {
        let filter = filter.clone();
        self.with_reader(move |conn, shared| {
            read::read_after(
                conn,
                shared.dir.path(),
                shared.origin,
                &filter,
                after,
                limit,
            )
        })
        .await
    }

    async fn head(&self) -> Result<EventId, Error> {
        Ok(*writer::lock(&self.shared.head))
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>, Error> {
        self.with_reader(|conn, shared| read::topics(conn, shared.dir.path()))
            .await
    }

    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    async fn ready(&self) -> Result<(), Error> {
        match &self.writer {
            Some(writer) if !writer.is_finished() => Ok(()),
            _ => Err(writer_stopped()),
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Flush { reply })?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

fn writer_stopped() -> Error {
    Error::new(
        ErrorKind::Engine,
        "the disk engine's writer has stopped, so nothing can be stored; see the log for why, and restart the hub",
    )
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
