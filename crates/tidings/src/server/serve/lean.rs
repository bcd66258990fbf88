//! The lean path: a connection whose one request is an event stream. After the router
//! answers, the response is written straight to the socket — no HTTP/1 buffers beside
//! the session's own queue — and the connection is watched for the client going away.
//!
//! Each wake-up of the body (everything queued for the session, coalesced by the session
//! into one frame) becomes one vectored write (`sendmsg(2)` on Linux): chunk line, data,
//! `\r\n`.
//!
//! With direct writes on (`Serve::direct_writes`), once the preamble is out the session's
//! queue is given the socket (a [`Wire`]): an event pushed while nothing is queued or
//! being written goes out from the pushing thread at once, without waking this
//! connection's task. The queue's lock orders those writes against each other and against
//! the task's own (see `server::queue`); whatever a direct write could not finish is left
//! in the wire for the task, which writes it before anything else. Bytes a fan-out shares
//! between sessions ([`SharedBytes`](crate::server::SharedBytes)) carry their chunk
//! framing, built once for all of them: a direct write of those is one `send(2)` of one
//! buffer.

use std::future::Future;
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::Router;
use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http_body::Body as _;
#[cfg(any(target_os = "linux", target_os = "android"))]
use socket2::SockRef;
#[cfg(any(target_os = "linux", target_os = "android"))]
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::head::{encode_response_head, Framing, LeanRequest};
use crate::server::chunk::{ChunkStart, CHUNK_END, LAST_CHUNK};
use crate::server::queue::{DirectOutcome, DirectWrite, Link, Outgoing};
use crate::server::stream::DirectLink;

/// Bytes read and thrown away at a time while watching an open stream's socket (a client
/// has nothing to send on it; whatever it sends anyway is discarded).
const PROBE_BYTES: usize = 32;

/// Answers `request` with `router`, then writes the response to `stream` on a task of its
/// own: the connection's task (with its head buffer and the router's future) is gone
/// before the stream starts waiting for events.
pub(crate) async fn serve(
    stream: TcpStream,
    request: Box<LeanRequest>,
    mut router: Router,
    direct_writes: bool,
    done: watch::Receiver<()>,
) {
    let version = request.parts.version;
    let request = request.into_request(Body::empty());
    // Boxed: the router's future is large, and done with before the stream starts.
    let response = match Box::pin(tower_service::Service::call(&mut router, request)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    drop(router);
    let (mut parts, mut body) = response.into_parts();
    let link = parts
        .extensions
        .remove::<DirectLink>()
        .map(|DirectLink(link)| link);
    let direct = if direct_writes && is_plain_event_stream(&parts) {
        Direct::Allowed
    } else {
        Direct::Off
    };
    let framing = Framing::choose(version, body.size_hint().exact());
    let date = httpdate::fmt_http_date(SystemTime::now());
    let head = encode_response_head(&parts, framing, &date).freeze();
    drop(parts);
    // The head goes out with the first frame when that is ready at once (a session's
    // preamble always is), else alone, so the client sees the response start either way.
    let (out, ending) = match http_body_util::BodyExt::frame(&mut body).now_or_never() {
        Some(Some(Ok(frame))) => {
            let data = frame.into_data().unwrap_or_default();
            (framed(Some(head), data, framing, false), false)
        }
        Some(None) => (framed(Some(head), Bytes::new(), framing, true), true),
        Some(Some(Err(err))) => {
            tracing::debug!(error = %err, "the response body failed before its first byte");
            return;
        }
        None => (framed(Some(head), Bytes::new(), framing, false), false),
    };
    let wire = Arc::new(Wire {
        stream,
        framing,
        owed: Mutex::new(None),
    });
    tokio::spawn(LeanStream {
        wire,
        body,
        out: Some(out),
        link,
        direct,
        holding: true,
        ending,
        _done: done,
    });
}

/// A `200 text/event-stream` whose bytes are the session's own (no `Content-Encoding`
/// from a layer that rewrites bodies).
fn is_plain_event_stream(parts: &http::response::Parts) -> bool {
    parts.status == http::StatusCode::OK
        && !parts.headers.contains_key(CONTENT_ENCODING)
        && parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}

/// The socket of a lean stream and the bytes owed to it, shared by the connection's task
/// and (with direct writes) the session's queue.
pub(crate) struct Wire {
    stream: TcpStream,
    framing: Framing,
    /// What a direct write could not finish; the task writes it before anything else.
    /// Only the holder of the wire touches it (a direct write under the queue's lock, then
    /// the task), so the lock is never contended; it nests inside the queue's lock, never
    /// around it.
    owed: Mutex<Option<Framed>>,
}

impl Wire {
    fn owed(&self) -> MutexGuard<'_, Option<Framed>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the remainder a direct write left, if any (see [`poll_write_all`]); `true`
    /// when there was one.
    fn poll_flush_owed(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut owed = self.owed();
        let Some(out) = owed.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        ready!(poll_write_all(&self.stream, out, cx))?;
        *owed = None;
        Poll::Ready(Ok(true))
    }
}

/// Writes all of `out` (`Ready(Ok)`), or waits for room (`Pending`), or fails.
fn poll_write_all(
    stream: &TcpStream,
    out: &mut Framed,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while out.has_remaining() {
        ready!(stream.poll_write_ready(cx))?;
        match write_some(stream, out) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Poll::Ready(Err(err)),
        }
    }
    Poll::Ready(Ok(()))
}

