//! Conformance with the web-platform-tests' event-stream format tests: for each parsing
//! case, [`Parser`] is fed the exact bytes the WPT server sends and must produce exactly
//! the events (type, data, last event id) and the `retry` time the WPT test expects,
//! whether the body arrives whole, cut in two at any byte, or one byte at a time.
//!
//! The cases come from WPT's `eventsource/format-*.htm` (and their `.js` / `.any.js`
//! ports): `format-bom.htm`, `format-bom-2.htm`, `format-comments.htm`,
//! `format-data-before-final-empty-line.htm`, `format-field-data.htm`,
//! `format-field-event-empty.htm`, `format-field-event.htm`, `format-field-id.htm`,
//! `format-field-id-2.htm`, `format-field-id-3.htm`, `format-field-id-null.htm`,
//! `format-field-parsing.htm`, `format-field-retry-bogus.htm`,
//! `format-field-retry-empty.htm`, `format-field-retry.htm`, `format-field-unknown.htm`,
//! `format-leading-space.htm`, `format-newlines.htm`, `format-null-character.html` and
//! `format-utf-8.htm`, with the bodies their servers build (`resources/message.py`,
//! `resources/last-event-id.py`, `resources/last-event-id2.py`). Where WPT's expectations
//! changed over time (`format-field-id-3`, `format-field-id-null`, `format-utf-8`), the
//! current ones are used.
//!
//! Left out, because they test the browser or the transport rather than the format:
//! - `format-mime-bogus.htm` (and `format-mime-valid-bogus.htm`,
//!   `format-mime-trailing-semicolon.htm`): Content-Type checking, which the parser never
//!   sees;
//! - the timing half of the `retry` tests (how long the browser waits before it
//!   reconnects): here only the reconnection time the parser reports is checked;
//! - the `charset=windows-1252` header of `format-utf-8`: only the body is fed, which
//!   must decode as UTF-8 whatever the header says.
//!
//! A browser reconnects when the body ends; tests that depend on that (the id tests and
//! `format-data-before-final-empty-line`) are run as several connections on one parser,
//! with [`Parser::end_of_stream`] between them, the next body built from the
//! `Last-Event-ID` the client would send (none when the last event id is empty).

use std::time::Duration;

use tidings::wire::{MessageEvent, Parser};

#[test]
fn format_bom() {
    // The first BOM is dropped; the second is content, so `\u{FEFF}data` is an unknown
    // field and "2" never fires.
    check(
        "format-bom",
        &message_py(b"\xEF\xBB\xBFdata:1\n\n\xEF\xBB\xBFdata:2\n\ndata:3"),
        &[message("1", ""), message("3", "")],
        None,
    );
}

#[test]
fn format_bom_2() {
    // Two BOMs: only the first is dropped, so the first line is an unknown field and
    // "1" never fires.
    check(
        "format-bom-2",
        &message_py(b"\xEF\xBB\xBF\xEF\xBB\xBFdata:1\n\ndata:2\n\ndata:3"),
        &[message("2", ""), message("3", "")],
        None,
    );
}

#[test]
fn format_comments() {
    let long_comment = "x".repeat(2 * 1024);
    let body = format!(
        "data:1\r:\0\n:\r\ndata:2\n:{long_comment}\rdata:3\n:data:fail\r:{long_comment}\ndata:4\n"
    );
    check(
        "format-comments",
        &message_py_without_newline(body.as_bytes()),
        &[message("1\n2\n3\n4", "")],
        None,
    );
}

#[test]
fn format_data_before_final_empty_line() {
    // The body ends inside the second event: it is discarded and its `id:` is not
    // committed, so after the reconnect "test1" arrives again with an empty last event id.
    check_reconnecting(
        "format-data-before-final-empty-line",
        2,
        |_last_event_id| {
            message_py_without_newline(b"retry:1000\ndata:test1\n\nid:test\ndata:test2")
        },
        &[message("test1", ""), message("test1", "")],
        Some(1000),
    );
}

#[test]
fn format_field_data() {
    check(
        "format-field-data",
        &message_py(b"data:\n\ndata\ndata\n\ndata:test"),
        &[message("", ""), message("\n", ""), message("test", "")],
        None,
    );
}

#[test]
fn format_field_event_empty() {
    check(
        "format-field-event-empty",
        &message_py(b"event: \ndata:data"),
        &[message("data", "")],
        None,
    );
}

#[test]
fn format_field_event() {
    // The type applies to one event only.
    check(
        "format-field-event",
        &message_py(b"event:test\ndata:x\n\ndata:x"),
        &[event("test", "x", ""), message("x", "")],
        None,
    );
}

