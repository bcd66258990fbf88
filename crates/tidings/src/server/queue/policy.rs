//! What a session does when its client falls behind: the policy, what one push did under
//! it, and the counters of what it did.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// What happens when a slow client's queue is full.
///
/// Every action is counted (see [`SessionStats`] and the channel's stats); none is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlowClientPolicy {
    /// End the stream. The client reconnects with its `Last-Event-ID` and replays what it
    /// missed from history, so with history kept nothing is lost. The default.
    ///
    /// A client that has stopped reading cannot be sent the end of a response, so its
    /// connection is closed: by [`serve`](fn@crate::server::serve), at once, on either of
    /// its paths (with HTTP/2, the whole connection). A server that does not know the
    /// session's transport (`axum::serve`, say) stops sending and frees the queue, but
    /// keeps the socket until the client reads or TCP gives up on it.
    #[default]
    Disconnect,
    /// Drop the oldest queued events to make room, and send a
    /// [`Gap`](crate::server::Gap) event with reason `dropped` before the rest.
    DropOldest,
    /// Replace everything queued with the newest event, and send a [`Gap`](crate::server::Gap)
    /// event with reason `replaced` before it: for state where only the latest value
    /// matters.
    LatestOnly,
}

impl fmt::Display for SlowClientPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlowClientPolicy::Disconnect => "disconnect",
            SlowClientPolicy::DropOldest => "drop-oldest",
            SlowClientPolicy::LatestOnly => "latest-only",
        })
    }
}

impl std::str::FromStr for SlowClientPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<SlowClientPolicy, Error> {
        match s {
            "disconnect" => Ok(SlowClientPolicy::Disconnect),
            "drop-oldest" => Ok(SlowClientPolicy::DropOldest),
            "latest-only" => Ok(SlowClientPolicy::LatestOnly),
            other => Err(Error::new(
                ErrorKind::InvalidPolicy,
                format!("unknown slow-client policy {other:?}; use disconnect, drop-oldest or latest-only"),
            )),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued with room to spare.
    Queued,
    /// Queued after dropping this many older events (`drop-oldest`).
    DroppedOldest(u64),
    /// Queued after discarding this many older events (`latest-only`).
    Replaced(u64),
    /// The queue was full: the session was closed (`disconnect`) and this event not queued.
    Disconnected,
}

impl PushOutcome {
    /// What two pushes to one session in a row did, as one outcome: the drops or
    /// replacements added up, `Disconnected` if either disconnected.
    pub(super) fn and(self, next: PushOutcome) -> PushOutcome {
        match (self, next) {
            (PushOutcome::Disconnected, _) | (_, PushOutcome::Disconnected) => {
                PushOutcome::Disconnected
            }
            (PushOutcome::DroppedOldest(a), PushOutcome::DroppedOldest(b)) => {
                PushOutcome::DroppedOldest(a + b)
            }
            (PushOutcome::Replaced(a), PushOutcome::Replaced(b)) => PushOutcome::Replaced(a + b),
            (PushOutcome::Queued, other) | (other, PushOutcome::Queued) => other,
            // One session has one policy, so drops and replacements never mix.
            (first, _) => first,
        }
    }
}

/// Counters of one session's queue, for observability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// Bytes queued right now.
    pub queued_bytes: usize,
    /// Events dropped by `drop-oldest`.
    pub dropped: u64,
    /// Events discarded by `latest-only`.
    pub replaced: u64,
    /// Whether `disconnect` closed this session.
    pub disconnected_slow: bool,
}
