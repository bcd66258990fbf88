//! The engine's live feed as the fan-out task reads it: each event once, in id order, and
//! where events were missed, so the fan-out reads them back from the engine.

use std::sync::Arc;

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;

use tidings::EventId;

use crate::engine::{LiveEvent, StoredEvent};

/// The engine's live feed as the fan-out task reads it: each event once, in id order.
pub(super) struct Feed {
    pub(super) receiver: Receiver<LiveEvent>,
    /// The newest id taken (older ones were delivered from the engine when catching up).
    pub(super) last: EventId,
    /// Events were missed here: what follows is read back from the engine first.
    pub(super) behind: Option<Behind>,
    /// The engine is gone.
    pub(super) closed: bool,
}

/// Why the fan-out must read events back from the engine.
#[derive(Debug, Clone, Copy)]
pub(super) enum Behind {
    /// The feed dropped this many events because the task fell behind.
    Lagged(u64),
    /// The feed itself skipped events ([`LiveEvent::Skipped`]).
    Skipped,
}

impl Feed {
    /// The next event already waiting, if any. Nothing after a lag or a skip (what was
    /// missed is read back from the engine first) or the end.
    pub(super) fn try_next(&mut self) -> Option<Arc<StoredEvent>> {
        while self.behind.is_none() && !self.closed {
            match self.receiver.try_recv() {
                Ok(LiveEvent::Stored(event)) => {
                    if let Some(event) = self.keep(event) {
                        return Some(event);
                    }
                }
                Ok(LiveEvent::Skipped) => self.behind = Some(Behind::Skipped),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(skipped)) => self.behind = Some(Behind::Lagged(skipped)),
                Err(TryRecvError::Closed) => self.closed = true,
            }
        }
        None
    }

    /// `event`, unless it is not newer than the last one taken (the fan-out delivered it
    /// from the engine when catching up).
    pub(super) fn keep(&mut self, event: Arc<StoredEvent>) -> Option<Arc<StoredEvent>> {
        (event.id > self.last).then(|| {
            self.last = event.id;
            event
        })
    }

    /// How many events wait in the feed.
    pub(super) fn waiting(&self) -> usize {
        self.receiver.len()
    }
}
