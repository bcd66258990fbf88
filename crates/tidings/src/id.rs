//! Ordered event ids: `<ms>-<seq>`, comparable across topics, channels and engines.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind};

/// An ordered event id, written `<ms>-<seq>` (the shape of a Redis stream id): the
/// millisecond wall-clock time the event was stored, and a sequence number within that
/// millisecond.
///
/// Ids order first by `ms`, then by `seq`, so one `Last-Event-ID` says where to resume in
/// any number of topics at once, and finding the resume point is a seek. Ids handed out by
/// an [`IdGenerator`] never go backwards, even when the wall clock does.
///
/// ```
/// use tidings::EventId;
///
/// let a: EventId = "1700000000000-0".parse()?;
/// let b = EventId::new(1700000000000, 1);
/// assert!(a < b);
/// assert_eq!(b.to_string(), "1700000000000-1");
/// # Ok::<(), tidings::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// The smallest id; every stored event comes after it.
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// An id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> EventId {
        EventId { ms, seq }
    }

    /// The id as 16 big-endian bytes, whose byte order is the id order (for ordered keys
    /// in embedded databases).
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The inverse of [`EventId::to_be_bytes`].
    pub fn from_be_bytes(bytes: [u8; 16]) -> EventId {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&bytes[..8]);
        seq.copy_from_slice(&bytes[8..]);
        EventId::new(u64::from_be_bytes(ms), u64::from_be_bytes(seq))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = Error;

    /// Reads `<ms>-<seq>`; a bare `<ms>` means `<ms>-0`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidEventIdFormat`] for anything else.
    fn from_str(s: &str) -> Result<EventId, Error> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidEventIdFormat,
                format!(
                    "{s:?} is not a Tidings event id; expected <ms>-<seq>, e.g. 1700000000000-0"
                ),
            )
        };
        let digits = |p: &str| -> Result<u64, Error> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            p.parse().map_err(|_| invalid())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(EventId::new(digits(ms)?, digits(seq)?)),
            None => Ok(EventId::new(digits(s)?, 0)),
        }
    }
}

/// Hands out strictly increasing [`EventId`]s from the wall clock.
///
/// When the clock stands still or goes back, the millisecond part stays and the sequence
/// grows, so ids never repeat and never go backwards.
#[derive(Debug, Default)]
pub struct IdGenerator {
    last: EventId,
}

impl IdGenerator {
    /// A generator whose ids all come after `last` (e.g. the newest id on disk).
    pub fn after(last: EventId) -> IdGenerator {
        IdGenerator { last }
    }

    /// The newest id handed out (or the one given to [`IdGenerator::after`]).
    pub fn last(&self) -> EventId {
        self.last
    }

    /// The next id, using the current wall-clock time.
    pub fn next_id(&mut self) -> EventId {
        self.next_at(now_ms())
    }

    /// The next id for a given wall-clock time in ms (for tests and replays).
    pub fn next_at(&mut self, now_ms: u64) -> EventId {
        self.last = if now_ms > self.last.ms {
            EventId::new(now_ms, 0)
        } else if let Some(seq) = self.last.seq.checked_add(1) {
            EventId::new(self.last.ms, seq)
        } else {
            // The sequence is spent (only after `after` a made-up id): go on in the next
            // millisecond. At the very last id there is nowhere to go; it stays there.
            EventId::new(self.last.ms.saturating_add(1), 0).max(self.last)
        };
        self.last
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_sequence_moves_to_the_next_millisecond_and_never_back() {
        let mut ids = IdGenerator::after(EventId::new(7, u64::MAX));
        assert_eq!(ids.next_at(7), EventId::new(8, 0));
        let mut ids = IdGenerator::after(EventId::new(u64::MAX, u64::MAX));
        assert_eq!(ids.next_at(0), EventId::new(u64::MAX, u64::MAX));
    }

    #[test]
    fn parses_and_prints() {
        let id: EventId = "12-3".parse().expect("valid");
        assert_eq!(id, EventId::new(12, 3));
        assert_eq!(id.to_string(), "12-3");
        assert_eq!("12".parse::<EventId>().expect("valid"), EventId::new(12, 0));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1 -2",
            "+1-2",
            "99999999999999999999-0",
        ] {
            let err = bad.parse::<EventId>().expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidEventIdFormat);
        }
    }

    #[test]
    fn bytes_order_is_id_order() {
        let a = EventId::new(1, u64::MAX);
        let b = EventId::new(2, 0);
        assert!(a < b);
        assert!(a.to_be_bytes() < b.to_be_bytes());
        assert_eq!(EventId::from_be_bytes(b.to_be_bytes()), b);
    }

    #[test]
    fn generator_never_goes_back() {
        let mut g = IdGenerator::after(EventId::new(100, 5));
        assert_eq!(g.next_at(50), EventId::new(100, 6));
        assert_eq!(g.next_at(100), EventId::new(100, 7));
        assert_eq!(g.next_at(101), EventId::new(101, 0));
    }
}
