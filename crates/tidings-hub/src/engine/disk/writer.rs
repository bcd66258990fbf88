//! The writer: the one thread that writes to the database.
//!
//! Every append waits in one queue. The writer takes the first request, then every
//! request already queued behind it (up to [`MAX_GROUP_EVENTS`] events or
//! [`MAX_GROUP_BYTES`] bytes), assigns ids in queue order, stores them all in **one**
//! transaction, and commits it. The commit writes the write-ahead log without fsyncing
//! it (`synchronous=NORMAL`); the writer then sends the events to the live feed, in id
//! order, fsyncs the log itself (one fsync for the whole group: group commit), and only
//! then answers every request in the group. So subscribers get an event as soon as it is
//! committed (readers see it at the same moment, so replay and live meet without a gap),
//! while a publisher hears back only once it is durable. While one group's fsync runs,
//! the next group queues up, so the more publishers wait, the more each commit carries.
//!
//! If the commit fails, the transaction is rolled back and every request in the group is
//! answered with the error: none of their events was stored, none reached the live feed,
//! and none is acknowledged. The writer then goes on with the next request; SQLite keeps
//! the database usable after a failed write (e.g. a full disk), so publishing works
//! again as soon as the disk can take writes.
//!
//! If the fsync fails, the disk may have lost part of the log, and Linux marks the lost
//! pages clean, so a later fsync would succeed over the hole (the "fsyncgate" lesson of
//! PostgreSQL). The group is answered with the error and the writer stops taking
//! appends: every later publish is refused, saying to check the disk and restart the
//! hub, whose start-up recovers exactly what reached the disk. Subscribers may have seen
//! the group's events; what was lost is never acknowledged.
//!
//! Retention runs on the same thread, between groups, every `trim_interval` (sooner while
//! a backlog remains), deleting at most `trim_batch` index entries per run so a publish
//! never waits behind a long trim.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use tidings::{EventId, IdGenerator};

use super::retention::{Limits, RetentionRules};
use super::store::{id_from_blob, write_error, Meta, WAL_FILE};
use super::{Clock, TrimReport};
use crate::engine::{LiveEvent, NewEvent, StoredEvent};
use crate::error::{Error, ErrorKind};
use crate::topics::Topic;

mod trim;

/// Most events one commit carries.
pub(super) const MAX_GROUP_EVENTS: usize = 8192;
/// Most bytes of event data one commit carries (one request is always taken whole).
pub(super) const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Pause between retention runs while a backlog remains.
const TRIM_BACKLOG_PAUSE: Duration = Duration::from_millis(20);

/// The answer to an append.
pub(super) type AppendReply = oneshot::Sender<Result<Vec<Arc<StoredEvent>>, Error>>;

