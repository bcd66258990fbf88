//! Engines: where the hub stores events and where live events come from.
//!
//! An [`Engine`] assigns ordered ids ([`EventId`], one id space for all topics), stores
//! events durably before [`Engine::append`] returns, reads them back after an id for any
//! set of topics and patterns, says what it no longer holds (so a resume can report a gap
//! instead of silently skipping events), and feeds every stored event, in id order, to the
//! hub's fan-out through [`Engine::subscribe_live`].
//!
//! The hub chooses its engine at run time as an `Arc<dyn Engine>`; this crate ships
//! [`MemoryEngine`], [`DiskEngine`] (durable, in a data dir) and [`RedisEngine`] (shared by
//! several hubs through one Redis server).
//!
//! # Where live events come from
//!
//! The fan-out does **not** deliver what the publish handler just appended. It delivers
//! what the engine's live feed says was stored. For the memory engine the feed is filled
//! by `append` itself, under the lock that assigns ids; for the disk engine, by its one
//! writer after each commit; for the Redis engine, by a task that tails a stream in Redis,
//! so an event published on another hub reaches this hub's subscribers through the same
//! path as a local one. Each feed is in id order. Either way the feed may lag behind: when a
//! receiver reports [`broadcast::error::RecvError::Lagged`], or the feed itself says it
//! skipped events ([`LiveEvent::Skipped`]: the Redis engine's tail found a hole in the
//! shared log), the fan-out catches up by calling [`Engine::read_after`] from the last id
//! it delivered, so the feed is a prompt, the storage is the truth, and nothing is
//! silently dropped: what the storage no longer holds either ends every stream, and each
//! client's resume reports the gap.
//!
//! # The contract a resume relies on
//!
//! 1. `append` returns only after the events are stored, and an event appears on the live
//!    feed only after it is stored.
//! 2. The live feed carries every stored event once, in id order, or says where it
//!    skipped some ([`LiveEvent::Skipped`]).
//! 3. Reads are prefix-consistent: if `read_after` returns an event with id `x`, it also
//!    returns (or has already trimmed, and says so in [`ReadBatch::complete_after`]) every
//!    matching event with an id below `x` that is after the requested id.
//!
//! With these, the hub's subscribe path (register for live events, then read history, then
//! hand over; see [`crate::fanout`]) delivers every event exactly once, in order.

mod disk;
mod memory;
mod redis;
#[cfg(test)]
mod test_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;

use tidings::{Event, EventId};

use crate::error::Error;
use crate::topics::{Topic, TopicFilter};

pub use disk::{
    DiskEngine, DiskOptions, Limits, RetentionOverride, RetentionRules, TrimReport,
    DEFAULT_TRIM_BATCH, DEFAULT_TRIM_INTERVAL,
};
pub use memory::{MemoryEngine, DEFAULT_MAX_AGE, DEFAULT_MAX_EVENTS_PER_TOPIC};
pub use redis::{RedisEngine, RedisOptions, DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_URL};

/// What an engine's live feed carries.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// An event just stored; events come in id order.
    Stored(Arc<StoredEvent>),
    /// Stored events were skipped after the last one the feed carried (and before the
    /// next): read them from the engine, as after a lag.
    Skipped,
}

impl LiveEvent {
    /// The stored event, or `None` for [`LiveEvent::Skipped`].
    pub fn stored(&self) -> Option<&Arc<StoredEvent>> {
        match self {
            LiveEvent::Stored(event) => Some(event),
            LiveEvent::Skipped => None,
        }
    }
}

/// An event to store: what a publisher sent, validated, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The topics it is published to (one or more, no duplicates).
    pub topics: Vec<Topic>,
    /// The event type (`event:` field), `None` for the default `message`.
    pub event_type: Option<String>,
    /// The data (`data:` field; may span lines).
    pub data: String,
    /// A reconnection time to announce with it (`retry:` field).
    pub retry: Option<Duration>,
}

