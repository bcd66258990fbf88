use std::time::Duration;

use http_body_util::BodyExt;
use tidings::server::{SessionConfig, SessionStream};
use tokio::sync::broadcast;

use super::*;
use crate::engine::NewEvent;

fn event(n: u64, topics: &[&str]) -> Arc<StoredEvent> {
    Arc::new(StoredEvent::new(
        EventId::new(n, 0),
        NewEvent {
            topics: topics.iter().map(|t| Topic::new(t).unwrap()).collect(),
            event_type: None,
            data: format!("event {n}"),
            retry: None,
        },
    ))
}

fn subscribe(
    fanout: &Arc<Fanout>,
    filter: &[&str],
    delivery: Delivery,
) -> (Arc<Subscriber>, SessionStream) {
    let config = SessionConfig::new().keep_alive(None).retry(None);
    let (session, stream) = Session::new(config, ());
    let filter = TopicFilter::parse(filter).unwrap();
    let subscriber = fanout.register(session, filter).unwrap();
    *subscriber.delivery() = delivery;
    (subscriber, stream)
}

/// The ids in what `stream` has to send now (all of it is queued already).
async fn ids_sent(stream: &mut SessionStream) -> Vec<u64> {
    let mut text = String::new();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(5), stream.frame()).await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.split('-').next().unwrap().parse().unwrap())
        .collect()
}

/// A feed of `events` (already sent, waiting to be taken), and its sender.
fn feed_of(events: &[Arc<StoredEvent>]) -> (Feed, broadcast::Sender<LiveEvent>) {
    let (sender, receiver) = broadcast::channel(64);
    for event in events {
        sender.send(LiveEvent::Stored(Arc::clone(event))).unwrap();
    }
    let feed = Feed {
        receiver,
        last: EventId::ZERO,
        behind: None,
        closed: false,
    };
    (feed, sender)
}

#[tokio::test]
async fn a_run_gives_each_subscriber_its_own_events_once_in_order() {
    // Without a backlog (joined pushes) and with one (each event queued on its own).
    for backlog in [false, true] {
        a_run_delivers(backlog).await;
    }
}

#[tokio::test]
async fn a_run_grows_mid_pass_and_every_subscriber_gets_each_event_once_in_order() {
    let fanout = Arc::new(Fanout::new(SlowClientPolicy::Disconnect, 1 << 20, 1000));
    let count = 3 * FEED_CHECK_EVERY;
    let mut streams = Vec::new();
    for n in 0..count {
        let delivery = if n % 10 == 0 {
            Delivery::Buffering {
                events: Vec::new(),
                bytes: 0,
                overflowed: false,
            }
        } else {
            Delivery::Live {
                last_sent: EventId::ZERO,
            }
        };
        streams.push(subscribe(&fanout, &["a"], delivery));
    }
    let first = event(1, &["a"]);
    let (mut feed, _sender) = feed_of(&[event(2, &["a"]), event(3, &["a"])]);
    feed.last = first.id;

    let taken = fanout.dispatch(&[first], Some(&mut feed), 0);
    let ids = |events: &[Arc<StoredEvent>]| events.iter().map(|e| e.id.ms).collect::<Vec<_>>();
    assert_eq!(ids(&taken), [2, 3], "grown with both, at the first look");
    assert_eq!(feed.waiting(), 0);
    // The subscribers passed before the run grew get the rest now; the others skip it.
    assert!(fanout.dispatch(&taken, Some(&mut feed), 0).is_empty());

    for (subscriber, stream) in &mut streams {
        let buffered = match &*subscriber.delivery() {
            Delivery::Buffering { events, .. } => Some(ids(events)),
            _ => None,
        };
        match buffered {
            Some(buffered) => assert_eq!(buffered, [1, 2, 3]),
            None => assert_eq!(ids_sent(stream).await, [1, 2, 3]),
        }
    }
    let live = count - count.div_ceil(10);
    assert_eq!(fanout.counts().delivered, 3 * live as u64, "each once");
}