impl DirectWrite for Wire {
    fn try_write(&self, data: Outgoing<'_>) -> DirectOutcome {
        // Bytes shared with other sessions carry their wire form, built once: one
        // contiguous send, with no framing (and no vector of pieces) per session.
        let whole = match (data, self.framing) {
            (Outgoing::Shared(shared), Framing::Chunked) => Some(shared.chunk()),
            (Outgoing::Shared(shared), Framing::Close) => Some(shared.bytes()),
            _ => None,
        };
        if let Some(whole) = whole {
            return match send(&self.stream, whole) {
                Ok(n) if n == whole.len() => DirectOutcome::Written,
                Ok(n) if n > 0 => {
                    // The socket is full; the rest, framed already, is the task's.
                    *self.owed() = Some(framed(None, whole.slice(n..), Framing::Close, false));
                    DirectOutcome::Started
                }
                _ => DirectOutcome::NotNow,
            };
        }
        let mut out = framed(None, data.bytes().clone(), self.framing, false);
        let total = out.remaining();
        loop {
            match write_some(&self.stream, &mut out) {
                Ok(()) if !out.has_remaining() => return DirectOutcome::Written,
                Ok(()) => {}
                // Full, or failed: whatever is not written yet is left for the task, which
                // meets the same error (if any) and ends the stream.
                Err(_) if out.remaining() == total => return DirectOutcome::NotNow,
                Err(_) => {
                    *self.owed() = Some(out);
                    return DirectOutcome::Started;
                }
            }
        }
    }
}

/// One vectored write of the front of `out`, without waiting.
fn write_some(stream: &TcpStream, out: &mut Framed) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); 5];
    let count = out.chunks_vectored(&mut slices);
    let written = send_vectored(stream, &slices[..count])?;
    match written {
        0 => Err(io::ErrorKind::WriteZero.into()),
        written => {
            out.advance(written);
            Ok(())
        }
    }
}

/// Writes `slices` without waiting, with `sendmsg(2)` and `MSG_NOSIGNAL`: a socket write
/// that skips the file layer `writev(2)` goes through (about 5% of the hub's CPU per
/// delivery in a fan-out to 5,000 streams, in `perf`), and a client that has gone away
/// gives `EPIPE`, never `SIGPIPE`, whatever the process does with that signal.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_vectored(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    stream.try_io(Interest::WRITABLE, || {
        SockRef::from(stream).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
    })
}

/// Writes `bytes` without waiting, with `send(2)` and `MSG_NOSIGNAL` (see
/// [`send_vectored`]), for a direct write only: straight to the socket, without first
/// reading tokio's readiness of it (a cache miss per subscriber in a fan-out pass, 2-3%
/// of the hub's samples). A write that finds the socket full leaves that readiness as it
/// was; it is the connection's task that writes next, and its writes go through
/// `try_io`, which clears it on the first `WouldBlock`, so the task then waits for the
/// socket as it should.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    SockRef::from(stream).send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

/// Writes `bytes` without waiting (`write(2)`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    stream.try_write(bytes)
}

/// Writes `slices` without waiting (`writev(2)`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_vectored(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    stream.try_write_vectored(slices)
}

