//! Tokens on the HTTP API: where a request carries one, and the 401 and 403 answers.
//!
//! What a token grants is in [`crate::auth`]. A request carries its token as
//! `Authorization: Bearer <token>` (RFC 6750), and reads (`GET /events`, `GET /topics…`)
//! also as the `access_token` query parameter, since a browser's `EventSource` cannot set
//! headers, or as a `tidings_token` cookie (sent by `EventSource` on the hub's own origin,
//! and cross-origin with `withCredentials`). When a request has several, the header wins,
//! then the query parameter, then the first cookie (browsers send the one set for the
//! longest path first). Two `Authorization` headers or two `access_token` parameters are
//! a `400`.
//!
//! - No token where one is needed, or one that does not hold: `401` with
//!   `WWW-Authenticate: Bearer` and a detail that says what was wrong.
//! - A valid token that does not grant a topic of the request: `403`, naming the topic;
//!   nothing of the request is stored.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, StatusCode, Uri};

use super::problem::Problem;
use crate::auth::{Access, Rights, CLAIM};
use crate::engine::NewEvent;
use crate::hub::Hub;
use crate::topics::{TopicFilter, TopicPattern};

/// The query parameter a read may carry its token in (RFC 6750 §2.3).
pub const TOKEN_PARAMETER: &str = "access_token";
/// The cookie a read may carry its token in.
pub const TOKEN_COOKIE: &str = "tidings_token";

/// What a request asks to do, for the access it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `POST /publish`.
    Publish,
    /// `GET /events`, `GET /topics`, `GET /topics/{topic}/events`.
    Read,
}

/// The rights of the request's token, or `None` when the hub lets anyone do `action`.
///
/// # Errors
/// 401 when a token is needed and missing or does not hold; 400 when the query names the
/// token twice.
pub(crate) fn rights(
    hub: &Hub,
    headers: &HeaderMap,
    uri: &Uri,
    action: Action,
) -> Result<Option<Rights>, Problem> {
    let access = match action {
        Action::Publish => hub.settings().auth.publish,
        Action::Read => hub.settings().auth.subscribe,
    };
    if access == Access::Open {
        return Ok(None);
    }
    let Some(verifier) = hub.verifier() else {
        // Settings that need a token always have a key (`AuthSettings::validate`).
        return Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server-error",
            "Server error",
            "this hub needs tokens but has no key to check them with",
        ));
    };
    let checked = match token_in(headers, uri, action)? {
        None => Err(unauthorized(missing_detail(action), None)),
        Some(token) => verifier
            .verify(&token)
            .map(Some)
            .map_err(|err| unauthorized(err.to_string(), Some("invalid_token"))),
    };
    if checked.is_err() {
        hub.count_refusal(false);
    }
    checked
}

/// Refuses (403) a publish any of whose topics `rights` do not grant (`None`: all are).
pub(crate) fn check_publish(
    hub: &Hub,
    rights: Option<&Rights>,
    events: &[NewEvent],
) -> Result<(), Problem> {
    let Some(rights) = rights else { return Ok(()) };
    let refused = events
        .iter()
        .flat_map(|event| &event.topics)
        .find(|topic| !rights.may_publish(topic));
    match refused {
        Some(topic) => Err(forbidden(
            hub,
            format!(
                "this token may not publish to topic {:?}; its {CLAIM}.publish claim grants {}",
                topic.as_str(),
                granted(&rights.publish)
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses (403) a read of topics or patterns that `rights` do not grant (`None`: all are).
pub(crate) fn check_read(
    hub: &Hub,
    rights: Option<&Rights>,
    filter: &TopicFilter,
) -> Result<(), Problem> {
    let Some(rights) = rights else { return Ok(()) };
    match filter.patterns().iter().find(|p| !rights.may_subscribe(p)) {
        Some(pattern) => Err(forbidden(hub, format!(
            "this token may not subscribe to {:?}; its {CLAIM}.subscribe claim grants {} (a pattern needs a granted pattern at least as wide)",
            pattern.to_string(),
            granted(&rights.subscribe)
        ))),
        None => Ok(()),
    }
}

/// The token a request carries, from where `action` may carry it.
fn token_in(headers: &HeaderMap, uri: &Uri, action: Action) -> Result<Option<String>, Problem> {
    let mut authorizations = headers.get_all(AUTHORIZATION).iter();
    if let Some(value) = authorizations.next() {
        if authorizations.next().is_some() {
            return Err(Problem::bad_request(
                "repeated-header",
                "Repeated header",
                "the request has several Authorization headers; send one",
            ));
        }
        let bearer = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        return match bearer {
            Some(token) => Ok(Some(token.to_owned())),
            None => Err(unauthorized(
                "the Authorization header is not `Bearer <token>`".to_owned(),
                Some("invalid_request"),
            )),
        };
    }
    if action == Action::Publish {
        return Ok(None);
    }
    let query = uri.query().unwrap_or("").as_bytes();
    let mut in_query = super::form::pairs(query, "query")?
        .into_iter()
        .filter(|(name, _)| name == TOKEN_PARAMETER)
        .map(|(_, value)| value);
    if let Some(token) = in_query.next() {
        if in_query.next().is_some() {
            return Err(Problem::bad_request(
                "repeated-parameter",
                "Repeated parameter",
                format!("the query parameter `{TOKEN_PARAMETER}` is given twice; give one token"),
            ));
        }
        return Ok(Some(token));
    }
    Ok(headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned()))
}

fn missing_detail(action: Action) -> String {
    match action {
        Action::Publish => format!(
            "this hub takes publishes with a token only: send `Authorization: Bearer <token>` with a JWT whose {CLAIM}.publish claim grants the topics (`tidings token --publish TOPIC` makes one)"
        ),
        Action::Read => format!(
            "this hub takes subscriptions and history reads with a token only: send `Authorization: Bearer <token>`, the `{TOKEN_PARAMETER}` query parameter (EventSource cannot set headers) or a `{TOKEN_COOKIE}` cookie, with a JWT whose {CLAIM}.subscribe claim grants the topics"
        ),
    }
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3); `error` when a token
/// (or an Authorization header) was given but does not hold.
fn unauthorized(detail: String, error: Option<&str>) -> Problem {
    let challenge = match error {
        Some(error) => format!(
            "Bearer realm=\"tidings\", error=\"{error}\", error_description=\"{}\"",
            quotable(&detail)
        ),
        None => "Bearer realm=\"tidings\"".to_owned(),
    };
    Problem {
        challenge: Some(challenge),
        ..Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }
}

fn forbidden(hub: &Hub, detail: String) -> Problem {
    hub.count_refusal(true);
    Problem {
        challenge: Some("Bearer realm=\"tidings\", error=\"insufficient_scope\"".to_owned()),
        ..Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }
}

/// `detail` as the inside of a quoted string: printable ASCII without `"` and `\`.
fn quotable(detail: &str) -> String {
    detail
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

fn granted(patterns: &[TopicPattern]) -> String {
    if patterns.is_empty() {
        return "nothing".to_owned();
    }
    let names: Vec<String> = patterns
        .iter()
        .map(|p| format!("{:?}", p.to_string()))
        .collect();
    format!("[{}]", names.join(", "))
}
