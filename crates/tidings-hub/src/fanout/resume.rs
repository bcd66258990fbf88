//! Resume: replay history after a client's `Last-Event-ID`, then go live, with no gap and
//! no duplicate at the seam.
//!
//! # Why register first, then read, then hand over
//!
//! The subscriber is put in the registry (in `Buffering` state) *before* its history is
//! read. From that moment the fan-out appends every matching live event to the
//! subscriber's buffer. Then history is read from the engine and queued. Finally, under
//! the subscriber's `delivery` lock, the buffered events with an id above the newest one
//! already queued are queued too, and the state becomes `Live { last_sent }`; from then on
//! the fan-out pushes only ids above `last_sent`.
//!
//! Take any matching event `e`:
//! - stored before the history read saw the engine: the read returns it (or reports it
//!   trimmed, and a gap event says so);
//! - stored after that: it was not in the read, and since an event reaches the fan-out
//!   only after it is stored, the fan-out handles it after registration — into the buffer
//!   (drained at hand-over) or, after hand-over, pushed live.
//!
//! So every event arrives at least once. It arrives at most once and in order because the
//! live feed is in id order and both the hand-over and the live path skip ids at or below
//! the newest id already queued: an event both read as history and seen live is sent once.
//! The alternative, one lock ordering every append + fan-out against every registration,
//! would make each publish wait for each subscriber's history read; this way a slow replay
//! delays only its own connection.
//!
//! # Where a client resumes from, and its `id:` floor
//!
//! - No `Last-Event-ID`: from the engine head taken before registration. Unless a replayed
//!   event already moves it past the head, the client is sent an id-only block (`id: <head>`),
//!   which a browser commits as its last event id without firing an event: if it drops
//!   before the first event arrives, it still resumes from where it started, so nothing
//!   published in between is lost.
//! - A valid id the engine still covers: from that id.
//! - A valid id older than retained history: a [`GapReason::Expired`] gap event, then
//!   everything retained after the id. The client's id is then raised to the point from
//!   which history is complete, so the next reconnect does not report the same gap again.
//! - An unparseable id, or one above the head (from the future): a [`GapReason::Unknown`]
//!   gap event, then all retained history (as the library's channels do), then `id: <head>`.
//!
//! Gap events carry no `id:` field, so they never move the client's last event id.

use bytes::Bytes;
use tidings::server::{Gap, GapReason};
use tidings::{Event, EventId};

use super::{Delivery, Subscriber};
use crate::engine::Engine;

/// How many events one history read takes.
const REPLAY_PAGE: usize = 512;

/// Where to resume one subscriber, decided from its `Last-Event-ID` and the engine head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumePlan {
    /// History is read after this id.
    cursor: EventId,
    /// The id the client must hold at least once replay is done (sent as an id-only
    /// block after the replayed events when none of them raises it that far).
    floor: Option<EventId>,
    /// Whether the id was unknown (a [`GapReason::Unknown`] gap goes first).
    unknown: bool,
    /// The id the client sent, as it sent it.
    requested: Option<String>,
}

impl ResumePlan {
    /// The plan for a client that sent `last_event_id`, with `head` the engine head taken
    /// *before* the subscriber was registered.
    pub(crate) fn new(last_event_id: Option<&str>, head: EventId) -> ResumePlan {
        let requested = last_event_id.map(str::to_owned);
        let fresh = ResumePlan {
            cursor: head,
            floor: Some(head),
            unknown: false,
            requested: None,
        };
        match last_event_id.map(str::parse::<EventId>) {
            // An empty Last-Event-ID is how a browser says it has none.
            None => fresh,
            Some(_) if last_event_id == Some("") => fresh,
            Some(Ok(id)) if id <= head => ResumePlan {
                cursor: id,
                floor: None,
                unknown: false,
                requested,
            },
            Some(_) => ResumePlan {
                cursor: EventId::ZERO,
                floor: Some(head),
                unknown: true,
                requested,
            },
        }
    }
}

