//! The bounded per-session queue between producers (pushes, broadcasts) and the one
//! consumer (the response body), and the policy applied when it is full.
//!
//! Locking: one `Mutex<QueueState>` per session guards the queued bytes, the pending
//! drop count, the closed flag and the consumer's waker. It is held only for O(1) work
//! (plus draining); wakers and close callbacks always run after it is released, so a
//! callback may take any other lock (a channel's) without ordering problems.
//!
//! Direct writes (`server::serve`): once the consumer has set a [`DirectWrite`] transport,
//! a push that finds nothing queued, no gap owed and the wire not `in_flight` writes
//! through the transport while holding this lock (one non-blocking syscall). The lock
//! is what keeps the bytes on the wire in push order: two pushes never write at once, and
//! the consumer marks the wire `in_flight` (under the lock) for everything it takes —
//! drained bytes, a keep-alive — until it has written it all and calls
//! [`Link::release_wire`]. What a direct write leaves unfinished also sets `in_flight`
//! and is the consumer's to finish first. The transport's own lock nests inside this one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::shared::SharedBytes;
use crate::error::{Error, ErrorKind};

mod direct;
mod policy;

pub(crate) use direct::{DirectOutcome, DirectWrite, Outgoing};
pub use policy::{PushOutcome, SessionStats, SlowClientPolicy};

/// Why a queue stopped taking events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// `close()` was called: flush what is queued, then end.
    Server,
    /// The `disconnect` policy fired: end now.
    Slow,
    /// The response body was dropped: the client went away.
    ClientGone,
}

type CloseCallback = Box<dyn FnOnce() + Send + Sync>;

#[derive(Default)]
struct QueueState {
    items: VecDeque<Bytes>,
    bytes: usize,
    /// How much of `bytes` is replayed history (at the front of the queue): it was queued
    /// whatever the bound (see `push_unbounded`), so it does not count against it.
    replay_bytes: usize,
    /// Events dropped or replaced since the last drain (a gap event is owed for each).
    owed: Owed,
    closed: Option<CloseReason>,
    waker: Option<Waker>,
    callbacks: Vec<CloseCallback>,
    stats: SessionStats,
    /// The transport that takes events directly while nothing is queued or in flight.
    direct: Option<Arc<dyn DirectWrite>>,
    /// The consumer is writing something it took (or a direct write left a remainder):
    /// no direct write until it releases the wire.
    in_flight: bool,
    /// When an event last went out by a direct write (for the keep-alive timer).
    last_direct: Option<Instant>,
    /// The consumer's waker while it waits for its socket to take a write: woken when the
    /// `disconnect` policy closes the session, so that it stops waiting for a client that
    /// does not read.
    stalled_writer: Option<Waker>,
    /// Producers waiting in `room()` or `push_when_room()`: a drain notifies only when
    /// there are any (most sessions never have one, and notifying takes a lock).
    room_waiters: usize,
}

impl QueueState {
    /// The queued bytes that count against the bound: all but replayed history.
    fn bounded_bytes(&self) -> usize {
        self.bytes - self.replay_bytes
    }

    /// Accounts for `len` bytes taken off the front of the queue, where replayed history
    /// is.
    fn took_front(&mut self, len: usize) {
        self.bytes -= len;
        self.replay_bytes -= len.min(self.replay_bytes);
    }
}

/// The shared half of a session: its queue, its close state, and its wake-ups.
pub(crate) struct Link {
    state: Mutex<QueueState>,
    max_bytes: usize,
    /// Notified when the session closes, and when the consumer drains while producers wait
    /// for room.
    changed: Notify,
}

/// Events a session's client will not get because the policy acted, since the last
/// drain: each kind is owed a gap event before the next bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owed {
    /// Dropped by `drop-oldest`.
    pub(crate) dropped: u64,
    /// Replaced by newer ones under `latest-only`.
    pub(crate) replaced: u64,
}

impl Owed {
    pub(crate) fn is_none(&self) -> bool {
        self.dropped == 0 && self.replaced == 0
    }
}

/// What the consumer takes out in one go.
pub(crate) enum Drained {
    /// Bytes to write (everything queued, coalesced), and what is owed a gap event.
    Data(Bytes, Owed),
    /// Nothing queued; the consumer should wait.
    Empty,
    /// Closed and fully drained: end the stream.
    End,
}

