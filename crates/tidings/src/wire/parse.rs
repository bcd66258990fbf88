//! Parsing: any chunking of `text/event-stream` bytes -> events, exactly as the WHATWG
//! standard's [event stream interpretation] says.
//!
//! [`Parser`] is a push parser with no I/O of its own: hand it whatever the network
//! delivered with [`Parser::feed`], then pop the events that completed with
//! [`Parser::next_event`]. Chunk boundaries never change the result: a CRLF, a UTF-8
//! character or the leading byte-order mark split across two reads is read as if it had
//! arrived whole.
//!
//! ```
//! use tidings::wire::Parser;
//!
//! let mut parser = Parser::new();
//! parser.feed(b"id: 1\nevent: greeting\ndata: hel")?;
//! assert_eq!(parser.next_event(), None, "the event is not complete yet");
//! parser.feed(b"lo\r\n\r\n")?;
//! let event = parser.next_event().expect("one whole event");
//! assert_eq!(event.event_type, "greeting");
//! assert_eq!(event.data, "hello");
//! assert_eq!(parser.last_event_id(), "1");
//! # Ok::<(), tidings::Error>(())
//! ```
//!
//! How it stays fast: line ends are found with `memchr2`, a line that lies whole inside a
//! chunk is read in place (no copy), a `data:` value is copied once, straight into the
//! event's data buffer (even when its line spans many chunks), and UTF-8 is checked once
//! per field value, when the field is used, never byte by byte. Working on bytes and
//! decoding later gives the same text as decoding the stream first, because every byte
//! the format looks at (CR, LF, `:`, space, NUL) is ASCII, and an ASCII byte can neither
//! belong to a multi-byte UTF-8 sequence nor be swallowed by an invalid one.
//!
//! [event stream interpretation]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// Default maximum size of one event (or line) the parser will buffer: 1 MiB.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1 << 20;

/// The UTF-8 byte-order mark, dropped once at the start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event, as a browser's `MessageEvent` would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The event type: `message` unless the stream named another with `event:`.
    pub event_type: String,
    /// The data, lines joined with LF, without the trailing LF.
    pub data: String,
    /// The stream's last event id when the event was dispatched (`""` if none was ever
    /// set or the stream reset it with an empty `id:`).
    pub last_event_id: String,
}

/// An incremental, push-based `text/event-stream` parser.
///
/// Feed it the bytes of one connection in any chunks with [`Parser::feed`] and pop the
/// dispatched events with [`Parser::next_event`]. When the connection ends, call
/// [`Parser::end_of_stream`]: the half-received event is discarded (an `id:` inside it is
/// not committed), and the parser is ready for the next connection, keeping the
/// [last event id](Parser::last_event_id) to send as `Last-Event-ID` and the server's
/// [`retry:`](Parser::retry).
///
/// Memory is bounded: a line longer than the maximum event size, or an event whose data
/// grows past it, is an [`ErrorKind::EventTooLarge`] error rather than an ever-growing
/// buffer (see [`Parser::with_max_event_size`]). Dispatched events wait in a queue until
/// popped, so pop them after every `feed`.
///
/// ```
/// use std::time::Duration;
/// use tidings::wire::Parser;
///
/// let mut parser = Parser::new();
/// for chunk in [&b"\xEF\xBB\xBFretry: 2500\r\nid: 7\r\nda"[..], b"ta: caf\xC3", b"\xA9\r", b"\n\r\n"] {
///     parser.feed(chunk)?;
/// }
/// let event = parser.next_event().expect("the event is complete");
/// assert_eq!(event.event_type, "message");
/// assert_eq!(event.data, "café");
/// assert_eq!(event.last_event_id, "7");
/// assert_eq!(parser.next_event(), None);
/// assert_eq!(parser.retry(), Some(Duration::from_millis(2500)));
///
/// // The connection drops in the middle of an event: it is discarded and its id is not
/// // committed, so a reconnect resumes after "7".
/// parser.feed(b"id: 8\ndata: half an ev")?;
/// parser.end_of_stream();
/// assert_eq!(parser.next_event(), None);
/// assert_eq!(parser.last_event_id(), "7");
/// # Ok::<(), tidings::Error>(())
/// ```
pub struct Parser {
    /// The bound on one line's length and on one event's data buffer, in bytes.
    max_event_size: usize,
    /// Whether the stream's first bytes are still being compared with the BOM, and how
    /// many of them matched so far (held back until we know whether they are content).
    bom: BomState,
    /// The previous chunk ended with a CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// What the bytes of an unfinished line (one that started in an earlier chunk) are.
    partial: Partial,
    /// Bytes of an unfinished line so far, including any streamed straight into `data`.
    partial_len: usize,
    /// The unfinished line's bytes when it is not a `data:` line being streamed.
    line: Vec<u8>,
    /// The data buffer: every `data` value of the current event, each followed by LF.
    data: Vec<u8>,
    /// The event type buffer (raw bytes, decoded at dispatch).
    event_type: Vec<u8>,
    /// The last event id buffer (raw bytes), meaningful only while `id_pending` is set:
    /// otherwise the buffer equals the committed `last_event_id`.
    id_buffer: Vec<u8>,
    /// An `id:` field was seen since the last dispatch.
    id_pending: bool,
    /// The committed last event id.
    last_event_id: String,
    /// The reconnection time the stream asked for, in milliseconds.
    retry_ms: Option<u64>,
    /// Dispatched events not yet popped.
    events: VecDeque<MessageEvent>,
    /// An `EventTooLarge` error happened; input is refused until `end_of_stream`.
    failed: bool,
}

