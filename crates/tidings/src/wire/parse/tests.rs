//! Unit tests of the parser: every parsing rule of the standard, each input fed whole, split
//! in two at every position, and byte by byte.

use super::*;

/// Everything a user of the parser can observe after feeding a whole stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<MessageEvent>,
    last_event_id: String,
    retry: Option<Duration>,
    error: Option<ErrorKind>,
}

/// Feeds `chunks` as one connection, popping events after each, then ends the stream.
fn run(max_event_size: usize, chunks: &[&[u8]]) -> Outcome {
    let mut parser = Parser::with_max_event_size(max_event_size);
    let mut events = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(e) = parser.feed(chunk) {
            error.get_or_insert(e.kind());
        }
        events.extend(std::iter::from_fn(|| parser.next_event()));
    }
    parser.end_of_stream();
    assert_eq!(
        parser.next_event(),
        None,
        "end of stream dispatches nothing"
    );
    Outcome {
        events,
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser.retry(),
        error,
    }
}

/// Parses `input` whole, split in two at every position (with an empty chunk in
/// between), and byte by byte; asserts all give the same outcome and returns it.
fn parse_every_way(input: &[u8], max_event_size: usize) -> Outcome {
    let whole = run(max_event_size, &[input]);
    for i in 0..=input.len() {
        let split = run(max_event_size, &[&input[..i], b"", &input[i..]]);
        assert_eq!(split, whole, "input {input:?} split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run(max_event_size, &bytes),
        whole,
        "input {input:?} byte by byte"
    );
    whole
}

/// Asserts that `input`, chunked any way, gives exactly `expected` and no error.
fn assert_events(input: &[u8], expected: &[MessageEvent]) -> Outcome {
    let outcome = parse_every_way(input, DEFAULT_MAX_EVENT_SIZE);
    assert_eq!(outcome.error, None, "input {input:?}");
    assert_eq!(outcome.events, expected, "input {input:?}");
    outcome
}

fn event(event_type: &str, data: &str, last_event_id: &str) -> MessageEvent {
    MessageEvent {
        event_type: event_type.to_owned(),
        data: data.to_owned(),
        last_event_id: last_event_id.to_owned(),
    }
}

fn message(data: &str) -> MessageEvent {
    event("message", data, "")
}

// --- UTF-8 ---

#[test]
fn decodes_utf8_even_when_characters_are_split() {
    let outcome = assert_events(
        "id: é1\nevent: ☃\ndata: café ☃ 😀\n\n".as_bytes(),
        &[event("☃", "café ☃ 😀", "é1")],
    );
    assert_eq!(outcome.last_event_id, "é1");
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_events(
        b"id: \xC0\x80\nevent: \xE2\x98\ndata: a\xFFb\xF0\x9F\x98\ndata: \xED\xA0\x80\n\n",
        &[event(
            "\u{FFFD}",
            "a\u{FFFD}b\u{FFFD}\n\u{FFFD}\u{FFFD}\u{FFFD}",
            "\u{FFFD}\u{FFFD}",
        )],
    );
}

// --- Byte-order mark ---

#[test]
fn one_leading_bom_is_dropped() {
    assert_events(b"\xEF\xBB\xBFdata: x\n\n", &[message("x")]);
    assert_events(b"\xEF\xBB\xBF\n\xEF\xBB\xBF", &[]);
    assert_events(b"\xEF\xBB\xBF", &[]);
}

#[test]
fn a_second_bom_is_content() {
    // `\u{FEFF}data` is an unknown field.
    assert_events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n", &[]);
    assert_events(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n", &[message("x")]);
    assert_events(b"data: \xEF\xBB\xBFx\n\n", &[message("\u{FEFF}x")]);
}

#[test]
fn a_partial_bom_is_content() {
    assert_events(b"\xEF\xBBdata: x\n\ndata: y\n\n", &[message("y")]);
    assert_events(b"\xEFdata: x\n\ndata: y\n\n", &[message("y")]);
    assert_events(b"\xEF\xBB\xBEdata: x\n\n", &[]);
    assert_events(b"\xEF\ndata: y\n\n", &[message("y")]);
    assert_events(b"\xEF", &[]);
}

// --- Line ends ---

#[test]
fn lines_end_at_lf_cr_or_crlf() {
    for end in ["\n", "\r", "\r\n"] {
        let input = format!("data: a{end}data: b{end}{end}");
        assert_events(input.as_bytes(), &[message("a\nb")]);
    }
    assert_events(
        b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r",
        &[message("a\nb\nc"), message("d")],
    );
}

#[test]
fn crlf_is_one_line_end_and_lf_cr_is_two() {
    assert_events(b"data: a\r\ndata: b\r\n\r\n", &[message("a\nb")]);
    assert_events(b"data: a\n\rdata: b\n\n", &[message("a"), message("b")]);
    assert_events(b"data: a\r\n\ndata: b\r\r\n", &[message("a"), message("b")]);
}

// --- Empty lines and comments ---

#[test]
fn empty_line_dispatches() {
    assert_events(
        b"data: a\n\ndata: b\n\n\n\ndata: c\n\n",
        &[message("a"), message("b"), message("c")],
    );
    assert_events(b"data: a\n", &[]);
}

#[test]
fn comments_are_ignored() {
    assert_events(
        b": hello\ndata: a\n: data: not data\n:\ndata: b\n:: x\n\n",
        &[message("a\nb")],
    );
    assert_events(b":only a comment\n\n", &[]);
}

// --- Fields and values ---

#[test]
fn field_and_value_split_at_the_first_colon() {
    assert_events(b"data:a:b: c\n\n", &[message("a:b: c")]);
    assert_events(b"event:x:y\ndata\n\n", &[event("x:y", "", "")]);
}

#[test]
fn exactly_one_leading_space_is_removed() {
    assert_events(b"data:x\n\n", &[message("x")]);
    assert_events(b"data: x\n\n", &[message("x")]);
    assert_events(b"data:  x\n\n", &[message(" x")]);
    assert_events(b"data:\tx\n\n", &[message("\tx")]);
    assert_events(b"data: \n\n", &[message("")]);
    assert_events(b"data:  \n\n", &[message(" ")]);
    assert_events(b"event:  t\nid:  5\ndata\n\n", &[event(" t", "", " 5")]);
}

#[test]
fn a_line_without_colon_is_a_field_with_empty_value() {
    assert_events(b"data\n\n", &[message("")]);
    assert_events(b"data\ndata\n\n", &[message("\n")]);
    assert_events(b"event\ndata: x\n\n", &[message("x")]);
    assert_events(
        b"id: 1\ndata: a\n\nid\ndata: b\n\n",
        &[event("message", "a", "1"), message("b")],
    );
}

#[test]
fn field_names_are_case_sensitive() {
    let outcome = assert_events(
        b"Data: x\n\nDATA: y\n\nEVENT: t\nID: 5\nRetry: 5\ndata: z\n\n",
        &[message("z")],
    );
    assert_eq!(outcome.retry, None);
    assert_eq!(outcome.last_event_id, "");
}

#[test]
fn unknown_fields_are_ignored() {
    assert_events(
        b"foo: bar\ndatax: y\n data: z\ndata : v\ndata: w\n\n",
        &[message("w")],
    );
}

// --- event ---

#[test]
fn event_sets_the_type_and_the_last_one_wins() {
    assert_events(b"event: a\nevent: b\ndata: x\n\n", &[event("b", "x", "")]);
}

#[test]
fn type_defaults_to_message_and_resets_after_each_event() {
    assert_events(
        b"event: a\ndata: x\n\ndata: y\n\nevent:\ndata: z\n\n",
        &[event("a", "x", ""), message("y"), message("z")],
    );
}

// --- data ---

#[test]
fn data_lines_join_with_lf_and_one_trailing_lf_is_stripped() {
    assert_events(b"data: a\ndata: b\n\n", &[message("a\nb")]);
    assert_events(b"data: a\ndata:\n\n", &[message("a\n")]);
    assert_events(b"data:\ndata:\n\n", &[message("\n")]);
    assert_events(b"data: a\n\n\ndata: b\n\n", &[message("a"), message("b")]);
}

// --- id ---

#[test]
fn id_is_kept_across_events() {
    let outcome = assert_events(
        b"id: 1\ndata: a\n\ndata: b\n\n",
        &[event("message", "a", "1"), event("message", "b", "1")],
    );
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn id_anywhere_in_the_block_applies_to_its_event() {
    assert_events(
        b"data: x\nid: 5\n\nid: 6\nid: 7\ndata: y\n\n",
        &[event("message", "x", "5"), event("message", "y", "7")],
    );
}

#[test]
fn id_only_block_commits_the_id() {
    let outcome = assert_events(b"id: 1\n\n", &[]);
    assert_eq!(outcome.last_event_id, "1");
    let outcome = assert_events(
        b"id: 1\n\nid: 2\nevent: t\n\ndata: x\n\n",
        &[event("message", "x", "2")],
    );
    assert_eq!(outcome.last_event_id, "2");
}

#[test]
fn empty_id_resets_to_empty() {
    for reset in [&b"id:\n"[..], b"id\n", b"id: \n"] {
        let input = [&b"id: 1\ndata: a\n\n"[..], reset, b"data: b\n\n"].concat();
        let outcome = assert_events(&input, &[event("message", "a", "1"), message("b")]);
        assert_eq!(outcome.last_event_id, "");
    }
}

#[test]
fn id_with_nul_is_ignored() {
    let outcome = assert_events(
        b"id: 1\n\nid: a\0b\ndata: x\n\nid: \0\n\n",
        &[event("message", "x", "1")],
    );
    assert_eq!(outcome.last_event_id, "1");
}

// --- retry ---

#[test]
fn retry_takes_ascii_digits_in_base_ten() {
    let outcome = assert_events(b"retry: 3000\n\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(3000)));
    let outcome = assert_events(b"retry: 03000\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(3000)));
    let outcome = assert_events(b"retry:0\nretry: 12\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(12)));
    assert_eq!(assert_events(b"data: x\n\n", &[message("x")]).retry, None);
}

#[test]
fn retry_ignores_anything_but_digits() {
    for invalid in [
        &b"retry:"[..],
        b"retry",
        b"retry: ",
        b"retry:  100",
        b"retry: 100 ",
        b"retry: 1.5",
        b"retry: -1",
        b"retry: +1",
        b"retry: 1e3",
        b"retry: 0x10",
        b"retry: 100ms",
        "retry: ١٢".as_bytes(),
        "retry: ３".as_bytes(),
    ] {
        let input = [&b"retry: 7\n"[..], invalid, b"\n\n"].concat();
        let outcome = assert_events(&input, &[]);
        assert_eq!(outcome.retry, Some(Duration::from_millis(7)), "{input:?}");
    }
}

#[test]
fn huge_retry_saturates() {
    let outcome = assert_events(b"retry: 18446744073709551615\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(u64::MAX)));
    let outcome = assert_events(b"retry: 99999999999999999999999999999999999999999\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(u64::MAX)));
}

#[test]
fn retry_applies_at_once_even_in_a_discarded_event() {
    let outcome = assert_events(b"retry: 5\ndata: x\n", &[]);
    assert_eq!(outcome.retry, Some(Duration::from_millis(5)));
}

// --- Dispatch ---

#[test]
fn empty_data_fires_nothing_and_resets_the_type() {
    assert_events(b"event: t\n\ndata: x\n\n", &[message("x")]);
    assert_events(b"event: t\nid: 1\nretry: 1\n\n", &[]);
}

// --- End of stream ---

#[test]
fn half_received_event_is_discarded_and_its_id_not_committed() {
    let outcome = assert_events(
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n",
        &[event("message", "a", "1")],
    );
    assert_eq!(outcome.last_event_id, "1");
    assert_events(b"data: a\n\ndata: b", &[message("a")]);
    let outcome = assert_events(b"data: a\n\nid: 2", &[message("a")]);
    assert_eq!(outcome.last_event_id, "");
}

#[test]
fn end_of_stream_prepares_the_next_connection() {
    let mut parser = Parser::new();
    parser
        .feed(b"retry: 10\nid: 1\ndata: a\n\nid: 2\nevent: t\ndata: half\r")
        .expect("small input");
    assert_eq!(parser.next_event(), Some(event("message", "a", "1")));
    parser.end_of_stream();
    assert!(
        !parser.after_cr,
        "CR state does not leak into the next connection"
    );
    assert_eq!(parser.last_event_id(), "1");
    assert_eq!(parser.retry(), Some(Duration::from_millis(10)));

    // The new connection may start with its own BOM; nothing of the old event is left.
    parser
        .feed(b"\xEF\xBB\xBFdata: b\n\n")
        .expect("small input");
    assert_eq!(parser.next_event(), Some(event("message", "b", "1")));
    assert_eq!(parser.next_event(), None);
}

#[test]
fn set_last_event_id_is_the_initial_id() {
    let mut parser = Parser::new();
    parser.set_last_event_id("41");
    assert_eq!(parser.last_event_id(), "41");
    parser
        .feed(b"data: a\n\nid: 42\n\nid: 43\ndata: half")
        .expect("small input");
    assert_eq!(parser.next_event(), Some(event("message", "a", "41")));
    parser.end_of_stream();
    assert_eq!(parser.last_event_id(), "42");
    parser.set_last_event_id("");
    parser.feed(b"data: b\n\n").expect("small input");
    assert_eq!(parser.next_event(), Some(message("b")));
}

// --- Bounded memory ---

#[test]
fn lines_up_to_the_limit_are_accepted() {
    // `data: 1234` is 10 bytes; the data buffer `1234\n5678\n` is 10 bytes.
    let outcome = parse_every_way(b"data: 1234\ndata: 5678\n\n", 10);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.events, [message("1234\n5678")]);
}

#[test]
fn a_line_over_the_limit_is_an_error() {
    for input in [
        &b"data: a\n\ndata: 12345\n\n"[..],
        b"data: a\n\n:a long comment\n\n",
        b"data: a\n\nevent: 123456\n",
        b"data: a\n\ndata: 12345",
        b"data: a\n\nwhatever123",
    ] {
        let outcome = parse_every_way(input, 10);
        assert_eq!(outcome.error, Some(ErrorKind::EventTooLarge), "{input:?}");
        assert_eq!(outcome.events, [message("a")], "{input:?}");
    }
}

#[test]
fn data_over_the_limit_is_an_error() {
    // Each line fits in 10 bytes, but the data buffer `1234\n56789\n` is 11.
    let outcome = parse_every_way(b"id: 1\ndata: a\n\ndata:1234\ndata:56789\n\n", 10);
    assert_eq!(outcome.error, Some(ErrorKind::EventTooLarge));
    assert_eq!(outcome.events, [event("message", "a", "1")]);
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn the_error_says_which_limit_and_how_to_raise_it() {
    let mut parser = Parser::with_max_event_size(4);
    let error = parser.feed(b"data: 12345\n").expect_err("line too long");
    assert_eq!(error.kind(), ErrorKind::EventTooLarge);
    let message = error.to_string();
    assert!(message.contains("4 bytes"), "{message}");
    assert!(message.contains("with_max_event_size"), "{message}");
}

#[test]
fn after_an_error_the_parser_refuses_input_until_end_of_stream() {
    let mut parser = Parser::with_max_event_size(16);
    parser.feed(b"id: 1\n\n").expect("small input");
    let error = parser
        .feed(b"data: far too long for sixteen bytes\n\n")
        .expect_err("too long");
    assert_eq!(error.kind(), ErrorKind::EventTooLarge);
    let error = parser.feed(b"data: ok\n\n").expect_err("still failed");
    assert_eq!(error.kind(), ErrorKind::EventTooLarge);
    assert!(error.to_string().contains("end_of_stream"), "{error}");
    assert_eq!(parser.next_event(), None);

    parser.end_of_stream();
    parser.feed(b"data: ok\n\n").expect("usable again");
    assert_eq!(parser.next_event(), Some(event("message", "ok", "1")));
}

// --- Bulk paths ---

#[test]
fn long_data_lines_in_any_chunk_size() {
    let value: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let value = value + "é☃😀";
    let input = format!("id: 1\ndata: {value}\ndata:  {value}\n\nevent: t\ndata:{value}\r\n\r\n");
    let expected = [
        event("message", &format!("{value}\n {value}"), "1"),
        event("t", &value, "1"),
    ];
    for chunk_size in [1, 2, 3, 5, 7, 64, 4096, 8192, 65536, input.len()] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(chunk_size).collect();
        let outcome = run(DEFAULT_MAX_EVENT_SIZE, &chunks);
        assert_eq!(outcome.error, None);
        assert!(outcome.events == expected, "chunk size {chunk_size}");
    }
}

#[test]
fn parse_retry_saturates_and_rejects_non_digits() {
    assert_eq!(parse_retry(b"0"), Some(0));
    assert_eq!(parse_retry(b"0018446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_retry(b"18446744073709551616"), Some(u64::MAX));
    assert_eq!(parse_retry(b""), None);
    assert_eq!(parse_retry(b"1 "), None);
}
