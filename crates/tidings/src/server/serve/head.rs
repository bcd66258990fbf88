//! HTTP/1 heads without sockets: reading a request head out of the first bytes of a
//! connection, deciding whether it may be served on the lean path, and writing a
//! response head with the framing the lean path uses.

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{request, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

/// The start of the HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// More request headers than this and the request is refused (hyper's own limit).
pub(crate) const MAX_HEADERS: usize = 100;

/// What the first bytes of a connection say.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// Not enough bytes yet to tell.
    Partial,
    /// A complete HTTP/1 request head that may be served on the lean path.
    Lean(Box<LeanRequest>),
    /// Anything else (HTTP/2, a body, an upgrade, another method…): hyper serves the
    /// connection, from its first byte.
    Hyper,
    /// A head no server should serve (not HTTP, too many headers, a target that is not a
    /// URI): the connection gets this error and closes.
    Malformed(Malformed),
}

/// Why a request head was refused, as the error answer says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) status: StatusCode,
    /// The last part of the problem type, `urn:tidings:problem:<slug>`.
    pub(crate) slug: &'static str,
    pub(crate) detail: String,
}

impl Malformed {
    pub(crate) fn new(
        status: StatusCode,
        slug: &'static str,
        detail: impl Into<String>,
    ) -> Malformed {
        Malformed {
            status,
            slug,
            detail: detail.into(),
        }
    }