/// Replays history for `subscriber` according to `plan`, then hands it over to live
/// delivery (see the [module docs](self)). Returns when the subscriber is live or closed.
pub(crate) async fn replay_then_go_live(
    engine: &dyn Engine,
    subscriber: &Subscriber,
    plan: ResumePlan,
) {
    let session = &subscriber.session;
    let mut cursor = plan.cursor;
    let mut floor = plan.floor;
    // The newest id queued to the client so far (events or `id:` blocks).
    let mut covered = plan.cursor;
    // Trimming up to here has been reported already (by an Unknown gap: "all that is kept
    // follows"), so it is not reported again as Expired.
    let mut reported_through: Option<EventId> = None;
    let mut first_page = true;

    loop {
        let batch = match engine
            .read_after(&subscriber.filter, cursor, REPLAY_PAGE)
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(session = %session.id(), error = %err, "history read failed; closing the session so the client retries");
                stop(subscriber);
                return;
            }
        };
        let oldest_id = batch.events.first().map(|e| e.id);
        let mut items: Vec<Bytes> = Vec::with_capacity(batch.events.len() + 2);

        if first_page && plan.unknown {
            items.push(gap_bytes(GapReason::Unknown, &plan.requested, oldest_id));
            reported_through = Some(batch.complete_after);
        } else if batch.complete_after > cursor
            && reported_through.is_none_or(|r| batch.complete_after > r)
        {
            // Events after `cursor` were trimmed before we could read them.
            items.push(gap_bytes(GapReason::Expired, &plan.requested, oldest_id));
            reported_through = Some(batch.complete_after);
            floor = floor.max(Some(batch.complete_after));
        }
        first_page = false;

        for event in &batch.events {
            if floor.is_some_and(|f| event.id >= f) {
                floor = None; // this event moves the client's id past the floor
            }
            match event.encoded() {
                Ok(bytes) => items.push(bytes),
                Err(err) => {
                    tracing::error!(id = %event.id, error = %err, "stored event cannot be encoded; skipped in replay");
                }
            }
            cursor = event.id;
            covered = covered.max(event.id);
        }
        if session.push_replay(items).is_err() {
            stop(subscriber);
            return;
        }
        if !batch.more {
            break;
        }
        // Back-pressure: the next page waits until the client has taken this one.
        session.room().await;
    }

    // Hand-over, under the subscriber's delivery lock so the fan-out waits for it.
    let overflowed = {
        let mut delivery = subscriber.delivery();
        let Delivery::Buffering {
            events, overflowed, ..
        } = std::mem::replace(&mut *delivery, Delivery::Stopped)
        else {
            return;
        };
        let mut items: Vec<Bytes> = Vec::with_capacity(events.len() + 1);
        if let Some(f) = floor {
            items.push(id_only(f));
            covered = covered.max(f);
        }
        for event in &events {
            if event.id <= covered {
                continue; // already queued as history
            }
            if let Ok(bytes) = event.encoded() {
                items.push(bytes);
            }
            covered = event.id;
        }
        if session.push_replay(items).is_err() {
            return;
        }
        if !overflowed {
            *delivery = Delivery::Live { last_sent: covered };
        }
        overflowed
    };
    if overflowed {
        // Live events outran the buffer while history replayed. Closing makes the client
        // reconnect with the last id it got and resume from history: nothing is lost.
        tracing::info!(session = %session.id(), "live events outran the replay buffer; closing so the client resumes");
        session.close();
    }
}

/// Stops delivery to `subscriber` and closes its session (outside the delivery lock).
fn stop(subscriber: &Subscriber) {
    *subscriber.delivery() = Delivery::Stopped;
    subscriber.session.close();
}

fn gap_bytes(reason: GapReason, requested: &Option<String>, oldest_id: Option<EventId>) -> Bytes {
    let gap = Gap {
        reason,
        last_event_id: requested.clone(),
        oldest_id,
        dropped: 0,
    };
    // A gap event's fields are valid by construction.
    gap.to_event().encode().unwrap_or_default()
}

/// An id-only block: the client commits `id` as its last event id; no event fires.
fn id_only(id: EventId) -> Bytes {
    Event::new().id(id.to_string()).encode().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let head = EventId::new(100, 5);
        assert_eq!(
            ResumePlan::new(None, head),
            ResumePlan {
                cursor: head,
                floor: Some(head),
                unknown: false,
                requested: None
            }
        );
        assert_eq!(ResumePlan::new(Some(""), head).floor, Some(head));
        let valid = ResumePlan::new(Some("100-1"), head);
        assert_eq!((valid.cursor, valid.floor), (EventId::new(100, 1), None));
        assert!(!valid.unknown);
        for bad in ["nope", "100-6", "101"] {
            let plan = ResumePlan::new(Some(bad), head);
            assert!(plan.unknown, "{bad}");
            assert_eq!(plan.cursor, EventId::ZERO);
            assert_eq!(plan.requested.as_deref(), Some(bad));
        }
    }

    #[test]
    fn id_only_block() {
        assert_eq!(&id_only(EventId::new(7, 1))[..], b"id: 7-1\n\n");
    }
}
