//! Fan-out: the registry of connected subscribers, and delivery of every stored event to
//! the connections whose topics or patterns match it.
//!
//! One task (`Fanout::run`) reads the engine's live feed, in id order, and for each
//! event finds the matching subscribers, encodes the event once, and pushes the same bytes
//! to each connection's bounded queue under the configured [`SlowClientPolicy`]. An event
//! published to several topics reaches a connection subscribed to several of them once.
//!
//! A new subscriber is registered *before* its history is read, and buffers live events
//! until its replay is done; [`resume`] explains why that gives no gap and no duplicate.
//!
//! Locks, outermost first: the registry's `RwLock`, held only to find or change
//! subscribers, never while pushing; then one subscriber's `delivery` mutex, held while
//! pushing to its session (the session's own queue lock nests inside). Session close
//! callbacks take the registry lock, so a session is never closed while the registry or a
//! `delivery` lock is held.

mod registry;
pub mod resume;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use tidings::server::{prefetch, PushOutcome, Session, SlowClientPolicy};
use tidings::EventId;

use crate::engine::{Engine, StoredEvent};
use crate::topics::{Topic, TopicFilter};
use registry::Registry;

/// How many subscribers an event is written to directly between two looks at the feed for
/// events waiting behind it (see `Fanout::dispatch`).
const BACKLOG_CHECK_EVERY: usize = 64;

/// How many events one catch-up read takes from the engine.
const CATCH_UP_PAGE: usize = 1024;

/// Counters of what the fan-out did, for `/healthz` and logs.
#[derive(Debug, Default)]
pub struct FanoutStats {
    delivered: AtomicU64,
    dropped_oldest: AtomicU64,
    replaced: AtomicU64,
    disconnected_slow: AtomicU64,
}

/// A snapshot of [`FanoutStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FanoutCounts {
    /// Events queued to connections (one per connection per event).
    pub delivered: u64,
    /// Events dropped from slow connections' queues under `drop-oldest`.
    pub dropped_oldest: u64,
    /// Events replaced in slow connections' queues under `latest-only`.
    pub replaced: u64,
    /// Connections closed because they fell behind under `disconnect`.
    pub disconnected_slow: u64,
}

/// Why a subscriber could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterError {
    /// The connection limit is reached.
    Full,
    /// The hub is shutting down.
    ShuttingDown,
}

/// The registry of subscribers and the delivery of live events to them.
pub struct Fanout {
    registry: RwLock<Registry>,
    policy: SlowClientPolicy,
    /// Bound on live events buffered for one subscriber while its history replays.
    max_buffer_bytes: usize,
    max_connections: usize,
    shutting_down: AtomicBool,
    stats: FanoutStats,
}

/// One connected subscription: its session, what it asked for, and where its delivery is.
pub(crate) struct Subscriber {
    pub(crate) session: Session,
    pub(crate) filter: TopicFilter,
    delivery: Mutex<Delivery>,
}

/// Where a subscriber's delivery is. Guarded by `Subscriber::delivery`.
enum Delivery {
    /// History is being replayed; live events wait here (bounded by `max_buffer_bytes`).
    Buffering {
        events: Vec<Arc<StoredEvent>>,
        bytes: usize,
        overflowed: bool,
    },
    /// Live: events with ids above `last_sent` are pushed as they come.
    Live { last_sent: EventId },
    /// Nothing more is delivered (the session is closing and the client will resume).
    Stopped,
}

impl Subscriber {
    fn delivery(&self) -> MutexGuard<'_, Delivery> {
        // Every mutation of `Delivery` completes before a push, so a poisoned lock still
        // holds a consistent state.
        self.delivery.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("policy", &self.policy)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// A fan-out with no subscribers.
    pub(crate) fn new(
        policy: SlowClientPolicy,
        max_buffer_bytes: usize,
        max_connections: usize,
    ) -> Fanout {
        Fanout {
            registry: RwLock::new(Registry::default()),
            policy,
            max_buffer_bytes,
            max_connections,
            shutting_down: AtomicBool::new(false),
            stats: FanoutStats::default(),
        }
    }

    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many subscribers are connected.
    pub fn connections(&self) -> usize {
        self.read_registry().len()
    }