#[test]
fn format_field_id() {
    check_reconnecting(
        "format-field-id",
        2,
        last_event_id_py("…"),
        &[message("hello", "…"), message("…", "…")],
        Some(200),
    );
}

#[test]
fn format_field_id_2() {
    check_reconnecting(
        "format-field-id-2",
        3,
        last_event_id_py("…"),
        &[message("hello", "…"), message("…", "…"), message("…", "…")],
        Some(200),
    );
}

#[test]
fn format_field_id_3() {
    check(
        "format-field-id-3: lastEventId persists",
        b"id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata:3\n\ndata:4\n\n",
        &[
            message("1", "1"),
            message("2", "1"),
            message("3", "2"),
            message("4", "2"),
        ],
        None,
    );
    check(
        "format-field-id-3: lastEventId resets",
        b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        &[message("1", "1"), message("2", ""), message("3", "")],
        None,
    );
    check(
        "format-field-id-3: lastEventId resets (id without colon)",
        b"id: 1\ndata: 1\n\nid\ndata:2\n\ndata:3\n\n",
        &[message("1", "1"), message("2", ""), message("3", "")],
        None,
    );
}

#[test]
fn format_field_id_null() {
    // An id containing NUL is ignored, so no Last-Event-ID is sent on reconnect and the
    // server says hello again.
    for id_value in ["\0\0", "x\0", "\0x", "x\0x", " \0"] {
        check_reconnecting(
            &format!("format-field-id-null: id {:?}", id_value),
            2,
            last_event_id_py(id_value),
            &[message("hello", ""), message("hello", "")],
            Some(200),
        );
    }
}

#[test]
fn format_field_parsing() {
    // Field names are exact (case, NUL, punctuation), and only one leading space of a
    // value is dropped.
    check(
        "format-field-parsing",
        &message_py_without_newline(
            b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n",
        ),
        &[message("\0\n 2\n1\n3\n\n4", "")],
        None,
    );
}

#[test]
fn format_field_retry_bogus() {
    // `1000x` is not all digits: ignored, the earlier 2000 stands.
    check(
        "format-field-retry-bogus",
        &message_py(b"retry:2000\nretry:1000x\ndata:x"),
        &[message("x", "")],
        Some(2000),
    );
}

#[test]
fn format_field_retry_empty() {
    check(
        "format-field-retry-empty",
        &message_py(b"retry\ndata:test"),
        &[message("test", "")],
        None,
    );
}

#[test]
fn format_field_retry() {
    // Base ten, leading zero and all: not 1024 (octal).
    check(
        "format-field-retry",
        &message_py(b"retry:02000\ndata:x"),
        &[message("x", "")],
        Some(2000),
    );
}

#[test]
fn format_field_unknown() {
    check(
        "format-field-unknown",
        &message_py(
            b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test",
        ),
        &[message("test\n\ntest", "")],
        None,
    );
}

#[test]
fn format_leading_space() {
    // A tab is not the optional space; a lone CR ends a line.
    check(
        "format-leading-space",
        &message_py(b"data:\ttest\rdata: \ndata:test"),
        &[message("\ttest\n\ntest", "")],
        None,
    );
}

#[test]
fn format_newlines() {
    // CRLF, LF and CR line ends mixed; the final CR and the server's LF are one CRLF.
    check(
        "format-newlines",
        &message_py_without_newline(b"data:test\r\ndata\ndata:test\r\n\r"),
        &[message("test\n\ntest", "")],
        None,
    );
}

#[test]
fn format_null_character() {
    check(
        "format-null-character",
        &message_py(b"data:\0\n\n"),
        &[message("\0", "")],
        None,
    );
}

#[test]
fn format_utf_8() {
    check(
        "format-utf-8",
        &message_py(b"data:ok\xE2\x80\xA6"),
        &[message("ok…", "")],
        None,
    );
}

// --- What the WPT servers send ---

/// The body `resources/message.py?message=…` sends: the message, then an empty line
/// (`\n\n`), then one more `\n`.
fn message_py(message: &[u8]) -> Vec<u8> {
    [message, b"\n\n\n"].concat()
}

/// The body `resources/message.py?message=…&newline=none` sends: the message, then `\n`.
fn message_py_without_newline(message: &[u8]) -> Vec<u8> {
    [message, b"\n"].concat()
}

