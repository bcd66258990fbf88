//! Adversarial interleavings, many seeds: what the session queue, direct writes,
//! channels and the `EventSource` client promise, checked while threads race each other
//! over real sockets.
//!
//! - [`session`]: several OS threads push to one session at once (single events, batches,
//!   joined runs shared with other sessions) while its client reads in fits and starts
//!   through a small receive buffer, so that direct writes go through whole, go through
//!   in part and are refused, the queue fills and drains, keep-alive comments fall due
//!   between events, and the session closes. Every case runs on each way a stream is
//!   served: the lean path with direct writes, the lean path without them, and hyper.
//! - [`channel`]: threads broadcast while clients drop and resume.
//! - [`client`]: a server cuts each connection of an `EventSource` at a byte of its
//!   choosing.
//!
//! Each case runs once per seed. A seed fixes every choice the test makes (sizes, push
//! kinds, pauses, cuts), not the threads' interleaving, which is the operating system's:
//! running many seeds is what makes the rare interleavings happen. `TIDINGS_STRESS_SEEDS=N`
//! runs N seeds (default 8), `TIDINGS_STRESS_SEED=S` runs seed S alone; a failure names
//! its seed. Pauses only shape the races: what is asserted of the events holds however
//! the threads ran. Each case also checks, over all its seeds, that its race happened at
//! least once (a close before the pushers were done, a policy that acted, a cut
//! connection), so that it cannot pass by testing nothing.

#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "client")]
#[allow(dead_code)] // the scripted server's parts the client tests use and these do not
#[path = "../scripted/mod.rs"]
mod scripted;

mod channel;
#[cfg(feature = "client")]
mod client;
mod session;

use std::time::Duration;

use fastrand::Rng;

/// A generous guard so a lost event fails the test instead of hanging it; never a
/// performance bound.
pub(crate) const GUARD: Duration = Duration::from_secs(30);

/// The seeds to run: `TIDINGS_STRESS_SEED` alone, or `TIDINGS_STRESS_SEEDS` of them.
pub(crate) fn seeds() -> Vec<u64> {
    let number = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
    };
    match (
        number("TIDINGS_STRESS_SEED"),
        number("TIDINGS_STRESS_SEEDS"),
    ) {
        (Some(seed), _) => vec![seed],
        (None, count) => (1..=count.unwrap_or(8)).collect(),
    }
}

/// One of `choices`, as the seed has it.
pub(crate) fn pick<T: Copy>(rng: &mut Rng, choices: &[T]) -> T {
    choices[rng.usize(..choices.len())]
}

/// Asserts that `seen` is `expected`, naming on failure how many of each there were and
/// the first place they differ (the end of the shorter, when one is a prefix of the
/// other).
pub(crate) fn assert_same_sequence<T: PartialEq + std::fmt::Debug>(
    seen: &[T],
    expected: &[T],
    context: &str,
) {
    if seen == expected {
        return;
    }
    let at = seen
        .iter()
        .zip(expected)
        .position(|(s, e)| s != e)
        .unwrap_or(seen.len().min(expected.len()));
    panic!(
        "{context}: {} of {} expected; the first difference at {at}: {:?} where {:?} was expected",
        seen.len(),
        expected.len(),
        seen.get(at),
        expected.get(at)
    );
}