/// What the engine asks of the writer.
pub(super) enum Request {
    /// Store these events (one publish request).
    Append {
        events: Vec<NewEvent>,
        reply: AppendReply,
    },
    /// Run one retention pass now.
    Retain {
        reply: oneshot::Sender<Result<TrimReport, Error>>,
    },
    /// Checkpoint the write-ahead log into the database file.
    Flush {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Run SQL on the write connection (tests inject failures this way).
    #[cfg(test)]
    Execute {
        sql: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Make the next fsync of the log fail, as a failing disk would (tests only): the
    /// log's handle becomes a pipe, on which fsync fails with `EINVAL`.
    #[cfg(test)]
    BreakSync { reply: oneshot::Sender<()> },
}

/// One topic as the writer tracks it (the `topics` row plus what retention needs).
#[derive(Debug, Clone)]
struct TopicState {
    tid: i64,
    last_id: Option<EventId>,
    published: u64,
    retained: u64,
    retained_bytes: u64,
    trimmed_through: EventId,
    /// The oldest retained id, for age retention.
    oldest: Option<EventId>,
    limits: Limits,
}

impl TopicState {
    fn over_limits(&self, now_ms: u64) -> bool {
        self.limits.exceeded(
            self.retained,
            self.retained_bytes,
            self.oldest.map(|o| o.ms),
            now_ms,
        )
    }
}

/// The writer thread's state. Only this thread writes to the database, so its copy of the
/// topics is the truth; it changes only after a commit succeeds.
pub(super) struct Writer {
    conn: Connection,
    dir: PathBuf,
    ids: IdGenerator,
    origin: EventId,
    trimmed_through: EventId,
    topics: HashMap<Topic, TopicState>,
    next_tid: i64,
    rules: RetentionRules,
    live: broadcast::Sender<LiveEvent>,
    head: Arc<Mutex<EventId>>,
    clock: Clock,
    trim_interval: Duration,
    trim_batch: usize,
    /// The write-ahead log, opened at the first fsync.
    wal: Option<File>,
    /// Set when an fsync of the log failed: no append is taken after it.
    failed_sync: Option<String>,
}

/// How the writer is set up.
pub(super) struct WriterConfig {
    pub(super) dir: PathBuf,
    pub(super) rules: RetentionRules,
    pub(super) live: broadcast::Sender<LiveEvent>,
    pub(super) head: Arc<Mutex<EventId>>,
    pub(super) clock: Clock,
    pub(super) trim_interval: Duration,
    pub(super) trim_batch: usize,
}

impl Writer {
    /// A writer over an open database: loads every topic (one seek each for its oldest
    /// retained id), which also proves the tables are readable.
    pub(super) fn new(
        conn: Connection,
        meta: Meta,
        config: WriterConfig,
    ) -> Result<Writer, rusqlite::Error> {
        let mut topics = HashMap::new();
        let mut next_tid = 1;
        {
            let mut rows = conn.prepare(
                "SELECT tid, name, last_id, published, retained, retained_bytes, trimmed_through FROM topics",
            )?;
            let mut oldest =
                conn.prepare("SELECT id FROM topic_events WHERE tid = ?1 ORDER BY id LIMIT 1")?;
            let mut rows = rows.query([])?;
            while let Some(row) = rows.next()? {
                let tid: i64 = row.get(0)?;
                let name: String = row.get(1)?;
                let topic = Topic::new(&name).map_err(|_| corrupt("a topic name"))?;
                let last_id: Option<Vec<u8>> = row.get(2)?;
                let trimmed: Vec<u8> = row.get(6)?;
                let oldest_id: Option<Vec<u8>> =
                    oldest.query_row([tid], |r| r.get(0)).optional()?;
                let state = TopicState {
                    tid,
                    last_id: last_id.as_deref().and_then(id_from_blob),
                    published: row.get::<_, i64>(3)?.max(0) as u64,
                    retained: row.get::<_, i64>(4)?.max(0) as u64,
                    retained_bytes: row.get::<_, i64>(5)?.max(0) as u64,
                    trimmed_through: id_from_blob(&trimmed).ok_or_else(|| corrupt("a topic"))?,
                    oldest: oldest_id.as_deref().and_then(id_from_blob),
                    limits: config.rules.for_topic(&topic),
                };
                next_tid = next_tid.max(tid + 1);
                topics.insert(topic, state);
            }
        }
        *lock(&config.head) = meta.last_id;
        Ok(Writer {
            conn,
            dir: config.dir,
            ids: IdGenerator::after(meta.last_id),
            origin: meta.origin,
            trimmed_through: meta.trimmed_through,
            topics,
            next_tid,
            rules: config.rules,
            live: config.live,
            head: config.head,
            clock: config.clock,
            trim_interval: config.trim_interval,
            trim_batch: config.trim_batch.max(1),
            wal: None,
            failed_sync: None,
        })
    }

    /// How many topics the database holds.
    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Serves requests until every sender is gone.
    pub(super) fn run(mut self, requests: Receiver<Request>) {
        let mut next_trim = Instant::now() + self.trim_interval;
        let mut held: Option<Request> = None;
        loop {
            let request = match held.take() {
                Some(request) => request,
                None => {
                    let wait = next_trim.saturating_duration_since(Instant::now());
                    match requests.recv_timeout(wait) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout) => {
                            next_trim = self.scheduled_trim();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match request {
                Request::Append { events, reply } => {
                    let mut group = vec![(events, reply)];
                    let (mut count, mut bytes) = (0, 0);
                    let mut measure = |events: &[NewEvent]| {
                        count += events.len();
                        bytes += events.iter().map(|e| e.data.len()).sum::<usize>();
                        count < MAX_GROUP_EVENTS && bytes < MAX_GROUP_BYTES
                    };
                    let mut room = measure(&group[0].0);
                    while room {
                        match requests.try_recv() {
                            Ok(Request::Append { events, reply }) => {
                                room = measure(&events);
                                group.push((events, reply));
                            }
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                        }
                    }
                    self.commit_group(group);
                }
                Request::Retain { reply } => {
                    let _ = reply.send(self.trim());
                }
                Request::Flush { reply } => {
                    let result = self
                        .conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .map_err(|e| write_error(&self.dir, e));
                    let _ = reply.send(result);
                }
                #[cfg(test)]
                Request::Execute { sql, reply } => {
                    let result = self
                        .conn
                        .execute_batch(&sql)
                        .map_err(|e| write_error(&self.dir, e));
                    let _ = reply.send(result);
                }
                #[cfg(test)]
                Request::BreakSync { reply } => {
                    let (_, pipe) = std::io::pipe().expect("a pipe");
                    self.wal = Some(File::from(std::os::fd::OwnedFd::from(pipe)));
                    let _ = reply.send(());
                }
            }
            if Instant::now() >= next_trim {
                next_trim = self.scheduled_trim();
            }
        }
    }

    /// Runs a retention pass on schedule and says when the next one is due.
    fn scheduled_trim(&mut self) -> Instant {
        match self.trim() {
            Ok(report) if !report.finished => Instant::now() + TRIM_BACKLOG_PAUSE,
            Ok(_) => Instant::now() + self.trim_interval,
            Err(err) => {
                tracing::warn!(error = %err, "retention pass failed; trying again later");
                Instant::now() + self.trim_interval
            }
        }
    }

    /// Stores a group of appends in one transaction, feeds them live, makes them durable
    /// and answers them.
    fn commit_group(&mut self, group: Vec<(Vec<NewEvent>, AppendReply)>) {
        let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        if let Some(why) = &self.failed_sync {
            let err = Error::new(
                ErrorKind::Engine,
                format!("the event was not stored, so it was not published: {why}"),
            );
            return answer_all(replies, err);
        }
        let stored = match self.append(batches) {
            Ok(stored) => stored,
            Err(err) => {
                let err = write_error(&self.dir, err);
                tracing::error!(error = %err, requests = replies.len(), "append failed; nothing in this group was stored");
                return answer_all(replies, err);
            }
        };
        if let Some(last) = stored.iter().rev().find_map(|s| s.last()) {
            *lock(&self.head) = last.id;
        }
        // After the commit, in id order. No receiver is not an error.
        for event in stored.iter().flatten() {
            let _ = self.live.send(LiveEvent::Stored(Arc::clone(event)));
        }
        if let Err(err) = self.sync_log() {
            let why = format!(
                "the disk holding the data dir {} failed to confirm a write ({err}), so the newest events may be lost; no publish is taken any more: check the disk, then restart the hub",
                self.dir.display()
            );
            tracing::error!(requests = replies.len(), "{why}");
            let err = Error::with_source(
                ErrorKind::Engine,
                format!("the event may not be stored: {why}"),
                err,
            );
            self.failed_sync = Some(why);
            return answer_all(replies, err);
        }
        for (events, reply) in stored.into_iter().zip(replies) {
            let _ = reply.send(Ok(events));
        }
    }

    /// Fsyncs the write-ahead log: every commit so far is durable once this returns.
    fn sync_log(&mut self) -> std::io::Result<()> {
        let wal = match &mut self.wal {
            Some(wal) => wal,
            // Not created here: SQLite made it with the first commit.
            empty @ None => empty.insert(
                OpenOptions::new()
                    .write(true)
                    .open(self.dir.join(WAL_FILE))?,
            ),
        };
        wal.sync_data()
    }

    /// The group commit itself. On error nothing is stored and the writer's state is as
    /// before (ids already handed out are not reused).
    fn append(
        &mut self,
        batches: Vec<Vec<NewEvent>>,
    ) -> Result<Vec<Vec<Arc<StoredEvent>>>, rusqlite::Error> {
        let now = (self.clock)();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changed: HashMap<Topic, TopicState> = HashMap::new();
        let mut next_tid = self.next_tid;
        let mut out = Vec::with_capacity(batches.len());
        let mut last = None;
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events (id, topics, event_type, data, retry_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut insert_index =
                tx.prepare_cached("INSERT INTO topic_events (tid, id, size) VALUES (?1, ?2, ?3)")?;
            for events in batches {
                let mut stored = Vec::with_capacity(events.len());
                for mut event in events {
                    dedup_topics(&mut event.topics);
                    let id = self.ids.next_at(now);
                    let event = StoredEvent::new(id, event);
                    let topics_text = join_topics(&event.topics);
                    let size = 24
                        + event.data.len()
                        + event.event_type.as_ref().map_or(0, String::len)
                        + topics_text.len();
                    let key = id.to_be_bytes();
                    let retry_ms = event
                        .retry
                        .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX));
                    insert_event.execute(params![
                        &key[..],
                        topics_text,
                        event.event_type,
                        event.data,
                        retry_ms
                    ])?;
                    for topic in &event.topics {
                        let state = match changed.entry(topic.clone()) {
                            Entry::Occupied(o) => o.into_mut(),
                            Entry::Vacant(v) => {
                                let state = self.topics.get(topic).cloned().unwrap_or_else(|| {
                                    next_tid += 1;
                                    TopicState {
                                        tid: next_tid - 1,
                                        last_id: None,
                                        published: 0,
                                        retained: 0,
                                        retained_bytes: 0,
                                        trimmed_through: self.origin,
                                        oldest: None,
                                        limits: self.rules.for_topic(topic),
                                    }
                                });
                                v.insert(state)
                            }
                        };
                        insert_index.execute(params![state.tid, &key[..], size as i64])?;
                        state.last_id = Some(id);
                        state.published += 1;
                        state.retained += 1;
                        state.retained_bytes += size as u64;
                        state.oldest.get_or_insert(id);
                    }
                    last = Some(id);
                    stored.push(Arc::new(event));
                }
                out.push(stored);
            }
            let mut upsert = tx.prepare_cached(UPSERT_TOPIC)?;
            for (topic, state) in &changed {
                upsert_topic(&mut upsert, topic, state)?;
            }
            if let Some(last) = last {
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_id'")?
                    .execute([&last.to_be_bytes()[..]])?;
            }
        }
        tx.commit()?;
        self.topics.extend(changed);
        self.next_tid = next_tid;
        Ok(out)
    }
}

const UPSERT_TOPIC: &str =
    "INSERT INTO topics (tid, name, last_id, published, retained, retained_bytes, trimmed_through)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (tid) DO UPDATE SET last_id = excluded.last_id, published = excluded.published,
        retained = excluded.retained, retained_bytes = excluded.retained_bytes,
        trimmed_through = excluded.trimmed_through";

fn upsert_topic(
    statement: &mut rusqlite::CachedStatement<'_>,
    topic: &Topic,
    state: &TopicState,
) -> rusqlite::Result<()> {
    statement.execute(params![
        state.tid,
        topic.as_str(),
        state.last_id.map(|id| id.to_be_bytes().to_vec()),
        i64::try_from(state.published).unwrap_or(i64::MAX),
        i64::try_from(state.retained).unwrap_or(i64::MAX),
        i64::try_from(state.retained_bytes).unwrap_or(i64::MAX),
        &state.trimmed_through.to_be_bytes()[..],
    ])?;
    Ok(())
}

/// Answers every request of a group with `err` (the first gets it whole, with its source).
fn answer_all(replies: Vec<AppendReply>, err: Error) {
    let message = err.to_string();
    let mut first = Some(err);
    for reply in replies {
        let err = first
            .take()
            .unwrap_or_else(|| Error::new(ErrorKind::Engine, message.clone()));
        let _ = reply.send(Err(err));
    }
}

/// Topic names joined by `\n` (which no topic contains).
fn join_topics(topics: &[Topic]) -> String {
    let mut text = String::with_capacity(topics.iter().map(|t| t.as_str().len() + 1).sum());
    for (i, topic) in topics.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(topic.as_str());
    }
    text
}

/// Drops repeated topics, keeping the first of each (the publish path already does; an
/// engine caller might not, and a repeat would fail the whole group on the primary key).
fn dedup_topics(topics: &mut Vec<Topic>) {
    let mut seen = std::collections::HashSet::with_capacity(topics.len());
    topics.retain(|t| seen.insert(t.clone()));
}

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!("{what} in the database is not valid")),
    )
}

/// The head lock guards one id; a panic cannot leave it half-written.
pub(super) fn lock(head: &Mutex<EventId>) -> std::sync::MutexGuard<'_, EventId> {
    head.lock().unwrap_or_else(|p| p.into_inner())
}
