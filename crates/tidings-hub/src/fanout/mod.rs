//! Fan-out: the registry of connected subscribers, and delivery of every stored event to
//! the connections whose topics or patterns match it.
//!
//! One task (`Fanout::run`) reads the engine's live feed, in id order, a run at a time:
//! the next event and every event already waiting behind it. For each run it finds the
//! matching subscribers, encodes each event once, and pushes to each connection the
//! events of the run that are for it, in one write when the socket takes it at once
//! (queued one by one under the configured [`SlowClientPolicy`] otherwise). An event
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use tidings::server::{prefetch, PushOutcome, Session, SharedBytes, SlowClientPolicy};
use tidings::EventId;

use crate::engine::{Engine, StoredEvent};
use crate::topics::{Topic, TopicFilter};
use registry::Registry;

/// At most this many events go to a subscriber in one write (a run; see
/// `Fanout::dispatch`). Also the width of a run's subscriber masks.
const MAX_RUN_EVENTS: usize = 64;

/// A run stops growing once its events hold this many bytes of data.
const MAX_RUN_BYTES: usize = 256 * 1024;

/// How many subscribers a run is written to directly between two looks at the feed for
/// a backlog (see `Fanout::dispatch`).
const BACKLOG_CHECK_EVERY: usize = 64;

