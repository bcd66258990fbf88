//! [`Builder`]: the options of an [`EventSource`].

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use super::protocol::{last_event_id_header, parse_url};
use super::EventSource;
use crate::error::{Error, ErrorKind};
use crate::wire::DEFAULT_MAX_EVENT_SIZE;

/// The reconnection time used until the server sends `retry:` (browsers use 3 to 5 s).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// The default cap on the exponential backoff between failed reconnects.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The default time allowed for a response head to arrive (connect, TLS, headers).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default bound on redirects followed per connection attempt (as fetch does).
pub const DEFAULT_MAX_REDIRECTS: usize = 20;

/// Everything one event source was configured with, validated.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) url: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) last_event_id: String,
    pub(crate) retry: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_event_size: usize,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_redirects: usize,
    pub(crate) reconnect: bool,
    pub(crate) http2_prior_knowledge: bool,
    pub(crate) extra_roots: Vec<Vec<u8>>,
}

/// Configures an [`EventSource`]; made by [`EventSource::builder`].
///
/// Setters never fail; an invalid URL or header is reported by [`Builder::build`].
///
/// ```
/// use std::time::Duration;
/// use tidings::client::EventSource;
///
/// let source = EventSource::builder("https://example.com/events")
///     .header("Authorization", "Bearer s3cret")
///     .last_event_id("1700000000000-4")
///     .retry(Duration::from_secs(1))
///     .idle_timeout(Duration::from_secs(45))
///     .max_event_size(64 * 1024)
///     .build()?;
/// # drop(source);
/// # Ok::<(), tidings::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    url: String,
    headers: HeaderMap,
    error: Option<Error>,
    last_event_id: String,
    retry: Duration,
    max_backoff: Duration,
    max_event_size: usize,
    connect_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_redirects: usize,
    reconnect: bool,
    http2_prior_knowledge: bool,
    extra_roots: Vec<Vec<u8>>,
}

impl Builder {
    pub(crate) fn new(url: &str) -> Builder {
        Builder {
            url: url.to_owned(),
            headers: HeaderMap::new(),
            error: None,
            last_event_id: String::new(),
            retry: DEFAULT_RETRY,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: None,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            reconnect: true,
            http2_prior_knowledge: false,
            extra_roots: Vec::new(),
        }
    }

