//! [`Channel`]: many sessions, one broadcast, with ordered ids and replay history.
//!
//! Locking: one `Mutex<State>` per channel orders everything that touches both the
//! history and the session list. A broadcast appends to history and enqueues to every
//! session while holding it; a registration replays history and joins the list while
//! holding it. So a registering client sees each event exactly once — in the replay or
//! live — whatever the races. Under it, only per-session queue locks are taken (never the
//! other way round: session close callbacks run outside queue locks and take this one).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::broadcast;

use super::history::{History, HistoryLimits};
use super::queue::{PushOutcome, SlowClientPolicy};
use super::session::{Session, SessionId};
use super::shared::SharedBytes;
use crate::error::Error;
use crate::id::{EventId, IdGenerator};
use crate::wire::Event;

/// Something that happened to a channel's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// A session joined.
    Registered(SessionId),
    /// A session left (it closed, or was deregistered).
    Deregistered(SessionId),
}

/// Counters of a channel: what it sent and what its slow-client policy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    /// Events broadcast.
    pub broadcasts: u64,
    /// Event deliveries queued (one per recipient per event).
    pub deliveries: u64,
    /// Sessions closed by the `disconnect` policy.
    pub slow_disconnects: u64,
    /// Events dropped by the `drop-oldest` policy.
    pub dropped_events: u64,
    /// Events discarded by the `latest-only` policy.
    pub replaced_events: u64,
}

#[derive(Default)]
struct Counters {
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    slow_disconnects: AtomicU64,
    dropped_events: AtomicU64,
    replaced_events: AtomicU64,
}

/// Builds a [`Channel`].
#[derive(Debug, Clone, Default)]
pub struct ChannelBuilder {
    history: Option<HistoryLimits>,
    policy: SlowClientPolicy,
}

impl ChannelBuilder {
    /// Keeps a replay history within `limits`; a session that registers with a last event
    /// id then gets what it missed before live events.
    pub fn history(mut self, limits: HistoryLimits) -> ChannelBuilder {
        self.history = Some(limits);
        self
    }

    /// What to do when a session's queue is full (default: `disconnect`).
    pub fn slow_client_policy(mut self, policy: SlowClientPolicy) -> ChannelBuilder {
        self.policy = policy;
        self
    }

    /// The channel.
    pub fn build<S: Send + Sync + 'static>(self) -> Channel<S> {
        let mut ids = IdGenerator::default();
        let start = ids.next_id();
        let (lifecycle, _) = broadcast::channel(256);
        Channel {
            inner: Arc::new(ChannelInner {
                state: Mutex::new(State {
                    sessions: Vec::new(),
                    index: HashMap::new(),
                    history: self.history.map(|limits| History::new(limits, start)),
                    ids,
                }),
                policy: self.policy,
                counters: Counters::default(),
                lifecycle,
            }),
        }
    }
}

/// Many sessions, one broadcast: the fan-out of Tidings.
///
/// Every broadcast gets an ordered [`EventId`], is encoded once, and its bytes are shared
/// by every recipient. With [`ChannelBuilder::history`], a session registering with a
/// last event id first gets exactly the events after it (or a [`Gap`](super::Gap) event
/// when history no longer reaches back), then live events: no gap and no duplicate at
/// the seam. Sessions leave by themselves when they close.
///
/// ```
/// use tidings::server::{Channel, HistoryLimits, Session, SessionConfig};
/// use tidings::Event;
///
/// # fn main() -> Result<(), tidings::Error> {
/// let channel: Channel<&str> = Channel::builder().history(HistoryLimits::new()).build();
/// let (alice, _alice_stream) = Session::new(SessionConfig::new(), "alice");
/// let (bob, _bob_stream) = Session::new(SessionConfig::new(), "bob");
/// channel.register(&alice)?;
/// channel.register(&bob)?;
///
/// channel.broadcast(&Event::new().data("to everyone"))?;
/// let sent_to = channel.broadcast_filtered(&Event::new().data("hi bob"), |s| *s.state() == "bob")?;
/// assert_eq!(sent_to.recipients, 1);
/// assert_eq!(channel.session_count(), 2);
/// # Ok(()) }
/// ```
pub struct Channel<S = ()> {
    inner: Arc<ChannelInner<S>>,
}

struct ChannelInner<S> {
    state: Mutex<State<S>>,
    policy: SlowClientPolicy,
    counters: Counters,
    lifecycle: broadcast::Sender<Lifecycle>,
}

struct State<S> {
    sessions: Vec<Session<S>>,
    index: HashMap<SessionId, usize>,
    history: Option<History>,
    ids: IdGenerator,
}

/// The result of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    /// The id the event was given.
    pub id: EventId,
    /// How many sessions it was queued for.
    pub recipients: usize,
}

