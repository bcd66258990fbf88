//! A channel's bounded replay history, keyed on ordered [`EventId`]s.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::gap::{Gap, GapReason};
use crate::id::EventId;

/// How much history a channel keeps. Every bound is optional; the oldest events go first
/// when any is exceeded.
///
/// ```
/// use std::time::Duration;
/// use tidings::server::HistoryLimits;
///
/// let limits = HistoryLimits::new()
///     .max_events(10_000)
///     .max_bytes(16 << 20)
///     .max_age(Duration::from_secs(3600));
/// # let _ = limits;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub(crate) max_events: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) max_age: Option<Duration>,
}

impl Default for HistoryLimits {
    /// 1,000 events, 8 MiB, no age limit.
    fn default() -> HistoryLimits {
        HistoryLimits {
            max_events: Some(1000),
            max_bytes: Some(8 << 20),
            max_age: None,
        }
    }
}

impl HistoryLimits {
    /// The defaults: 1,000 events, 8 MiB, no age limit.
    pub fn new() -> HistoryLimits {
        HistoryLimits::default()
    }

    /// Keeps at most `n` events.
    pub fn max_events(mut self, n: usize) -> HistoryLimits {
        self.max_events = Some(n);
        self
    }

    /// Keeps at most `bytes` of encoded events.
    pub fn max_bytes(mut self, bytes: usize) -> HistoryLimits {
        self.max_bytes = Some(bytes);
        self
    }

    /// Keeps events for at most `age`.
    pub fn max_age(mut self, age: Duration) -> HistoryLimits {
        self.max_age = Some(age);
        self
    }

    /// No bound at all on age; count and size bounds stay.
    pub fn no_max_age(mut self) -> HistoryLimits {
        self.max_age = None;
        self
    }
}

struct Entry {
    id: EventId,
    bytes: Bytes,
    at: Instant,
}

/// The events kept, oldest first, and how far back they are complete.
pub(crate) struct History {
    limits: HistoryLimits,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Every event with an id above this is kept (or was never sent). Starts at the
    /// channel's creation, and moves up as events are trimmed.
    complete_after: EventId,
    /// The newest id assigned.
    newest: EventId,
}

/// Where a resuming client starts.
pub(crate) struct Resume {
    pub(crate) gap: Option<Gap>,
    pub(crate) replay: Vec<Bytes>,
}

impl History {
    pub(crate) fn new(limits: HistoryLimits, start: EventId) -> History {
        History {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
            complete_after: start,
            newest: start,
        }
    }

    pub(crate) fn append(&mut self, id: EventId, bytes: Bytes) {
        self.bytes += bytes.len();
        self.entries.push_back(Entry {
            id,
            bytes,
            at: Instant::now(),
        });
        self.newest = id;
        self.trim();
    }

    /// How many events are kept, once those past the age limit are dropped.
    pub(crate) fn len(&mut self) -> usize {
        self.trim();
        self.entries.len()
    }

    fn trim(&mut self) {
        let now = Instant::now();
        while let Some(front) = self.entries.front() {
            let over_count = self
                .limits
                .max_events
                .is_some_and(|n| self.entries.len() > n);
            let over_bytes = self.limits.max_bytes.is_some_and(|b| self.bytes > b);
            let too_old = self
                .limits
                .max_age
                .is_some_and(|age| now.duration_since(front.at) > age);
            if !(over_count || over_bytes || too_old) {
                break;
            }
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes.len();
                self.complete_after = old.id;
            }
        }
    }

    /// What a client that last saw `last_event_id` must get before live events.
    pub(crate) fn resume(&mut self, last_event_id: &str) -> Resume {
        self.trim();
        let oldest_id = self.entries.front().map(|e| e.id);
        let gap = |reason| Gap {
            reason,
            last_event_id: Some(last_event_id.to_owned()),
            oldest_id,
            dropped: 0,
        };
        let everything = || self.entries.iter().map(|e| e.bytes.clone()).collect();
        match last_event_id.parse::<EventId>() {
            Ok(id) if id > self.newest => Resume {
                gap: Some(gap(GapReason::Unknown)),
                replay: everything(),
            },
            Ok(id) if id < self.complete_after => Resume {
                gap: Some(gap(GapReason::Expired)),
                replay: everything(),
            },
            Ok(id) => {
                let start = self.entries.partition_point(|e| e.id <= id);
                Resume {
                    gap: None,
                    replay: self
                        .entries
                        .range(start..)
                        .map(|e| e.bytes.clone())
                        .collect(),
                }
            }
            Err(_) => Resume {
                gap: Some(gap(GapReason::Unknown)),
                replay: everything(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(limits: HistoryLimits) -> History {
        let mut h = History::new(limits, EventId::new(10, 0));
        for seq in 1..=5 {
            h.append(EventId::new(10, seq), Bytes::from(format!("e{seq}")));
        }
        h
    }

    #[test]
    fn events_past_the_age_limit_are_not_counted() {
        let mut h = history(HistoryLimits::new().max_age(Duration::from_millis(20)));
        assert_eq!(h.len(), 5);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(h.len(), 0);
    }

    fn replayed(r: &Resume) -> Vec<&[u8]> {
        r.replay.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn resumes_after_the_id() {
        let mut h = history(HistoryLimits::new());
        let r = h.resume("10-3");
        assert!(r.gap.is_none());
        assert_eq!(replayed(&r), [&b"e4"[..], b"e5"]);
        assert!(h.resume("10-5").replay.is_empty());
        assert_eq!(h.resume("10-0").replay.len(), 5, "from the channel's start");
    }

    #[test]
    fn trimmed_resume_point_is_an_expired_gap() {
        let mut h = history(HistoryLimits::new().max_events(2));
        let r = h.resume("10-2");
        let gap = r.gap.as_ref().expect("gap");
        assert_eq!(gap.reason, GapReason::Expired);
        assert_eq!(gap.oldest_id, Some(EventId::new(10, 4)));
        assert_eq!(replayed(&r), [&b"e4"[..], b"e5"]);
        let r = h.resume("10-3");
        assert!(
            r.gap.is_none(),
            "10-3 was the last trimmed: nothing missing"
        );
        assert_eq!(r.replay.len(), 2);
    }

    #[test]
    fn unknown_ids_are_an_unknown_gap() {
        let mut h = history(HistoryLimits::new());
        for id in ["nonsense", "11-0", ""] {
            let r = h.resume(id);
            assert_eq!(r.gap.map(|g| g.reason), Some(GapReason::Unknown), "{id}");
            assert_eq!(r.replay.len(), 5);
        }
        let r = h.resume("9-99");
        assert_eq!(
            r.gap.map(|g| g.reason),
            Some(GapReason::Expired),
            "before the channel existed"
        );
    }

    #[test]
    fn byte_limit_trims() {
        let mut h = history(HistoryLimits::new().max_bytes(4));
        assert_eq!(h.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn age_limit_trims() {
        let mut h = history(HistoryLimits::new().max_age(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(11)).await;
        h.append(EventId::new(11, 0), Bytes::from_static(b"new"));
        assert_eq!(h.len(), 1);
        let r = h.resume("10-4");
        assert_eq!(r.gap.map(|g| g.reason), Some(GapReason::Expired));
        assert!(
            h.resume("10-5").gap.is_none(),
            "10-5 was seen: nothing missing"
        );
    }
}