    /// How many connections receive events of `topic`, exactly or through a pattern.
    pub fn subscribers_of(&self, topic: &Topic) -> usize {
        self.read_registry().count_for(topic)
    }

    /// Exact topics someone is subscribed to.
    pub fn subscribed_topics(&self) -> Vec<Topic> {
        self.read_registry().subscribed_topics().cloned().collect()
    }

    /// What the fan-out has done so far.
    pub fn counts(&self) -> FanoutCounts {
        FanoutCounts {
            delivered: self.stats.delivered.load(Ordering::Relaxed),
            dropped_oldest: self.stats.dropped_oldest.load(Ordering::Relaxed),
            replaced: self.stats.replaced.load(Ordering::Relaxed),
            disconnected_slow: self.stats.disconnected_slow.load(Ordering::Relaxed),
        }
    }

    /// Registers `session` for the events of `filter`, buffering live events until
    /// [`resume::replay_then_go_live`] hands it over. The subscriber leaves the registry
    /// when its session closes.
    pub(crate) fn register(
        self: &Arc<Self>,
        session: Session,
        filter: TopicFilter,
    ) -> Result<Arc<Subscriber>, RegisterError> {
        let subscriber = Arc::new(Subscriber {
            session: session.clone(),
            filter,
            delivery: Mutex::new(Delivery::Buffering {
                events: Vec::new(),
                bytes: 0,
                overflowed: false,
            }),
        });
        {
            let mut registry = self.write_registry();
            // Checked under the registry lock so that shutdown's `close_all` (which sets
            // the flag, then takes this lock) sees every subscriber that got in.
            if self.shutting_down.load(Ordering::SeqCst) {
                return Err(RegisterError::ShuttingDown);
            }
            if registry.len() >= self.max_connections {
                return Err(RegisterError::Full);
            }
            registry.insert(Arc::clone(&subscriber));
        }
        let fanout = Arc::downgrade(self);
        // Runs at once if the client is already gone; never under a lock we hold here.
        session.on_close(move |id| {
            if let Some(fanout) = fanout.upgrade() {
                fanout.write_registry().remove(id);
            }
        });
        Ok(subscriber)
    }

