//! The client's protocol decisions as pure functions: what a response means, how long to
//! wait before reconnecting, which `Last-Event-ID` to send, where a redirect leads.
//!
//! Nothing here touches a socket or a clock, so every rule of the standard's "Connecting and
//! reconnecting" part is unit-tested below without a server.

use std::time::Duration;

use http::{HeaderValue, StatusCode, Uri};

use crate::error::{Error, ErrorKind};

/// The most [`reconnect_delay`] adds on top of the backoff, as a fraction of it.
pub(crate) const JITTER_FRACTION: f64 = 0.5;

/// What the client does with a response head.
#[derive(Debug)]
pub(crate) enum Decision {
    /// 200 with a `text/event-stream` body: the connection is open; read events.
    Open,
    /// 204 No Content: the server says "stop". Close for good, without an error.
    Stop,
    /// A redirect with a `Location`: follow it (the caller bounds how many).
    Redirect,
    /// Anything else: fail the connection for good, no reconnect.
    Fail(Error),
}

/// Decides what a response means, following the WHATWG EventSource rules.
///
/// `content_type` is the raw `Content-Type` header value, if any; `has_location` says
/// whether a `Location` header came with the response.
pub(crate) fn classify_response(
    status: StatusCode,
    content_type: Option<&[u8]>,
    has_location: bool,
) -> Decision {
    match status.as_u16() {
        200 => match content_type {
            Some(value) if is_event_stream(value) => Decision::Open,
            other => {
                let shown = other.map_or_else(
                    || "none".to_owned(),
                    |v| format!("`{}`", String::from_utf8_lossy(v)),
                );
                Decision::Fail(
                    Error::new(
                        ErrorKind::ContentType,
                        format!(
                            "the server answered 200 with content type {shown}, not \
                             `text/event-stream`; check that the URL is an event stream \
                             (the client does not retry after this)"
                        ),
                    )
                    .with_status(status),
                )
            }
        },
        204 => Decision::Stop,
        301 | 302 | 303 | 307 | 308 if has_location => Decision::Redirect,
        _ => Decision::Fail(
            Error::new(
                ErrorKind::Status,
                format!(
                    "the server answered {status} instead of 200 OK; an event stream is \
                     not retried after that (check the URL and any credentials)"
                ),
            )
            .with_status(status),
        ),
    }
}

/// Whether a `Content-Type` value's essence is `text/event-stream`: parameters such as
/// `charset` are allowed, and type and subtype compare case-insensitively.
pub(crate) fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    trim_http_whitespace(essence).eq_ignore_ascii_case(b"text/event-stream")
}

fn trim_http_whitespace(bytes: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = bytes.iter().position(|b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// How long to wait before reconnect attempt number `failures` (1 for the first attempt
/// after a connection ended or failed, 2 after that attempt failed too, ...).
///
/// The wait starts at `retry` (the server's `retry:` or the client's default) and doubles
/// with every consecutive failure, up to `max_backoff` (but never below `retry`: the server
/// may ask for a longer wait than the cap). On top comes up to [`JITTER_FRACTION`] of it,
/// scaled by `jitter` (a random number in `0.0..1.0`), so that many clients dropped at once
/// do not all come back at the same instant. The result is never shorter than `retry`.
pub(crate) fn reconnect_delay(
    retry: Duration,
    failures: u32,
    max_backoff: Duration,
    jitter: f64,
) -> Duration {
    let doublings = failures.saturating_sub(1);
    let grown = 2u32
        .checked_pow(doublings)
        .and_then(|factor| retry.checked_mul(factor))
        .unwrap_or(Duration::MAX);
    let capped = grown.min(max_backoff.max(retry));
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    capped.saturating_add(capped.mul_f64(JITTER_FRACTION * jitter))
}

/// The `Last-Event-ID` header to send for the stream's last committed event id: none when
/// the id is empty (the standard sends the header only for a non-empty id), and none when
/// the id holds bytes HTTP forbids in a header (control characters), which no conforming
/// server can have sent in an `id:` field anyway.
pub(crate) fn last_event_id_header(id: &str) -> Option<HeaderValue> {
    if id.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(id.as_bytes()).ok()
}

/// Reads the URL the client was given: it must be an absolute `http` or `https` URL.
pub(crate) fn parse_url(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidRequest,
            format!("`{url}` is not a valid URL"),
            e,
        )
    })?;
    check_http_url(uri, url)
}

