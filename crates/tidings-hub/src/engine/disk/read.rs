//! Reads: events after an id for a set of topics and patterns, and the topic list.
//!
//! Every read runs in one SQLite read transaction, so it sees one committed snapshot: the
//! events and what was trimmed are consistent with each other (the engine contract's
//! prefix consistency).
//!
//! How a read finds its events, proportional to what it returns:
//! - a filter containing `*`: a seek in the global log (`events`, keyed by id) to just
//!   after the requested id, then the next `limit` rows;
//! - anything else: the matching topics are looked up (one lookup per exact topic, one
//!   range per pattern over the topic names), topics with nothing newer than the requested
//!   id are skipped, and the rest are merged by id from a seek in each topic's index
//!   (`topic_events`, keyed by `(topic, id)`, joined to `events`), a page at a time
//!   (for several topics, about an even share of the limit each). An event in several
//!   matching topics is taken once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use tidings::EventId;

use super::store::{id_from_blob, read_error};
use crate::engine::{NewEvent, ReadBatch, StoredEvent, TopicInfo};
use crate::error::{Error, ErrorKind};
use crate::topics::{Topic, TopicFilter, TopicPattern};

/// Most events one merge cursor reads at a time when several topics are merged.
const MERGE_PAGE: usize = 256;
/// Fewest events one merge cursor reads at a time.
const MIN_MERGE_PAGE: usize = 16;

/// Reads up to `limit` events matching `filter` after `after` (see the module docs).
pub(super) fn read_after(
    conn: &mut Connection,
    dir: &Path,
    origin: EventId,
    filter: &TopicFilter,
    after: EventId,
    limit: usize,
) -> Result<ReadBatch, Error> {
    let sql = |e| read_error(dir, e);
    let tx = conn.transaction().map_err(sql)?;
    let everything = filter
        .patterns()
        .iter()
        .any(|p| matches!(p, TopicPattern::Prefix(prefix) if prefix.is_empty()));
    let batch = if everything {
        read_global(&tx, dir, origin, after, limit)?
    } else {
        read_merged(&tx, dir, origin, filter, after, limit)?
    };
    // A read transaction: nothing to commit, ending it releases the snapshot.
    tx.rollback().map_err(sql)?;
    Ok(batch)
}

