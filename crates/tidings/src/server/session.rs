//! One client connection: [`Session`] pushes events, [`SessionStream`] is its response body.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use futures_util::StreamExt;
use http::{HeaderMap, Uri};

use super::gap::Gap;
use super::queue::{CloseReason, Link, PushOutcome, SessionStats, SlowClientPolicy};
use super::shared::SharedBytes;
use super::stream::SessionStream;
use crate::error::Error;
use crate::wire::Event;

/// Default `retry:` sent when a session opens: 3 s.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// Default quiet period before a keep-alive comment: 15 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default bound on the bytes queued for one session: 256 KiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 256 * 1024;

/// A process-unique session number, for listings, logs and lifecycle notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn next_session_id() -> SessionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How a session behaves on the wire. Build with the methods; the defaults suit most uses.
///
/// ```
/// use std::time::Duration;
/// use tidings::server::SessionConfig;
///
/// let config = SessionConfig::new()
///     .retry(Some(Duration::from_millis(1500)))
///     .keep_alive(Some(Duration::from_secs(20)))
///     .padding(true);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) retry: Option<Duration>,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) padding: bool,
    pub(crate) max_queue_bytes: usize,
    pub(crate) last_event_id: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            retry: Some(DEFAULT_RETRY),
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            padding: false,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            last_event_id: None,
        }
    }
}

impl SessionConfig {
    /// The defaults: `retry: 3000` first, keep-alive after 15 s of quiet, no padding, a
    /// 256 KiB queue, no last event id.
    pub fn new() -> SessionConfig {
        SessionConfig::default()
    }

    /// The config for a request: the defaults plus the client's last event id, read from
    /// the `Last-Event-ID` header or else the `lastEventId` query parameter (polyfills).
    pub fn from_request(headers: &HeaderMap, uri: &Uri) -> SessionConfig {
        SessionConfig::new().last_event_id(last_event_id_from_request(headers, uri))
    }

    /// The reconnection time announced with `retry:` when the stream opens (`None`: don't).
    pub fn retry(mut self, retry: Option<Duration>) -> SessionConfig {
        self.retry = retry;
        self
    }

    /// The quiet period after which a `:` comment is written to keep proxies from closing
    /// the stream (`None`: never). Any write resets it.
    ///
    /// A zero period (comments without pause) and one longer than a year (too long to
    /// time) both mean never, as `None` does.
    pub fn keep_alive(mut self, keep_alive: Option<Duration>) -> SessionConfig {
        self.keep_alive = keep_alive.filter(|p| !p.is_zero() && *p <= MAX_KEEP_ALIVE);
        self
    }

    /// Whether to open with a 2 KiB comment, which old polyfills (XDomainRequest era)
    /// need before they deliver the first event.
    pub fn padding(mut self, padding: bool) -> SessionConfig {
        self.padding = padding;
        self
    }

    /// The bound on bytes queued for this client before the slow-client policy acts.
    pub fn max_queue_bytes(mut self, bytes: usize) -> SessionConfig {
        self.max_queue_bytes = bytes;
        self
    }

    /// The client's last event id (where a channel resumes it from).
    pub fn last_event_id(mut self, id: Option<String>) -> SessionConfig {
        self.last_event_id = id;
        self
    }
}

/// The longest keep-alive period taken (see [`SessionConfig::keep_alive`]).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Reads a client's last event id: the `Last-Event-ID` header, else the `lastEventId`
/// query parameter (how XDomainRequest-era polyfills send it). A header that is not
/// valid UTF-8 is lossily decoded rather than ignored, so a resume is never silently lost.
pub fn last_event_id_from_request(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers.get("last-event-id") {
        return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "lastEventId")
        .map(|(_, v)| v.into_owned())
}

/// Whether a request's `Accept` header takes `text/event-stream` (as every `EventSource`
/// sends it): a media range of that type, in any case, not refused with `q=0`.
///
/// ```
/// use http::{header::ACCEPT, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(ACCEPT, HeaderValue::from_static("Text/Event-Stream, */*;q=0.1"));
/// assert!(tidings::server::accepts_event_stream(&headers));
/// headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream;q=0"));
/// assert!(!tidings::server::accepts_event_stream(&headers));
/// ```
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(name, q)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// One client connection: a cheap, clonable handle that pushes events to it.
///
/// [`Session::new`] gives the handle and the [`SessionStream`] to answer the request
/// with. Events pushed are encoded once and queued (bounded, see [`SlowClientPolicy`]);
/// the stream writes everything queued in one write per wake-up. `S` is any per-session
/// state you want to keep with the connection (a user id, a filter).
///
/// ```
/// use tidings::server::{Session, SessionConfig};
/// use tidings::Event;
///
/// # async fn handler() -> tidings::server::SessionStream {
/// let (session, stream) = Session::new(SessionConfig::new(), "user-42");
/// tokio::spawn(async move {
///     let _ = session.push(&Event::new().event("hello").data(*session.state()));
///     session.closed().await; // the client went away
/// });
/// stream // an axum response (and an http_body::Body for plain hyper)
/// # }
/// ```
pub struct Session<S = ()> {
    inner: Arc<Inner<S>>,
    /// The queue, held here as well as by the stream, not in `inner`: a push reaches it
    /// without first loading `inner` (one cache miss fewer per session in a fan-out).
    link: Arc<Link>,
}

