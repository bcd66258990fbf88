//! The one error type of the crate, with a [`ErrorKind`] callers can match on.

use std::fmt;

/// What went wrong, for callers that want to react differently to different failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An event type contained CR or LF, which would inject fields into the stream.
    InvalidEventType,
    /// An event id contained CR or LF (field injection) or NUL (clients ignore such ids).
    InvalidId,
    /// A comment contained CR or LF, which would end the comment and inject fields.
    InvalidComment,
    /// A value could not be serialized to JSON for an event's data.
    Json,
    /// An incoming event or line grew past the configured maximum size.
    EventTooLarge,
    /// The session (or channel) was closed: the client went away or the server closed it.
    Closed,
    /// A text could not be read as a Tidings event id (`<ms>-<seq>`).
    InvalidEventIdFormat,
    /// A slow-client policy name was not one of `disconnect`, `drop-oldest`, `latest-only`.
    InvalidPolicy,
    /// The connection to an event-stream server failed (client side).
    Connect,
    /// The server answered with a status other than 200 (client side; fatal).
    Status,
    /// The server answered with a content type other than `text/event-stream` (fatal).
    ContentType,
    /// The stream was idle for longer than the configured idle timeout (client side).
    IdleTimeout,
    /// Any other I/O or protocol failure while reading a stream (client side).
    Io,
    /// The client was given something it cannot send: a URL that is not an absolute
    /// `http` or `https` URL, or a header name or value HTTP does not allow.
    InvalidRequest,
}

/// The error type of every fallible operation in `tidings`.
///
/// Opaque on purpose: match on [`Error::kind`]; read [`Display`](fmt::Display) for a message
/// that says what was wrong and what to do about it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    status: Option<http::StatusCode>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
            status: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
            status: None,
        }
    }

    /// Records the HTTP status the failure came with (see [`Error::status`]).
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn with_status(mut self, status: http::StatusCode) -> Error {
        self.status = Some(status);
        self
    }

    /// Adds what the server said about the failure (an RFC 9457 problem's `detail`).
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn with_server_detail(mut self, detail: &str) -> Error {
        self.message.push_str("; the server said: ");
        self.message.push_str(detail);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status of the response that caused this error, when there was one: set on
    /// [`ErrorKind::Status`] errors, and on [`ErrorKind::ContentType`] errors (where it is
    /// the 200 that came with the wrong content type).
    pub fn status(&self) -> Option<http::StatusCode> {
        self.status
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