/// The global log from a seek.
fn read_global(
    tx: &Transaction<'_>,
    dir: &Path,
    origin: EventId,
    after: EventId,
    limit: usize,
) -> Result<ReadBatch, Error> {
    let sql = |e| read_error(dir, e);
    let trimmed: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'trimmed_through'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let complete_after = origin.max(trimmed.as_deref().and_then(id_from_blob).unwrap_or(origin));
    let mut statement = tx
        .prepare_cached(
            "SELECT id, topics, event_type, data, retry_ms FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(sql)?;
    let mut rows = statement
        .query(params![&after.to_be_bytes()[..], sql_limit(limit)])
        .map_err(sql)?;
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    while let Some(row) = rows.next().map_err(sql)? {
        if events.len() == limit {
            more = true;
            break;
        }
        let id = row_id(row, 0, dir)?;
        events.push(Arc::new(event_from_row(row, id, 1, dir)?));
    }
    Ok(ReadBatch {
        events,
        complete_after,
        more,
    })
}

/// One topic being merged: the ids read from its index and not yet taken.
struct Cursor {
    tid: i64,
    events: VecDeque<StoredEvent>,
    /// The newest id read from the index so far (the next page starts after it).
    read_through: EventId,
    exhausted: bool,
}

/// The matching topics' indexes merged by id.
fn read_merged(
    tx: &Transaction<'_>,
    dir: &Path,
    origin: EventId,
    filter: &TopicFilter,
    after: EventId,
    limit: usize,
) -> Result<ReadBatch, Error> {
    let sql = |e| read_error(dir, e);
    let mut complete_after = origin;
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut seen_tids: Vec<i64> = Vec::new();
    {
        let mut exact = tx
            .prepare_cached("SELECT tid, last_id, trimmed_through FROM topics WHERE name = ?1")
            .map_err(sql)?;
        let mut range = tx
            .prepare_cached(
                "SELECT tid, last_id, trimmed_through, name FROM topics WHERE name >= ?1 ORDER BY name",
            )
            .map_err(sql)?;
        let mut consider = |tid: i64, last_id: Option<Vec<u8>>, trimmed: Vec<u8>| {
            if seen_tids.contains(&tid) {
                return Ok(());
            }
            seen_tids.push(tid);
            let trimmed = id_from_blob(&trimmed).ok_or_else(|| corrupt(dir, "a topic"))?;
            complete_after = complete_after.max(trimmed);
            let last_id = last_id.as_deref().and_then(id_from_blob);
            if last_id.is_some_and(|last| last > after) {
                cursors.push(Cursor {
                    tid,
                    events: VecDeque::new(),
                    read_through: after,
                    exhausted: false,
                });
            }
            Ok::<(), Error>(())
        };
        for pattern in filter.patterns() {
            match pattern {
                TopicPattern::Exact(topic) => {
                    let found = exact
                        .query_row([topic.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                        .map_err(sql)?;
                    if let Some((tid, last_id, trimmed)) = found {
                        consider(tid, last_id, trimmed)?;
                    }
                }
                TopicPattern::Prefix(prefix) => {
                    let mut rows = range.query([&**prefix]).map_err(sql)?;
                    while let Some(row) = rows.next().map_err(sql)? {
                        let name: String = row.get(3).map_err(sql)?;
                        if !name.starts_with(&**prefix) {
                            break;
                        }
                        consider(
                            row.get(0).map_err(sql)?,
                            row.get(1).map_err(sql)?,
                            row.get(2).map_err(sql)?,
                        )?;
                    }
                }
            }
        }
    }

    // A page per cursor: the whole limit for one topic; for several, about an even share
    // of it (more pages follow for a topic that has more of the next events).
    let page = match cursors.len() {
        0 | 1 => limit.saturating_add(1),
        k => (limit / k + 1).clamp(MIN_MERGE_PAGE, MERGE_PAGE),
    };
    let mut index = tx
        .prepare_cached(
            "SELECT i.id, e.topics, e.event_type, e.data, e.retry_ms FROM topic_events i
             LEFT JOIN events e ON e.id = i.id
             WHERE i.tid = ?1 AND i.id > ?2 ORDER BY i.id LIMIT ?3",
        )
        .map_err(sql)?;
    let mut refill = |cursor: &mut Cursor| -> Result<(), Error> {
        let mut rows = index
            .query(params![
                cursor.tid,
                &cursor.read_through.to_be_bytes()[..],
                i64::try_from(page).unwrap_or(i64::MAX)
            ])
            .map_err(sql)?;
        let mut read = 0;
        while let Some(row) = rows.next().map_err(sql)? {
            let id = row_id(row, 0, dir)?;
            if row.get_ref(1).map_err(sql)?.data_type() == rusqlite::types::Type::Null {
                return Err(corrupt(dir, "an index entry without its event"));
            }
            cursor.events.push_back(event_from_row(row, id, 1, dir)?);
            cursor.read_through = id;
            read += 1;
        }
        cursor.exhausted = read < page;
        Ok(())
    };

    // k-way merge: the heap holds each cursor's next id.
    let mut heap: BinaryHeap<Reverse<(EventId, usize)>> = BinaryHeap::new();
    for (i, cursor) in cursors.iter_mut().enumerate() {
        refill(cursor)?;
        if let Some(event) = cursor.events.front() {
            heap.push(Reverse((event.id, i)));
        }
    }
    let mut events: Vec<Arc<StoredEvent>> = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    while let Some(Reverse((id, i))) = heap.pop() {
        let cursor = &mut cursors[i];
        if events.last().is_some_and(|last| last.id == id) {
            // The same event through another matching topic.
            cursor.events.pop_front();
        } else if events.len() == limit {
            more = true;
            break;
        } else if let Some(event) = cursor.events.pop_front() {
            events.push(Arc::new(event));
        }
        if cursor.events.is_empty() && !cursor.exhausted {
            refill(cursor)?;
        }
        if let Some(next) = cursor.events.front() {
            heap.push(Reverse((next.id, i)));
        }
    }
    Ok(ReadBatch {
        events,
        complete_after,
        more,
    })
}

/// Every topic, sorted by name.
pub(super) fn topics(conn: &mut Connection, dir: &Path) -> Result<Vec<TopicInfo>, Error> {
    let sql = |e| read_error(dir, e);
    let mut statement = conn
        .prepare_cached("SELECT name, last_id, retained, published FROM topics ORDER BY name")
        .map_err(sql)?;
    let mut rows = statement.query([]).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql)? {
        let name: String = row.get(0).map_err(sql)?;
        let last_id: Option<Vec<u8>> = row.get(1).map_err(sql)?;
        out.push(TopicInfo {
            topic: Topic::new(&name).map_err(|_| corrupt(dir, "a topic name"))?,
            last_id: last_id.as_deref().and_then(id_from_blob),
            retained: row.get::<_, i64>(2).map_err(sql)?.max(0) as u64,
            published: row.get::<_, i64>(3).map_err(sql)?.max(0) as u64,
        });
    }
    Ok(out)
}

/// An event from a row whose columns from `first` on are `topics, event_type, data,
/// retry_ms`.
fn event_from_row(
    row: &Row<'_>,
    id: EventId,
    first: usize,
    dir: &Path,
) -> Result<StoredEvent, Error> {
    let sql = |e| read_error(dir, e);
    let topics: String = row.get(first).map_err(sql)?;
    let topics = topics
        .split('\n')
        .map(Topic::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt(dir, "the topics of an event"))?;
    let retry: Option<i64> = row.get(first + 3).map_err(sql)?;
    Ok(StoredEvent::new(
        id,
        NewEvent {
            topics,
            event_type: row.get(first + 1).map_err(sql)?,
            data: row.get(first + 2).map_err(sql)?,
            retry: retry.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        },
    ))
}

fn row_id(row: &Row<'_>, column: usize, dir: &Path) -> Result<EventId, Error> {
    let blob: Vec<u8> = row.get(column).map_err(|e| read_error(dir, e))?;
    id_from_blob(&blob).ok_or_else(|| corrupt(dir, "an event id"))
}

/// `limit + 1` rows (one more tells whether more follow), as SQLite wants it.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

fn corrupt(dir: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!(
            "{what} in the database in {} is not valid; the data dir is damaged: stop the hub and restore it from a backup",
            dir.display()
        ),
    )
}
