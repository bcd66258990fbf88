//! What Redis answers, as the hub's types: stream entries as events, the read script's
//! answer as one batch, ids, and the errors for answers the engine did not expect.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use tidings::EventId;

use crate::engine::{NewEvent, ReadBatch, StoredEvent};
use crate::error::{Error, ErrorKind};
use crate::topics::Topic;

/// Turns the read script's answer (the origin, then per topic its trimmed-through id and
/// up to `limit + 1` entries) into one batch in id order.
///
/// A topic that returned `limit + 1` entries may hold more, but the first `limit` events
/// of the merge are complete anyway: such a topic alone gave `limit + 1` distinct ids up
/// to its last one, so the merge's first `limit` all lie below it, and no event of it
/// that was not read can come before them.
pub(super) fn merge_topics(reply: Value, limit: usize) -> Result<ReadBatch, Error> {
    let [origin, topics] = <[Value; 2]>::try_from(array(reply)?).map_err(|_| malformed("read"))?;
    let mut complete_after = optional_id(&text(origin)?)?.unwrap_or(EventId::ZERO);
    let mut events: Vec<Arc<StoredEvent>> = Vec::new();
    for topic in array(topics)? {
        let [trimmed, entries] =
            <[Value; 2]>::try_from(array(topic)?).map_err(|_| malformed("read"))?;
        if let Some(trimmed) = optional_id(&text(trimmed)?)? {
            complete_after = complete_after.max(trimmed);
        }
        for entry in array(entries)? {
            events.push(Arc::new(parse_entry(entry)?.0));
        }
    }
    events.sort_by_key(|e| e.id);
    events.dedup_by_key(|e| e.id);
    let more = events.len() > limit;
    events.truncate(limit);
    Ok(ReadBatch {
        events,
        complete_after,
        more,
    })
}

/// A stream entry (`[id, [field, value, ...]]`) as an event, with the id before it when
/// the entry names one (log entries do).
pub(super) fn parse_entry(entry: Value) -> Result<(StoredEvent, Option<EventId>), Error> {
    let [id, fields] = <[Value; 2]>::try_from(array(entry)?).map_err(|_| malformed("entry"))?;
    let id = parse_id(&text(id)?)?;
    let mut event = NewEvent {
        topics: Vec::new(),
        event_type: None,
        data: String::new(),
        retry: None,
    };
    let mut prev = None;
    let mut fields = array(fields)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = text(value)?;
        match text(name)?.as_str() {
            "t" => {
                event.topics = value
                    .split('\n')
                    .map(stored_topic)
                    .collect::<Result<_, _>>()?;
            }
            "d" => event.data = value,
            "e" => event.event_type = Some(value),
            "r" => {
                let ms = value.parse().map_err(|_| malformed("retry field"))?;
                event.retry = Some(Duration::from_millis(ms));
            }
            "p" => prev = optional_id(&value)?,
            _ => {}
        }
    }
    if event.topics.is_empty() {
        return Err(malformed("entry without topics"));
    }
    Ok((StoredEvent::new(id, event), prev))
}

pub(super) fn stored_topic(name: &str) -> Result<Topic, Error> {
    Topic::new(name).map_err(|e| {
        Error::with_source(
            ErrorKind::Engine,
            format!("Redis holds a topic the hub did not write ({name:?}); is another program using the same key prefix?"),
            e,
        )
    })
}

pub(super) fn parse_id(text: &str) -> Result<EventId, Error> {
    text.parse().map_err(|_| malformed(&format!("id {text:?}")))
}

/// An id, or `None` for the empty string the scripts send for "none".
fn optional_id(text: &str) -> Result<Option<EventId>, Error> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_id(text).map(Some)
    }
}

pub(super) fn array(value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(malformed("reply")),
    }
}

fn text(value: Value) -> Result<String, Error> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| malformed("text")),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        _ => Err(malformed("reply")),
    }
}

pub(super) fn malformed(what: &str) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!(
            "Redis answered with a malformed {what}; is another program using the same key prefix?"
        ),
    )
}