/// How many events must wait in the feed, during a pass, for the rest of the pass to go
/// through the subscribers' queues. Fewer are left for the next run, which takes them
/// all at once (a pass over 5,000 subscribers in the sparse benchmark is most of its
/// 50 ms period, so one event often arrives during it). A burst is worth the task
/// wake-ups: each connection's task then writes all that piled up for it in one go, on
/// every runtime thread, while this pass gets to the next run sooner.
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
    /// cheaper per event instead of costlier. Once `backlog` says a burst is waiting (see
    /// [`BACKLOG_DEPTH`]), the rest of the pass goes through the subscribers' queues.
    fn dispatch(&self, events: &[Arc<StoredEvent>], backlog: &dyn Fn() -> bool) {
        let encoded: Vec<Option<Bytes>> = events
            .iter()
            .map(|event| match event.encoded() {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    tracing::error!(id = %event.id, error = %err, "stored event cannot be encoded; not delivered");
                    None
                }
            })
            .collect();
        let (subscribers, masks) = self.recipients(events, &encoded);
        let mut joined = Joined::new(&encoded);
        let mut direct = !backlog();
        for (i, subscriber) in subscribers.iter().enumerate() {
            let mask = masks.as_ref().map_or(1, |masks| masks[i]);
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
            self.deliver(subscriber, events, mask, &mut joined, direct);
        }
    }

    /// The subscribers of a run, each with the mask of the run's events it gets (bit `k`
    /// for `events[k]`; no masks when the run is one event, which they all get), in the
    /// order the registry gives them.
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
        let mut index: HashMap<*const Subscriber, usize> = HashMap::new();
        let mut subscribers = Vec::new();
        let mut masks: Vec<u64> = Vec::new();
        for (k, event) in events.iter().enumerate() {
            if encoded[k].is_none() {
                continue;
            }
            for subscriber in registry.matching(&event.topics).iter() {
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
        joined: &mut Joined<'_>,
        direct: bool,
    ) {
        let mut delivery = subscriber.delivery();
        match &mut *delivery {
            Delivery::Buffering {
                events: buffered_events,
                bytes: buffered,
                overflowed,
            } => {
                for k in bits(mask) {
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
    /// When the feed lags (this task fell behind by more than the feed holds), the events
    /// missed are read back from the engine: the feed is a prompt, the engine the truth.
    pub(crate) async fn run(
        self: Arc<Self>,
        engine: Arc<dyn Engine>,
        mut receiver: Receiver<Arc<StoredEvent>>,
        mut last: EventId,
    ) {
        let mut waiting: Vec<Arc<StoredEvent>> = Vec::new();
        loop {
            let first = match receiver.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(skipped)) => {
                    tracing::warn!(
                        skipped,
                        "fan-out fell behind the live feed; catching up from the engine"
                    );
                    last = self.catch_up(&*engine, last).await;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // This event and whatever else is already waiting in the feed, in runs.
            waiting.clear();
            let mut lagged = None;
            let mut closed = false;
            let mut next = Some(first);
            while let Some(event) = next.take() {
                if event.id > last {
                    last = event.id;
                    waiting.push(event);
                }
                match receiver.try_recv() {
                    Ok(event) => next = Some(event),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Lagged(skipped)) => lagged = Some(skipped),
                    Err(TryRecvError::Closed) => closed = true,
                }
            }
            let mut dispatched = 0;
            for run in runs(&waiting) {
                dispatched += run.len();
                // Events taken from the feed for later runs wait as much as those in it.
                let held = waiting.len() - dispatched;
                self.dispatch(run, &|| held + receiver.len() >= BACKLOG_DEPTH);
            }
            if let Some(skipped) = lagged {
                tracing::warn!(
                    skipped,
                    "fan-out fell behind the live feed; catching up from the engine"
                );
                last = self.catch_up(&*engine, last).await;
            }
            if closed {
                return;
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
                    if let Some(newest) = batch.events.last() {
                        last = newest.id;
                    }
                    for run in runs(&batch.events) {
                        // Catching up is a backlog by definition.
                        self.dispatch(run, &|| true);
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

/// `events` cut into runs for [`Fanout::dispatch`]: at most [`MAX_RUN_EVENTS`] events,
/// ending with the one that reaches [`MAX_RUN_BYTES`] of data.
fn runs(events: &[Arc<StoredEvent>]) -> impl Iterator<Item = &[Arc<StoredEvent>]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        while len < rest.len() && len < MAX_RUN_EVENTS && bytes < MAX_RUN_BYTES {
            bytes += rest[len].data.len();
            len += 1;
        }
        let (run, after) = rest.split_at(len);
        rest = after;
        Some(run)
    })
}

/// The indexes of the bits set in `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let k = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(k)
    })
}

/// The bytes of each set of a run's events that some subscriber gets: the events one by
/// one, and joined into one buffer (whose wire form is then built once too, see
/// `SharedBytes`), built once per set (a run usually has one or two).
struct Joined<'a> {
    encoded: &'a [Option<Bytes>],
    built: Vec<(u64, Vec<Bytes>, SharedBytes)>,
}

impl<'a> Joined<'a> {
    fn new(encoded: &'a [Option<Bytes>]) -> Joined<'a> {
        Joined {
            encoded,
            built: Vec::new(),
        }
    }

    /// The encoded length of event `k` (0 when it could not be encoded).
    fn len_of(&self, k: usize) -> usize {
        self.encoded[k].as_ref().map_or(0, Bytes::len)
    }

    /// The events of `mask`, one by one and joined.
    fn get(&mut self, mask: u64) -> (&[Bytes], &SharedBytes) {
        let at = match self.built.iter().position(|(m, _, _)| *m == mask) {
            Some(at) => at,
            None => {
                let parts: Vec<Bytes> =
                    bits(mask).filter_map(|k| self.encoded[k].clone()).collect();
                let joined = match parts.as_slice() {
                    [one] => one.clone(),
                    _ => Bytes::from(parts.concat()),
                };
                self.built.push((mask, parts, SharedBytes::new(joined)));
                self.built.len() - 1
            }
        };
        let (_, parts, joined) = &self.built[at];
        (parts, joined)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tidings::server::{SessionConfig, SessionStream};

    use super::*;
    use crate::engine::NewEvent;

    fn event(n: u64, topics: &[&str]) -> Arc<StoredEvent> {
        Arc::new(StoredEvent::new(
            EventId::new(n, 0),
            NewEvent {
                topics: topics.iter().map(|t| Topic::new(t).unwrap()).collect(),
                event_type: None,
                data: format!("event {n}"),
                retry: None,
            },
        ))
    }

    fn subscribe(
        fanout: &Arc<Fanout>,
        filter: &[&str],
        delivery: Delivery,
    ) -> (Arc<Subscriber>, SessionStream) {
        let config = SessionConfig::new().keep_alive(None).retry(None);
        let (session, stream) = Session::new(config, ());
        let filter = TopicFilter::parse(filter).unwrap();
        let subscriber = fanout.register(session, filter).unwrap();
        *subscriber.delivery() = delivery;
        (subscriber, stream)
    }

    /// The ids in what `stream` has to send now.
    async fn ids_sent(stream: &mut SessionStream) -> Vec<u64> {
        let mut text = String::new();
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(50), stream.frame()).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        text.lines()
            .filter_map(|line| line.strip_prefix("id: "))
            .map(|id| id.split('-').next().unwrap().parse().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_run_gives_each_subscriber_its_own_events_once_in_order() {
        // Without a backlog (joined pushes) and with one (each event queued on its own).
        for backlog in [false, true] {
            a_run_delivers(backlog).await;
        }
    }

    async fn a_run_delivers(backlog: bool) {
        let fanout = Arc::new(Fanout::new(SlowClientPolicy::Disconnect, 1 << 20, 100));
        let live = || Delivery::Live {
            last_sent: EventId::ZERO,
        };
        let (_a, mut only_a) = subscribe(&fanout, &["a"], live());
        let (_b, mut only_b) = subscribe(&fanout, &["b"], live());
        let (_ab, mut both) = subscribe(&fanout, &["a", "b"], live());
        let (_all, mut pattern) = subscribe(&fanout, &["*"], live());
        // Already sent events 1 and 2 as history: gets the rest only.
        let (_resumed, mut resumed) = subscribe(
            &fanout,
            &["a", "b"],
            Delivery::Live {
                last_sent: EventId::new(2, 0),
            },
        );
        let (replaying, _replaying_stream) = subscribe(
            &fanout,
            &["b"],
            Delivery::Buffering {
                events: Vec::new(),
                bytes: 0,
                overflowed: false,
            },
        );

        let run = [
            event(1, &["a"]),
            event(2, &["b"]),
            event(3, &["a", "b"]),
            event(4, &["a"]),
            event(5, &["c"]),
        ];
        fanout.dispatch(&run, &|| backlog);

        assert_eq!(ids_sent(&mut only_a).await, [1, 3, 4]);
        assert_eq!(ids_sent(&mut only_b).await, [2, 3]);
        assert_eq!(ids_sent(&mut both).await, [1, 2, 3, 4]);
        assert_eq!(ids_sent(&mut pattern).await, [1, 2, 3, 4, 5]);
        assert_eq!(ids_sent(&mut resumed).await, [3, 4]);
        match &*replaying.delivery() {
            Delivery::Buffering { events, .. } => {
                let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
                assert_eq!(ids, [EventId::new(2, 0), EventId::new(3, 0)]);
            }
            _ => panic!("still replaying"),
        }
        assert_eq!(fanout.counts().delivered, 3 + 2 + 4 + 5 + 2);
    }

    #[test]
    fn runs_are_cut_by_count_and_by_bytes() {
        let small: Vec<_> = (1..=150).map(|n| event(n, &["a"])).collect();
        let lens: Vec<usize> = runs(&small).map(<[_]>::len).collect();
        assert_eq!(
            lens,
            [MAX_RUN_EVENTS, MAX_RUN_EVENTS, 150 - 2 * MAX_RUN_EVENTS]
        );
        let big: Vec<_> = (1..=5)
            .map(|n| {
                let e = NewEvent {
                    topics: vec![Topic::new("a").unwrap()],
                    event_type: None,
                    data: "x".repeat(MAX_RUN_BYTES / 2),
                    retry: None,
                };
                Arc::new(StoredEvent::new(EventId::new(n, 0), e))
            })
            .collect();
        let lens: Vec<usize> = runs(&big).map(<[_]>::len).collect();
        assert_eq!(lens, [2, 2, 1]);
        assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
    }
}
