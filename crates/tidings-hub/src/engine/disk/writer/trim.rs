//! Retention on the writer's thread: one pass deletes the oldest index entries of the
//! topics over their limits, a batch at a time, so a publish never waits behind a long
//! trim.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::super::store::{id_from_blob, write_error};
use super::super::TrimReport;
use super::{corrupt, upsert_topic, TopicState, Writer, UPSERT_TOPIC};
use crate::error::Error;
use crate::topics::Topic;

impl Writer {
    /// One retention pass: for every topic over a limit, deletes its oldest index entries
    /// (and each event no other topic still holds) until it is within its limits or
    /// `trim_batch` entries were deleted. `trimmed_through` moves in the same transaction,
    /// so a reader sees either the events or the fact that they were trimmed.
    pub(super) fn trim(&mut self) -> Result<TrimReport, Error> {
        self.trim_inner().map_err(|e| write_error(&self.dir, e))
    }

    fn trim_inner(&mut self) -> Result<TrimReport, rusqlite::Error> {
        let now = (self.clock)();
        let mut report = TrimReport {
            finished: true,
            ..TrimReport::default()
        };
        let mut candidates: Vec<Topic> = self
            .topics
            .iter()
            .filter(|(_, s)| s.over_limits(now))
            .map(|(t, _)| t.clone())
            .collect();
        if candidates.is_empty() {
            return Ok(report);
        }
        candidates.sort();
        let mut budget = self.trim_batch;
        let mut changed: HashMap<Topic, TopicState> = HashMap::new();
        let mut trimmed_through = self.trimmed_through;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut oldest_rows = tx.prepare_cached(
                "SELECT id, size FROM topic_events WHERE tid = ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut delete_index =
                tx.prepare_cached("DELETE FROM topic_events WHERE tid = ?1 AND id = ?2")?;
            let mut event_topics = tx.prepare_cached("SELECT topics FROM events WHERE id = ?1")?;
            let mut held_by =
                tx.prepare_cached("SELECT 1 FROM topic_events WHERE tid = ?1 AND id = ?2")?;
            let mut delete_event = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
            for topic in &candidates {
                if budget == 0 {
                    report.finished = false;
                    break;
                }
                let Some(mut state) = self.topics.get(topic).cloned() else {
                    continue;
                };
                'pages: loop {
                    let page = budget.min(1024) + 1;
                    let rows: Vec<(Vec<u8>, i64)> = oldest_rows
                        .query_map(params![state.tid, page as i64], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    for (key, size) in &rows {
                        let id = id_from_blob(key).ok_or_else(|| corrupt("an index entry"))?;
                        let over = state.limits.exceeded(
                            state.retained,
                            state.retained_bytes,
                            Some(id.ms),
                            now,
                        );
                        if !over || budget == 0 {
                            state.oldest = Some(id);
                            break 'pages;
                        }
                        delete_index.execute(params![state.tid, &key[..]])?;
                        budget -= 1;
                        report.deleted += 1;
                        state.retained = state.retained.saturating_sub(1);
                        state.retained_bytes =
                            state.retained_bytes.saturating_sub((*size).max(0) as u64);
                        state.trimmed_through = state.trimmed_through.max(id);
                        // The event goes when no other topic holds it any more.
                        let names: Option<String> = event_topics
                            .query_row([&key[..]], |r| r.get(0))
                            .optional()?;
                        let mut held = false;
                        for name in names.as_deref().unwrap_or("").split('\n') {
                            let other = changed
                                .get(name)
                                .or_else(|| self.topics.get(name))
                                .map(|s| s.tid);
                            if let Some(tid) = other.filter(|&tid| tid != state.tid) {
                                if held_by.exists(params![tid, &key[..]])? {
                                    held = true;
                                    break;
                                }
                            }
                        }
                        if !held {
                            delete_event.execute([&key[..]])?;
                            report.events_removed += 1;
                        }
                    }
                    if rows.len() < page {
                        state.oldest = None;
                        break;
                    }
                }
                if state.over_limits(now) {
                    report.finished = false;
                }
                trimmed_through = trimmed_through.max(state.trimmed_through);
                changed.insert(topic.clone(), state);
            }
            let mut upsert = tx.prepare_cached(UPSERT_TOPIC)?;
            for (topic, state) in &changed {
                upsert_topic(&mut upsert, topic, state)?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'trimmed_through'",
                [&trimmed_through.to_be_bytes()[..]],
            )?;
        }
        tx.commit()?;
        self.topics.extend(changed);
        self.trimmed_through = trimmed_through;
        if report.deleted > 0 {
            tracing::debug!(
                deleted = report.deleted,
                events_removed = report.events_removed,
                finished = report.finished,
                "retention pass"
            );
        }
        Ok(report)
    }
}
