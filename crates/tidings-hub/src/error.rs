//! The one error type of the hub, with an [`ErrorKind`] callers can match on.

use std::fmt;

/// What went wrong, for callers that want to react differently to different failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A topic name or topic pattern broke the naming rules (see [`crate::topics`]).
    InvalidTopic,
    /// A published event had a field that would corrupt the stream (e.g. a CR or LF in its
    /// event type) or was otherwise malformed.
    InvalidEvent,
    /// The configuration (flags, environment or TOML file) was invalid or unreadable.
    Config,
    /// The listen address could not be bound, or the server failed while running.
    Io,
    /// The storage engine failed to store or read events.
    Engine,
    /// A JSON Web Token could not be checked or does not hold (see [`crate::auth`]).
    InvalidToken,
}

/// The error type of every fallible operation in `tidings-hub`.
///
/// Opaque on purpose: match on [`Error::kind`]; read [`Display`](fmt::Display) for a message
/// that says what was wrong and what to do about it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with a message for people.
    ///
    /// Public so that engines written outside this crate can report failures.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` with a message for people and the error that caused it.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
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