/// How far the check for the leading byte-order mark has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// The first `n` bytes of the stream matched the BOM so far (`n` < 3).
    Matched(u8),
    /// The BOM was dropped, or the stream did not start with one.
    Done,
}

/// What an unfinished line is, so its next bytes go to the right place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    /// No unfinished line: the next byte starts a line.
    None,
    /// The line is collected in `Parser::line` and interpreted when it ends.
    Line,
    /// A `data:` line whose value is being appended to the data buffer as it arrives;
    /// `strip_space` is set while the value is still empty, so that one leading space in
    /// the next chunk is still dropped.
    Data { strip_space: bool },
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new()
    }
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("max_event_size", &self.max_event_size)
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry())
            .field("buffered_line_bytes", &self.partial_len)
            .field("buffered_data_bytes", &self.data.len())
            .field("queued_events", &self.events.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Parser {
    /// A parser with the default maximum event size, [`DEFAULT_MAX_EVENT_SIZE`] (1 MiB).
    pub fn new() -> Parser {
        Parser::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    /// A parser that refuses any line longer than `max_bytes` bytes (not counting its line
    /// end) and any event whose data buffer grows past `max_bytes` bytes (its `data` values
    /// plus one LF after each), so that a hostile or broken server cannot make it buffer
    /// without bound.
    ///
    /// A single-line event's data can thus be at most `max_bytes - 6` bytes long (the line
    /// also holds `data: `). With `max_bytes == 0` only empty lines are accepted.
    pub fn with_max_event_size(max_bytes: usize) -> Parser {
        Parser {
            max_event_size: max_bytes,
            bom: BomState::Matched(0),
            after_cr: false,
            partial: Partial::None,
            partial_len: 0,
            line: Vec::new(),
            data: Vec::new(),
            event_type: Vec::new(),
            id_buffer: Vec::new(),
            id_pending: false,
            last_event_id: String::new(),
            retry_ms: None,
            events: VecDeque::new(),
            failed: false,
        }
    }

    /// The maximum line and event data size this parser accepts, in bytes.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }

    /// Feeds the next bytes of the stream, split anywhere. Events completed by them are
    /// queued for [`Parser::next_event`].
    ///
    /// # Errors
    /// [`ErrorKind::EventTooLarge`] when a line grows longer than the maximum event size,
    /// or an event's data grows past it. Events completed before the offending line stay
    /// queued. The rest of the connection cannot be read reliably, so every later `feed`
    /// fails the same way until [`Parser::end_of_stream`] prepares the parser for a new
    /// connection.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(Error::new(
                ErrorKind::EventTooLarge,
                "the event stream already exceeded the parser's maximum event size; \
                 end this connection and call Parser::end_of_stream() before feeding a new one",
            ));
        }
        let result = self.feed_after_bom(chunk);
        if result.is_err() {
            self.failed = true;
            // Nothing buffered can be used any more: give the memory back now.
            self.line = Vec::new();
            self.data = Vec::new();
        }
        result
    }

    /// The next dispatched event, oldest first, or `None` when no complete event is queued.
    pub fn next_event(&mut self) -> Option<MessageEvent> {
        self.events.pop_front()
    }

    /// The stream's last event id: the value of the last `id:` field of a completed event
    /// block (`""` at the start, or after an empty `id:`). This is what a client sends as
    /// `Last-Event-ID` when it reconnects.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Sets the last event id, as if an earlier stream had committed it: events that
    /// carry no `id:` of their own report it, and [`Parser::last_event_id`] returns it
    /// until the stream sets another. Meant for a client's initial `Last-Event-ID`.
    pub fn set_last_event_id(&mut self, id: impl Into<String>) {
        self.last_event_id = id.into();
        self.id_pending = false;
    }

    /// The reconnection time the stream asked for with its latest valid `retry:` field, or
    /// `None` if it never sent one.
    ///
    /// A value too large for `u64` milliseconds saturates at `u64::MAX` milliseconds
    /// (about 584 million years) rather than being ignored: the server clearly asked for
    /// "very long"; clients should cap it to something sensible.
    pub fn retry(&self) -> Option<Duration> {
        self.retry_ms.map(Duration::from_millis)
    }

    /// The connection ended (cleanly or not). Discards the half-received event and any
    /// partial line: an `id:` inside them is not committed, so
    /// [`Parser::last_event_id`] still returns the last id of a complete event block.
    /// Resets the byte-order-mark and CR state and clears an earlier
    /// [`ErrorKind::EventTooLarge`] failure, so the next connection's bytes can be fed.
    /// Keeps the last event id, the retry time, and the events already dispatched.
    pub fn end_of_stream(&mut self) {
        self.bom = BomState::Matched(0);
        self.after_cr = false;
        self.partial = Partial::None;
        self.partial_len = 0;
        self.line.clear();
        self.data.clear();
        self.event_type.clear();
        self.id_pending = false;
        self.failed = false;
    }

    /// Drops the stream's leading BOM (once, even when it arrives split), then parses.
    fn feed_after_bom(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let BomState::Matched(matched) = self.bom else {
            return self.feed_lines(chunk);
        };
        let mut matched = usize::from(matched);
        let mut consumed = 0;
        while matched < BOM.len() {
            match chunk.get(consumed) {
                // Everything so far may still be a BOM: hold it back until we know.
                None => {
                    self.bom = BomState::Matched(matched as u8);
                    return Ok(());
                }
                Some(&byte) if byte == BOM[matched] => {
                    matched += 1;
                    consumed += 1;
                }
                // Not a BOM after all: the bytes held back are content.
                Some(_) => {
                    self.bom = BomState::Done;
                    self.feed_lines(&BOM[..matched])?;
                    return self.feed_lines(&chunk[consumed..]);
                }
            }
        }
        self.bom = BomState::Done;
        self.feed_lines(&chunk[consumed..])
    }

    /// Splits `chunk` into lines, finishing the unfinished line of earlier chunks first.
    fn feed_lines(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        if self.partial != Partial::None {
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => return self.extend_partial(rest),
                Some(end) => {
                    self.extend_partial(&rest[..end])?;
                    self.finish_partial()?;
                    rest = self.skip_line_end(rest, end);
                }
            }
        }
        while let Some(end) = memchr::memchr2(b'\r', b'\n', rest) {
            let line = &rest[..end];
            if line.len() > self.max_event_size {
                return Err(self.line_too_large());
            }
            self.process_line(line)?;
            rest = self.skip_line_end(rest, end);
        }
        if rest.is_empty() {
            Ok(())
        } else {
            self.extend_partial(rest)
        }
    }

    /// What follows the line end at `rest[end]` (CR, LF or CRLF). A CR that ends the chunk
    /// leaves `after_cr` set so a LF starting the next chunk is not read as a second line end.
    fn skip_line_end<'a>(&mut self, rest: &'a [u8], end: usize) -> &'a [u8] {
        let after = &rest[end + 1..];
        if rest[end] == b'\r' {
            match after.first() {
                Some(b'\n') => return &after[1..],
                None => self.after_cr = true,
                Some(_) => {}
            }
        }
        after
    }

    /// Appends bytes of a line whose end has not arrived yet.
    fn extend_partial(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.partial_len += bytes.len();
        if self.partial_len > self.max_event_size {
            return Err(self.line_too_large());
        }
        match self.partial {
            Partial::Data { strip_space } => self.append_data_value(bytes, strip_space),
            Partial::None | Partial::Line => {
                self.partial = Partial::Line;
                self.line.extend_from_slice(bytes);
                // Once a long line shows it is `data:`, stream the rest of it straight into
                // the data buffer instead of copying it twice.
                if !self.line.starts_with(b"data:") {
                    return Ok(());
                }
                let line = std::mem::take(&mut self.line);
                let result = self.append_data_value(&line[b"data:".len()..], true);
                self.line = line;
                self.line.clear();
                result
            }
        }
    }

    /// Appends part of a `data` value (the first part when `strip_space`) to the data buffer.
    fn append_data_value(&mut self, bytes: &[u8], strip_space: bool) -> Result<(), Error> {
        let value = match bytes {
            [] => {
                self.partial = Partial::Data { strip_space };
                return Ok(());
            }
            [b' ', value @ ..] if strip_space => value,
            value => value,
        };
        self.partial = Partial::Data { strip_space: false };
        self.data.extend_from_slice(value);
        self.check_data_size()
    }

    /// The unfinished line just ended: interpret it.
    fn finish_partial(&mut self) -> Result<(), Error> {
        let partial = std::mem::replace(&mut self.partial, Partial::None);
        self.partial_len = 0;
        match partial {
            Partial::None => Ok(()),
            Partial::Data { .. } => {
                self.data.push(b'\n');
                self.check_data_size()
            }
            Partial::Line => {
                let line = std::mem::take(&mut self.line);
                let result = self.process_line(&line);
                self.line = line;
                self.line.clear();
                result
            }
        }
    }

    /// Interprets one complete line (without its line end).
    fn process_line(&mut self, line: &[u8]) -> Result<(), Error> {
        let (name, value) = match memchr::memchr(b':', line) {
            None if line.is_empty() => {
                self.dispatch();
                return Ok(());
            }
            // A comment.
            Some(0) => return Ok(()),
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.reserve(value.len() + 1);
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                return self.check_data_size();
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            // An id with NUL is ignored: it could not be sent back as a header.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id_buffer.clear();
                self.id_buffer.extend_from_slice(value);
                self.id_pending = true;
            }
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An empty line: commit the id, and fire the event if it has data.
    fn dispatch(&mut self) {
        if self.id_pending {
            self.id_pending = false;
            self.last_event_id.clear();
            self.last_event_id.push_str(&decode(&self.id_buffer));
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        // Hand the buffer itself to the event (no copy), and size the next one like it.
        let next_buffer = Vec::with_capacity(self.data.len());
        let mut data = std::mem::replace(&mut self.data, next_buffer);
        data.pop(); // the LF after the last line
        let event_type = if self.event_type.is_empty() {
            String::from("message")
        } else {
            decode(&self.event_type).into_owned()
        };
        self.event_type.clear();
        self.events.push_back(MessageEvent {
            event_type,
            data: decode_owned(data),
            last_event_id: self.last_event_id.clone(),
        });
    }

    fn check_data_size(&self) -> Result<(), Error> {
        if self.data.len() > self.max_event_size {
            return Err(Error::new(
                ErrorKind::EventTooLarge,
                format!(
                    "an incoming event's data grew past the parser's maximum event size of {} bytes; \
                     raise it with Parser::with_max_event_size (or the client's max event size option)",
                    self.max_event_size
                ),
            ));
        }
        Ok(())
    }

    fn line_too_large(&self) -> Error {
        Error::new(
            ErrorKind::EventTooLarge,
            format!(
                "an incoming line is longer than the parser's maximum event size of {} bytes; \
                 raise it with Parser::with_max_event_size (or the client's max event size option)",
                self.max_event_size
            ),
        )
    }
}

/// A `retry` value in milliseconds: ASCII digits only, base ten, saturating at `u64::MAX`.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |ms, digit| {
        ms.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// UTF-8 text of `bytes`, invalid sequences replaced with U+FFFD. Valid text (the usual
/// case) takes the fast `str::from_utf8` check only, not the slower lossy decoder.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// As [`decode`], taking ownership: no copy when valid.
fn decode_owned(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests;
