//! CORS for browsers on other origins: an exact allow-list, with credentials.
//!
//! An allowed origin may `GET /events` with `EventSource(url, { withCredentials: true })`,
//! send `Last-Event-ID` (fetch-based clients need it in `Access-Control-Allow-Headers`),
//! read it back (`Access-Control-Expose-Headers`), and `POST /publish` with JSON. Any other
//! origin gets no CORS headers, so the browser blocks it. With no origins configured, no
//! CORS headers are sent at all (same-origin only).

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE_SECS: u64 = 600;

/// The CORS layer for `origins` (already validated), or `None` when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let last_event_id = HeaderName::from_static("last-event-id");
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                last_event_id.clone(),
                header::CONTENT_TYPE,
                header::CACHE_CONTROL,
                header::ACCEPT,
            ])
            .expose_headers([last_event_id, header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(PREFLIGHT_MAX_AGE_SECS)),
    )
}

/// Middleware around the CORS layer: a response that allows no origin carries no other
/// `Access-Control-*` header either, so an origin not on the list learns nothing (the
/// CORS layer would still send e.g. `Access-Control-Allow-Credentials`).
pub async fn strip_when_not_allowed(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    response
}