fn check_http_url(uri: Uri, shown: &str) -> Result<Uri, Error> {
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("`{shown}` is not an absolute http:// or https:// URL"),
        ));
    }
    // `Uri` takes `:99999` and then reports no port at all. (An empty port means the
    // default one.)
    let port_written = uri
        .authority()
        .and_then(|a| a.as_str().rsplit_once(':'))
        .is_some_and(|(_, port)| !port.is_empty() && !port.contains(']'));
    if port_written && uri.port().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("`{shown}` has an invalid port (ports go from 0 to 65535)"),
        ));
    }
    Ok(uri)
}

/// Whether two absolute URLs have the same origin (scheme, host and port).
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port_or_default(a) == port_or_default(b)
}

fn port_or_default(uri: &Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    })
}

/// Resolves a `Location` header value against the URL that answered with it (RFC 3986,
/// section 5.2). The result must again be an `http` or `https` URL.
pub(crate) fn resolve_location(base: &Uri, location: &[u8]) -> Result<Uri, Error> {
    let reference = percent_encode_unsafe(location);
    // A fragment never goes to the server.
    let reference = match reference.find('#') {
        Some(i) => &reference[..i],
        None => &reference[..],
    };
    let invalid = |reason: &str| {
        Error::new(
            ErrorKind::Status,
            format!("the server redirected to `{reference}`, which {reason}"),
        )
    };
    let base_scheme = base.scheme_str().unwrap_or("http");
    let base_authority = base.authority().map(|a| a.as_str()).unwrap_or_default();

    let target = if has_scheme(reference) {
        reference.to_owned()
    } else if let Some(rest) = reference.strip_prefix("//") {
        format!("{base_scheme}://{rest}")
    } else {
        let (ref_path, ref_query) = match reference.find('?') {
            Some(i) => (&reference[..i], Some(&reference[i..])),
            None => (reference, None),
        };
        let base_path = base.path();
        let path = if ref_path.is_empty() {
            base_path.to_owned()
        } else if ref_path.starts_with('/') {
            remove_dot_segments(ref_path)
        } else {
            let directory = match base_path.rfind('/') {
                Some(i) => &base_path[..=i],
                None => "/",
            };
            remove_dot_segments(&format!("{directory}{ref_path}"))
        };
        let query = match (ref_path.is_empty(), ref_query) {
            (_, Some(query)) => query.to_owned(),
            (true, None) => base.query().map(|q| format!("?{q}")).unwrap_or_default(),
            (false, None) => String::new(),
        };
        format!("{base_scheme}://{base_authority}{path}{query}")
    };
    let uri: Uri = target.parse().map_err(|_| invalid("is not a valid URL"))?;
    check_http_url(uri, &target).map_err(|_| invalid("is not an http:// or https:// URL"))
}

fn has_scheme(reference: &str) -> bool {
    let mut chars = reference.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    for c in chars {
        match c {
            ':' => return true,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {}
            _ => return false,
        }
    }
    false
}

