//! Parser throughput: `tidings::wire::Parser` against the `eventsource-stream` crate on
//! the same bytes cut at the same chunk boundaries. Both must produce every event.
//!
//! Run: `cargo bench -p tidings --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tidings::wire::Parser;

/// A typical network read size.
const READ_SIZE: usize = 8 * 1024;

/// `count` events, each with an id, an event type and ~64 bytes of JSON-ish data.
fn small_events(count: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    for i in 0..count {
        let data = format!("{{\"seq\":{i:08},\"user\":\"someone\",\"text\":\"hello there!!\"}}");
        let line = format!("id: 1700000000000-{i}\nevent: update\ndata: {data:<64}\n\n");
        stream.extend_from_slice(line.as_bytes());
    }
    stream
}

/// `count` events, each one `data:` line with 64 KiB of text.
fn large_events(count: usize) -> Vec<u8> {
    let value: String = (0..64 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut stream = Vec::new();
    for i in 0..count {
        stream.extend_from_slice(format!("id: {i}\ndata: {value}\n\n").as_bytes());
    }
    stream
}

fn tidings_parse(chunks: &[&[u8]]) -> usize {
    let mut parser = Parser::new();
    let mut events = 0;
    for chunk in chunks {
        parser.feed(chunk).expect("valid stream");
        while let Some(event) = parser.next_event() {
            black_box(event);
            events += 1;
        }
    }
    events
}

fn eventsource_stream_parse(chunks: &[&[u8]]) -> usize {
    let bytes = futures::stream::iter(chunks.iter().map(|chunk| Ok::<_, Infallible>(*chunk)));
    futures::executor::block_on(bytes.eventsource().fold(0, |events, event| {
        black_box(event.expect("valid stream"));
        async move { events + 1 }
    }))
}

fn compare(c: &mut Criterion, name: &str, stream: &[u8], chunk_size: usize, events: usize) {
    let chunks: Vec<&[u8]> = stream.chunks(chunk_size).collect();
    assert_eq!(tidings_parse(&chunks), events, "tidings saw every event");
    assert_eq!(
        eventsource_stream_parse(&chunks),
        events,
        "eventsource-stream saw every event"
    );

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function(BenchmarkId::new("tidings", chunk_size), |b| {
        b.iter(|| assert_eq!(tidings_parse(&chunks), events))
    });
    group.bench_function(BenchmarkId::new("eventsource-stream", chunk_size), |b| {
        b.iter(|| assert_eq!(eventsource_stream_parse(&chunks), events))
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    compare(c, "small_events", &small_events(10_000), READ_SIZE, 10_000);
    compare(c, "large_64k_lines", &large_events(64), READ_SIZE, 64);
    compare(
        c,
        "small_events_1_byte_chunks",
        &small_events(1_000),
        1,
        1_000,
    );
}

criterion_group!(benches, parse);
criterion_main!(benches);
