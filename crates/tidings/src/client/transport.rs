//! The thin I/O layer: an HTTP client (HTTP/1.1 and HTTP/2, plain or rustls), one request
//! per connection attempt with redirects followed, and reading the body chunk by chunk.
//!
//! Every decision is delegated to [`super::protocol`]; this file only moves bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderName, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION,
    PROXY_AUTHORIZATION,
};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use super::protocol::{
    classify_response, last_event_id_header, resolve_location, same_origin, Decision,
};
use super::Options;
use crate::error::{Error, ErrorKind};

/// The HTTP client every connection attempt of one event source goes through.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A TLS client configuration as this crate's client uses it: rustls with the `ring`
/// provider, TLS 1.2 and 1.3, Mozilla's root certificates (`webpki-roots`) and the DER
/// certificates of `extra_roots` (for a private CA or a self-signed server), no client
/// certificate. ALPN is left empty for the caller to set.
///
/// # Errors
/// [`ErrorKind::InvalidRequest`] when one of `extra_roots` is not a DER X.509 certificate.
///
/// ```
/// let config = tidings::client::tls_client_config(&[])?;
/// assert!(config.alpn_protocols.is_empty());
/// # Ok::<(), tidings::Error>(())
/// ```
pub fn tls_client_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidRequest,
                "an added root certificate is not a valid DER X.509 certificate",
                e,
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::with_source(ErrorKind::Connect, "could not set up TLS (rustls)", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the HTTP client: TCP with `TCP_NODELAY`, TLS from [`tls_client_config`] (with
/// the roots the caller added), ALPN offering h2 and http/1.1.
pub(crate) fn http_client(options: &Options) -> Result<HttpClient, Error> {
    let tls = tls_client_config(&options.extra_roots)?;

    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(options.connect_timeout);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);

    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(options.http2_prior_knowledge);
    Ok(builder.build(connector))
}

/// The outcome of one connection attempt (redirects included).
pub(crate) enum Attempt {
    /// 200 `text/event-stream`: read this body.
    Open(Incoming),
    /// 204: stop for good, no error.
    Stop,
    /// Fail for good: wrong status, wrong content type, bad or too many redirects.
    Fatal(Error),
    /// A network failure: reconnect later.
    Retry(Error),
}

/// Sends the GET for one connection attempt, following redirects, and says what came of it.
///
/// Redirects start from `options.url` every time, so a reconnect goes to the original URL.
/// When a redirect leaves the origin, `Authorization`, `Proxy-Authorization` and `Cookie`
/// are not sent on, as browsers do.
pub(crate) async fn connect(
    client: &HttpClient,
    options: &Options,
    last_event_id: &str,
) -> Attempt {
    let mut url = options.url.clone();
    let mut headers = request_headers(&options.headers, last_event_id);
    let mut redirects = 0;
    loop {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers.clone();

        let sent = client.request(request);
        let answered = match head_timeout(options) {
            Some((limit, kind)) => match tokio::time::timeout(limit, sent).await {
                Ok(answered) => answered,
                Err(_) => {
                    return Attempt::Retry(Error::new(
                        kind,
                        format!("{url} sent no response within {}", show(limit)),
                    ))
                }
            },
            None => sent.await,
        };
        let response = match answered {
            Ok(response) => response,
            Err(e) => {
                let error = Error::new(
                    ErrorKind::Connect,
                    format!("could not connect to {url}: {}", describe_error(&e)),
                );
                // A server that refuses this protocol will refuse it every time.
                return if refuses_the_protocol(&e) {
                    Attempt::Fatal(error)
                } else {
                    Attempt::Retry(error)
                };
            }
        };

        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(HeaderValue::as_bytes);
        let location = response.headers().get(LOCATION).cloned();
        match classify_response(status, content_type, location.is_some()) {
            Decision::Open => return Attempt::Open(response.into_body()),
            Decision::Stop => return Attempt::Stop,
            Decision::Fail(error) => {
                let detail = problem_detail(response).await;
                return Attempt::Fatal(match detail {
                    Some(detail) => error.with_server_detail(&detail),
                    None => error,
                });
            }
            Decision::Redirect => {
                if redirects == options.max_redirects {
                    return Attempt::Fatal(
                        Error::new(
                            ErrorKind::Status,
                            format!(
                                "{} redirected more than {} times; not following any further",
                                options.url, options.max_redirects
                            ),
                        )
                        .with_status(status),
                    );
                }
                redirects += 1;
                let target = location
                    .as_ref()
                    .map(HeaderValue::as_bytes)
                    .unwrap_or_default();
                let next = match resolve_location(&url, target) {
                    Ok(next) => next,
                    Err(error) => return Attempt::Fatal(error.with_status(status)),
                };
                if !same_origin(&url, &next) {
                    for sensitive in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
                        headers.remove(sensitive);
                    }
                }
                tracing::debug!(from = %url, to = %next, %status, "following redirect");
                url = next;
            }
        }
    }
}

