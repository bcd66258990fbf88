//! `POST /publish`: store an event (or a batch) and answer with its id once it is stored.
//!
//! Form (`application/x-www-form-urlencoded`, or `multipart/form-data` as `curl -F` and a
//! browser's `FormData` send it): `topic` (repeatable), `data`, and optional `event` and
//! `retry` (milliseconds).
//!
//! JSON (`application/json`): `{"topic": "a" | ["a", "b"], "data": "...", "event": "t",
//! "retry": 3000}`; `data` that is not a string is published as its JSON text. A JSON
//! array publishes a batch: `[{...}, {...}]`.
//!
//! Answers `200 {"id": "<ms>-<seq>"}` (a batch: `{"ids": [...]}`) after the engine stored
//! the events. Anything invalid — a missing topic, a pattern as a topic, an event type with
//! CR or LF or starting with `tidings.` (the hub's own), an unknown or repeated field — is
//! `400` problem+json, and nothing of the request is
//! stored: a batch is validated whole before any of it is stored.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use self::parse::{form_event, multipart_fields, parse_json};
use super::auth::{self, Action};
use super::cors::check_publish_origin;
use super::form;
use super::problem::Problem;
use crate::hub::Hub;

/// The publish handler.
pub async fn publish(
    State(hub): State<Arc<Hub>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let settings = hub.settings();
    let rights = check_publish_origin(&headers, &uri, &settings.cors_origins)
        .and_then(|()| auth::rights(&hub, &headers, &uri, Action::Publish));
    let rights = match rights {
        Ok(rights) => rights,
        Err(refused) => {
            drain(body);
            return Err(refused);
        }
    };
    let body = read_body(&headers, body, settings.max_body_bytes).await?;
    let (events, batch) = match media_type(&headers).as_deref() {
        Some("application/json") => parse_json(&body, settings.max_topics)?,
        Some("application/x-www-form-urlencoded") => {
            let fields = form::pairs(&body, "form")?;
            (vec![form_event(fields, settings.max_topics)?], false)
        }
        Some("multipart/form-data") => {
            let fields = multipart_fields(&headers, body).await?;
            (vec![form_event(fields, settings.max_topics)?], false)
        }
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!(
                    "publish with Content-Type application/json, application/x-www-form-urlencoded or multipart/form-data, not {}",
                    other.map_or_else(|| "none".to_owned(), |t| format!("{t:?}"))
                ),
            ))
        }
    };
    auth::check_publish(&hub, rights.as_ref(), &events)?;
    let stored = hub.publish(events).await.map_err(Problem::from)?;
    let ids: Vec<String> = stored.iter().map(|e| e.id.to_string()).collect();
    tracing::debug!(?ids, "published");
    Ok(Json(if batch {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.first() })
    }))
}

/// Reads the whole body, refusing (413) beyond `limit` bytes.
///
/// A refused body is still read to its end, and thrown away, by a task of its own (see
/// [`drain`]): the client is most likely still sending it, and closing the connection
/// under it would make it see a reset instead of the 413.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, Problem> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body);
        return Err(Problem::too_large(limit));
    }
    let mut read = BytesMut::new();
    let deadline = Instant::now() + BODY_TIME;
    loop {
        let wait = deadline.min(Instant::now() + BODY_IDLE);
        let Ok(next) = tokio::time::timeout_at(wait, body.frame()).await else {
            return Err(body_too_slow());
        };
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|err| {
            Problem::bad_request(
                "unreadable-body",
                "Unreadable body",
                format!("the request body could not be read: {err}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read.len() + data.len() > limit {
            drain(body);
            return Err(Problem::too_large(limit));
        }
        read.extend_from_slice(&data);
    }
    Ok(read.freeze())
}

/// A publish body must keep coming (something at least this often) and be whole within
/// `BODY_TIME`; otherwise the request is answered 408 and its connection closed, so a
/// stalled upload holds no connection (and no shutdown) for long.
const BODY_IDLE: Duration = Duration::from_secs(10);
const BODY_TIME: Duration = Duration::from_secs(60);

fn body_too_slow() -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        "Request body too slow",
        format!(
            "the request body stopped arriving: nothing came for {} s, or the whole of it took \
             more than {} s",
            BODY_IDLE.as_secs(),
            BODY_TIME.as_secs()
        ),
    )
}

/// How much of a refused body is read and thrown away at most, and for how long, before
/// the connection is closed under the client (nginx's "lingering close", bounded).
const DRAIN_MAX_BYTES: usize = 64 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Reads the rest of a refused request body in the background, so that the client sees
/// the answer before the connection closes (see [`read_body`]).
fn drain(mut body: Body) {
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                let size = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(size) {
                    Some(rest) => left = rest,
                    None => return,
                }
            }
        })
        .await;
    });
}

/// The media type of the request, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(essence)
}

mod parse;