struct Inner<S> {
    id: SessionId,
    last_event_id: Option<String>,
    state: S,
}

impl<S> Clone for Session<S> {
    fn clone(&self) -> Session<S> {
        Session {
            inner: Arc::clone(&self.inner),
            link: Arc::clone(&self.link),
        }
    }
}

impl<S> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("last_event_id", &self.inner.last_event_id)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Session<S> {
    /// A new session and the response body that carries its events to the client.
    pub fn new(config: SessionConfig, state: S) -> (Session<S>, SessionStream) {
        let link = Arc::new(Link::new(config.max_queue_bytes));
        let id = next_session_id();
        let stream = SessionStream::new(Arc::clone(&link), &config);
        let session = Session {
            inner: Arc::new(Inner {
                id,
                last_event_id: config.last_event_id,
                state,
            }),
            link,
        };
        (session, stream)
    }
}

impl<S> Session<S> {
    /// This session's process-unique id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The per-session state given to [`Session::new`].
    pub fn state(&self) -> &S {
        &self.inner.state
    }

    /// The last event id the client sent when it connected, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.inner.last_event_id.as_deref()
    }

    /// Encodes and queues one event under the default policy (`disconnect`).
    ///
    /// # Errors
    /// The encoder's errors for an invalid event; [`ErrorKind::Closed`](crate::ErrorKind::Closed)
    /// when the session is closed.
    pub fn push(&self, event: &Event) -> Result<PushOutcome, Error> {
        self.push_bytes(event.encode()?, SlowClientPolicy::default())
    }

    /// Encodes several events into one buffer and queues it: one write on the wire.
    ///
    /// # Errors
    /// As [`Session::push`]; on an invalid event nothing is queued.
    pub fn push_batch(&self, events: &[Event]) -> Result<PushOutcome, Error> {
        let mut buf = BytesMut::new();
        for event in events {
            event.encode_into(&mut buf)?;
        }
        self.push_bytes(buf.freeze(), SlowClientPolicy::default())
    }

    /// Queues already-encoded bytes (shared with other sessions) under `policy`.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is closed.
    pub fn push_bytes(&self, bytes: Bytes, policy: SlowClientPolicy) -> Result<PushOutcome, Error> {
        self.link.push(bytes, None, policy)
    }

    /// [`Session::push_bytes`] of `bytes` that `shared` holds too, for a broadcast: a
    /// direct write sends `shared`'s wire form, built once for all the sessions. (Not
    /// [`Session::push_bytes_joined`] with one event: moving the caller's clone into the
    /// queue measured 7-9% cheaper in the library's fan-out bench than cloning each
    /// event from a slice.)
    pub(crate) fn push_shared(
        &self,
        bytes: Bytes,
        shared: &SharedBytes,
        policy: SlowClientPolicy,
    ) -> Result<PushOutcome, Error> {
        self.link.push(bytes, Some(shared), policy)
    }

    /// Queues already-encoded events one by one under `policy`, as that many
    /// [`Session::push_bytes`] calls would, but never writes them from this thread (see
    /// [`Serve::direct_writes`](super::Serve::direct_writes)): for a producer that knows
    /// more events follow at once, so that the connection's task writes them together,
    /// and the writes are spread over the runtime's threads.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is closed.
    pub fn push_bytes_queued(
        &self,
        events: &[Bytes],
        policy: SlowClientPolicy,
    ) -> Result<PushOutcome, Error> {
        self.link.push_parts(events, None, policy)
    }

    /// Pushes several already-encoded events at once: written in one go when they can be
    /// written at once (as [`Session::push_bytes`] would write one), queued one by one under
    /// `policy` otherwise, exactly as that many `push_bytes` calls would queue them.
    /// `joined` must be `events` back to back. A fan-out builds it once for every session
    /// that gets the same events: each connection then gets one write per run of events
    /// instead of one per event, and a lean HTTP/1.1 stream's framing of them is built
    /// once too (see [`SharedBytes`]).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is closed.
    pub fn push_bytes_joined(
        &self,
        events: &[Bytes],
        joined: &SharedBytes,
        policy: SlowClientPolicy,
    ) -> Result<PushOutcome, Error> {
        self.link.push_parts(events, Some(joined), policy)
    }

    /// Hints the CPU to start loading what a push to this session touches first (its
    /// queue), without waiting for it: see [`prefetch`](fn@super::prefetch). In a loop that
    /// pushes to many sessions, call it for the next session before pushing to this one,
    /// so that the next push's cache misses overlap this one's write.
    #[inline]
    pub fn prefetch(&self) {
        super::prefetch(&*self.link);
    }

    /// Queues replayed history, whatever the queue bound (history is bounded itself).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is closed.
    pub fn push_replay(&self, items: impl IntoIterator<Item = Bytes>) -> Result<(), Error> {
        self.link.push_unbounded(items)
    }

    /// Resolves once the queue holds less than its bound (or the session is closed): a
    /// producer of replay pages waits here between pages, so replaying a long history
    /// holds one page and one queue in memory, not the whole history.
    pub async fn room(&self) {
        self.link.room().await;
    }

    /// Queues a [`Gap`] notice, whatever the queue bound.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the session is closed.
    pub fn push_gap(&self, gap: &Gap) -> Result<(), Error> {
        self.push_replay([gap.to_event().encode()?])
    }

    /// Sends every event of `events` in order, waiting for room in the queue instead of
    /// applying the slow-client policy (back-pressure for a producer you control).
    /// Returns when the stream ends.
    ///
    /// # Errors
    /// The encoder's errors; [`ErrorKind::Closed`](crate::ErrorKind::Closed) when the
    /// session closes first.
    pub async fn stream<St>(&self, events: St) -> Result<(), Error>
    where
        St: Stream<Item = Event>,
    {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            self.link.push_when_room(event.encode()?).await?;
        }
        Ok(())
    }

    /// Server-initiated close: what is queued is still written, then the stream ends.
    /// Browsers reconnect after their retry time unless the page calls `close()`; to tell
    /// them to stop for good, answer their next request with 204 No Content.
    pub fn close(&self) {
        self.link.close(CloseReason::Server);
    }

    /// Whether the session is closed (by the server, the slow-client policy, or the client).
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// Resolves once the session is closed: the client went away (noticed when the
    /// connection ends or a write fails; keep-alive makes that prompt), the server closed
    /// it, or the slow-client policy did.
    pub async fn closed(&self) {
        self.link.closed().await;
    }

    /// Runs `callback` once when the session closes (at once if it already has). It never
    /// runs while a Tidings lock is held, so it may call into channels.
    pub fn on_close(&self, callback: impl FnOnce(SessionId) + Send + Sync + 'static) {
        let id = self.inner.id;
        self.link.on_close(Box::new(move || callback(id)));
    }

    /// The queue's counters.
    pub fn stats(&self) -> SessionStats {
        self.link.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_ranges_that_take_event_streams() {
        let accepts = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::ACCEPT, http::HeaderValue::from_static(value));
            accepts_event_stream(&headers)
        };
        for yes in [
            "text/event-stream",
            " TEXT/Event-Stream ",
            "text/event-stream; q=0.5",
        ] {
            assert!(accepts(yes), "{yes}");
        }
        for no in [
            "*/*",
            "text/event-stream;q=0",
            "text/event-stream; q=0.0",
            "text/plain",
        ] {
            assert!(!accepts(no), "{no}");
        }
    }

    #[test]
    fn a_keep_alive_that_cannot_be_timed_means_never() {
        let period = |p| SessionConfig::new().keep_alive(p).keep_alive;
        assert_eq!(
            period(Some(Duration::from_secs(20))),
            Some(Duration::from_secs(20))
        );
        assert_eq!(period(Some(Duration::ZERO)), None);
        assert_eq!(period(Some(Duration::MAX)), None);
        assert_eq!(period(None), None);
    }

    #[test]
    fn last_event_id_header_wins_over_query() {
        let mut headers = HeaderMap::new();
        let uri: Uri = "/events?lastEventId=q%2D1&x=1".parse().expect("uri");
        assert_eq!(
            last_event_id_from_request(&headers, &uri).as_deref(),
            Some("q-1")
        );
        headers.insert("last-event-id", "h-2".parse().expect("header"));
        assert_eq!(
            last_event_id_from_request(&headers, &uri).as_deref(),
            Some("h-2")
        );
        let plain: Uri = "/events".parse().expect("uri");
        assert_eq!(last_event_id_from_request(&HeaderMap::new(), &plain), None);
    }

    #[tokio::test]
    async fn room_waits_for_the_consumer() {
        use futures_util::FutureExt;
        use http_body_util::BodyExt;

        let config = SessionConfig::new().retry(None).max_queue_bytes(8);
        let (session, mut stream) = Session::new(config, ());
        assert!(
            session.room().now_or_never().is_some(),
            "empty queue has room"
        );
        session
            .push_bytes(
                Bytes::from_static(b"data: 0123456789\n\n"),
                SlowClientPolicy::Disconnect,
            )
            .expect("open");
        let waiting = tokio::spawn({
            let session = session.clone();
            async move { session.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "over the bound: no room");
        let _preamble = stream.frame().await;
        let _events = stream.frame().await;
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("room after the consumer drained")
            .expect("task");
    }
}
