//! Fan-out: the registry of connected subscribers, and delivery of every stored event to
//! the connections whose topics or patterns match it.
//!
//! One task (`Fanout::run`) reads the engine's live feed, in id order, a run at a time:
//! the next event and every event already waiting behind it. For each run it finds the
//! matching subscribers, encodes each event once, and pushes to each connection the
//! events of the run that are for it, in one write when the socket takes it at once
//! (queued one by one under the configured [`SlowClientPolicy`] otherwise). A run whose
//! events all go to the same subscribers also grows during its pass with the events that
//! arrive meanwhile (see `Fanout::dispatch`), so a burst costs each connection about one
//! write. An event published to several topics reaches a connection subscribed to several
//! of them once.
//!
//! A new subscriber is registered *before* its history is read, and buffers live events
//! until its replay is done; [`resume`] explains why that gives no gap and no duplicate.
//!
//! Locks, outermost first: the registry's `RwLock`, held only to find or change
//! subscribers, never while pushing; then one subscriber's `delivery` mutex, held while
//! pushing to its session (the session's own queue lock nests inside). Session close
//! callbacks take the registry lock, so a session is never closed while the registry or a
//! `delivery` lock is held.

mod feed;
mod registry;
pub mod resume;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use tidings::server::{prefetch, PushOutcome, Session, SharedBytes, SlowClientPolicy};
use tidings::EventId;

use crate::engine::{Engine, LiveEvent, StoredEvent};
use crate::topics::{Topic, TopicFilter};
use feed::{Behind, Feed};
use registry::Registry;
use run::{bits, encode, run_len, runs, Joined, MAX_RUN_BYTES, MAX_RUN_EVENTS};

/// How many subscribers a run is written to between two looks at the feed, for events
/// to grow the run with, or a backlog (see `Fanout::dispatch`).
const FEED_CHECK_EVERY: usize = 64;