impl Link {
    pub(crate) fn new(max_bytes: usize) -> Link {
        Link {
            state: Mutex::new(QueueState::default()),
            max_bytes,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves the queue consistent (every mutation is a
        // single step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` through the transport at once when one is set and nothing is
    /// queued or in flight (`shared`, when given, holds the same bytes for many sessions,
    /// and is what the transport writes); queues them under `policy` otherwise.
    pub(crate) fn push(
        &self,
        bytes: Bytes,
        shared: Option<&SharedBytes>,
        policy: SlowClientPolicy,
    ) -> Result<PushOutcome, Error> {
        debug_assert!(shared.is_none_or(|shared| shared.bytes().as_ptr() == bytes.as_ptr()));
        let outgoing = shared.map_or(Outgoing::Own(&bytes), Outgoing::Shared);
        let Some(mut q) = self.unless_written(Some(outgoing))? else {
            return Ok(PushOutcome::Queued);
        };
        let Some(outcome) = self.make_room(&mut q, bytes.len(), policy) else {
            return Ok(self.disconnected(q));
        };
        enqueue_and_wake(q, bytes);
        Ok(outcome)
    }

    /// Writes `joined` (when given: `parts` back to back) through the transport at once
    /// as [`Link::push`] would; otherwise queues each of `parts` in turn under `policy`,
    /// exactly as that many pushes would.
    pub(crate) fn push_parts(
        &self,
        parts: &[Bytes],
        joined: Option<&SharedBytes>,
        policy: SlowClientPolicy,
    ) -> Result<PushOutcome, Error> {
        debug_assert!(
            joined.is_none_or(|j| j.bytes().len() == parts.iter().map(Bytes::len).sum::<usize>())
        );
        let Some(mut q) = self.unless_written(joined.map(Outgoing::Shared))? else {
            return Ok(PushOutcome::Queued);
        };
        let mut outcome = PushOutcome::Queued;
        for part in parts {
            let Some(made) = self.make_room(&mut q, part.len(), policy) else {
                return Ok(self.disconnected(q));
            };
            outcome = outcome.and(made);
            q.bytes += part.len();
            q.items.push_back(part.clone());
        }
        wake_consumer(q);
        Ok(outcome)
    }

    /// The start of every push: an error when the queue is closed; `None` when `data`
    /// went out through the transport (see [`write_direct`]); else the locked queue, for
    /// queueing.
    // Inlined into every push: as a call, the library's fan-out bench ran about 10% slower.
    #[inline(always)]
    fn unless_written(
        &self,
        data: Option<Outgoing<'_>>,
    ) -> Result<Option<MutexGuard<'_, QueueState>>, Error> {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Err(closed_error());
        }
        match data.and_then(|data| write_direct(&mut q, data)) {
            Some(waker) => {
                drop(q);
                if let Some(w) = waker {
                    w.wake();
                }
                Ok(None)
            }
            None => Ok(Some(q)),
        }
    }

    /// The `disconnect` policy has closed the queue: wakes whoever waits on it.
    fn disconnected(&self, mut q: MutexGuard<'_, QueueState>) -> PushOutcome {
        let waker = q.waker.take();
        let stalled = q.stalled_writer.take();
        drop(q);
        self.changed.notify_waiters();
        for w in [waker, stalled].into_iter().flatten() {
            w.wake();
        }
        PushOutcome::Disconnected
    }

    /// Applies `policy` so that `len` more bytes fit: what it did, or `None` when it
    /// closed the session (`disconnect`).
    fn make_room(
        &self,
        q: &mut QueueState,
        len: usize,
        policy: SlowClientPolicy,
    ) -> Option<PushOutcome> {
        // A single event larger than the whole bound still goes through an empty queue:
        // the bound is about falling behind, not about event size.
        if q.items.is_empty() || q.bounded_bytes() + len <= self.max_bytes {
            return Some(PushOutcome::Queued);
        }
        match policy {
            SlowClientPolicy::Disconnect => {
                q.items.clear();
                q.bytes = 0;
                q.replay_bytes = 0;
                q.closed = Some(CloseReason::Slow);
                q.stats.disconnected_slow = true;
                None
            }
            SlowClientPolicy::DropOldest => {
                let mut dropped = 0;
                // Oldest first: replayed history, if any is still queued, goes before the
                // live events behind it.
                while !q.items.is_empty() && q.bounded_bytes() + len > self.max_bytes {
                    if let Some(old) = q.items.pop_front() {
                        q.took_front(old.len());
                        dropped += 1;
                    }
                }
                q.owed.dropped += dropped;
                q.stats.dropped += dropped;
                Some(PushOutcome::DroppedOldest(dropped))
            }
            SlowClientPolicy::LatestOnly => {
                let replaced = q.items.len() as u64;
                q.items.clear();
                q.bytes = 0;
                q.replay_bytes = 0;
                q.owed.replaced += replaced;
                q.stats.replaced += replaced;
                Some(PushOutcome::Replaced(replaced))
            }
        }
    }

    /// Queues replayed history whatever the bound: history is bounded itself, the items
    /// are shared with it (no copy), and the consumer takes them all on its next poll.
    pub(crate) fn push_unbounded(
        &self,
        items: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), Error> {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Err(closed_error());
        }
        let before = q.items.len();
        for item in items {
            q.bytes += item.len();
            q.replay_bytes += item.len();
            q.items.push_back(item);
        }
        let waker = if q.items.len() > before {
            q.waker.take()
        } else {
            None
        };
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Takes the next write (see [`take_write`]), or registers `waker` when nothing is queued.
    pub(crate) fn drain(&self, waker: &Waker) -> Drained {
        let mut q = self.lock();
        if q.items.is_empty() && q.owed.is_none() {
            if q.closed.is_some() {
                return Drained::End;
            }
            match &q.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => q.waker = Some(waker.clone()),
            }
            return Drained::Empty;
        }
        let owed = std::mem::take(&mut q.owed);
        let out = take_write(&mut q);
        q.in_flight = true;
        let room_waiters = q.room_waiters > 0;
        drop(q);
        if room_waiters {
            self.changed.notify_waiters();
        }
        Drained::Data(out, owed)
    }

