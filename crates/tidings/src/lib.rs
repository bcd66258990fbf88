//! # Tidings
//!
//! Spec-exact server-sent events for tokio, hyper and axum.
//!
//! - [`wire`]: the `text/event-stream` format — [`Event`] encodes once into shared bytes,
//!   [`wire::Parser`] parses any chunking of a stream exactly as browsers do.
//! - [`server`]: sessions (one client connection each), channels (broadcast to many with
//!   filters), bounded replay history keyed on `Last-Event-ID`, keep-alive, and a named
//!   policy for slow clients; and [`server::serve`] (feature `serve`, on by default), an
//!   accept loop that writes event streams straight to their sockets, serving HTTPS and
//!   HTTP/2 too with [`Serve::tls`](server::Serve) (feature `tls`).
//! - [`client`] (feature `client`, on by default): an EventSource that reconnects exactly as
//!   browsers do, over HTTP/1.1 or HTTP/2, plain or TLS.
//! - [`EventId`]: ordered ids `<ms>-<seq>`, comparable across channels and topics.

#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
mod error;
mod id;
pub mod server;
pub mod wire;

pub use error::{Error, ErrorKind};
pub use id::{EventId, IdGenerator};
pub use wire::Event;

/// The README's library example, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
