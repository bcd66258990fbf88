//! axum glue: the [`LastEventId`] extractor (sessions are axum responses already).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use http::request::Parts;

use super::session::last_event_id_from_request;

/// The client's last event id: the `Last-Event-ID` header, or else the `lastEventId`
/// query parameter that polyfills send. Never rejects: `LastEventId(None)` on a first
/// connection.
///
/// ```
/// use tidings::server::{LastEventId, Session, SessionConfig, SessionStream};
///
/// async fn events(LastEventId(last): LastEventId) -> SessionStream {
///     let (_session, stream) = Session::new(SessionConfig::new().last_event_id(last), ());
///     stream
/// }
/// let app: axum::Router = axum::Router::new().route("/events", axum::routing::get(events));
/// # let _ = app;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastEventId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<LastEventId, Infallible> {
        Ok(LastEventId(last_event_id_from_request(
            &parts.headers,
            &parts.uri,
        )))
    }
}