    /// Adds a header to every request (repeat the name to send it several times).
    ///
    /// `Accept` and `Cache-Control` are set by the client and replace any given here. A
    /// `Last-Event-ID` given here is the id to start from, as with
    /// [`Builder::last_event_id`]; after that the client sends the id it has committed.
    /// `Authorization`, `Proxy-Authorization` and `Cookie` are not sent on when a redirect
    /// leaves the origin.
    ///
    /// An invalid name or value makes [`Builder::build`] fail with
    /// [`ErrorKind::InvalidRequest`].
    pub fn header(mut self, name: &str, value: &str) -> Builder {
        // The protocol owns this header (it carries the committed id on every reconnect):
        // given here, it is the id to start from.
        if name.eq_ignore_ascii_case("last-event-id") {
            return self.last_event_id(value);
        }
        let parsed_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidRequest,
                format!("`{name}` is not a valid HTTP header name"),
                e,
            )
        });
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidRequest,
                format!(
                    "the value given for header `{name}` is not a valid HTTP header value \
                     (it holds a line break or another control character)"
                ),
                e,
            )
        });
        match (parsed_name, value) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(error), _) | (_, Err(error)) => {
                self.error.get_or_insert(error);
            }
        }
        self
    }

    /// The last event id to start from, sent as `Last-Event-ID` on the first request (when
    /// non-empty) as if a previous connection had committed it. Default: none.
    ///
    /// An id that cannot be sent as a header (one holding a line break, NUL or another
    /// control character; no server can have sent such an id anyway) makes
    /// [`Builder::build`] fail with [`ErrorKind::InvalidRequest`].
    pub fn last_event_id(mut self, id: impl Into<String>) -> Builder {
        let id = id.into();
        if !id.is_empty() && last_event_id_header(&id).is_none() {
            self.error.get_or_insert(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the last event id {id:?} cannot be sent as a Last-Event-ID header \
                     (it holds a line break, NUL or another control character)"
                ),
            ));
        }
        self.last_event_id = id;
        self
    }

    /// The reconnection time until the server sends `retry:`. Default: [`DEFAULT_RETRY`].
    pub fn retry(mut self, retry: Duration) -> Builder {
        self.retry = retry;
        self
    }

    /// The cap on the exponential backoff after consecutive failed attempts. Default:
    /// [`DEFAULT_MAX_BACKOFF`]. A server's `retry:` longer than the cap still wins, and up
    /// to half the wait is added on top as jitter.
    pub fn max_backoff(mut self, max_backoff: Duration) -> Builder {
        self.max_backoff = max_backoff;
        self
    }

    /// The largest event (or line) the client buffers, in bytes; a stream that sends a
    /// larger one fails with [`ErrorKind::EventTooLarge`] and is not reconnected (the same
    /// event would come again). Default: [`DEFAULT_MAX_EVENT_SIZE`].
    pub fn max_event_size(mut self, max_bytes: usize) -> Builder {
        self.max_event_size = max_bytes;
        self
    }

    /// The time one request may take to get a response head (DNS, TCP, TLS, headers), per
    /// redirect hop; past it the attempt fails with [`ErrorKind::Connect`] and the client
    /// reconnects. `None` waits forever. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Builder {
        self.connect_timeout = timeout.into();
        self
    }

    /// Reconnects when nothing at all (not even a `:` comment) arrives for this long,
    /// reporting [`ErrorKind::IdleTimeout`]; that includes waiting for the response head,
    /// when this is shorter than the [connect timeout](Builder::connect_timeout). Pick it
    /// above the server's keep-alive interval (Tidings servers comment every 15 s).
    /// Default: `None`, wait forever.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Builder {
        self.idle_timeout = timeout.into();
        self
    }

    /// How many redirects one connection attempt follows before failing for good with
    /// [`ErrorKind::Status`]. Default: [`DEFAULT_MAX_REDIRECTS`].
    pub fn max_redirects(mut self, max_redirects: usize) -> Builder {
        self.max_redirects = max_redirects;
        self
    }

    /// Whether to reconnect after a network error, an idle timeout or the end of the
    /// stream (default `true`, as browsers do). With `false` the stream yields
    /// `State(Closed)` and ends at the first of those, after an `Error` item if one failed.
    pub fn reconnect(mut self, reconnect: bool) -> Builder {
        self.reconnect = reconnect;
        self
    }

    /// Speaks HTTP/2 straight away on plain `http://` connections (h2c with prior
    /// knowledge), for servers known to expect it. Default: `false`; `https://` negotiates
    /// HTTP/2 through ALPN whatever this says.
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Builder {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Trusts one more root certificate (DER-encoded X.509) for `https://`, on top of
    /// Mozilla's roots: for private certificate authorities and tests. An invalid
    /// certificate makes [`Builder::build`] fail with [`ErrorKind::InvalidRequest`].
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Builder {
        self.extra_roots.push(der.into());
        self
    }

    /// Builds the event source. It connects on the first poll, not here, and must be
    /// polled inside a tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidRequest`] when the URL is not an absolute `http`/`https` URL, a
    /// header name or value is invalid, or an added root certificate is not valid.
    pub fn build(self) -> Result<EventSource, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let options = Options {
            url: parse_url(&self.url)?,
            headers: self.headers,
            last_event_id: self.last_event_id,
            retry: self.retry,
            max_backoff: self.max_backoff,
            max_event_size: self.max_event_size,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            max_redirects: self.max_redirects,
            reconnect: self.reconnect,
            http2_prior_knowledge: self.http2_prior_knowledge,
            extra_roots: self.extra_roots,
        };
        EventSource::from_options(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_invalid_input_is_reported_by_build() {
        let error = Builder::new("http://127.0.0.1:1/")
            .header("bad name", "x")
            .header("x-ok", "bad\nvalue")
            .build()
            .expect_err("invalid header name");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
        assert!(error.to_string().contains("bad name"), "{error}");

        let error = Builder::new("http://127.0.0.1:1/")
            .header("x-ok", "bad\nvalue")
            .build()
            .expect_err("invalid header value");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);

        let error = Builder::new("http://127.0.0.1:1/")
            .header("x-ok", "a\r\nb: c")
            .build()
            .expect_err("header value with a line break");
        assert!(error.to_string().contains("`x-ok`"), "{error}");

        let error = Builder::new("http://127.0.0.1:1/")
            .last_event_id("a\nb")
            .build()
            .expect_err("an id with a line break");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
        assert!(error.to_string().contains("Last-Event-ID"), "{error}");

        let error = Builder::new("127.0.0.1:1/events")
            .build()
            .expect_err("relative URL");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);

        let error = Builder::new("https://example.com/")
            .add_root_certificate(b"not a certificate".to_vec())
            .build()
            .expect_err("bad certificate");
        assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn a_last_event_id_header_is_the_id_to_start_from() {
        let built = Builder::new("http://127.0.0.1:1/").header("Last-Event-ID", "41-0");
        assert_eq!(built.last_event_id, "41-0");
        assert!(built.headers.get("last-event-id").is_none());
    }

    #[test]
    fn valid_options_build_without_a_runtime() {
        let built = Builder::new("http://127.0.0.1:1/events")
            .header("Authorization", "Bearer x")
            .header("X-Several", "1")
            .header("X-Several", "2")
            .build();
        assert!(built.is_ok());
    }
}
