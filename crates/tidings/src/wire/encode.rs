//! Encoding: [`Event`] -> `text/event-stream` bytes, validated, written once.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::error::{Error, ErrorKind};

/// One server-sent event, built field by field and encoded once into [`Bytes`].
///
/// Building never fails; [`Event::encode`] checks every field and returns a typed
/// [`Error`] for anything that would corrupt the stream (a CR or LF in the event type, id
/// or a comment would inject fields; a NUL in an id makes clients ignore it).
///
/// Fields are written in the order comments, `retry`, `id`, `event`, `data`, always as
/// `name: value` so a value that starts with a space survives the parser's rule of
/// dropping one leading space. Data with CR, LF or CRLF becomes one `data:` line per line;
/// empty data is written as `data:` so the event still fires.
///
/// ```
/// use std::time::Duration;
/// use tidings::wire::Event;
///
/// let bytes = Event::new()
///     .comment("hi")
///     .retry(Duration::from_secs(3))
///     .data(" leading space\r\nsecond line")
///     .encode()?;
/// assert_eq!(&bytes[..], b": hi\nretry: 3000\ndata:  leading space\ndata: second line\n\n");
/// # Ok::<(), tidings::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    data: Option<String>,
    event_type: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    comments: Vec<String>,
}

impl Event {
    /// An empty event. Encoded as is it only carries what you add to it.
    pub fn new() -> Event {
        Event::default()
    }