/// Whether `error` is an HTTP/2 server's refusal of the connection itself, whatever is
/// sent on it: `INADEQUATE_SECURITY` (it wants TLS) or `HTTP_1_1_REQUIRED`.
fn refuses_the_protocol(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && matches!(
                    h2.reason(),
                    Some(h2::Reason::INADEQUATE_SECURITY | h2::Reason::HTTP_1_1_REQUIRED)
                );
        }
        cause = current.source();
    }
    false
}

/// The largest error body read for its problem detail.
const MAX_PROBLEM_BYTES: usize = 16 * 1024;
/// How long an error body is waited for.
const PROBLEM_WAIT: Duration = Duration::from_secs(2);

/// What a refusal's JSON body says (see [`refusal_reason`]), when it is JSON (at most
/// [`MAX_PROBLEM_BYTES`], within [`PROBLEM_WAIT`]) and says something.
async fn problem_detail(response: hyper::Response<Incoming>) -> Option<String> {
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| {
            essence == "application/problem+json" || essence == "application/json"
        });
    if !json {
        return None;
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_PROBLEM_BYTES);
    let bytes = tokio::time::timeout(PROBLEM_WAIT, body.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some(refusal_reason(&bytes)).filter(|reason| !reason.is_empty())
}

/// What the body of a refusal says, for people: an RFC 9457 problem's `detail` (else its
/// `title`), else the body's text (its first 500 characters), with control characters
/// escaped so that what a server sent cannot drive a terminal. Empty when the body says
/// nothing.
///
/// ```
/// let body = br#"{"title":"Unauthorized","detail":"the token has expired"}"#;
/// assert_eq!(tidings::client::refusal_reason(body), "the token has expired");
/// assert_eq!(tidings::client::refusal_reason(b"no \x1b[31m"), "no \\u{1b}[31m");
/// ```
pub fn refusal_reason(body: &[u8]) -> String {
    let problem = serde_json::from_slice::<serde_json::Value>(body).ok();
    let said = problem.as_ref().and_then(|problem| {
        problem
            .get("detail")
            .or_else(|| problem.get("title"))?
            .as_str()
    });
    let text = match said {
        Some(said) => said.to_owned(),
        None => String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// How long one request may wait for its response head, and the error kind when it waits
/// longer: the connect timeout, or the idle timeout when that is shorter (nothing at all
/// arriving is what the idle timeout is about, head or body).
fn head_timeout(options: &Options) -> Option<(Duration, ErrorKind)> {
    let connect = options.connect_timeout.map(|t| (t, ErrorKind::Connect));
    let idle = options.idle_timeout.map(|t| (t, ErrorKind::IdleTimeout));
    match (connect, idle) {
        (Some(connect), Some(idle)) => Some(if idle.0 < connect.0 { idle } else { connect }),
        (one, other) => one.or(other),
    }
}

/// The headers of every request: the caller's, then the ones the protocol fixes, which
/// replace any the caller set under the same names.
fn request_headers(extra: &HeaderMap, last_event_id: &str) -> HeaderMap {
    let mut headers = extra.clone();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    match last_event_id_header(last_event_id) {
        Some(value) => {
            headers.insert(LAST_EVENT_ID, value);
        }
        None => {
            headers.remove(LAST_EVENT_ID);
        }
    }
    headers
}

/// One read from an open body.
pub(crate) enum Read {
    /// The next bytes of the stream (never empty).
    Data(Bytes),
    /// The server ended the body cleanly.
    End,
    /// The connection failed, or stayed silent past the idle timeout.
    Failed(Error),
}

/// Reads the next bytes of the body; with `idle_timeout`, gives up when nothing at all
/// (not even a comment) arrives for that long.
pub(crate) async fn read(body: &mut Incoming, idle_timeout: Option<Duration>) -> Read {
    loop {
        let next = body.frame();
        let frame = match idle_timeout {
            Some(limit) => match tokio::time::timeout(limit, next).await {
                Ok(frame) => frame,
                Err(_) => {
                    return Read::Failed(Error::new(
                        ErrorKind::IdleTimeout,
                        format!(
                            "the stream sent nothing (not even a comment) for {}; reconnecting",
                            show(limit)
                        ),
                    ))
                }
            },
            None => next.await,
        };
        match frame {
            None => return Read::End,
            Some(Err(e)) => {
                return Read::Failed(Error::new(
                    ErrorKind::Io,
                    format!(
                        "the connection failed while reading the stream: {}",
                        describe_error(&e)
                    ),
                ))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Read::Data(data),
                // Empty data frames and trailers carry no events.
                _ => continue,
            },
        }
    }
}

/// An error and all its sources on one line: hyper's own message alone ("client error
/// (Connect)") does not say that the connection was refused. When the cause is a
/// certificate the client would not accept, what to do about it follows.
///
/// ```
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// assert_eq!(tidings::client::describe_error(&refused), "connection refused");
/// ```
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut advice = certificate_advice(error);
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        advice = advice.or_else(|| certificate_advice(cause));
        source = cause.source();
    }
    if let Some(advice) = advice {
        text.push_str(" (");
        text.push_str(advice);
        text.push(')');
    }
    text
}