/// Percent-encodes the bytes a URL cannot carry as they are (controls, space, non-ASCII),
/// as browsers do with a `Location` that holds raw UTF-8.
fn percent_encode_unsafe(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3986 section 5.2.4: resolves `.` and `..` segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                output.pop();
                trailing_slash = i == last;
            }
            other => {
                output.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &output {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_kind(decision: Decision) -> ErrorKind {
        match decision {
            Decision::Fail(error) => error.kind(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn only_200_with_event_stream_opens() {
        let ok = |ct: &str| {
            matches!(
                classify_response(StatusCode::OK, Some(ct.as_bytes()), false),
                Decision::Open
            )
        };
        assert!(ok("text/event-stream"));
        assert!(ok("text/event-stream; charset=utf-8"));
        assert!(ok("Text/Event-Stream;charset=UTF-8"));
        assert!(ok("  text/event-stream  ;x=y"));
        assert!(!ok("text/plain"));
        assert!(!ok("text/event-streams"));
        assert!(!ok("text / event-stream"));
        assert!(!ok(""));
        let missing = classify_response(StatusCode::OK, None, false);
        assert_eq!(fail_kind(missing), ErrorKind::ContentType);
        let wrong = classify_response(StatusCode::OK, Some(b"application/json"), false);
        assert_eq!(fail_kind(wrong), ErrorKind::ContentType);
    }

    #[test]
    fn no_content_stops_without_error() {
        assert!(matches!(
            classify_response(StatusCode::NO_CONTENT, None, false),
            Decision::Stop
        ));
    }

    #[test]
    fn other_statuses_fail_for_good_and_carry_the_status() {
        for code in [201u16, 206, 304, 400, 401, 404, 500, 502, 503] {
            let status = StatusCode::from_u16(code).expect("valid status");
            match classify_response(status, Some(b"text/event-stream"), false) {
                Decision::Fail(error) => {
                    assert_eq!(error.kind(), ErrorKind::Status);
                    assert_eq!(error.status(), Some(status));
                }
                other => panic!("{code}: expected failure, got {other:?}"),
            }
        }
    }

    #[test]
    fn redirects_need_a_location() {
        for code in [301u16, 302, 303, 307, 308] {
            let status = StatusCode::from_u16(code).expect("valid status");
            assert!(matches!(
                classify_response(status, None, true),
                Decision::Redirect
            ));
            assert_eq!(
                fail_kind(classify_response(status, None, false)),
                ErrorKind::Status
            );
        }
        // 300 and 305 are not redirects EventSource follows.
        let multiple = classify_response(StatusCode::MULTIPLE_CHOICES, None, true);
        assert_eq!(fail_kind(multiple), ErrorKind::Status);
    }

    #[test]
    fn delay_starts_at_retry_and_doubles_up_to_the_cap() {
        let retry = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        let no_jitter = |failures| reconnect_delay(retry, failures, cap, 0.0);
        assert_eq!(no_jitter(0), retry);
        assert_eq!(no_jitter(1), retry);
        assert_eq!(no_jitter(2), Duration::from_millis(200));
        assert_eq!(no_jitter(3), Duration::from_millis(400));
        assert_eq!(no_jitter(4), Duration::from_millis(800));
        assert_eq!(no_jitter(5), cap);
        assert_eq!(no_jitter(1000), cap);
        assert_eq!(no_jitter(u32::MAX), cap);
    }

    #[test]
    fn a_server_retry_above_the_cap_wins() {
        let retry = Duration::from_secs(120);
        let cap = Duration::from_secs(30);
        assert_eq!(reconnect_delay(retry, 1, cap, 0.0), retry);
        assert_eq!(reconnect_delay(retry, 9, cap, 0.0), retry);
    }

    #[test]
    fn jitter_only_adds() {
        let retry = Duration::from_millis(1000);
        let cap = Duration::from_secs(30);
        assert_eq!(
            reconnect_delay(retry, 1, cap, 1.0),
            Duration::from_millis(1500)
        );
        assert_eq!(
            reconnect_delay(retry, 1, cap, 0.5),
            Duration::from_millis(1250)
        );
        // Out-of-range randomness is clamped, never shortens the wait.
        assert_eq!(reconnect_delay(retry, 1, cap, -3.0), retry);
        assert_eq!(reconnect_delay(retry, 1, cap, f64::NAN), retry);
        assert_eq!(
            reconnect_delay(retry, 1, cap, 7.0),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn huge_retries_saturate_instead_of_panicking() {
        let huge = Duration::from_millis(u64::MAX);
        assert!(reconnect_delay(huge, 40, Duration::from_secs(1), 1.0) >= huge);
        assert_eq!(
            reconnect_delay(Duration::ZERO, 3, Duration::ZERO, 1.0),
            Duration::ZERO
        );
    }

    #[test]
    fn last_event_id_is_sent_only_when_non_empty() {
        assert_eq!(last_event_id_header(""), None);
        assert_eq!(
            last_event_id_header("1700000000000-3"),
            Some(HeaderValue::from_static("1700000000000-3"))
        );
        // Non-ASCII ids go out as their UTF-8 bytes.
        let value = last_event_id_header("é").expect("sendable");
        assert_eq!(value.as_bytes(), "é".as_bytes());
        // A control character cannot be put in a header at all.
        assert_eq!(last_event_id_header("a\u{1}b"), None);
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(parse_url("http://127.0.0.1:8080/events?topic=a").is_ok());
        assert!(parse_url("https://example.com").is_ok());
        for bad in [
            "/events",
            "ftp://example.com/x",
            "example.com/x",
            "http://",
            "::",
            "http://127.0.0.1:99999/events",
        ] {
            let error = parse_url(bad).expect_err(bad);
            assert_eq!(error.kind(), ErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let uri = |s: &str| s.parse::<Uri>().expect("valid");
        assert!(same_origin(
            &uri("http://a.example/x"),
            &uri("http://A.example:80/y")
        ));
        assert!(!same_origin(
            &uri("http://a.example/"),
            &uri("https://a.example/")
        ));
        assert!(!same_origin(
            &uri("http://a.example/"),
            &uri("http://b.example/")
        ));
        assert!(!same_origin(
            &uri("http://a.example/"),
            &uri("http://a.example:81/")
        ));
    }

    #[test]
    fn locations_resolve_like_rfc_3986() {
        let base: Uri = "http://h.example:8080/a/b/c?q=1".parse().expect("valid");
        let resolve = |location: &str| {
            resolve_location(&base, location.as_bytes())
                .map(|u| u.to_string())
                .map_err(|e| e.kind())
        };
        assert_eq!(
            resolve("https://o.example/x").unwrap(),
            "https://o.example/x"
        );
        assert_eq!(resolve("//o.example/x").unwrap(), "http://o.example/x");
        assert_eq!(
            resolve("/x/y?z=2").unwrap(),
            "http://h.example:8080/x/y?z=2"
        );
        assert_eq!(resolve("g").unwrap(), "http://h.example:8080/a/b/g");
        assert_eq!(resolve("./g/").unwrap(), "http://h.example:8080/a/b/g/");
        assert_eq!(resolve("../g").unwrap(), "http://h.example:8080/a/g");
        assert_eq!(resolve("../..").unwrap(), "http://h.example:8080/");
        assert_eq!(resolve("../../../../g").unwrap(), "http://h.example:8080/g");
        assert_eq!(resolve("/./a/../b/.").unwrap(), "http://h.example:8080/b/");
        assert_eq!(resolve("?y").unwrap(), "http://h.example:8080/a/b/c?y");
        assert_eq!(resolve("").unwrap(), "http://h.example:8080/a/b/c?q=1");
        assert_eq!(resolve("#frag").unwrap(), "http://h.example:8080/a/b/c?q=1");
        assert_eq!(resolve("/x#frag").unwrap(), "http://h.example:8080/x");
        assert_eq!(
            resolve("/caf\u{e9}").unwrap(),
            "http://h.example:8080/caf%C3%A9"
        );
        assert_eq!(resolve("ftp://o.example/x"), Err(ErrorKind::Status));
        assert_eq!(resolve("mailto:a@b"), Err(ErrorKind::Status));
    }
}