    /// The whole error answer: an RFC 9457 problem, and `connection: close`.
    pub(crate) fn response(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "type": format!("urn:tidings:problem:{}", self.slug),
            "title": self.status.canonical_reason().unwrap_or("Bad Request"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
        .to_string();
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.status.as_str(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body.as_bytes());
        response
    }
}

/// A request head accepted for the lean path.
#[derive(Debug)]
pub(crate) struct LeanRequest {
    pub(crate) parts: request::Parts,
}

impl LeanRequest {
    /// The request with an empty body.
    pub(crate) fn into_request<B>(self, body: B) -> Request<B> {
        Request::from_parts(self.parts, body)
    }
}

/// Reads `bytes` (everything received so far) as the start of a connection.
///
/// Only a plain `GET` with no body, no upgrade and no `Expect`, with nothing pipelined
/// after it, for which `wanted` says yes, is [`Sniffed::Lean`]; every other complete head
/// (or one hyper would reject) is [`Sniffed::Hyper`], so hyper answers it as usual.
pub(crate) fn sniff(bytes: &[u8], wanted: &dyn Fn(&request::Parts) -> bool) -> Sniffed {
    let preface = &H2_PREFACE[..bytes.len().min(H2_PREFACE.len())];
    if bytes.starts_with(preface) {
        return if bytes.len() >= H2_PREFACE.len() {
            Sniffed::Hyper
        } else {
            Sniffed::Partial
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Sniffed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Sniffed::Malformed(Malformed::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too-many-headers",
                format!("the request has more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(err) => {
            return Sniffed::Malformed(Malformed::new(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                format!("the request head is not valid HTTP/1.1 ({err})"),
            ))
        }
    };
    // A complete head has a target; parsed once here, for the check and the request.
    let Some(path) = parsed.path else {
        return Sniffed::Hyper;
    };
    let uri = match Uri::try_from(path) {
        Ok(uri) => uri,
        Err(_) => {
            let shown: String = path.chars().take(100).collect();
            return Sniffed::Malformed(Malformed::new(
                StatusCode::BAD_REQUEST,
                "malformed-request",
                format!(
                    "the request target {shown:?} is not a valid URI (bytes outside ASCII must be percent-encoded)"
                ),
            ));
        }
    };
    if head_len != bytes.len() || parsed.method != Some("GET") {
        return Sniffed::Hyper;
    }
    match to_parts(&parsed, uri) {
        Some(parts) if is_bodyless(&parts) && wanted(&parts) => {
            Sniffed::Lean(Box::new(LeanRequest { parts }))
        }
        _ => Sniffed::Hyper,
    }
}

fn to_parts(parsed: &httparse::Request<'_, '_>, uri: Uri) -> Option<request::Parts> {
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(version);
    let headers = builder.headers_mut()?;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// No body (no `Transfer-Encoding`, no non-zero `Content-Length`), no protocol switch, no
/// `Expect: 100-continue` to answer.
fn is_bodyless(parts: &request::Parts) -> bool {
    let headers = &parts.headers;
    let no_length = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .all(|value| value.as_bytes() == b"0");
    no_length
        && !headers.contains_key(TRANSFER_ENCODING)
        && !headers.contains_key(UPGRADE)
        && !headers.contains_key(EXPECT)
}

/// How a lean response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Transfer-Encoding: chunked` (HTTP/1.1 streams): a clean end is the last chunk.
    Chunked,
    /// `Content-Length`, then the connection closes.
    Length(u64),
    /// The body ends when the connection closes (HTTP/1.0 streams).
    Close,
}

impl Framing {
    /// The framing for a response of `size` bytes (`None`: unknown) to a `version` request.
    pub(crate) fn choose(version: Version, size: Option<u64>) -> Framing {
        match size {
            Some(len) => Framing::Length(len),
            None if version == Version::HTTP_10 => Framing::Close,
            None => Framing::Chunked,
        }
    }
}

/// The response head: status line, `date`, the response's own headers (less the framing
/// ones, which are set here), and the framing headers.
pub(crate) fn encode_response_head(
    parts: &http::response::Parts,
    framing: Framing,
    date: &str,
) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(parts.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.put_slice(b"\r\ndate: ");
    head.put_slice(date.as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if is_framing_header(name) {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    match framing {
        Framing::Chunked => head.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(len) => {
            head.put_slice(b"content-length: ");
            head.put_slice(len.to_string().as_bytes());
            head.put_slice(b"\r\nconnection: close\r\n");
        }
        Framing::Close => head.put_slice(b"connection: close\r\n"),
    }
    head.put_slice(b"\r\n");
    head
}

fn is_framing_header(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name == CONNECTION
        || name.as_str() == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::chunk::ChunkStart;

    fn events_only(parts: &request::Parts) -> bool {
        parts.uri.path() == "/events"
    }

    fn sniff_events(bytes: &[u8]) -> Sniffed {
        sniff(bytes, &events_only)
    }

    #[test]
    fn a_plain_get_is_lean_with_its_headers_and_query() {
        let head = b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 5\r\nAccept: text/event-stream\r\n\r\n";
        let Sniffed::Lean(request) = sniff_events(head) else {
            panic!("expected the lean path")
        };
        let parts = request.parts;
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/events?topic=a");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["last-event-id"], "5");
        assert_eq!(parts.headers["host"], "x");
    }

    #[test]
    fn every_prefix_of_a_head_is_partial() {
        let head = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 0..head.len() {
            assert!(
                matches!(sniff_events(&head[..end]), Sniffed::Partial),
                "prefix of {end} bytes"
            );
        }
        assert!(matches!(sniff_events(head), Sniffed::Lean(_)));
    }

    #[test]
    fn other_requests_go_to_hyper() {
        let cases: &[&[u8]] = &[
            b"GET /topics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",
            b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /events HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            b"GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // Pipelined: a second request already follows.
            b"GET /events HTTP/1.1\r\n\r\nGET /events HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        for case in cases {
            assert!(
                matches!(sniff_events(case), Sniffed::Hyper),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert!(matches!(sniff_events(b"PRI * HT"), Sniffed::Partial));
        let zero_length = b"GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(sniff_events(zero_length), Sniffed::Lean(_)));
    }

    #[test]
    fn malformed_heads_are_refused_with_a_problem() {
        let mut many = b"GET /events HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let cases: &[(&[u8], u16)] = &[
            (&many, 431),
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /events HTTP/9.9\r\n\r\n", 400),
            (
                b"POST /publish?topic=\xff HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                400,
            ),
        ];
        for (head, status) in cases {
            let Sniffed::Malformed(bad) = sniff_events(head) else {
                panic!("{:?} was not refused", String::from_utf8_lossy(head))
            };
            assert_eq!(bad.status.as_u16(), *status, "{bad:?}");
            let response = String::from_utf8(bad.response()).expect("UTF-8");
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{response}"
            );
            assert!(response.contains("application/problem+json"), "{response}");
            let body = response.split("\r\n\r\n").nth(1).expect("a body");
            let problem: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert_eq!(problem["status"], *status);
            assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }

    #[test]
    fn http_10_is_kept_for_the_framing() {
        let Sniffed::Lean(request) = sniff_events(b"GET /events HTTP/1.0\r\n\r\n") else {
            panic!("expected the lean path")
        };
        assert_eq!(request.parts.version, Version::HTTP_10);
        assert_eq!(Framing::choose(Version::HTTP_10, None), Framing::Close);
        assert_eq!(Framing::choose(Version::HTTP_11, None), Framing::Chunked);
        assert_eq!(
            Framing::choose(Version::HTTP_10, Some(3)),
            Framing::Length(3)
        );
    }

    #[test]
    fn response_heads_are_exact() {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("99"));
        parts
            .headers
            .insert("connection", HeaderValue::from_static("keep-alive"));
        let date = "Sun, 22 Nov 2026 10:00:00 GMT";
        assert_eq!(
            &encode_response_head(&parts, Framing::Chunked, date)[..],
            b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        parts.status = http::StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            &encode_response_head(&parts, Framing::Length(12), date)[..],
            b"HTTP/1.1 503 Service Unavailable\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            &encode_response_head(&parts, Framing::Close, date)[..],
            b"HTTP/1.1 503 Service Unavailable\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunk_lines_are_hex() {
        for len in [0, 1, 10, 15, 16, 255, 16384, 1 << 40, usize::MAX] {
            assert_eq!(
                ChunkStart::new(len).as_bytes(),
                format!("{len:x}\r\n").as_bytes()
            );
        }
    }
}