/// What to do about a certificate error, when `error` is one.
fn certificate_advice(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError;

    let rustls::Error::InvalidCertificate(certificate) = rustls_error(error)? else {
        return None;
    };
    Some(match certificate {
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a root this client trusts: for a \
             self-signed or private certificate, trust it or its CA explicitly"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host in the URL"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet: check the clocks"
        }
        // webpki's error, which rustls passes on as `Other`, names itself this way.
        CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "the server's certificate is a CA certificate (basicConstraints CA:TRUE, as \
             `openssl req -x509` makes by default), which is refused as a server's own: \
             make it with `-addext basicConstraints=critical,CA:FALSE`, or sign a server \
             certificate with that CA"
        }
        _ => return None,
    })
}

/// The rustls error `error` is, or holds inside `io::Error`s (whose `source()` skips the
/// error they hold; hyper-rustls wraps tokio-rustls's `io::Error` in another).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(rustls) = error.downcast_ref::<rustls::Error>() {
        return Some(rustls);
    }
    let io = error.downcast_ref::<std::io::Error>()?;
    rustls_error(io.get_ref()?)
}

fn show(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_protocol_headers() {
        let mut extra = HeaderMap::new();
        extra.insert("x-token", HeaderValue::from_static("abc"));
        extra.insert(ACCEPT, HeaderValue::from_static("application/json"));
        extra.insert(LAST_EVENT_ID, HeaderValue::from_static("stale"));

        let first = request_headers(&extra, "");
        assert_eq!(first["x-token"], "abc");
        assert_eq!(first[ACCEPT], "text/event-stream");
        assert_eq!(first[CACHE_CONTROL], "no-cache");
        assert!(first.get(LAST_EVENT_ID).is_none());

        let again = request_headers(&extra, "17-0");
        assert_eq!(again[LAST_EVENT_ID], "17-0");
    }

    #[test]
    fn error_chains_name_the_root_cause() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::with_source(ErrorKind::Connect, "client error (Connect)", root);
        assert_eq!(describe_error(&outer), "client error (Connect): refused");
    }

    #[test]
    fn certificate_errors_say_what_to_do() {
        // As hyper-rustls reports it: tokio-rustls's `io::Error` inside another.
        let hidden = |error: rustls::CertificateError| {
            let io = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(error),
            );
            let outer = std::io::Error::other(io);
            Error::with_source(ErrorKind::Connect, "client error (Connect)", outer)
        };
        let text = describe_error(&hidden(rustls::CertificateError::UnknownIssuer));
        assert!(
            text.starts_with("client error (Connect): invalid peer certificate: UnknownIssuer (")
                && text.contains("trust it or its CA explicitly"),
            "{text}"
        );
        let text = describe_error(&hidden(rustls::CertificateError::Expired));
        assert!(
            text.ends_with("(the server's certificate has expired)"),
            "{text}"
        );
        let text = describe_error(&hidden(rustls::CertificateError::BadSignature));
        assert_eq!(
            text, "client error (Connect): invalid peer certificate: BadSignature",
            "no advice where there is none to give"
        );
    }
}
