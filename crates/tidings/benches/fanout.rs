//! Broadcast cost per subscriber: one event to 10,000 idle sessions of a channel.
//!
//! ```text
//! cargo bench -p tidings --bench fanout
//! ```
//! Only the broadcast is timed (encode once, append to history, enqueue shared bytes for
//! every session); the sessions' streams are drained between iterations, untimed.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tidings::server::{Channel, HistoryLimits, Session, SessionConfig, SessionStream};
use tidings::Event;

fn setup(sessions: usize) -> (Channel, Vec<SessionStream>) {
    let channel = Channel::builder().history(HistoryLimits::new()).build();
    let streams = (0..sessions)
        .map(|_| {
            let (session, stream) = Session::new(SessionConfig::new().keep_alive(None), ());
            channel.register(&session).expect("register");
            stream
        })
        .collect();
    (channel, streams)
}

fn drain(streams: &mut [SessionStream]) {
    for stream in streams {
        while let Some(Some(Ok(_))) = stream.frame().now_or_never() {}
    }
}

fn broadcast(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("broadcast");
    for sessions in [1_000usize, 10_000] {
        let (channel, mut streams) = setup(sessions);
        drain(&mut streams);
        let event = Event::new().event("tick").data("x".repeat(64));
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(
            BenchmarkId::new("64B_event", sessions),
            &sessions,
            |b, _| {
                b.iter_custom(|iterations| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iterations {
                        let start = Instant::now();
                        let sent = channel.broadcast(&event).expect("broadcast");
                        timed += start.elapsed();
                        assert_eq!(sent.recipients, sessions);
                        drain(&mut streams);
                    }
                    timed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