/// An event as stored: its id, its topics and fields, and its wire bytes (encoded once,
/// on first use, then shared by every connection it goes to).
#[derive(Debug)]
pub struct StoredEvent {
    /// The id the engine assigned (ordered across all topics).
    pub id: EventId,
    /// The topics it was published to.
    pub topics: Vec<Topic>,
    /// The event type, `None` for `message`.
    pub event_type: Option<String>,
    /// The data.
    pub data: String,
    /// The reconnection time announced with it.
    pub retry: Option<Duration>,
    encoded: OnceLock<Bytes>,
}

impl StoredEvent {
    /// A stored event from its id and the published fields.
    pub fn new(id: EventId, event: NewEvent) -> StoredEvent {
        StoredEvent {
            id,
            topics: event.topics,
            event_type: event.event_type,
            data: event.data,
            retry: event.retry,
            encoded: OnceLock::new(),
        }
    }

    /// The event as a [`tidings::Event`] with its id set.
    pub fn to_event(&self) -> Event {
        let mut event = Event::new().id(self.id.to_string()).data(self.data.clone());
        if let Some(t) = &self.event_type {
            event = event.event(t.clone());
        }
        if let Some(r) = self.retry {
            event = event.retry(r);
        }
        event
    }

    /// The `text/event-stream` bytes of the event, encoded on first call and shared after.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidEvent`] when a field would corrupt the stream; the
    /// publish path validates events before storing them, so this only happens when an
    /// engine hands back data it did not get from the hub.
    pub fn encoded(&self) -> Result<Bytes, Error> {
        if let Some(bytes) = self.encoded.get() {
            return Ok(bytes.clone());
        }
        let bytes = self.to_event().encode().map_err(|e| {
            Error::with_source(
                crate::ErrorKind::InvalidEvent,
                format!("stored event {} cannot be encoded", self.id),
                e,
            )
        })?;
        Ok(self.encoded.get_or_init(|| bytes).clone())
    }
}

/// What one [`Engine::read_after`] call found, with what the engine still holds, taken in
/// the same snapshot so a gap is never missed between a read and a check.
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    /// Matching events with ids after the requested one, in id order, at most `limit`.
    pub events: Vec<Arc<StoredEvent>>,
    /// Every matching event with an id above this one is still stored. When the requested
    /// id is below it, events after the requested id may have been trimmed: a gap.
    pub complete_after: EventId,
    /// Whether more matching events follow the last one returned (the limit was hit).
    pub more: bool,
}

/// One topic as the engine knows it (for `GET /topics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: Topic,
    /// The id of the newest event published to it, if any.
    pub last_id: Option<EventId>,
    /// How many of its events are retained now.
    pub retained: u64,
    /// How many events were ever published to it (since the engine started, for engines
    /// that don't persist counts).
    pub published: u64,
}

/// Storage for the hub: ordered ids, durable appends, reads after an id, retention and a
/// live feed. See the [module docs](self) for the contract.
///
/// Object-safe: the hub holds an `Arc<dyn Engine>` chosen at run time.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`memory`, `disk`, `redis`).
    fn name(&self) -> &'static str;

    /// Stores `events` atomically, in order, assigning each a new id greater than every id
    /// before. Returns only when they are durable (for this engine's meaning of durable).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the events could not be stored; then none were.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<StoredEvent>>, Error>;

    /// Reads up to `limit` events matching `filter` with ids after `after`, in id order.
    /// An event published to several matching topics is returned once.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the storage could not be read.
    async fn read_after(
        &self,
        filter: &TopicFilter,
        after: EventId,
        limit: usize,
    ) -> Result<ReadBatch, Error>;

    /// The newest id assigned so far, or — before the first event — an id below every
    /// id this engine will assign (its origin). A fresh subscriber resumes from here.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the storage could not be asked.
    async fn head(&self) -> Result<EventId, Error>;

    /// Every topic with stored events or a publish history, sorted by name.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when the storage could not be read.
    async fn topics(&self) -> Result<Vec<TopicInfo>, Error>;

    /// A receiver of every event stored from now on, in id order. See the
    /// [module docs](self) for how a lagging receiver catches up.
    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent>;

    /// Whether the engine can serve requests now (for `/readyz`).
    async fn ready(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Writes out anything buffered; called once on shutdown, after the last append.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Engine`] when buffered data could not be written.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}
