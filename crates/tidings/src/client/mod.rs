//! An EventSource for Rust: connects to a `text/event-stream` URL and yields its events,
//! reconnecting exactly as a browser's
//! [`EventSource`](https://html.spec.whatwg.org/multipage/server-sent-events.html) does.
//!
//! [`EventSource`] is a [`Stream`](futures_core::Stream) of [`Item`]s: the events, the
//! connection's [`ReadyState`] changes, and errors. What it does, per the standard:
//!
//! - Each attempt is a `GET` with `Accept: text/event-stream` and `Cache-Control: no-cache`,
//!   plus `Last-Event-ID` when the last committed event id is non-empty.
//! - A 200 whose content type's essence is `text/event-stream` (any parameters, any case)
//!   opens the stream. 204 No Content closes it for good, without an error. Any other
//!   status, or another content type, is an error after which it does not reconnect.
//! - Redirects (301, 302, 303, 307, 308) are followed, up to a bound; every reconnect starts
//!   again from the original URL.
//! - A network error, an idle timeout, or a clean end of the body reconnects after the
//!   reconnection time: the server's latest `retry:`, else the client's default. Repeated
//!   failures double the wait up to a cap, and a random extra of up to half the wait is
//!   added so that many clients cut off at once do not come back at once.
//! - An event cut off by the end of a connection is dropped, and an `id:` inside it is not
//!   committed: the reconnect asks for the events after the last *whole* event.
//!
//! Parsing is [`crate::wire::Parser`]'s job, so the client accepts any chunking of the
//! bytes: CRLF split across reads, a BOM split across reads, UTF-8 split across reads.
//! Memory is bounded by [`Builder::max_event_size`].
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use futures_util::StreamExt;
//! use tidings::client::{EventSource, Item, ReadyState};
//!
//! # async fn run() -> Result<(), tidings::Error> {
//! let mut source = EventSource::builder("http://127.0.0.1:8080/subscribe?topic=chat")
//!     .header("Authorization", "Bearer s3cret")
//!     .idle_timeout(Duration::from_secs(45))
//!     .build()?;
//!
//! while let Some(item) = source.next().await {
//!     match item {
//!         Item::Event(event) => println!("{}: {}", event.event_type, event.data),
//!         Item::State(ReadyState::Connecting) => eprintln!("connecting..."),
//!         Item::State(state) => eprintln!("{state:?}"),
//!         // Errors after which it reconnects come with a `Connecting` state next;
//!         // after a fatal one the stream yields `Closed` and ends.
//!         Item::Error(error) => eprintln!("{error}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP versions and TLS
//!
//! `https://` URLs use rustls (with the `ring` provider and Mozilla's root certificates from
//! `webpki-roots`, plus any added with [`Builder::add_root_certificate`]); ALPN picks
//! HTTP/2 when the server offers it, else HTTP/1.1. Plain `http://` uses HTTP/1.1 unless
//! [`Builder::http2_prior_knowledge`] asks for HTTP/2 directly.

mod builder;
mod event_source;
mod protocol;
mod transport;

pub(crate) use builder::Options;
pub use builder::{
    Builder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_REDIRECTS, DEFAULT_RETRY,
};
pub use event_source::EventSource;
pub use transport::{describe_error, refusal_reason, tls_client_config};

use crate::error::Error;
use crate::wire::MessageEvent;

/// One thing an [`EventSource`] reports: an event, a change of connection state, or an
/// error.
#[derive(Debug)]
pub enum Item {
    /// A whole event, as a browser's `MessageEvent` would carry it.
    Event(MessageEvent),
    /// The connection changed state. The first item of every stream is
    /// `State(Connecting)`; the last, when the stream ends, is `State(Closed)`.
    State(ReadyState),
    /// Something failed. When the client will reconnect (network errors, idle timeouts),
    /// the next item is `State(Connecting)`; when the failure is fatal (a status other than
    /// 200 or 204, a wrong content type, an oversized event) the next is `State(Closed)`.
    Error(Error),
}

/// The state of an [`EventSource`]'s connection, as the browser API's `readyState` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyState {
    /// Connecting or waiting to reconnect.
    Connecting,
    /// Connected: a 200 `text/event-stream` response is being read.
    Open,
    /// Closed for good: the stream ends after this.
    Closed,
}
