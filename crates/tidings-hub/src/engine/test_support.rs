//! Helpers shared by the engines' unit tests.

use std::sync::Arc;

use tokio::sync::broadcast;

use tidings::EventId;

use super::{Engine, LiveEvent, NewEvent, ReadBatch, StoredEvent};
use crate::topics::{Topic, TopicFilter};

/// An event with `data` for `topics`, no type, no retry.
pub(crate) fn new_event(topics: &[&str], data: &str) -> NewEvent {
    NewEvent {
        topics: topics
            .iter()
            .map(|t| Topic::new(t).expect("valid topic"))
            .collect(),
        event_type: None,
        data: data.into(),
        retry: None,
    }
}

/// The next event on a live feed, which must be a stored event.
pub(crate) async fn next_stored(live: &mut broadcast::Receiver<LiveEvent>) -> Arc<StoredEvent> {
    match live.recv().await.expect("live feed open") {
        LiveEvent::Stored(event) => event,
        LiveEvent::Skipped => panic!("the live feed skipped events"),
    }
}

/// A filter from topic names and patterns.
pub(crate) fn filter(entries: &[&str]) -> TopicFilter {
    TopicFilter::parse(entries).expect("valid filter")
}

/// The data of every event a read returned, in order.
pub(crate) fn data(batch: &ReadBatch) -> Vec<&str> {
    batch.events.iter().map(|e| e.data.as_str()).collect()
}

/// The read contract every engine keeps (with room for at least 2 events per topic): ids
/// increase across topics; reads merge topics and patterns in id order, an event in two
/// topics once; limits page; `topics()` lists what was published.
pub(crate) async fn reads_merge_in_order(engine: &dyn Engine) {
    let mut ids = Vec::new();
    for (topics, d) in [
        (&["a"][..], "1"),
        (&["b"][..], "2"),
        (&["a", "b"][..], "3"),
        (&["c/x"][..], "4"),
        (&["c/y/z"][..], "5"),
        (&["c"][..], "6"),
    ] {
        let stored = engine
            .append(vec![new_event(topics, d)])
            .await
            .expect("append");
        ids.push(stored[0].id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let all = engine
        .read_after(&filter(&["a", "b"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&all), ["1", "2", "3"], "3 is in both, read once");
    assert!(!all.more);
    let after_first = engine
        .read_after(&filter(&["a", "b"]), ids[0], 10)
        .await
        .expect("read");
    assert_eq!(data(&after_first), ["2", "3"]);
    let pattern = engine
        .read_after(&filter(&["c/*"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&pattern), ["4", "5"], "c/* does not match c");
    let limited = engine
        .read_after(&filter(&["*"]), EventId::ZERO, 2)
        .await
        .expect("read");
    assert_eq!(data(&limited), ["1", "2"]);
    assert!(limited.more);
    let merged_limited = engine
        .read_after(&filter(&["a", "b", "c/*"]), ids[0], 3)
        .await
        .expect("read");
    assert_eq!(data(&merged_limited), ["2", "3", "4"]);
    assert!(merged_limited.more);
    let nothing = engine
        .read_after(&filter(&["nope", "nope/*"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert!(nothing.events.is_empty() && !nothing.more);

    let info = engine.topics().await.expect("topics");
    let names: Vec<&str> = info.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "c/x", "c/y/z"]);
    assert_eq!((info[0].retained, info[0].published), (2, 2));
    assert_eq!(info[0].last_id, Some(ids[2]));
}

/// Publishes events 1, 2, 3 to `a` and `b1` to `b` (for an engine keeping 2 events per
/// topic). Returns the engine's origin and the ids of 1, 2 and 3.
pub(crate) async fn fill_a_past_its_limit(engine: &dyn Engine) -> (EventId, Vec<EventId>) {
    let origin = engine.head().await.expect("head");
    let mut ids = Vec::new();
    for d in ["1", "2", "3"] {
        let stored = engine
            .append(vec![new_event(&["a"], d)])
            .await
            .expect("append");
        ids.push(stored[0].id);
    }
    engine
        .append(vec![new_event(&["b"], "b1")])
        .await
        .expect("append");
    (origin, ids)
}

/// After [`fill_a_past_its_limit`] and a trim: event 1 is gone and reads say so through
/// `complete_after`; `b` lost nothing; `topics()` counts what is retained and published.
pub(crate) async fn first_of_a_was_trimmed(engine: &dyn Engine, origin: EventId, ids: &[EventId]) {
    let a = engine
        .read_after(&filter(&["a"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&a), ["2", "3"]);
    assert_eq!(a.complete_after, ids[0], "event 1 was trimmed");
    let b = engine
        .read_after(&filter(&["b"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(b.complete_after, origin, "nothing trimmed from b");
    let all = engine
        .read_after(&filter(&["*"]), EventId::ZERO, 10)
        .await
        .expect("read");
    assert_eq!(data(&all), ["2", "3", "b1"]);
    assert_eq!(all.complete_after, ids[0]);
    let info = engine.topics().await.expect("topics");
    assert_eq!(info.len(), 2);
    assert_eq!(info[0].topic.as_str(), "a");
    assert_eq!((info[0].retained, info[0].published), (2, 3));
    assert_eq!(info[0].last_id, Some(ids[2]));
}

/// The live-feed contract: appended events reach a live subscriber in id order, and the
/// head is the last of them.
pub(crate) async fn live_feed_is_in_id_order(engine: &dyn Engine) {
    let mut live = engine.subscribe_live();
    let stored = engine
        .append(vec![new_event(&["a"], "1"), new_event(&["b"], "2")])
        .await
        .expect("append");
    for expected in &stored {
        assert_eq!(next_stored(&mut live).await.id, expected.id);
    }
    assert_eq!(engine.head().await.expect("head"), stored[1].id);
}
