//! Parsing: any chunking of `text/event-stream` bytes -> events (WHATWG rules).
//! PLACEHOLDER: being written on the `parser` branch.

use crate::error::Error;

/// Default maximum size of one event (or line) the parser will buffer: 1 MiB.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1 << 20;

/// One dispatched event, as a browser's `MessageEvent` would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The event type: `message` unless the stream named another.
    pub event_type: String,
    /// The data, lines joined with LF, without the trailing LF.
    pub data: String,
    /// The stream's last event id when the event was dispatched.
    pub last_event_id: String,
}

/// An incremental, push-based `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct Parser {}

impl Parser {
    /// A parser with the default maximum event size.
    pub fn new() -> Parser {
        Parser {}
    }

    /// Feeds one chunk.
    pub fn feed(&mut self, _chunk: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<MessageEvent> {
        None
    }
}