impl<S> Clone for Channel<S> {
    fn clone(&self) -> Channel<S> {
        Channel {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Send + Sync + 'static> fmt::Debug for Channel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("sessions", &self.session_count())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Default for Channel<S> {
    fn default() -> Channel<S> {
        Channel::builder().build()
    }
}

impl Channel<()> {
    /// A builder: history and slow-client policy.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::default()
    }
}

impl<S: Send + Sync + 'static> Channel<S> {
    /// A channel with no history and the `disconnect` policy.
    pub fn new() -> Channel<S> {
        Channel::default()
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // Every mutation under this lock is completed before anything that may panic
        // (user filters run last), so a poisoned lock is still consistent.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session. If it has a last event id and the channel keeps history, what it
    /// missed is queued first (after a gap event if history does not reach back).
    /// The session leaves by itself when it closes.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is already closed.
    pub fn register(&self, session: &Session<S>) -> Result<(), Error> {
        {
            let mut state = self.lock();
            if state.index.contains_key(&session.id()) {
                return Ok(());
            }
            if let (Some(history), Some(last)) = (state.history.as_mut(), session.last_event_id()) {
                if !last.is_empty() {
                    let resume = history.resume(last);
                    if let Some(gap) = &resume.gap {
                        session.push_gap(gap)?;
                    }
                    session.push_replay(resume.replay)?;
                }
            }
            if session.is_closed() {
                return Err(super::queue::closed_error());
            }
            let position = state.sessions.len();
            state.sessions.push(session.clone());
            state.index.insert(session.id(), position);
        }
        let _ = self
            .inner
            .lifecycle
            .send(Lifecycle::Registered(session.id()));
        let channel = Arc::downgrade(&self.inner);
        session.on_close(move |id| {
            if let Some(inner) = Weak::upgrade(&channel) {
                Channel { inner }.deregister_id(id);
            }
        });
        Ok(())
    }

    /// Removes a session (the session stays open).
    pub fn deregister(&self, session: &Session<S>) {
        self.deregister_id(session.id());
    }

    fn deregister_id(&self, id: SessionId) {
        let removed = {
            let mut state = self.lock();
            state.remove(id)
        };
        if removed {
            let _ = self.inner.lifecycle.send(Lifecycle::Deregistered(id));
        }
    }

    /// Sends an event to every session. The channel gives it the next ordered id
    /// (replacing any id set on `event`), keeps it in history, encodes it once and
    /// shares the bytes.
    ///
    /// # Errors
    /// The encoder's errors for an invalid event; nothing is sent or kept then.
    pub fn broadcast(&self, event: &Event) -> Result<Broadcast, Error> {
        self.broadcast_filtered(event, |_| true)
    }

    /// Sends an event to the sessions for which `filter` is true (it is also kept in
    /// history, where any resuming session will find it). `filter` runs under the
    /// channel's lock: keep it quick and do not call into the channel from it.
    ///
    /// # Errors
    /// As [`Channel::broadcast`].
    pub fn broadcast_filtered(
        &self,
        event: &Event,
        mut filter: impl FnMut(&Session<S>) -> bool,
    ) -> Result<Broadcast, Error> {
        let mut state = self.lock();
        let id = state.ids.next_id();
        let bytes = event.clone().id(id.to_string()).encode()?;
        if let Some(history) = state.history.as_mut() {
            history.append(id, bytes.clone());
        }
        let policy = self.inner.policy;
        let counters = &self.inner.counters;
        let mut recipients = 0;
        let mut gone = Vec::new();
        let shared = SharedBytes::new(bytes.clone());
        for session in &state.sessions {
            if !filter(session) {
                continue;
            }
            match session.push_shared(bytes.clone(), &shared, policy) {
                Ok(PushOutcome::Queued) => recipients += 1,
                Ok(PushOutcome::DroppedOldest(n)) => {
                    recipients += 1;
                    counters.dropped_events.fetch_add(n, Ordering::Relaxed);
                }
                Ok(PushOutcome::Replaced(n)) => {
                    recipients += 1;
                    counters.replaced_events.fetch_add(n, Ordering::Relaxed);
                }
                Ok(PushOutcome::Disconnected) => {
                    counters.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(session = %session.id(), "slow client disconnected");
                    gone.push(session.id());
                }
                Err(_) => gone.push(session.id()),
            }
        }
        for id in &gone {
            state.remove(*id);
        }
        drop(state);
        for id in gone {
            let _ = self.inner.lifecycle.send(Lifecycle::Deregistered(id));
        }
        counters.broadcasts.fetch_add(1, Ordering::Relaxed);
        counters
            .deliveries
            .fetch_add(recipients as u64, Ordering::Relaxed);
        Ok(Broadcast { id, recipients })
    }

    /// How many sessions are registered.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The registered sessions, in registration order (a snapshot).
    pub fn sessions(&self) -> Vec<Session<S>> {
        self.lock().sessions.clone()
    }

    /// Notifications of sessions joining and leaving, from now on. A receiver that falls
    /// more than 256 notifications behind gets `RecvError::Lagged` with the count missed.
    pub fn lifecycle(&self) -> broadcast::Receiver<Lifecycle> {
        self.inner.lifecycle.subscribe()
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        let c = &self.inner.counters;
        ChannelStats {
            broadcasts: c.broadcasts.load(Ordering::Relaxed),
            deliveries: c.deliveries.load(Ordering::Relaxed),
            slow_disconnects: c.slow_disconnects.load(Ordering::Relaxed),
            dropped_events: c.dropped_events.load(Ordering::Relaxed),
            replaced_events: c.replaced_events.load(Ordering::Relaxed),
        }
    }

    /// How many events the history holds now (0 without history). Events past the age
    /// limit are dropped here, as at every broadcast and registration.
    pub fn history_len(&self) -> usize {
        self.lock().history.as_mut().map_or(0, History::len)
    }

    /// The newest id this channel gave out (its creation point when nothing was sent).
    pub fn last_id(&self) -> EventId {
        self.lock().ids.last()
    }

    /// Closes every session (server-initiated close): each flushes and ends its stream.
    pub fn close_all(&self) {
        for session in self.sessions() {
            session.close();
        }
    }
}

impl<S> State<S> {
    /// Removes a session by id in O(1); returns whether it was there.
    fn remove(&mut self, id: SessionId) -> bool {
        let Some(position) = self.index.remove(&id) else {
            return false;
        };
        self.sessions.swap_remove(position);
        if let Some(moved) = self.sessions.get(position) {
            self.index.insert(moved.id(), position);
        }
        true
    }
}
