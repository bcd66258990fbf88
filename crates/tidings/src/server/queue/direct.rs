//! Direct writes: how a push puts an event on the wire from the pushing thread, through
//! the transport `server::serve` sets once the response has started (see [`super::Link`]).

// Without `serve`, no transport is ever set.
#![cfg_attr(not(feature = "serve"), allow(dead_code))]

use bytes::Bytes;

use super::super::shared::SharedBytes;

/// A transport that can put an event on the wire from the pushing thread, without waiting
/// and without waking the connection's task: `server::serve`'s lean path, once the
/// response has started. Called with the queue's lock held, which is what orders it
/// against every other push and against the consumer's own writes (see [`Link`](super::Link)).
pub(crate) trait DirectWrite: Send + Sync {
    /// Writes `data` (the body bytes of one push; the transport frames them) if the
    /// socket takes it now.
    fn try_write(&self, data: Outgoing<'_>) -> DirectOutcome;
}

/// What a push hands its [`DirectWrite`]: bytes of its own, or bytes that other sessions
/// get too (whose wire form is built once and shared; see [`SharedBytes`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outgoing<'a> {
    /// One session's bytes, framed by the transport as it writes them.
    Own(&'a Bytes),
    /// Bytes many sessions get, with their wire form built once.
    Shared(&'a SharedBytes),
}

impl<'a> Outgoing<'a> {
    /// The body bytes.
    pub(crate) fn bytes(self) -> &'a Bytes {
        match self {
            Outgoing::Own(bytes) => bytes,
            Outgoing::Shared(shared) => shared.bytes(),
        }
    }
}

/// What a [`DirectWrite`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectOutcome {
    /// All of it is on the wire.
    Written,
    /// Part of it is on the wire; the transport keeps the rest and its consumer must
    /// finish it before anything else is written.
    Started,
    /// None of it was written (the socket is full or failed): queue it as usual.
    NotNow,
}