/// One response being written to its socket: the task of a lean connection.
struct LeanStream {
    wire: Arc<Wire>,
    body: Body,
    /// What this task took from the body and has not yet all written.
    out: Option<Framed>,
    /// The session's queue, when the body is a session's.
    link: Option<Arc<Link>>,
    /// Whether the session's queue writes events directly.
    direct: Direct,
    /// This task holds the wire (it took a frame, or a direct write left a remainder):
    /// release it once everything owed is written.
    holding: bool,
    /// The body has ended: once what is owed is written, close.
    ending: bool,
    /// Held while the connection lives: see `Serve::run`.
    _done: watch::Receiver<()>,
}

/// Direct writes for one stream (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// Not for this response (turned off, or a body that is not a plain event stream).
    Off,
    /// Allowed, from when the preamble is out.
    Allowed,
    /// The session's queue has the wire.
    On,
}

impl Future for LeanStream {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.poll_stream(cx) {
            Poll::Ready(Err(err)) => {
                tracing::trace!(error = %err, "event stream connection ended");
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl LeanStream {
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // While a write waits for room the body is not polled: the session's queue
            // fills and its slow-client policy acts.
            // A direct write's remainder (older) first, then what this task took. The
            // direct write that left a remainder handed the wire to this task.
            match self.wire.poll_flush_owed(cx) {
                Poll::Ready(had_owed) => {
                    if had_owed? {
                        self.holding = true;
                    }
                }
                Poll::Pending => return self.poll_stalled(cx),
            }
            if let Some(out) = &mut self.out {
                match poll_write_all(&self.wire.stream, out, cx) {
                    Poll::Ready(written) => written?,
                    Poll::Pending => return self.poll_stalled(cx),
                }
                self.out = None;
            }
            if self.ending {
                return Poll::Ready(Ok(()));
            }
            if self.holding {
                self.holding = false;
                match (&self.link, self.direct) {
                    (Some(link), Direct::On) => link.release_wire(),
                    (Some(link), Direct::Allowed) => {
                        // The preamble is out: the queue may write from now on.
                        let wire: Arc<dyn DirectWrite> = self.wire.clone();
                        link.set_direct(wire);
                        self.direct = Direct::On;
                    }
                    _ => {}
                }
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // The session claimed the wire for this frame (see `Link::drain`).
                    self.holding = true;
                    // Trailers have no place in this framing; empty frames are skipped.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            self.out = Some(framed(None, data, self.wire.framing, false));
                        }
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    // No last chunk: the client sees a truncated body, not a clean end.
                    return Poll::Ready(Err(io::Error::other(err)));
                }
                Poll::Ready(None) => {
                    self.out = Some(framed(None, Bytes::new(), self.wire.framing, true));
                    self.ending = true;
                }
                Poll::Pending => {
                    // A direct write may have left a remainder since the flush above.
                    if self.wire.owed().is_some() {
                        continue;
                    }
                    return self.poll_client_gone(cx);
                }
            }
        }
    }

    /// The socket has no room for what is owed: wait for it, unless the slow-client policy
    /// has disconnected this session meanwhile, in which case the connection is dropped
    /// at once (a client that does not read would otherwise hold it forever).
    fn poll_stalled(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.link {
            Some(link) if link.abandoned_while_stalled(cx.waker()) => {
                tracing::debug!("slow client disconnected while its socket was full");
                Poll::Ready(Ok(()))
            }
            _ => Poll::Pending,
        }
    }

    /// Ready when the client closed its end (or the socket failed); what it sends
    /// meanwhile is read and dropped.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut probe = [0u8; PROBE_BYTES];
        loop {
            ready!(self.wire.stream.poll_read_ready(cx))?;
            match self.wire.stream.try_read(&mut probe) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

type Framed =
    Chain<Chain<Chain<Chain<Bytes, Cursor<ChunkStart>>, Bytes>, &'static [u8]>, &'static [u8]>;

/// `head` (when not yet written), then `data` in the body's framing, then (`last`) the
/// end of a chunked body.
fn framed(head: Option<Bytes>, data: Bytes, framing: Framing, last: bool) -> Framed {
    let chunked = framing == Framing::Chunked;
    let (start, end): (ChunkStart, &'static [u8]) = if chunked && !data.is_empty() {
        (ChunkStart::new(data.len()), CHUNK_END)
    } else {
        (ChunkStart::default(), &[])
    };
    let last: &'static [u8] = if chunked && last { LAST_CHUNK } else { &[] };
    head.unwrap_or_default()
        .chain(Cursor::new(start))
        .chain(data)
        .chain(end)
        .chain(last)
}
