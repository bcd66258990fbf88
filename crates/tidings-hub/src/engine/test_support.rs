//! Helpers shared by the engines' unit tests.

use super::{NewEvent, ReadBatch};
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

/// A filter from topic names and patterns.
pub(crate) fn filter(entries: &[&str]) -> TopicFilter {
    TopicFilter::parse(entries).expect("valid filter")
}

/// The data of every event a read returned, in order.
pub(crate) fn data(batch: &ReadBatch) -> Vec<&str> {
    batch.events.iter().map(|e| e.data.as_str()).collect()
}
