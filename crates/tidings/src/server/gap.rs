//! The gap event: how a stream tells a plain `EventSource` that events are missing.

use serde::Serialize;

use crate::id::EventId;
use crate::wire::Event;

/// The event type of a [`Gap`] event. Listen for it in a browser with
/// `source.addEventListener("tidings.gap", e => JSON.parse(e.data))`.
pub const GAP_EVENT_TYPE: &str = "tidings.gap";

/// Why some events will not reach this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapReason {
    /// The resume point is older than the history kept: events between it and
    /// [`Gap::oldest_id`] were trimmed.
    Expired,
    /// The resume point is not an id this server knows (unparseable, or from the future,
    /// e.g. after a restart with a clock behind). What follows is all the history kept.
    Unknown,
    /// The client fell behind and the `drop-oldest` policy dropped [`Gap::dropped`] events
    /// from its queue.
    Dropped,
    /// The client fell behind and the `latest-only` policy replaced [`Gap::dropped`]
    /// queued events with the newer one that follows.
    Replaced,
}

/// A typed notice, sent in-band before the stream continues, that events are missing.
///
/// Encoded as an event of type [`GAP_EVENT_TYPE`] with JSON data and no `id:` field (so the
/// client's last event id is not moved by it):
///
/// ```
/// use tidings::server::{Gap, GapReason};
/// use tidings::EventId;
///
/// let gap = Gap {
///     reason: GapReason::Expired,
///     last_event_id: Some("5-0".into()),
///     oldest_id: Some(EventId::new(9, 0)),
///     dropped: 0,
/// };
/// let bytes = gap.to_event().encode()?;
/// assert_eq!(
///     &bytes[..],
///     &b"event: tidings.gap\ndata: {\"reason\":\"expired\",\"last_event_id\":\"5-0\",\"oldest_id\":\"9-0\",\"dropped\":0}\n\n"[..]
/// );
/// # Ok::<(), tidings::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Why events are missing.
    pub reason: GapReason,
    /// The resume point the client asked for, when there was one.
    pub last_event_id: Option<String>,
    /// The oldest id still kept (the first event that follows), when history is not empty.
    #[serde(serialize_with = "serialize_id")]
    pub oldest_id: Option<EventId>,
    /// How many events were dropped or replaced ([`GapReason::Dropped`] and
    /// [`GapReason::Replaced`]; 0 otherwise).
    pub dropped: u64,
}

impl Gap {
    /// The gap as an event of type [`GAP_EVENT_TYPE`] with JSON data.
    pub fn to_event(&self) -> Event {
        // Serializing this struct cannot fail: it holds only strings and numbers.
        let data = serde_json::to_string(self).unwrap_or_default();
        Event::new().event(GAP_EVENT_TYPE).data(data)
    }
}

fn serialize_id<S: serde::Serializer>(id: &Option<EventId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}
