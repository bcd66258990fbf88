//! The server side: [`Session`] (one client connection), [`Channel`] (broadcast to many,
//! with replay history), the [`Gap`] event, and the [`SlowClientPolicy`].
//!
//! A complete axum handler:
//!
//! ```
//! use axum::{extract::State, http::{HeaderMap, Uri}, routing::get, Router};
//! use tidings::server::{Channel, HistoryLimits, Session, SessionConfig, SessionStream};
//!
//! async fn events(State(channel): State<Channel>, headers: HeaderMap, uri: Uri) -> SessionStream {
//!     let (session, stream) = Session::new(SessionConfig::from_request(&headers, &uri), ());
//!     let _ = channel.register(&session); // replays what it missed, then live events
//!     stream
//! }
//!
//! let channel: Channel = Channel::builder().history(HistoryLimits::new()).build();
//! let app: Router = Router::new().route("/events", get(events)).with_state(channel);
//! # let _ = app;
//! ```

#[cfg(feature = "axum")]
mod axum;
mod channel;
mod chunk;
mod gap;
mod history;
mod prefetch;
mod queue;
#[cfg(feature = "serve")]
mod serve;
mod session;
mod shared;
mod stream;

#[cfg(feature = "axum")]
pub use self::axum::LastEventId;
pub use channel::{Broadcast, Channel, ChannelBuilder, ChannelStats, Lifecycle};
pub use gap::{Gap, GapReason, GAP_EVENT_TYPE};
pub use history::HistoryLimits;
pub use prefetch::prefetch;
pub use queue::{PushOutcome, SessionStats, SlowClientPolicy};
#[cfg(feature = "serve")]
pub use serve::{serve, Serve};
pub use session::{
    accepts_event_stream, last_event_id_from_request, Session, SessionConfig, SessionId,
    DEFAULT_KEEP_ALIVE, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_RETRY,
};
pub use shared::SharedBytes;
pub use stream::{set_headers, SessionStream};