/// How many events must wait in the feed, during a pass that cannot take them in (its
/// run is full, or its events do not all go to the same subscribers), for the rest of
/// the pass to go through the subscribers' queues. Fewer are left for the next run,
/// which takes them all at once. A backlog that deep is worth the task wake-ups: each
/// connection's task then writes all that piled up for it in one go, on every runtime
/// thread, while this pass gets to the next run sooner.
const BACKLOG_DEPTH: usize = 4;

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

    /// Delivers a run of events (in id order) to every matching subscriber: each
    /// subscriber gets the events of the run that are for it in one push, so one write
    /// when its socket has room (see `Session::push_bytes_joined`), written from this
    /// thread without waking the connection's task. A run is one event while the fan-out
    /// keeps up; when events arrive faster than a pass over the subscribers takes, the
    /// next run holds all that arrived meanwhile, so falling behind makes each pass
    /// cheaper per event instead of costlier.
    ///
    /// `feed` is where the run came from, `held` how many events taken from it wait for
    /// later runs (none for `feed`-less catch-up, a backlog by definition). While nothing
    /// is held and every event of the run goes to the same subscribers (one topic, say),
    /// the run grows mid-pass: every [`FEED_CHECK_EVERY`] subscribers it takes the events
    /// waiting in the feed that go to those same subscribers, so the rest of the pass
    /// writes them too, in the same one write per subscriber. A burst of ten events then
    /// costs most subscribers one write instead of two or ten. What the pass took from the
    /// feed is returned, to be dispatched next for the subscribers it had already passed
    /// (the others skip what they already have: `Delivery` remembers the newest id). When
    /// the run cannot grow and `held` plus what waits in the feed reaches
    /// [`BACKLOG_DEPTH`], the rest of the pass goes through the subscribers' queues.
    fn dispatch(
        &self,
        run: &[Arc<StoredEvent>],
        mut feed: Option<&mut Feed>,
        held: usize,
    ) -> Vec<Arc<StoredEvent>> {
        let mut events = run.to_vec();
        let mut joined = Joined::new(events.iter().map(|event| encode(event)).collect());
        let (subscribers, masks) = self.recipients(&events, joined.encoded());
        let mut bytes: usize = events.iter().map(|e| e.data.len()).sum();
        let mut grow = masks.is_none() && held == 0 && feed.is_some();
        let mut taken = Vec::new();
        let backlog = |feed: &Option<&mut Feed>| {
            feed.as_ref()
                .is_none_or(|feed| held + feed.waiting() >= BACKLOG_DEPTH)
        };
        let mut direct = !backlog(&feed);
        for (i, subscriber) in subscribers.iter().enumerate() {
            if i % FEED_CHECK_EVERY == FEED_CHECK_EVERY - 1 {
                if let (true, Some(feed)) = (grow, feed.as_deref_mut()) {
                    while events.len() < MAX_RUN_EVENTS && bytes < MAX_RUN_BYTES {
                        let Some(event) = feed.try_next() else { break };
                        taken.push(Arc::clone(&event));
                        let same = Arc::ptr_eq(
                            &self.read_registry().matching(&event.topics),
                            &subscribers,
                        );
                        if !same {
                            // Later events would overtake this one: no more growing.
                            grow = false;
                            break;
                        }
                        bytes += event.data.len();
                        joined.push(encode(&event));
                        events.push(event);
                    }
                }
                if direct && backlog(&feed) {
                    direct = false;
                }
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
            let mask = masks.as_ref().map_or(joined.every(), |masks| masks[i]);
            self.deliver(subscriber, &events, mask, &mut joined, direct);
        }
        taken
    }

    /// The subscribers of a run, each with the mask of the run's events it gets (bit `k`
    /// for `events[k]`), in the order the registry gives them. No masks when every
    /// subscriber gets every event (a run of one event, or of events that all match the
    /// same subscribers, as one topic's do).
    fn recipients(
        &self,
        events: &[Arc<StoredEvent>],
        encoded: &[Option<Bytes>],
    ) -> (Arc<[Arc<Subscriber>]>, Option<Vec<u64>>) {
        debug_assert!(events.len() <= MAX_RUN_EVENTS, "a run fits its masks");
        let registry = self.read_registry();
        if let ([event], [Some(_)]) = (events, encoded) {
            return (registry.matching(&event.topics), None);
        }
        let lists: Vec<Arc<[Arc<Subscriber>]>> = events
            .iter()
            .zip(encoded)
            .filter(|(_, encoded)| encoded.is_some())
            .map(|(event, _)| registry.matching(&event.topics))
            .collect();
        match lists.split_first() {
            None => return (Arc::from([]), None),
            Some((first, rest)) if rest.iter().all(|list| Arc::ptr_eq(list, first)) => {
                return (Arc::clone(first), None);
            }
            Some(_) => {}
        }
        let mut index: HashMap<*const Subscriber, usize> = HashMap::new();
        let mut subscribers = Vec::new();
        let mut masks: Vec<u64> = Vec::new();
        let kept = (0..encoded.len()).filter(|&k| encoded[k].is_some());
        for (k, list) in kept.zip(lists) {
            for subscriber in list.iter() {
                let slot = *index.entry(Arc::as_ptr(subscriber)).or_insert_with(|| {
                    subscribers.push(Arc::clone(subscriber));
                    masks.push(0);
                    masks.len() - 1
                });
                masks[slot] |= 1 << k;
            }
        }
        (subscribers.into(), Some(masks))
    }

    fn deliver(
        &self,
        subscriber: &Subscriber,
        events: &[Arc<StoredEvent>],
        mask: u64,
        joined: &mut Joined,
        direct: bool,
    ) {
        let mut delivery = subscriber.delivery();
        match &mut *delivery {
            Delivery::Buffering {
                events: buffered_events,
                bytes: buffered,
                overflowed,
            } => {
                // A run that grew mid-pass gives its events again to the subscribers after
                // the point where it grew: those at or below the newest buffered one are
                // here already.
                let newest = buffered_events.last().map_or(EventId::ZERO, |e| e.id);
                for k in bits(mask).filter(|&k| events[k].id > newest) {
                    if *overflowed {
                        return;
                    }
                    let len = joined.len_of(k);
                    if *buffered + len > self.max_buffer_bytes {
                        // Too much arrived during the replay: the subscriber will be closed
                        // at hand-over and resume from its last replayed id (nothing is lost).
                        *overflowed = true;
                        buffered_events.clear();
                        *buffered = 0;
                    } else {
                        *buffered += len;
                        buffered_events.push(Arc::clone(&events[k]));
                    }
                }
            }
            Delivery::Live { last_sent } => {
                // Events already sent as history (at or below `last_sent`) are skipped.
                let mask = bits(mask)
                    .filter(|&k| events[k].id > *last_sent)
                    .fold(0u64, |m, k| m | 1 << k);
                if mask == 0 {
                    return;
                }
                let newest = (u64::BITS - 1 - mask.leading_zeros()) as usize;
                *last_sent = events[newest].id;
                let (parts, bytes) = joined.get(mask);
                self.push_live(&subscriber.session, parts, bytes, direct);
            }
            Delivery::Stopped => {}
        }
    }

    /// Pushes live events (`joined`: `parts` back to back) under the slow-client policy,
    /// written directly when `direct` allows and the session can take them at once, and
    /// counts what the policy did.
    fn push_live(&self, session: &Session, parts: &[Bytes], joined: &SharedBytes, direct: bool) {
        let events = parts.len() as u64;
        let pushed = if direct {
            session.push_bytes_joined(parts, joined, self.policy)
        } else {
            session.push_bytes_queued(parts, self.policy)
        };
        match pushed {
            Ok(PushOutcome::Queued) => {
                self.stats.delivered.fetch_add(events, Ordering::Relaxed);
            }
            Ok(PushOutcome::DroppedOldest(n)) => {
                self.stats.delivered.fetch_add(events, Ordering::Relaxed);
                self.stats.dropped_oldest.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(session = %session.id(), dropped = n, "slow subscriber: dropped oldest events");
            }
            Ok(PushOutcome::Replaced(n)) => {
                self.stats.delivered.fetch_add(events, Ordering::Relaxed);
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
    /// When the feed lags (this task fell behind by more than the feed holds) or says it
    /// skipped events, the events missed are read back from the engine: the feed is a
    /// prompt, the engine the truth.
    pub(crate) async fn run(
        self: Arc<Self>,
        engine: Arc<dyn Engine>,
        receiver: Receiver<LiveEvent>,
        last: EventId,
    ) {
        let mut feed = Feed {
            receiver,
            last,
            behind: None,
            closed: false,
        };
        let mut waiting: Vec<Arc<StoredEvent>> = Vec::new();
        loop {
            let first = match feed.receiver.recv().await {
                Ok(LiveEvent::Stored(event)) => event,
                Ok(LiveEvent::Skipped) => {
                    feed.last = self.catch_up(&*engine, feed.last, Behind::Skipped).await;
                    continue;
                }
                Err(RecvError::Lagged(skipped)) => {
                    let behind = Behind::Lagged(skipped);
                    feed.last = self.catch_up(&*engine, feed.last, behind).await;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // This event and whatever else is already waiting in the feed, in runs.
            waiting.clear();
            waiting.extend(feed.keep(first));
            while let Some(event) = feed.try_next() {
                waiting.push(event);
            }
            let mut start = 0;
            while start < waiting.len() {
                let end = start + run_len(&waiting[start..]);
                // Events taken from the feed for later runs wait as much as those in it.
                let held = waiting.len() - end;
                let taken = self.dispatch(&waiting[start..end], Some(&mut feed), held);
                waiting.extend(taken);
                start = end;
            }
            if let Some(behind) = feed.behind.take() {
                feed.last = self.catch_up(&*engine, feed.last, behind).await;
            }
            if feed.closed {
                return;
            }
        }
    }

    async fn catch_up(&self, engine: &dyn Engine, mut last: EventId, behind: Behind) -> EventId {
        match behind {
            Behind::Lagged(skipped) => tracing::warn!(
                skipped,
                "fan-out fell behind the live feed; catching up from the engine"
            ),
            Behind::Skipped => tracing::warn!(
                %last,
                "the live feed skipped events; catching up from the engine"
            ),
        }
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
                    if let Some(newest) = batch.events.last() {
                        last = newest.id;
                    }
                    for run in runs(&batch.events) {
                        // Catching up is a backlog by definition.
                        self.dispatch(run, None, 0);
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

#[cfg(test)]
mod tests;
