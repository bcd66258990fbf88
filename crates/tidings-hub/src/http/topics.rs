//! `GET /topics` (what exists, who listens) and `GET /topics/{topic}/events` (history as
//! JSON).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use http::{HeaderMap, Uri};
use serde::Serialize;
use serde_json::{json, Value};

use tidings::EventId;

use super::auth::{self, Action, TOKEN_PARAMETER};
use super::problem::Problem;
use crate::auth::Rights;
use crate::engine::StoredEvent;
use crate::hub::Hub;
use crate::topics::{Topic, TopicFilter, TopicPattern};

/// Default number of events `GET /topics/{topic}/events` returns.
const DEFAULT_LIMIT: usize = 100;
/// Most events one `GET /topics/{topic}/events` returns.
const MAX_LIMIT: usize = 1000;

/// One row of `GET /topics`.
#[derive(Debug, Serialize)]
struct TopicRow {
    topic: Topic,
    /// Connections receiving this topic, exactly or through a pattern.
    subscribers: usize,
    last_id: Option<String>,
    retained: u64,
    published: u64,
}

/// `GET /topics`: every topic with events or subscribers, the number of open streams,
/// and `head`, the newest id stored (any topic). When reads take a token, only the topics
/// it grants are listed.
pub async fn list(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    let rights = auth::rights(&hub, &headers, &uri, Action::Read)?;
    let head = hub.engine().head().await.map_err(Problem::from)?;
    let mut rows: BTreeMap<Topic, TopicRow> = BTreeMap::new();
    for info in hub.engine().topics().await.map_err(Problem::from)? {
        rows.insert(
            info.topic.clone(),
            TopicRow {
                subscribers: 0,
                last_id: info.last_id.map(|id| id.to_string()),
                retained: info.retained,
                published: info.published,
                topic: info.topic,
            },
        );
    }
    for topic in hub.fanout().subscribed_topics() {
        rows.entry(topic.clone()).or_insert(TopicRow {
            topic,
            subscribers: 0,
            last_id: None,
            retained: 0,
            published: 0,
        });
    }
    if let Some(rights) = &rights {
        rows.retain(|topic, _| rights.may_read(topic));
    }
    for row in rows.values_mut() {
        row.subscribers = hub.fanout().subscribers_of(&row.topic);
    }
    Ok(Json(json!({
        "topics": rows.into_values().collect::<Vec<_>>(),
        "connections": hub.fanout().connections(),
        "head": head.to_string(),
    })))
}

/// One event in `GET /topics/{topic}/events`.
#[derive(Debug, Serialize)]
struct EventRow<'a> {
    id: String,
    topics: Vec<&'a Topic>,
    event: Option<&'a str>,
    data: &'a str,
    retry: Option<u128>,
    /// Milliseconds since the Unix epoch when it was stored (the id's time part).
    time: u64,
}

impl<'a> EventRow<'a> {
    /// The row of `e`, listing only the topics `rights` may read (`None`: all).
    fn new(e: &'a Arc<StoredEvent>, rights: Option<&Rights>) -> EventRow<'a> {
        EventRow {
            id: e.id.to_string(),
            topics: e
                .topics
                .iter()
                .filter(|topic| rights.is_none_or(|r| r.may_read(topic)))
                .collect(),
            event: e.event_type.as_deref(),
            data: &e.data,
            retry: e.retry.map(|r| r.as_millis()),
            time: e.id.ms,
        }
    }
}

/// `GET /topics/{topic}/events?after=<id>&limit=<n>`: retained history of a topic (or a
/// pattern such as `chat/*`), oldest first. The topic may contain `/` as is
/// (`/topics/chat/room-1/events`) or percent-encoded.
pub async fn history(
    State(hub): State<Arc<Hub>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    let Some(name) = path.strip_suffix("/events").filter(|n| !n.is_empty()) else {
        return Err(super::problem::not_found(uri).await);
    };
    let rights = auth::rights(&hub, &headers, &uri, Action::Read)?;
    let pattern = TopicPattern::parse(name).map_err(Problem::from)?;
    let mut after = EventId::ZERO;
    let mut limit = DEFAULT_LIMIT;
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in super::form::pairs(uri.query().unwrap_or("").as_bytes(), "query")? {
        if seen.contains(&key) {
            return Err(Problem::bad_request(
                "repeated-parameter",
                "Repeated parameter",
                format!("the query parameter `{key}` is given twice; give it once"),
            ));
        }
        seen.push(key.clone());
        match &*key {
            "after" if !value.is_empty() => {
                after = value.parse().map_err(|e: tidings::Error| {
                    Problem::bad_request("invalid-id", "Invalid event id", format!("after: {e}"))
                })?;
            }
            "after" | TOKEN_PARAMETER => {}
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Problem::bad_request(
                            "invalid-limit",
                            "Invalid limit",
                            format!("limit {value:?} must be a number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            other => {
                return Err(Problem::bad_request(
                    "unknown-parameter",
                    "Unknown parameter",
                    format!(
                        "unknown query parameter `{other}`; use after, limit and {TOKEN_PARAMETER}"
                    ),
                ))
            }
        }
    }
    let filter = TopicFilter::parse([pattern.to_string()]).map_err(Problem::from)?;
    auth::check_read(&hub, rights.as_ref(), &filter)?;
    let batch = hub
        .engine()
        .read_after(&filter, after, limit)
        .await
        .map_err(Problem::from)?;
    let events: Vec<EventRow<'_>> = batch
        .events
        .iter()
        .map(|e| EventRow::new(e, rights.as_ref()))
        .collect();
    Ok(Json(json!({
        "topic": pattern.to_string(),
        "events": events,
        "more": batch.more,
        "complete_after": batch.complete_after.to_string(),
    })))
}