    /// Marks the wire as taken by the consumer for a write that did not come out of the
    /// queue (a keep-alive comment): no direct write until [`Link::release_wire`].
    pub(crate) fn claim_wire(&self) {
        self.lock().in_flight = true;
    }

    /// The consumer has written everything it took: direct writes may go ahead again.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
    pub(crate) fn release_wire(&self) {
        self.lock().in_flight = false;
    }

    /// Lets `direct` write events from now on, while nothing is queued or in flight (the
    /// consumer calls this once what it wrote first — the preamble — is out). Does
    /// nothing on a closed queue.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
    pub(crate) fn set_direct(&self, direct: Arc<dyn DirectWrite>) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.direct = Some(direct);
            q.in_flight = false;
        }
    }

    /// For a consumer waiting for its socket to take a write: `true` when the `disconnect`
    /// policy has closed the session (stop writing, drop the connection); otherwise
    /// `waker` is woken when that happens.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
    pub(crate) fn abandoned_while_stalled(&self, waker: &Waker) -> bool {
        let mut q = self.lock();
        if q.closed == Some(CloseReason::Slow) {
            return true;
        }
        match &q.stalled_writer {
            Some(w) if w.will_wake(waker) => {}
            _ => q.stalled_writer = Some(waker.clone()),
        }
        false
    }

    /// When an event last went out by a direct write.
    pub(crate) fn last_direct_write(&self) -> Option<Instant> {
        self.lock().last_direct
    }

    /// Closes the queue (idempotent) and runs the close callbacks once, outside the lock.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
        }
        // The transport is the consumer's to finish and drop, not the queue's to keep.
        let direct = q.direct.take();
        if reason == CloseReason::ClientGone {
            q.items.clear();
            q.bytes = 0;
            q.replay_bytes = 0;
            q.owed = Owed::default();
        }
        let callbacks = std::mem::take(&mut q.callbacks);
        let waker = q.waker.take();
        drop(q);
        drop(direct);
        self.changed.notify_waiters();
        if let Some(w) = waker {
            w.wake();
        }
        for callback in callbacks {
            callback();
        }
    }

    /// Runs `callback` when the session closes, or at once if it already has.
    pub(crate) fn on_close(&self, callback: CloseCallback) {
        let mut q = self.lock();
        // A slow-client close happens under the caller's locks, so its callbacks wait for
        // the body to be dropped; every other close has already run them.
        if q.closed.is_some() && q.closed != Some(CloseReason::Slow) {
            drop(q);
            callback();
            return;
        }
        q.callbacks.push(callback);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let q = self.lock();
        SessionStats {
            queued_bytes: q.bytes,
            ..q.stats
        }
    }

    /// Resolves once the session is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once less than the bound is queued (or the session is closed).
    pub(crate) async fn room(&self) {
        let _waiting = RoomWaiter::new(self);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.lock();
                if q.closed.is_some() || q.bounded_bytes() < self.max_bytes {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Queues `bytes` once there is room for them, waiting instead of applying a policy
    /// (back-pressure for a producer that can wait).
    pub(crate) async fn push_when_room(&self, bytes: Bytes) -> Result<(), Error> {
        let _waiting = RoomWaiter::new(self);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.lock();
                if q.closed.is_some() {
                    return Err(closed_error());
                }
                if q.items.is_empty() || q.bounded_bytes() + bytes.len() <= self.max_bytes {
                    enqueue_and_wake(q, bytes);
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

/// Counts a producer as waiting for room for as long as it waits, also when its future
/// is dropped mid-wait (see `QueueState::room_waiters`).
struct RoomWaiter<'a>(&'a Link);

impl RoomWaiter<'_> {
    fn new(link: &Link) -> RoomWaiter<'_> {
        link.lock().room_waiters += 1;
        RoomWaiter(link)
    }
}

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.lock().room_waiters -= 1;
    }
}