/// `resources/last-event-id.py?idvalue=…`: echoes the `Last-Event-ID` request header as
/// data when there is one; otherwise sends the id, a 200 ms retry and "hello".
fn last_event_id_py(id_value: &str) -> impl Fn(Option<&str>) -> Vec<u8> + '_ {
    move |last_event_id| match last_event_id {
        Some(id) => format!("data: {id}\n\n").into_bytes(),
        None => format!("id: {id_value}\nretry: 200\ndata: hello\n\n").into_bytes(),
    }
}

// --- Expected events ---

/// An event of the default type, `message`.
fn message(data: &str, last_event_id: &str) -> MessageEvent {
    event("message", data, last_event_id)
}

fn event(event_type: &str, data: &str, last_event_id: &str) -> MessageEvent {
    MessageEvent {
        event_type: event_type.to_owned(),
        data: data.to_owned(),
        last_event_id: last_event_id.to_owned(),
    }
}

// --- Running a case ---

/// What a client observes over a whole case.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<MessageEvent>,
    retry: Option<Duration>,
}

/// How each connection's body is cut into `feed` calls.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Whole,
    /// Two chunks, the first `n` bytes long (the whole body when it is shorter).
    SplitAt(usize),
    OneByteAtATime,
}

impl Chunking {
    fn chunks(self, body: &[u8]) -> Vec<&[u8]> {
        match self {
            Chunking::Whole => vec![body],
            Chunking::SplitAt(n) => {
                let (first, second) = body.split_at(n.min(body.len()));
                vec![first, second]
            }
            Chunking::OneByteAtATime => body.chunks(1).collect(),
        }
    }
}

/// Checks a case whose server sends `body` on one connection.
fn check(
    wpt_case: &str,
    body: &[u8],
    expected_events: &[MessageEvent],
    expected_retry_ms: Option<u64>,
) {
    check_reconnecting(
        wpt_case,
        1,
        |_last_event_id| body.to_vec(),
        expected_events,
        expected_retry_ms,
    );
}

/// Checks a case run over `connections` connections, the server answering each with
/// `server(Last-Event-ID header)`, fed whole, split in two at every byte boundary, and
/// one byte at a time.
fn check_reconnecting(
    wpt_case: &str,
    connections: usize,
    server: impl Fn(Option<&str>) -> Vec<u8>,
    expected_events: &[MessageEvent],
    expected_retry_ms: Option<u64>,
) {
    let expected = Outcome {
        events: expected_events.to_vec(),
        retry: expected_retry_ms.map(Duration::from_millis),
    };
    let (outcome, bodies) = run(wpt_case, connections, &server, Chunking::Whole);
    assert_eq!(
        outcome,
        expected,
        "{wpt_case}: fed whole; bodies: {}",
        show(&bodies)
    );
    let longest_body = bodies.iter().map(Vec::len).max().unwrap_or(0);
    let chunkings = (0..=longest_body)
        .map(Chunking::SplitAt)
        .chain([Chunking::OneByteAtATime]);
    for chunking in chunkings {
        let (outcome, bodies) = run(wpt_case, connections, &server, chunking);
        assert_eq!(
            outcome,
            expected,
            "{wpt_case}: fed {chunking:?}; bodies: {}",
            show(&bodies)
        );
    }
}

/// Runs the connections through one parser, as a reconnecting client would, and returns
/// what it observed and the bodies the server sent.
fn run(
    wpt_case: &str,
    connections: usize,
    server: &impl Fn(Option<&str>) -> Vec<u8>,
    chunking: Chunking,
) -> (Outcome, Vec<Vec<u8>>) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..connections {
        // A client sends Last-Event-ID only when the last event id is not empty.
        let last_event_id = Some(parser.last_event_id()).filter(|id| !id.is_empty());
        let body = server(last_event_id);
        for chunk in chunking.chunks(&body) {
            if let Err(error) = parser.feed(chunk) {
                panic!(
                    "{wpt_case}: feed failed ({chunking:?}) on body {}: {error}",
                    show(&[&body])
                );
            }
            events.extend(std::iter::from_fn(|| parser.next_event()));
        }
        parser.end_of_stream();
        events.extend(std::iter::from_fn(|| parser.next_event()));
        bodies.push(body);
    }
    let outcome = Outcome {
        events,
        retry: parser.retry(),
    };
    (outcome, bodies)
}

/// The bodies as escaped byte strings, for failure messages.
fn show<B: AsRef<[u8]>>(bodies: &[B]) -> String {
    bodies
        .iter()
        .map(|body| format!("b\"{}\"", body.as_ref().escape_ascii()))
        .collect::<Vec<_>>()
        .join(", ")
}
