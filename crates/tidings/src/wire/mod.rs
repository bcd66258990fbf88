//! The `text/event-stream` format: [`Event`] encodes once into shared bytes, [`Parser`]
//! turns any chunking of a stream back into events, exactly as the WHATWG standard says.
//!
//! ```
//! use tidings::wire::{Event, Parser};
//!
//! let bytes = Event::new().event("greeting").id("7").data("hello\nworld").encode()?;
//! assert_eq!(&bytes[..], b"id: 7\nevent: greeting\ndata: hello\ndata: world\n\n");
//!
//! let mut parser = Parser::new();
//! parser.feed(&bytes)?;
//! let event = parser.next_event().expect("one whole event");
//! assert_eq!(event.event_type, "greeting");
//! assert_eq!(event.data, "hello\nworld");
//! assert_eq!(event.last_event_id, "7");
//! # Ok::<(), tidings::Error>(())
//! ```

mod encode;
mod parse;

pub use encode::Event;
pub use parse::{MessageEvent, Parser, DEFAULT_MAX_EVENT_SIZE};
