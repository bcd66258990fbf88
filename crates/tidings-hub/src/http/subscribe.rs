//! `GET /events?topic=a&topic=chat/*`: one event stream carrying every named topic.
//!
//! The answer is `text/event-stream` (see `tidings::server::SessionStream`): a `retry:`
//! with jitter, then — when the client resumes with `Last-Event-ID` (header) or
//! `lastEventId` (query) — a gap event if history does not reach back that far, the
//! history after that id across all the topics in id order, and then live events. The
//! resume rules are in [`crate::fanout::resume`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, Uri};

use tidings::server::{accepts_event_stream, Session, SessionConfig};
use tidings::Event;

use super::auth::{self, Action};
use super::problem::Problem;
use crate::engine::NewEvent;
use crate::fanout::resume::{replay_then_go_live, ResumePlan};
use crate::fanout::RegisterError;
use crate::hub::Hub;
use crate::topics::TopicFilter;

/// Event type of the presence event published when a subscriber connects.
pub const JOIN_EVENT_TYPE: &str = "join";
/// Event type of the presence event published when a subscriber disconnects.
pub const LEAVE_EVENT_TYPE: &str = "leave";

/// Seconds a client is asked to wait (`Retry-After`) when the connection limit is reached.
const FULL_RETRY_AFTER_SECS: u32 = 5;

/// The subscribe handler.
pub async fn subscribe(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    let settings = hub.settings();
    let rights = auth::rights(&hub, &headers, &uri, Action::Read)?;
    let filter = parse_topics(&uri, settings.max_topics)?;
    auth::check_read(&hub, rights.as_ref(), &filter)?;
    if hub.is_shutting_down() {
        return Ok(come_back_later(shutting_down(), &headers));
    }
    let config = SessionConfig::from_request(&headers, &uri)
        .retry(Some(settings.retry + jitter()))
        .keep_alive(settings.keep_alive)
        .padding(settings.padding)
        .max_queue_bytes(settings.max_queue_bytes);

    // The head is read before registering: see `fanout::resume` for why the order matters.
    let head = hub.engine().head().await.map_err(Problem::from)?;
    let (session, stream) = Session::new(config, ());
    let subscriber = match hub.fanout().register(session.clone(), filter) {
        Ok(subscriber) => subscriber,
        Err(RegisterError::Full) => {
            let full = Problem::unavailable(
                "too-many-connections",
                "Too many connections",
                format!(
                    "this hub already serves {} event streams (max_connections); try again later",
                    settings.max_connections
                ),
                FULL_RETRY_AFTER_SECS,
            );
            return Ok(come_back_later(full, &headers));
        }
        Err(RegisterError::ShuttingDown) => return Ok(come_back_later(shutting_down(), &headers)),
    };
    let plan = ResumePlan::new(session.last_event_id(), head);
    tracing::debug!(session = %session.id(), topics = %subscriber.filter, last_event_id = ?session.last_event_id(), "subscribed");

    let presence = settings.presence;
    if presence {
        let weak = Arc::downgrade(&hub);
        let filter = subscriber.filter.clone();
        session.on_close(move |id| {
            tracing::debug!(session = %id, "unsubscribed");
            if let (Some(hub), Ok(runtime)) =
                (weak.upgrade(), tokio::runtime::Handle::try_current())
            {
                runtime.spawn(publish_presence(
                    Arc::downgrade(&hub),
                    filter,
                    LEAVE_EVENT_TYPE,
                    id.0,
                ));
            }
        });
    }
    let engine = Arc::clone(hub.engine());
    let weak_hub = Arc::downgrade(&hub);
    tokio::spawn(async move {
        replay_then_go_live(&*engine, &subscriber, plan).await;
        if presence && !subscriber.session.is_closed() {
            publish_presence(
                weak_hub,
                subscriber.filter.clone(),
                JOIN_EVENT_TYPE,
                subscriber.session.id().0,
            )
            .await;
        }
    });
    Ok(IntoResponse::into_response(stream))
}

/// Reads the `topic` query parameters into a filter, within the topic limit.
fn parse_topics(uri: &Uri, max_topics: usize) -> Result<TopicFilter, Problem> {
    let query = uri.query().unwrap_or("");
    let topics: Vec<String> = super::form::pairs(query.as_bytes(), "query")?
        .into_iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v)
        .collect();
    if topics.is_empty() {
        return Err(Problem::bad_request(
            "missing-topic",
            "Missing topic",
            "say which topics to subscribe to: GET /events?topic=a&topic=chat/* (one or more `topic` parameters)",
        ));
    }
    let filter = TopicFilter::parse(&topics).map_err(Problem::from)?;
    if filter.len() > max_topics {
        return Err(Problem::bad_request(
            "too-many-topics",
            "Too many topics",
            format!(
                "{} topics and patterns in one subscription; the limit is {max_topics} (max_topics). Use a pattern such as `chat/*` or several connections",
                filter.len()
            ),
        ));
    }
    Ok(filter)
}

/// Event type of the notice a request that accepts `text/event-stream` gets instead of a
/// 503 when the hub cannot take it now: an `EventSource` takes any status but 200 as
/// final, so it gets a stream that sets `retry:` to the wait, carries the problem as this
/// event, and ends.
pub const UNAVAILABLE_EVENT_TYPE: &str = "tidings.unavailable";

/// Answers a subscription the hub cannot take now (`problem` is a 503 with `Retry-After`).
///
/// An `EventSource` (a request that accepts `text/event-stream`) treats any status but 200
/// as final and never reconnects, so a browser tab that met a full or restarting hub would
/// stay disconnected. It gets instead a 200 stream that sets `retry:` to the wait, carries
/// the problem as a `tidings.unavailable` event (typed: it fires only for listeners of that
/// type) and ends, so the client reconnects after the wait. Other clients get the 503.
fn come_back_later(problem: Problem, headers: &HeaderMap) -> Response {
    if !accepts_event_stream(headers) {
        return problem.into_response();
    }
    let wait = Duration::from_secs(u64::from(problem.retry_after.unwrap_or(1))) + jitter();
    let data = serde_json::to_string(&problem).unwrap_or_default();
    let body = Event::new()
        .retry(wait)
        .event(UNAVAILABLE_EVENT_TYPE)
        .data(data)
        .encode()
        .unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn shutting_down() -> Problem {
    Problem::unavailable(
        "shutting-down",
        "Shutting down",
        "this hub is shutting down; reconnect in a moment",
        1,
    )
}

/// Publishes a `join` or `leave` event to the exact topics of `filter` (patterns name no
/// topic to publish to). The data is `{"session":"<hub>-<id>"}`: this hub's random name and
/// the session's number, unique among hubs sharing an engine.
async fn publish_presence(
    hub: Weak<Hub>,
    filter: TopicFilter,
    event_type: &'static str,
    session: u64,
) {
    let Some(hub) = hub.upgrade() else { return };
    let topics: Vec<_> = filter.exact_topics().cloned().collect();
    if topics.is_empty() {
        return;
    }
    let event = NewEvent {
        topics,
        event_type: Some(event_type.to_owned()),
        data: serde_json::json!({ "session": format!("{}-{session}", hub.instance()) }).to_string(),
        retry: None,
    };
    if let Err(err) = hub.publish(vec![event]).await {
        tracing::warn!(error = %err, event_type, "presence event not stored");
    }
}

/// 0-1000 ms, different for each connection, so clients closed together (on shutdown) do
/// not all come back in the same millisecond.
fn jitter() -> Duration {
    Duration::from_millis(crate::hub::random_u64() % 1001)
}
