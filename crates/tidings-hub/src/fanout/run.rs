//! A run: the events one pass of the fan-out writes, encoded once, cut to a size that one
//! write per subscriber can carry, and joined per set of events a subscriber gets.

use std::sync::Arc;

use bytes::Bytes;

use tidings::server::SharedBytes;

use crate::engine::StoredEvent;

/// At most this many events go to a subscriber in one write (a run; see
/// `Fanout::dispatch`). Also the width of a run's subscriber masks.
pub(super) const MAX_RUN_EVENTS: usize = 64;

/// A run stops growing once its events hold this many bytes of data.
pub(super) const MAX_RUN_BYTES: usize = 256 * 1024;

/// An event's bytes on the wire, or `None` (logged) when it cannot be encoded.
pub(super) fn encode(event: &StoredEvent) -> Option<Bytes> {
    match event.encoded() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            tracing::error!(id = %event.id, error = %err, "stored event cannot be encoded; not delivered");
            None
        }
    }
}

/// How many of `events` the first run takes: at most [`MAX_RUN_EVENTS`], ending with the
/// one that reaches [`MAX_RUN_BYTES`] of data.
pub(super) fn run_len(events: &[Arc<StoredEvent>]) -> usize {
    let mut bytes = 0;
    let mut len = 0;
    while len < events.len() && len < MAX_RUN_EVENTS && bytes < MAX_RUN_BYTES {
        bytes += events[len].data.len();
        len += 1;
    }
    len
}

/// `events` cut into runs for [`Fanout::dispatch`](super::Fanout::dispatch) (see [`run_len`]).
pub(super) fn runs(events: &[Arc<StoredEvent>]) -> impl Iterator<Item = &[Arc<StoredEvent>]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (run, after) = rest.split_at(run_len(rest));
        rest = after;
        Some(run)
    })
}

/// The indexes of the bits set in `mask`, lowest first.
pub(super) fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
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
pub(super) struct Joined {
    encoded: Vec<Option<Bytes>>,
    /// The mask of every event that could be encoded.
    every: u64,
    built: Vec<(u64, Vec<Bytes>, SharedBytes)>,
}

impl Joined {
    pub(super) fn new(encoded: Vec<Option<Bytes>>) -> Joined {
        let every = (0..encoded.len())
            .filter(|&k| encoded[k].is_some())
            .fold(0, |mask, k| mask | 1 << k);
        Joined {
            encoded,
            every,
            built: Vec::new(),
        }
    }

    /// Each event of the run, encoded (`None`: it could not be).
    pub(super) fn encoded(&self) -> &[Option<Bytes>] {
        &self.encoded
    }

    /// The mask of every event that could be encoded.
    pub(super) fn every(&self) -> u64 {
        self.every
    }

    /// Adds the next event of a growing run. The sets built so far stay valid (their
    /// masks do not have its bit).
    pub(super) fn push(&mut self, encoded: Option<Bytes>) {
        if encoded.is_some() {
            self.every |= 1 << self.encoded.len();
        }
        self.encoded.push(encoded);
    }

    /// The encoded length of event `k` (0 when it could not be encoded).
    pub(super) fn len_of(&self, k: usize) -> usize {
        self.encoded[k].as_ref().map_or(0, Bytes::len)
    }

    /// The events of `mask`, one by one and joined.
    pub(super) fn get(&mut self, mask: u64) -> (&[Bytes], &SharedBytes) {
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