    /// An event whose data is `value` serialized as JSON (one line, no newlines).
    ///
    /// # Errors
    /// [`ErrorKind::Json`] when `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Event, Error> {
        let data = serde_json::to_string(value).map_err(|e| {
            Error::with_source(ErrorKind::Json, "event data is not serializable as JSON", e)
        })?;
        Ok(Event::new().data(data))
    }

    /// Sets the data. Any CR, LF or CRLF splits it into several `data:` lines, which the
    /// client joins back with LF.
    pub fn data(mut self, data: impl Into<String>) -> Event {
        self.data = Some(data.into());
        self
    }

    /// Sets the event type (`event:`); browsers dispatch it to `addEventListener(type)`
    /// instead of `onmessage`.
    pub fn event(mut self, event_type: impl Into<String>) -> Event {
        self.event_type = Some(event_type.into());
        self
    }

    /// Sets the id (`id:`), which the client sends back as `Last-Event-ID` on reconnect.
    /// An empty id resets the client's last event id.
    pub fn id(mut self, id: impl Into<String>) -> Event {
        self.id = Some(id.into());
        self
    }

    /// Sets the client's reconnection time (`retry:`), written in whole milliseconds.
    pub fn retry(mut self, retry: Duration) -> Event {
        self.retry = Some(retry);
        self
    }

    /// Adds a comment line (`: text`), which clients ignore; useful for keep-alive and
    /// debugging.
    pub fn comment(mut self, comment: impl Into<String>) -> Event {
        self.comments.push(comment.into());
        self
    }

    /// The data, if set.
    pub fn data_ref(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// The event type, if set.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The id, if set.
    pub fn id_ref(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Encodes the event into freshly allocated, immutable bytes ready to share between
    /// any number of connections.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidEventType`], [`ErrorKind::InvalidId`] or
    /// [`ErrorKind::InvalidComment`] when a field would corrupt the stream.
    pub fn encode(&self) -> Result<Bytes, Error> {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the encoded event to `buf` (for writing a batch in one buffer). On error
    /// nothing is appended.
    ///
    /// # Errors
    /// As [`Event::encode`].
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), Error> {
        self.validate()?;
        buf.reserve(self.encoded_len_hint());
        for comment in &self.comments {
            put_field(buf, b"", comment.as_bytes());
        }
        if let Some(retry) = self.retry {
            let digits = retry.as_millis().to_string();
            put_field(buf, b"retry", digits.as_bytes());
        }
        if let Some(id) = &self.id {
            put_field(buf, b"id", id.as_bytes());
        }
        if let Some(event_type) = &self.event_type {
            put_field(buf, b"event", event_type.as_bytes());
        }
        if let Some(data) = &self.data {
            put_data(buf, data.as_bytes());
        }
        buf.put_u8(b'\n');
        Ok(())
    }

    fn validate(&self) -> Result<(), Error> {
        if let Some(t) = &self.event_type {
            if has_line_break(t) {
                return Err(Error::new(
                    ErrorKind::InvalidEventType,
                    format!("event type {t:?} contains a CR or LF, which would inject fields into the stream"),
                ));
            }
        }
        if let Some(id) = &self.id {
            if has_line_break(id) || id.contains('\0') {
                return Err(Error::new(
                    ErrorKind::InvalidId,
                    format!("event id {id:?} contains a CR, LF or NUL; clients would misread or ignore it"),
                ));
            }
        }
        if let Some(c) = self.comments.iter().find(|c| has_line_break(c)) {
            return Err(Error::new(
                ErrorKind::InvalidComment,
                format!("comment {c:?} contains a CR or LF, which would end the comment and inject fields"),
            ));
        }
        Ok(())
    }

    fn encoded_len_hint(&self) -> usize {
        let data = self.data.as_ref().map_or(0, |d| d.len() + 8);
        let others = self.event_type.as_ref().map_or(0, |t| t.len() + 8)
            + self.id.as_ref().map_or(0, |i| i.len() + 5)
            + self.comments.iter().map(|c| c.len() + 3).sum::<usize>()
            + if self.retry.is_some() { 28 } else { 0 };
        data + others + 1
    }
}

fn has_line_break(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

/// Writes `name: value\n` (or `: value\n` for a comment, `name:\n` for an empty value).
fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    if value.is_empty() {
        buf.put_slice(b":\n");
    } else {
        buf.put_slice(b": ");
        buf.put_slice(value);
        buf.put_u8(b'\n');
    }
}

/// Writes one `data:` line per line of `data`, splitting at CRLF, lone CR and lone LF.
fn put_data(buf: &mut BytesMut, mut data: &[u8]) {
    loop {
        match memchr::memchr2(b'\r', b'\n', data) {
            None => {
                put_field(buf, b"data", data);
                return;
            }
            Some(end) => {
                put_field(buf, b"data", &data[..end]);
                let skip = if data[end] == b'\r' && data.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                data = &data[end + skip..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: Event) -> Vec<u8> {
        e.encode().expect("valid event").to_vec()
    }

    #[test]
    fn data_only() {
        assert_eq!(enc(Event::new().data("foobar")), b"data: foobar\n\n");
    }

    #[test]
    fn leading_space_survives() {
        assert_eq!(enc(Event::new().data(" foobar")), b"data:  foobar\n\n");
    }

    #[test]
    fn empty_data_is_bare_field() {
        assert_eq!(enc(Event::new().data("")), b"data:\n\n");
    }

    #[test]
    fn every_line_break_splits_data() {
        assert_eq!(
            enc(Event::new().data("a\nb\r\nc\rd")),
            b"data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(enc(Event::new().data("a\n")), b"data: a\ndata:\n\n");
        assert_eq!(enc(Event::new().data("\r\n")), b"data:\ndata:\n\n");
        assert_eq!(enc(Event::new().data("\n\r")), b"data:\ndata:\ndata:\n\n");
    }

    #[test]
    fn all_fields_in_order() {
        assert_eq!(
            enc(Event::new()
                .data("d")
                .event("t")
                .id("1-0")
                .retry(Duration::from_millis(1500))
                .comment("c")),
            b": c\nretry: 1500\nid: 1-0\nevent: t\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_id_resets() {
        assert_eq!(enc(Event::new().id("")), b"id:\n\n");
    }

    #[test]
    fn json_data() {
        #[derive(Serialize)]
        struct Msg<'a> {
            text: &'a str,
        }
        let e = Event::json(&Msg { text: "a\nb" }).expect("serializable");
        assert_eq!(enc(e), b"data: {\"text\":\"a\\nb\"}\n\n");
    }

    #[test]
    fn injection_is_a_typed_error() {
        for (event, kind) in [
            (Event::new().event("a\nb"), ErrorKind::InvalidEventType),
            (Event::new().event("a\rb"), ErrorKind::InvalidEventType),
            (Event::new().id("1\n"), ErrorKind::InvalidId),
            (Event::new().id("1\0"), ErrorKind::InvalidId),
            (Event::new().comment("x\r\ny"), ErrorKind::InvalidComment),
        ] {
            let err = event.encode().expect_err("must be rejected");
            assert_eq!(err.kind(), kind, "{event:?}");
            let mut buf = BytesMut::from(&b"kept"[..]);
            assert!(event.encode_into(&mut buf).is_err());
            assert_eq!(&buf[..], b"kept", "nothing appended on error");
        }
    }
}
