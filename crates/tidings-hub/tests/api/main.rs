//! End-to-end tests of the hub's HTTP API over real sockets: the hub runs in-process on
//! 127.0.0.1:<free port> exactly as `tidings serve` runs it (`Server::run_until`).
//! One test binary, split by what the tests are about.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod delivery;
mod operations;
mod requests;
mod resume;
mod slow;
mod stress;
mod tls;

use tidings::EventId;

/// Parses an id the hub returned.
fn id(text: &str) -> EventId {
    text.parse().expect("an event id")
}