#[tokio::test]
async fn a_run_stops_growing_at_an_event_for_other_subscribers() {
    let fanout = Arc::new(Fanout::new(SlowClientPolicy::Disconnect, 1 << 20, 1000));
    let mut streams = Vec::new();
    for n in 0..2 * FEED_CHECK_EVERY {
        let filter: &[&str] = if n % 2 == 0 { &["a"] } else { &["a", "b"] };
        let live = Delivery::Live {
            last_sent: EventId::ZERO,
        };
        streams.push((filter.len(), subscribe(&fanout, filter, live)));
    }
    let first = event(1, &["a"]);
    let (mut feed, _sender) = feed_of(&[event(2, &["a"]), event(3, &["b"]), event(4, &["a"])]);
    feed.last = first.id;

    let taken = fanout.dispatch(&[first], Some(&mut feed), 0);
    let ids: Vec<u64> = taken.iter().map(|e| e.id.ms).collect();
    assert_eq!(ids, [2, 3], "event 3 goes elsewhere: 4 must wait behind it");
    assert_eq!(feed.waiting(), 1);
    // As `run` does: what was taken, then the rest of the feed.
    assert!(fanout.dispatch(&taken, Some(&mut feed), 0).is_empty());
    let rest = feed.try_next().expect("event 4");
    assert!(fanout.dispatch(&[rest], Some(&mut feed), 0).is_empty());

    for (topics, (_, stream)) in &mut streams {
        let expected: &[u64] = if *topics == 1 {
            &[1, 2, 4]
        } else {
            &[1, 2, 3, 4]
        };
        assert_eq!(ids_sent(stream).await, expected);
    }
}

async fn a_run_delivers(backlog: bool) {
    let fanout = Arc::new(Fanout::new(SlowClientPolicy::Disconnect, 1 << 20, 100));
    let live = || Delivery::Live {
        last_sent: EventId::ZERO,
    };
    let (_a, mut only_a) = subscribe(&fanout, &["a"], live());
    let (_b, mut only_b) = subscribe(&fanout, &["b"], live());
    let (_ab, mut both) = subscribe(&fanout, &["a", "b"], live());
    let (_all, mut pattern) = subscribe(&fanout, &["*"], live());
    // Already sent events 1 and 2 as history: gets the rest only.
    let (_resumed, mut resumed) = subscribe(
        &fanout,
        &["a", "b"],
        Delivery::Live {
            last_sent: EventId::new(2, 0),
        },
    );
    let (replaying, _replaying_stream) = subscribe(
        &fanout,
        &["b"],
        Delivery::Buffering {
            events: Vec::new(),
            bytes: 0,
            overflowed: false,
        },
    );

    let run = [
        event(1, &["a"]),
        event(2, &["b"]),
        event(3, &["a", "b"]),
        event(4, &["a"]),
        event(5, &["c"]),
    ];
    let (mut feed, _sender) = feed_of(&[]);
    let feed = if backlog { None } else { Some(&mut feed) };
    assert!(fanout.dispatch(&run, feed, 0).is_empty());

    assert_eq!(ids_sent(&mut only_a).await, [1, 3, 4]);
    assert_eq!(ids_sent(&mut only_b).await, [2, 3]);
    assert_eq!(ids_sent(&mut both).await, [1, 2, 3, 4]);
    assert_eq!(ids_sent(&mut pattern).await, [1, 2, 3, 4, 5]);
    assert_eq!(ids_sent(&mut resumed).await, [3, 4]);
    match &*replaying.delivery() {
        Delivery::Buffering { events, .. } => {
            let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
            assert_eq!(ids, [EventId::new(2, 0), EventId::new(3, 0)]);
        }
        _ => panic!("still replaying"),
    }
    assert_eq!(fanout.counts().delivered, 3 + 2 + 4 + 5 + 2);
}

#[test]
fn runs_are_cut_by_count_and_by_bytes() {
    let small: Vec<_> = (1..=150).map(|n| event(n, &["a"])).collect();
    let lens: Vec<usize> = runs(&small).map(<[_]>::len).collect();
    assert_eq!(
        lens,
        [MAX_RUN_EVENTS, MAX_RUN_EVENTS, 150 - 2 * MAX_RUN_EVENTS]
    );
    let big: Vec<_> = (1..=5)
        .map(|n| {
            let e = NewEvent {
                topics: vec![Topic::new("a").unwrap()],
                event_type: None,
                data: "x".repeat(MAX_RUN_BYTES / 2),
                retry: None,
            };
            Arc::new(StoredEvent::new(EventId::new(n, 0), e))
        })
        .collect();
    let lens: Vec<usize> = runs(&big).map(<[_]>::len).collect();
    assert_eq!(lens, [2, 2, 1]);
    assert_eq!(bits(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
}
