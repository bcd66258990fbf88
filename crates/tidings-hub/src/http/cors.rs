//! CORS for browsers on other origins: an exact allow-list, with credentials.
//!
//! An allowed origin may `GET /events` with `EventSource(url, { withCredentials: true })`,
//! send `Last-Event-ID` (fetch-based clients need it in `Access-Control-Allow-Headers`),
//! read it back (`Access-Control-Expose-Headers`), and `POST /publish` with JSON. Any other
//! origin gets no CORS headers, so the browser blocks it. With no origins configured, no
//! CORS headers are sent at all (same-origin only).
//!
//! CORS only keeps a page from *reading* an answer: a form `POST` from any page is sent
//! without asking first. So [`check_publish_origin`] refuses a publish whose `Origin` is
//! neither the hub's own nor on the list, before anything is stored.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::problem::Problem;

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
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CACHE_CONTROL,
                header::ACCEPT,
            ])
            .expose_headers([last_event_id, header::RETRY_AFTER, header::WWW_AUTHENTICATE])
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

/// Refuses (403) a publish sent by a browser page of another origin than the hub's own and
/// those in `origins`. Requests without `Origin` (curl, servers, `tidings publish`) pass.
///
/// The hub's own origin is the one whose host and port are the request's (`Host`, or the
/// HTTP/2 authority, or the first `X-Forwarded-Host`), whatever its scheme, so a
/// TLS-terminating proxy that passes `Host` on (or sets `X-Forwarded-Host`) needs no
/// setting; a browser's `Sec-Fetch-Site: same-origin` is taken as is.
pub fn check_publish_origin(
    headers: &HeaderMap,
    uri: &Uri,
    origins: &[String],
) -> Result<(), Problem> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let same_origin_fetch = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin");
    let listed = origins.iter().any(|o| o.as_bytes() == origin.as_bytes());
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    // A proxy that rewrites Host may say the host it was asked for in X-Forwarded-Host. A
    // page cannot forge that header: a form POST sets none, and a fetch that sets one is
    // preflighted, which CORS refuses.
    let forwarded_host = headers
        .get("x-forwarded-host")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .map(str::trim);
    let own = origin.to_str().is_ok_and(|origin| {
        host.into_iter()
            .chain(forwarded_host)
            .any(|host| is_own_origin(origin, host))
    });
    if same_origin_fetch || listed || own {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(origin.as_bytes());
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "origin-not-allowed",
        "Origin not allowed",
        format!(
            "a page on {shown} may not publish to this hub: add the origin with --cors-origin \
             (cors_origin), or publish from the hub's own origin or from a server"
        ),
    ))
}

/// Whether `origin` (`http(s)://host[:port]`) names `host` (`host[:port]`, as in
/// `Host`), compared as browsers write origins (case, the scheme's default port).
fn is_own_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, _)) = origin.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return false;
    }
    normalize_origin(origin) == normalize_origin(&format!("{scheme}://{host}"))
}

/// An origin as a browser sends it in `Origin`: surrounding spaces (as in `a, b` in the
/// environment variable) dropped, scheme and host in lower case, and no default port.
/// What is not an origin at all is left as it is (the settings refuse it).
pub(crate) fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return origin.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let rest = rest.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let host = match rest.strip_suffix(default_port) {
        Some(host) if !default_port.is_empty() => host,
        _ => &rest,
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: Option<&str>, host: &str, fetch_site: Option<&str>, listed: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).expect("a header"));
        if let Some(origin) = origin {
            headers.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("a header"),
            );
        }
        if let Some(site) = fetch_site {
            headers.insert(
                "sec-fetch-site",
                HeaderValue::from_str(site).expect("a header"),
            );
        }
        let listed: Vec<String> = listed.iter().map(|o| (*o).to_owned()).collect();
        check_publish_origin(&headers, &Uri::from_static("/publish"), &listed).is_ok()
    }

    #[test]
    fn only_the_hubs_own_and_listed_origins_may_publish_from_a_browser() {
        // Not from a browser.
        assert!(check(None, "127.0.0.1:8080", None, &[]));
        // The hub's own page, however the browser says it.
        assert!(check(
            Some("http://127.0.0.1:8080"),
            "127.0.0.1:8080",
            None,
            &[]
        ));
        assert!(check(Some("https://hub.example"), "hub.example", None, &[]));
        assert!(check(
            Some("http://hub.example:80"),
            "HUB.example",
            None,
            &[]
        ));
        assert!(check(
            Some("http://proxy.example"),
            "127.0.0.1:8080",
            Some("same-origin"),
            &[]
        ));
        // Listed.
        assert!(check(
            Some("https://app.example"),
            "hub.example",
            Some("cross-site"),
            &["https://app.example"]
        ));
        // Anyone else, including another port of the same host and a sandboxed page.
        assert!(!check(
            Some("https://evil.example"),
            "127.0.0.1:8080",
            Some("cross-site"),
            &[]
        ));
        assert!(!check(
            Some("https://evil.example"),
            "127.0.0.1:8080",
            None,
            &["https://app.example"]
        ));
        assert!(!check(
            Some("http://127.0.0.1:9000"),
            "127.0.0.1:8080",
            Some("same-site"),
            &[]
        ));
        assert!(!check(Some("null"), "127.0.0.1:8080", None, &[]));
    }
}
