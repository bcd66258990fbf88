//! Errors on the HTTP API as `application/problem+json` (RFC 9457): every 4xx and 5xx the
//! hub answers, including unknown routes, wrong methods and axum's own rejections.
//!
//! ```text
//! HTTP/1.1 400 Bad Request
//! content-type: application/problem+json
//!
//! {"type":"urn:tidings:problem:invalid-event","title":"Invalid event","status":400,
//!  "detail":"event type \"a\\nb\" contains a CR or LF, which would inject fields into the stream"}
//! ```

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::StatusCode;
use serde::Serialize;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Bodies of non-problem error responses longer than this are not quoted in `detail`.
const MAX_QUOTED_BODY: usize = 4096;

/// One problem, answered as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tidings:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong with this request, and what to do about it.
    pub detail: String,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// How to authenticate (sent as `WWW-Authenticate`, RFC 6750), on 401 and 403.
    #[serde(skip)]
    pub challenge: Option<String>,
}

impl Problem {
    /// A problem with `status`, a slug for its type URI, a title and a detail.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:tidings:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// 400: the request was malformed in a way `detail` explains.
    pub fn bad_request(slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(
        slug: &str,
        title: &str,
        detail: impl Into<String>,
        retry_after: u32,
    ) -> Problem {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, title, detail)
        }
    }

    /// 413: the request body is larger than `limit` bytes.
    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body is larger than the limit of {limit} bytes (max_body_bytes)"),
        )
    }

    /// A problem for a status that no handler described (e.g. an axum rejection), with
    /// the response body it had, if any, as the detail.
    fn from_status(status: StatusCode, body_text: Option<String>) -> Problem {
        let (slug, title, default_detail) = match status {
            StatusCode::NOT_FOUND => (
                "not-found",
                "Not found",
                "no such route; see GET / for the page and the README for the API".to_owned(),
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "Method not allowed",
                "this route does not answer this method; the Allow header lists the ones it does"
                    .to_owned(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "body-too-large",
                "Request body too large",
                "the request body is too large".to_owned(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "Unsupported media type",
                "unsupported Content-Type".to_owned(),
            ),
            s if s.is_client_error() => (
                "bad-request",
                "Bad request",
                s.canonical_reason().unwrap_or("bad request").to_owned(),
            ),
            s => (
                "server-error",
                "Server error",
                s.canonical_reason().unwrap_or("server error").to_owned(),
            ),
        };
        let title = status.canonical_reason().unwrap_or(title);
        let detail = body_text
            .filter(|t| !t.trim().is_empty())
            .unwrap_or(default_detail);
        Problem::new(status, slug, title, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<crate::Error> for Problem {
    fn from(err: crate::Error) -> Problem {
        use crate::ErrorKind;
        match err.kind() {
            ErrorKind::InvalidTopic => {
                Problem::bad_request("invalid-topic", "Invalid topic", err.to_string())
            }
            ErrorKind::InvalidEvent => {
                Problem::bad_request("invalid-event", "Invalid event", err.to_string())
            }
            ErrorKind::Engine => Problem::unavailable(
                "engine-unavailable",
                "Storage unavailable",
                err.to_string(),
                1,
            ),
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server-error",
                "Server error",
                err.to_string(),
            ),
        }
    }
}

/// Middleware: turns any error response that is not problem+json already (unknown route,
/// wrong method, an extractor's rejection) into one, keeping its status and headers
/// (e.g. `Allow` on 405) and quoting its text as the detail.
pub async fn problem_layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_QUOTED_BODY)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok());
    let problem = Problem::from_status(status, text).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, Body::new(problem_body))
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Fallback for unknown routes: 404 naming the path.
pub async fn not_found(uri: http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not Found",
        format!(
            "no route for {}; the API is GET /events, POST /publish, GET /topics, GET /topics/{{topic}}/events, GET /healthz, GET /readyz, GET /metrics",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc9457_members() {
        let p = Problem::bad_request("missing-topic", "Missing topic", "say which");
        let json: serde_json::Value = serde_json::to_value(&p).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:tidings:problem:missing-topic",
                "title": "Missing topic",
                "status": 400,
                "detail": "say which"
            })
        );
    }
}
