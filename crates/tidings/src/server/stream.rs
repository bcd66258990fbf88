//! [`SessionStream`]: the response body of a session, with its preamble and keep-alive.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::gap::{Gap, GapReason};
use super::queue::{CloseReason, Drained, Link, Owed};
use super::session::SessionConfig;

/// The keep-alive comment: an empty comment line, with no blank line after it.
///
/// Neither the keep-alive nor the preamble ends in a blank line. A blank line dispatches
/// nothing when no data came before it, but popular clients fire an empty message for
/// every blank line (`@microsoft/fetch-event-source`, `httpx-sse`), and applications
/// that `JSON.parse` each message then fail every 15 s. A comment or a `retry:` line
/// takes effect as it is read, so the blank line adds nothing for a spec-exact client.
const KEEP_ALIVE: &[u8] = b":\n";
/// The opening comment when there is neither padding nor `retry:` to send, so the
/// response starts flowing (and `EventSource.onopen` fires) at once.
const OPEN: &[u8] = b":\n";
/// Size of the padding comment for old polyfills.
const PADDING_BYTES: usize = 2048;

/// The response body of a [`Session`](super::Session): an [`http_body::Body`] of the
/// session's events, for plain hyper, and an axum response with the
/// `axum` feature.
///
/// It opens with the preamble (optional 2 KiB padding comment, then `retry:`), then
/// writes everything queued in one frame per wake-up, and a `:` comment after each quiet
/// keep-alive period. Dropping it (the client went away) closes the session.
pub struct SessionStream {
    link: Arc<Link>,
    preamble: Option<Bytes>,
    keep_alive: Option<KeepAlive>,
}

struct KeepAlive {
    period: Duration,
    last_write: Instant,
    /// Created on the first poll, so a session can be made outside a runtime.
    timer: Option<Pin<Box<Sleep>>>,
}

impl SessionStream {
    pub(crate) fn new(link: Arc<Link>, config: &SessionConfig) -> SessionStream {
        SessionStream {
            link,
            preamble: Some(preamble(config)),
            keep_alive: config.keep_alive.map(|period| KeepAlive {
                period,
                last_write: Instant::now(),
                timer: None,
            }),
        }
    }

    /// The stream as an HTTP response with the headers an event stream needs:
    /// `Content-Type: text/event-stream`, `Cache-Control: no-cache, no-transform` (so
    /// compressing proxies leave it alone) and `X-Accel-Buffering: no` (so nginx does not
    /// buffer it). No `Connection` header, which HTTP/2 forbids.
    pub fn into_response(self) -> http::Response<SessionStream> {
        let link = DirectLink(Arc::clone(&self.link));
        let mut response = http::Response::new(self);
        set_headers(response.headers_mut());
        response.extensions_mut().insert(link);
        response
    }
}

/// The session's queue, carried in the response's extensions so that `server::serve` can
/// write events straight to the socket (see `Serve::direct_writes`).
#[derive(Clone)]
#[cfg_attr(not(feature = "serve"), allow(dead_code))] // used by `server::serve` only
pub(crate) struct DirectLink(pub(crate) Arc<Link>);

/// Sets the event-stream response headers on `headers`.
pub fn set_headers(headers: &mut http::HeaderMap) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

fn preamble(config: &SessionConfig) -> Bytes {
    let mut buf = BytesMut::new();
    if config.padding {
        buf.put_u8(b':');
        buf.put_bytes(b' ', PADDING_BYTES);
        buf.put_u8(b'\n');
    }
    if let Some(retry) = config.retry {
        buf.put_slice(b"retry: ");
        buf.put_slice(retry.as_millis().to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    if buf.is_empty() {
        return Bytes::from_static(OPEN);
    }
    buf.freeze()
}

impl Body for SessionStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(preamble) = this.preamble.take() {
            this.wrote();
            return Poll::Ready(Some(Ok(Frame::data(preamble))));
        }
        match this.link.drain(cx.waker()) {
            Drained::Data(bytes, dropped) => {
                this.wrote();
                Poll::Ready(Some(Ok(Frame::data(with_drop_notice(bytes, dropped)))))
            }
            Drained::End => Poll::Ready(None),
            Drained::Empty => match this.poll_keep_alive(cx) {
                Poll::Ready(()) => {
                    this.link.claim_wire();
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl SessionStream {
    fn wrote(&mut self) {
        if let Some(keep_alive) = &mut self.keep_alive {
            keep_alive.last_write = Instant::now();
        }
    }

    /// Ready when a keep-alive comment is due: a whole period since the last write.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(keep_alive) = &mut self.keep_alive else {
            return Poll::Pending;
        };
        let due = keep_alive.last_write + keep_alive.period;
        let timer = keep_alive
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Events written straight to the socket (`server::serve`) count as writes too.
            if let Some(direct) = self.link.last_direct_write() {
                keep_alive.last_write = keep_alive.last_write.max(direct);
            }
            let due = keep_alive.last_write + keep_alive.period;
            let now = Instant::now();
            if now >= due {
                keep_alive.last_write = now;
                timer.as_mut().reset(now + keep_alive.period);
                return Poll::Ready(());
            }
            // Events were written since the timer was set: wait a full quiet period.
            timer.as_mut().reset(due);
        }
    }
}

/// Puts the gap notices owed for dropped or replaced events before what is left of the
/// queue.
fn with_drop_notice(bytes: Bytes, owed: Owed) -> Bytes {
    if owed.is_none() {
        return bytes;
    }
    let mut buf = BytesMut::new();
    for (reason, dropped) in [
        (GapReason::Dropped, owed.dropped),
        (GapReason::Replaced, owed.replaced),
    ] {
        if dropped == 0 {
            continue;
        }
        let gap = Gap {
            reason,
            last_event_id: None,
            oldest_id: None,
            dropped,
        };
        // A gap event has valid fields by construction.
        let _ = gap.to_event().encode_into(&mut buf);
    }
    buf.extend_from_slice(&bytes);
    buf.freeze()
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        self.link.close(CloseReason::ClientGone);
    }
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStream").finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for SessionStream {
    fn into_response(self) -> axum::response::Response {
        let (parts, body) = SessionStream::into_response(self).into_parts();
        axum::response::Response::from_parts(parts, axum::body::Body::new(body))
    }
}