    /// Refuses new subscribers from now on and closes every session (each flushes what is
    /// queued, then ends; clients reconnect after their `retry:` time).
    pub fn close_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<Session> = self
            .read_registry()
            .all()
            .map(|s| s.session.clone())
            .collect();
        for session in sessions {
            session.close();
        }
    }

    /// Delivers `event` to every matching subscriber, the same bytes to each.
    ///
    /// While `backlog` says no further event is waiting, an event may be written to each
    /// subscriber's socket from this thread (`Session::push_bytes`: one syscall, no task
    /// wake-up). Once events wait, the rest go through the subscribers' queues
    /// (`push_bytes_queued`), so that each connection's task writes what piled up in one
    /// go, on every runtime thread, and this loop gets to the next event sooner.
    fn dispatch(&self, event: &Arc<StoredEvent>, backlog: &dyn Fn() -> bool) {
        let subscribers = self.read_registry().matching(&event.topics);
        if subscribers.is_empty() {
            return;
        }
        let bytes = match event.encoded() {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(id = %event.id, error = %err, "stored event cannot be encoded; not delivered");
                return;
            }
        };
        let mut direct = !backlog();
        for (i, subscriber) in subscribers.iter().enumerate() {
            if direct && i % BACKLOG_CHECK_EVERY == BACKLOG_CHECK_EVERY - 1 && backlog() {
                direct = false;
            }
            // Start loading the next subscribers' memory while this one's write is in the
            // kernel: the record two ahead, then (its pointer now in cache) the queue of
            // the next one.
            if let Some(ahead) = subscribers.get(i + 2) {
                prefetch(&**ahead);
            }
            if let Some(next) = subscribers.get(i + 1) {
                next.session.prefetch();
            }
            self.deliver(subscriber, event, &bytes, direct);
        }
    }

    fn deliver(
        &self,
        subscriber: &Subscriber,
        event: &Arc<StoredEvent>,
        bytes: &Bytes,
        direct: bool,
    ) {
        let mut delivery = subscriber.delivery();
        match &mut *delivery {
            Delivery::Buffering {
                events,
                bytes: buffered,
                overflowed,
            } => {
                if *overflowed {
                    return;
                }
                if *buffered + bytes.len() > self.max_buffer_bytes {
                    // Too much arrived during the replay: the subscriber will be closed at
                    // hand-over and resume from its last replayed id (nothing is lost).
                    *overflowed = true;
                    events.clear();
                    *buffered = 0;
                } else {
                    *buffered += bytes.len();
                    events.push(Arc::clone(event));
                }
            }
            Delivery::Live { last_sent } => {
                if event.id <= *last_sent {
                    return; // already sent as history
                }
                *last_sent = event.id;
                self.push_live(&subscriber.session, bytes.clone(), direct);
            }
            Delivery::Stopped => {}
        }
    }

    /// Pushes live bytes under the slow-client policy and counts what the policy did.
    fn push_live(&self, session: &Session, bytes: Bytes, direct: bool) {
        let pushed = if direct {
            session.push_bytes(bytes, self.policy)
        } else {
            session.push_bytes_queued(bytes, self.policy)
        };
        match pushed {
            Ok(PushOutcome::Queued) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(PushOutcome::DroppedOldest(n)) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_oldest.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(session = %session.id(), dropped = n, "slow subscriber: dropped oldest events");
            }
            Ok(PushOutcome::Replaced(n)) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.stats.replaced.fetch_add(n, Ordering::Relaxed);
            }
            Ok(PushOutcome::Disconnected) => {
                self.stats.disconnected_slow.fetch_add(1, Ordering::Relaxed);
                tracing::info!(session = %session.id(), "slow subscriber disconnected; it will resume from its last event id");
            }
            Err(_) => {} // closed: its close callback removes it from the registry
        }
    }

    /// Delivers the engine's live feed until the feed ends (the engine is dropped) or the
    /// task is aborted. `receiver` must be subscribed before the first append this hub
    /// serves, and `last` must be the engine's head at that moment.
    ///
    /// When the feed lags (this task fell behind by more than the feed holds), the events
    /// missed are read back from the engine: the feed is a prompt, the engine the truth.
    pub(crate) async fn run(
        self: Arc<Self>,
        engine: Arc<dyn Engine>,
        mut receiver: Receiver<Arc<StoredEvent>>,
        mut last: EventId,
    ) {
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    if event.id > last {
                        last = event.id;
                        self.dispatch(&event, &|| !receiver.is_empty());
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!(
                        skipped,
                        "fan-out fell behind the live feed; catching up from the engine"
                    );
                    last = self.catch_up(&*engine, last).await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn catch_up(&self, engine: &dyn Engine, mut last: EventId) -> EventId {
        let all = TopicFilter::all();
        loop {
            match engine.read_after(&all, last, CATCH_UP_PAGE).await {
                Ok(batch) => {
                    if batch.complete_after > last {
                        // Events were trimmed before they were delivered. Every session
                        // reconnects and resumes, and sees a gap event for what is gone.
                        tracing::error!(%last, trimmed_through = %batch.complete_after, "events trimmed before fan-out delivered them; closing all sessions so they resume");
                        for session in self.sessions() {
                            session.close();
                        }
                    }
                    for event in &batch.events {
                        last = event.id;
                        // Catching up is a backlog by definition.
                        self.dispatch(event, &|| true);
                    }
                    if !batch.more {
                        return last;
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "catch-up read failed; closing all sessions so they resume");
                    for session in self.sessions() {
                        session.close();
                    }
                    return engine.head().await.unwrap_or(last);
                }
            }
        }
    }

    fn sessions(&self) -> Vec<Session> {
        self.read_registry()
            .all()
            .map(|s| s.session.clone())
            .collect()
    }
}