/// Items at least this large are written as they are, never copied into a batch.
const PASS_THROUGH_BYTES: usize = 4 * 1024;
/// A batch of small items is cut at about this size.
const BATCH_BYTES: usize = 16 * 1024;

/// Takes the next write off the queue: runs of small items coalesced into one buffer (one
/// chunk on the wire instead of many), large items passed on as the shared bytes they are
/// (no copy; the HTTP layer writes them vectored).
fn take_write(q: &mut QueueState) -> Bytes {
    let Some(first) = q.items.pop_front() else {
        return Bytes::new();
    };
    let small = |b: &Bytes| b.len() < PASS_THROUGH_BYTES;
    if !small(&first) || !q.items.front().is_some_and(small) {
        q.took_front(first.len());
        return first;
    }
    let mut buf = BytesMut::with_capacity(q.bytes.min(BATCH_BYTES));
    buf.extend_from_slice(&first);
    while let Some(next) = q.items.front() {
        if !small(next) || buf.len() + next.len() > BATCH_BYTES {
            break;
        }
        buf.extend_from_slice(next);
        q.items.pop_front();
    }
    q.took_front(buf.len());
    buf.freeze()
}

/// Writes `data` through the transport when one is set and nothing is queued, owed or in
/// flight: `Some` (with the consumer's waker to wake once the lock is released, when a
/// remainder is left for it) when it went out or started to.
#[inline]
fn write_direct(q: &mut QueueState, data: Outgoing<'_>) -> Option<Option<Waker>> {
    if q.in_flight || !q.items.is_empty() || !q.owed.is_none() {
        return None;
    }
    let outcome = q.direct.as_ref()?.try_write(data);
    if outcome == DirectOutcome::NotNow {
        return None;
    }
    q.last_direct = Some(Instant::now());
    if outcome == DirectOutcome::Written {
        return Some(None);
    }
    q.in_flight = true;
    Some(q.waker.take())
}

/// Appends `bytes` and wakes the consumer, after releasing the lock.
fn enqueue_and_wake(mut q: MutexGuard<'_, QueueState>, bytes: Bytes) {
    q.bytes += bytes.len();
    q.items.push_back(bytes);
    wake_consumer(q);
}

/// Wakes the consumer (something was queued), after releasing the lock.
// Inlined into every push, as `Link::unless_written` is.
#[inline(always)]
fn wake_consumer(mut q: MutexGuard<'_, QueueState>) {
    let waker = q.waker.take();
    drop(q);
    if let Some(w) = waker {
        w.wake();
    }
}

pub(crate) fn closed_error() -> Error {
    Error::new(
        ErrorKind::Closed,
        "the session is closed: the client went away or the server closed it",
    )
}

#[cfg(test)]
mod tests;
