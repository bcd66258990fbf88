//! Fuzz target `parse`: arbitrary bytes, split at a boundary chosen by the first input
//! byte, must parse without panicking, exactly as when fed in one chunk, with the default
//! and with a tiny maximum event size; the parser must be usable after `end_of_stream`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::wire::{MessageEvent, Parser, DEFAULT_MAX_EVENT_SIZE};
use tidings::ErrorKind;

/// What a user can observe after feeding one connection's chunks.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<MessageEvent>,
    last_event_id: String,
    retry: Option<std::time::Duration>,
    error: Option<ErrorKind>,
}

fn run(parser: &mut Parser, chunks: &[&[u8]]) -> Outcome {
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
        "end of stream dispatched an event"
    );
    for event in &events {
        assert!(
            !event.event_type.is_empty(),
            "empty type instead of `message`"
        );
        assert!(
            !event.event_type.contains(['\r', '\n']),
            "line break in type"
        );
        assert!(!event.data.contains('\r'), "CR in data");
        assert!(!event.last_event_id.contains(['\r', '\n', '\0']), "bad id");
    }
    Outcome {
        events,
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser.retry(),
        error,
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, stream)) = input.split_first() else {
        return;
    };
    // Scale the byte to the whole stream so every boundary of a long input is reachable.
    let split = usize::from(first) * stream.len() / 255;
    let (head, tail) = stream.split_at(split);
    for max_event_size in [DEFAULT_MAX_EVENT_SIZE, 16] {
        let mut parser = Parser::with_max_event_size(max_event_size);
        let whole = run(&mut parser, &[stream]);
        let two = run(
            &mut Parser::with_max_event_size(max_event_size),
            &[head, b"", tail],
        );
        assert_eq!(whole, two, "split at {split} changed the outcome");

        // Whatever happened, end_of_stream() makes the parser usable for a new connection.
        parser
            .feed(b"\xEF\xBB\xBFdata: ok\n\n")
            .expect("a fresh connection parses");
        let event = parser
            .next_event()
            .expect("the event of the fresh connection");
        assert_eq!(event.data, "ok");
        assert_eq!(event.last_event_id, whole.last_event_id);
    }
});
