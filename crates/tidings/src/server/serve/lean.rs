//! The lean path: a connection whose one request is an event stream. After the router
//! answers, the response is written straight to the socket — no HTTP/1 buffers beside
//! the session's own queue — and the connection is watched for the client going away.
//!
//! Each wake-up of the body (everything queued for the session, coalesced by the session
//! into one frame) becomes one vectored write: chunk line, data, `\r\n`.

use std::future::Future;
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::Router;
use bytes::buf::Chain;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::head::{encode_response_head, ChunkStart, Framing, LeanRequest, CHUNK_END, LAST_CHUNK};

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
    let (parts, mut body) = response.into_parts();
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
    tokio::spawn(LeanStream {
        stream,
        body,
        framing,
        out: Some(out),
        ending,
        _done: done,
    });
}

/// One response being written to its socket: the task of a lean connection.
struct LeanStream {
    stream: TcpStream,
    body: Body,
    framing: Framing,
    /// Bytes taken from the body and not yet all written.
    out: Option<Framed>,
    /// The body has ended: once `out` is written, close.
    ending: bool,
    /// Held while the connection lives: see `Serve::run`.
    _done: watch::Receiver<()>,
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
            if let Some(out) = &mut self.out {
                // While a write waits for room the body is not polled: the session's queue
                // fills and its slow-client policy acts.
                ready!(poll_write_all(&mut self.stream, out, cx))?;
                self.out = None;
                if self.ending {
                    return Pin::new(&mut self.stream).poll_shutdown(cx);
                }
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers have no place in this framing; empty frames are skipped.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            self.out = Some(framed(None, data, self.framing, false));
                        }
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    // No last chunk: the client sees a truncated body, not a clean end.
                    return Poll::Ready(Err(io::Error::other(err)));
                }
                Poll::Ready(None) => {
                    self.out = Some(framed(None, Bytes::new(), self.framing, true));
                    self.ending = true;
                }
                Poll::Pending => return self.poll_client_gone(cx),
            }
        }
    }

    /// Ready when the client closed its end (or the socket failed); what it sends
    /// meanwhile is read and dropped.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut probe = [0u8; PROBE_BYTES];
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(&mut probe) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// Writes all of `out` with vectored writes.
fn poll_write_all(
    stream: &mut TcpStream,
    out: &mut Framed,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while out.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 5];
        let count = out.chunks_vectored(&mut slices);
        let written = ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(written);
    }
    Poll::Ready(Ok(()))
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
