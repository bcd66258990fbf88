//! Round trip through the wire format: any events the encoder accepts, encoded, joined
//! into one stream and cut into arbitrary chunks, parse back to exactly the same events;
//! anything it refuses is refused with the typed error the field calls for.

use std::time::Duration;

use proptest::prelude::*;
use tidings::wire::{Event, MessageEvent, Parser};
use tidings::ErrorKind;

/// The fields of one event, as a user would pass them to the builder.
#[derive(Debug, Clone)]
struct Fields {
    comments: Vec<String>,
    retry_ms: Option<u64>,
    id: Option<String>,
    event_type: Option<String>,
    data: Option<String>,
}

impl Fields {
    fn build(&self) -> Event {
        let mut event = Event::new();
        for comment in &self.comments {
            event = event.comment(comment.clone());
        }
        if let Some(ms) = self.retry_ms {
            event = event.retry(Duration::from_millis(ms));
        }
        if let Some(id) = &self.id {
            event = event.id(id.clone());
        }
        if let Some(event_type) = &self.event_type {
            event = event.event(event_type.clone());
        }
        if let Some(data) = &self.data {
            event = event.data(data.clone());
        }
        event
    }

    /// The error the encoder must give, checked in its documented order.
    fn expected_error(&self) -> Option<ErrorKind> {
        let breaks = |s: &String| s.contains(['\r', '\n']);
        if self.event_type.as_ref().is_some_and(breaks) {
            Some(ErrorKind::InvalidEventType)
        } else if self
            .id
            .as_ref()
            .is_some_and(|id| breaks(id) || id.contains('\0'))
        {
            Some(ErrorKind::InvalidId)
        } else if self.comments.iter().any(breaks) {
            Some(ErrorKind::InvalidComment)
        } else {
            None
        }
    }
}

/// Characters that stress the format, mixed with any Unicode scalar value.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec![
            '\r', '\n', '\0', '\u{FEFF}', ' ', ':', '\t', 'a', 'é', '😀', '\u{FFFD}'
        ]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..12).prop_map(|chars| chars.into_iter().collect())
}

/// Mostly valid strings (so most events are encoded), sometimes anything.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text().prop_map(|s| s.replace(['\r', '\n', '\0'], "")),
        1 => text(),
    ]
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        prop::collection::vec(field_text(), 0..2),
        prop::option::of(any::<u64>()),
        prop::option::of(field_text()),
        prop::option::of(field_text()),
        prop::option::of(text()),
    )
        .prop_map(|(comments, retry_ms, id, event_type, data)| Fields {
            comments,
            retry_ms,
            id,
            event_type,
            data,
        })
}

/// Cuts `bytes` at the given positions (taken modulo its length).
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut positions: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    positions.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for position in positions {
        chunks.push(&bytes[start..position]);
        start = position;
    }
    chunks.push(&bytes[start..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoded_events_parse_back_exactly(
        all_fields in prop::collection::vec(fields(), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut last_event_id = String::new();
        let mut retry = None;
        for fields in &all_fields {
            match (fields.build().encode(), fields.expected_error()) {
                (Err(error), Some(kind)) => prop_assert_eq!(error.kind(), kind),
                (Err(error), None) => prop_assert!(false, "refused {:?}: {}", fields, error),
                (Ok(_), Some(kind)) => prop_assert!(false, "accepted {:?}, want {:?}", fields, kind),
                (Ok(bytes), None) => {
                    stream.extend_from_slice(&bytes);
                    if let Some(id) = &fields.id {
                        last_event_id = id.clone();
                    }
                    if let Some(ms) = fields.retry_ms {
                        retry = Some(Duration::from_millis(ms));
                    }
                    if let Some(data) = &fields.data {
                        expected.push(MessageEvent {
                            event_type: match fields.event_type.as_deref() {
                                None | Some("") => "message".to_owned(),
                                Some(event_type) => event_type.to_owned(),
                            },
                            // Every CR, LF or CRLF in data comes back as one LF.
                            data: data.replace("\r\n", "\n").replace('\r', "\n"),
                            last_event_id: last_event_id.clone(),
                        });
                    }
                }
            }
        }

        let mut parser = Parser::new();
        let mut parsed = Vec::new();
        for chunk in cut(&stream, &cuts) {
            parser.feed(chunk).expect("an encoded stream is valid");
            parsed.extend(std::iter::from_fn(|| parser.next_event()));
        }
        parser.end_of_stream();
        prop_assert_eq!(parser.next_event(), None);
        prop_assert_eq!(parsed, expected);
        prop_assert_eq!(parser.last_event_id(), last_event_id.as_str());
        prop_assert_eq!(parser.retry(), retry);
    }

    #[test]
    fn any_bytes_parse_the_same_in_any_chunks(
        stream in prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(b"\r\n: datevnirty\xEF\xBB\xBF\x00\xC3\xA9".to_vec()),
                1 => any::<u8>(),
            ],
            0..200,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max_event_size in prop_oneof![Just(tidings::wire::DEFAULT_MAX_EVENT_SIZE), 0usize..24],
    ) {
        let parse = |chunks: &[&[u8]]| {
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
            (events, error, parser.last_event_id().to_owned(), parser.retry())
        };
        prop_assert_eq!(parse(&cut(&stream, &cuts)), parse(&[&stream]));
    }
}
