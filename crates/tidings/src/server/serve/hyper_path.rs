//! The hyper path: every connection that is not a lean stream (other requests, bodies,
//! upgrades, HTTP/2, TLS) is served by hyper, with two watches hyper does not keep.
//!
//! - **Idle connections end.** A connection with no request in progress for the idle
//!   timeout ([`Serve::idle_timeout`](super::Serve::idle_timeout), 30 s) is asked to finish (HTTP/1 closes, HTTP/2 sends `GOAWAY`), so a
//!   client that connects (or completes a TLS handshake) and then sends nothing cannot
//!   hold a file descriptor for ever. A request is in progress from its head until its
//!   response body has ended, so an open event stream keeps its connection. HTTP/1 also
//!   gets hyper's own limit on reading a request head, set to the same time.
//! - **A slow stream ends its connection.** When the `disconnect` policy closes a session
//!   served here, hyper cannot end the response: it is waiting for the client to read
//!   what is already buffered, and polls the body no more. The connection is dropped
//!   instead, which closes the socket (with HTTP/2, every stream on it: a client that
//!   does not read one stream's data is, in practice, one that reads nothing), and the
//!   session's resources go with it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::repoll::Repoller;
use crate::server::queue::Link;
use crate::server::stream::DirectLink;

/// How long a connection asked to finish, with nothing in progress, may take to end.
const LINGER: Duration = Duration::from_secs(2);

/// Serves the connection with hyper (HTTP/1 with keep-alive and upgrades, or HTTP/2),
/// finishing gracefully when `stop` is asked to or the connection is idle (no request in
/// progress for `idle`, or one HTTP/1 head taking longer), and at once when a session on
/// it is disconnected as slow.
pub(super) async fn serve<I>(io: I, router: Router, idle: Duration, stop: &watch::Sender<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = Arc::new(Watched::new());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder.http2().enable_connect_protocol();
    let service = TowerToHyperService::new(Watching {
        router,
        watched: Arc::clone(&watched),
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    // A request body wakes the connection's own task mid-poll (see `repoll`).
    let repoller = Repoller::new();
    let mut stopping = std::pin::pin!(stop.closed());
    let mut idle_too_long = std::pin::pin!(idle_for(&watched, idle));
    // Once asked to finish, a connection with nothing in progress gets [`LINGER`] to say
    // goodbye (HTTP/2 waits for the client to acknowledge its `GOAWAY`), then is dropped:
    // a client that never answers must not hold it, nor a shutdown, for ever. Its clock
    // starts when it is first polled, that is, once `finishing`.
    let mut linger = std::pin::pin!(idle_for(&watched, LINGER));
    let mut finishing = false;
    loop {
        tokio::select! {
            result = repoller.poll(connection.as_mut()) => {
                if let Err(err) = result {
                    tracing::trace!(error = %err, "connection failed");
                }
                return;
            }
            () = &mut stopping, if !finishing => {
                finishing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut idle_too_long, if !finishing => {
                tracing::trace!(timeout = ?idle, "no request in progress; finishing the connection");
                finishing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut linger, if finishing => {
                tracing::trace!("the client did not end the connection; dropping it");
                return;
            }
            () = watched.slow_session() => {
                tracing::debug!("a stream fell behind under the disconnect policy; closing its connection");
                return;
            }
        }
    }
}

/// Resolves once nothing has been in progress for `limit` in a row. Driven by a timer
/// alone: requests starting and ending never wake the connection's task (a wake-up in the
/// middle of its own poll would cost a publish a trip through the scheduler; see
/// `repoll`).
async fn idle_for(watched: &Watched, limit: Duration) {
    let mut deadline = Instant::now() + limit;
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        deadline = match watched.idle_since() {
            Some(since) if since + limit <= now => return,
            Some(since) => since + limit,
            None => now + limit,
        };
    }
}

/// What the requests of one connection tell its loop.
struct Watched {
    /// Requests whose response has not ended (head read, body not yet done or dropped).
    in_flight: AtomicUsize,
    /// When the last request in progress ended (or the connection started).
    idle_since: Mutex<Instant>,
    /// A session this connection carries was disconnected as slow.
    slow: AtomicBool,
    /// The loop, waiting for `slow`.
    waiting: AtomicWaker,
}

impl Watched {
    fn new() -> Watched {
        Watched {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            slow: AtomicBool::new(false),
            waiting: AtomicWaker::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Since when nothing has been in progress; `None` while something is.
    fn idle_since(&self) -> Option<Instant> {
        // Read under the lock that `InFlight::drop` writes it under, after the count.
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        (self.in_flight.load(Ordering::Acquire) == 0).then_some(since)
    }

    /// Watches a session this connection answered with: the `disconnect` policy closing
    /// it wakes this (see [`Wake`] below), once. Registered once per session, so that
    /// the loop's every poll (one per event written) takes no lock.
    fn add_session(self: &Arc<Self>, link: &Link) {
        if link.abandoned_while_stalled(&Waker::from(Arc::clone(self))) {
            self.wake_by_ref();
        }
    }

    /// Resolves when the `disconnect` policy has closed one of the sessions.
    fn slow_session(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.waiting.register(cx.waker());
            if self.slow.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Woken by a session's queue when the `disconnect` policy closes it.
impl Wake for Watched {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.slow.store(true, Ordering::Release);
        self.waiting.wake();
    }
}

/// One request in progress, until dropped with its response body.
struct InFlight(Arc<Watched>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
        }
    }
}

/// The router, noting each request in progress and each session it answers with.
#[derive(Clone)]
struct Watching {
    router: Router,
    watched: Arc<Watched>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for Watching
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let in_flight = self.watched.begin();
        let response = self.router.call(request);
        let watched = Arc::clone(&self.watched);
        Box::pin(async move {
            let response = response.await?;
            if let Some(DirectLink(link)) = response.extensions().get::<DirectLink>() {
                watched.add_session(link);
            }
            Ok(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it is dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
