//! [`serve`]: an axum [`Router`] on a listener, with event streams written straight to
//! their sockets (see [`serve`] for how and why).

mod head;
mod hyper_path;
mod lean;
mod repoll;
mod rewind;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use http::request::Parts;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use self::head::{Malformed, Sniffed};
use self::rewind::Rewind;

/// How long a new connection has to send its first request head (as hyper's own
/// default).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head: past it, the connection is answered 414 or 431 and closed.
const MAX_SNIFF_BYTES: usize = 64 * 1024;
/// Room for the first read of a request head; it grows when a head is longer.
const FIRST_READ_BYTES: usize = 1024;
/// How long a connection whose request head was refused is read from (and what it sends
/// dropped) before it is closed.
const REFUSED_LINGER: Duration = Duration::from_secs(2);

type LeanTest = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;
type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves `router` on `listener`, like `axum::serve`, with every event stream on a lean
/// path; until the returned future is dropped or, with [`Serve::with_graceful_shutdown`],
/// until the signal.
///
/// A server of event streams holds thousands of connections that are idle nearly all the
/// time. Served through hyper, each keeps hyper's connection state (a read buffer and a
/// write buffer, about 24 KiB) for its whole life. Here the first request head on each
/// connection is read first (with `httparse`): a plain `GET` that the
/// [`lean_when`](Serve::lean_when) test picks is answered by the router as usual, and its
/// response is then written straight to the socket, the body's frames coalesced by the
/// session into one vectored write per wake-up. What an idle stream costs is then the
/// socket, one small task and the session itself. Every other connection — other
/// requests, bodies, upgrades, HTTP/2 — is handed to hyper with the bytes already read.
/// A first head that no server should serve (not HTTP/1.1, more than 100 header fields,
/// a target that is not a URI, longer than 64 KiB) is answered with an RFC 9457
/// `application/problem+json` error (400, 431 or 414) and the connection is closed.
///
/// ```no_run
/// use axum::{http::{HeaderMap, Uri}, routing::get, Router};
/// use tidings::server::{Session, SessionConfig, SessionStream};
///
/// async fn events(headers: HeaderMap, uri: Uri) -> SessionStream {
///     let (session, stream) = Session::new(SessionConfig::from_request(&headers, &uri), ());
///     let _ = session.push(&tidings::Event::new().data("hello"));
///     stream
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/events", get(events));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// tidings::server::serve(listener, app)
///     .lean_when(|request| request.uri.path() == "/events")
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
///
/// On the lean path a stream's response is `Transfer-Encoding: chunked` (HTTP/1.0:
/// delimited by closing the connection), a response of known length (an error, say) is
/// sent with `Content-Length` and `Connection: close`; the connection closes when the
/// response ends.
///
/// By default a request takes the lean path when it is a bodiless `GET` with
/// `Accept: text/event-stream` (as every `EventSource` sends); [`Serve::lean_when`]
/// changes the test.
pub fn serve(listener: TcpListener, router: Router) -> Serve {
    Serve {
        listener,
        router,
        lean: Arc::new(|parts: &Parts| crate::server::accepts_event_stream(&parts.headers)),
        direct_writes: false,
        idle_timeout: HEAD_TIMEOUT,
        #[cfg(feature = "tls")]
        tls: None,
        signal: None,
    }
}

/// The server future of [`serve`]: configure it, then `.await` it.
#[must_use = "a server does nothing until awaited"]
pub struct Serve {
    listener: TcpListener,
    router: Router,
    lean: LeanTest,
    direct_writes: bool,
    idle_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    signal: Option<Signal>,
}

impl Serve {
    /// Which requests take the lean path: `test` sees the head of each bodiless HTTP/1
    /// `GET` that opens a connection. Pick only routes that answer event streams (or
    /// small errors): the connection closes after the response.
    pub fn lean_when(mut self, test: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Serve {
        self.lean = Arc::new(test);
        self
    }

    /// Lets a session on the lean path write each event to its socket from the thread
    /// that pushes it, while nothing is queued ahead of it, instead of waking the
    /// connection's task to do it: one syscall per event and no task switch. What the
    /// socket does not take at once is queued as usual (and the slow-client policy
    /// applies). A producer with several events for a session at once writes them in
    /// one syscall with [`Session::push_bytes_joined`](super::Session::push_bytes_joined).
    /// Off by default.
    ///
    /// Turn it on only when no layer rewrites the bytes of event-stream bodies (e.g.
    /// compression): direct writes bypass the body. As a guard, only a `200`
    /// `text/event-stream` response without `Content-Encoding` is written directly.
    pub fn direct_writes(mut self, on: bool) -> Serve {
        self.direct_writes = on;
        self
    }

    /// How long a connection served by hyper (anything but a lean stream) may go with no
    /// request in progress, or take over one HTTP/1 request head, before it is asked to
    /// finish: HTTP/1 closes, HTTP/2 sends `GOAWAY`. An open event stream is a request in
    /// progress. 30 s by default, as the first request head's limit.
    ///
    /// # Panics
    /// If `timeout` is zero.
    pub fn idle_timeout(mut self, timeout: Duration) -> Serve {
        assert!(
            !timeout.is_zero(),
            "an idle timeout of zero would close every connection"
        );
        self.idle_timeout = timeout;
        self
    }

    /// Serves HTTPS: every connection starts with a TLS handshake under `config`, and is
    /// then served by hyper, HTTP/2 or HTTP/1.1 as ALPN decides (put `h2` and `http/1.1`
    /// in `config.alpn_protocols` to offer both; with none, HTTP/1.1). The first byte and
    /// the handshake must arrive within the time a plain connection has for its first
    /// request head (30 s).
    ///
    /// The lean path and [`direct_writes`](Serve::direct_writes) are plain-TCP only: TLS
    /// records are written by the TLS session, so over TLS an event stream is an ordinary
    /// hyper response body (the session still coalesces what is queued into one write
    /// per wake-up), and an idle stream costs hyper's buffers and the TLS state besides.
    ///
    /// A connection that opens with anything but a TLS handshake (a plain `http://`
    /// request to this port, say) gets a `400` `application/problem+json` answer in
    /// clear text saying to use `https://`, and is closed.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use rustls::pki_types::pem::PemObject;
    /// use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ///
    /// # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
    /// let chain = CertificateDer::pem_file_iter("fullchain.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("privkey.pem")?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let mut config = rustls::ServerConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(chain, key)?;
    /// config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    ///
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
    /// tidings::server::serve(listener, app).tls(Arc::new(config)).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Serve {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// Serves until `signal` resolves, then stops accepting, asks every hyper connection
    /// to finish its requests and close, and resolves once every connection has closed.
    ///
    /// Event streams end when their sessions do: close them on the same signal (e.g.
    /// [`Session::close`](super::Session::close) on each), or they keep the server running.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Serve {
        self.signal = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            router,
            lean,
            direct_writes,
            idle_timeout,
            #[cfg(feature = "tls")]
            tls,
            signal,
        } = self;
        // As `into_make_service` does: routes become services once, not per request.
        let router: Router = router.with_state(());
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Connections watch `stop` (dropping `stop_rx` asks them to finish) and each holds
        // a `done_rx`, so `done.closed()` resolves when the last one has gone.
        let (stop, stop_rx) = watch::channel(());
        let (done, done_rx) = watch::channel(());
        loop {
            let stream = tokio::select! {
                stream = accept(&listener) => stream,
                () = &mut signal => break,
            };
            let connection = Connection {
                router: router.clone(),
                lean: Arc::clone(&lean),
                direct_writes,
                idle_timeout,
                #[cfg(feature = "tls")]
                tls: tls.clone(),
                stop: stop.clone(),
                done: done_rx.clone(),
            };
            tokio::spawn(connection.serve(stream));
        }
        drop(listener);
        drop(stop_rx);
        drop(done_rx);
        done.closed().await;
        Ok(())
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// The next connection. Errors that concern one connection are skipped; others (such as
/// running out of file descriptors) are logged and retried after a pause, so the server
/// keeps running when it is full.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(err) if is_connection_error(&err) => {}
            Err(err) => {
                tracing::error!(error = %err, "accept failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

struct Connection {
    router: Router,
    lean: LeanTest,
    direct_writes: bool,
    idle_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Sender<()>,
    /// Held for the connection's life (a lean stream takes it over): see `Serve::run`.
    done: watch::Receiver<()>,
}

impl Connection {
    async fn serve(self, mut stream: TcpStream) {
        // Events are small writes that must leave at once; sessions coalesce them already.
        let _ = stream.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(acceptor) = self.tls.clone() {
            return self.serve_tls(stream, acceptor).await;
        }
        let mut read = BytesMut::with_capacity(FIRST_READ_BYTES);
        let sniffed = tokio::select! {
            sniffed = tokio::time::timeout(HEAD_TIMEOUT, sniff(&mut stream, &mut read, &*self.lean)) => sniffed,
            () = self.stop.closed() => return,
        };
        match sniffed {
            Ok(Ok(Sniffed::Malformed(bad))) => refuse(stream, &bad).await,
            Ok(Ok(Sniffed::Lean(request))) => {
                drop(read);
                lean::serve(stream, request, self.router, self.direct_writes, self.done).await;
            }
            Ok(Ok(_)) => {
                let io = Rewind::new(read.freeze(), stream);
                let idle = self.idle_timeout;
                Box::pin(hyper_path::serve(io, self.router, idle, &self.stop)).await;
            }
            Ok(Err(err)) => tracing::trace!(error = %err, "connection closed before a request"),
            Err(_) => tracing::trace!("no request head within {HEAD_TIMEOUT:?}; closing"),
        }
    }
}

#[cfg(feature = "tls")]
impl Connection {
    /// Completes the TLS handshake (or answers a connection that does not start one),
    /// then serves the connection with hyper.
    async fn serve_tls(self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        /// The first byte of every TLS connection: the type of a handshake record.
        const TLS_HANDSHAKE: u8 = 0x16;
        let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
        let mut first = [0u8; 1];
        let peeked = tokio::select! {
            peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
            () = self.stop.closed() => return,
        };
        match peeked {
            Ok(Ok(0)) => return tracing::trace!("connection closed before a TLS handshake"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return tracing::trace!(error = %err, "connection failed"),
            Err(_) => return tracing::trace!("nothing sent within {HEAD_TIMEOUT:?}; closing"),
        }
        if first[0] != TLS_HANDSHAKE {
            return refuse_plaintext(stream, deadline).await;
        }
        let handshake = tokio::select! {
            tls = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => tls,
            () = self.stop.closed() => return,
        };
        match handshake {
            Ok(Ok(tls)) => {
                let idle = self.idle_timeout;
                Box::pin(hyper_path::serve(tls, self.router, idle, &self.stop)).await;
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!("no TLS handshake within {HEAD_TIMEOUT:?}; closing"),
        }
    }
}

/// What a plaintext connection to a TLS port is told: a `400` problem for HTTP/1, and for
/// HTTP/2 with prior knowledge (whose client could not read that) a `GOAWAY` with
/// `INADEQUATE_SECURITY` and the same words, after the server's (empty) `SETTINGS`.
#[cfg(feature = "tls")]
async fn refuse_plaintext(stream: TcpStream, deadline: tokio::time::Instant) {
    /// What every HTTP/2 connection with prior knowledge starts with (RFC 9113 3.4).
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const TELL: &str = "this port serves HTTPS only: use an https:// URL";
    let mut start = [0u8; H2_PREFACE.len()];
    // Peeked (nothing is consumed) until the preface is either all there or ruled out.
    let seen = loop {
        let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut start)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        if seen == 0 || seen == start.len() || start[..seen] != H2_PREFACE[..seen] {
            break seen;
        }
        // The rest is on its way: let it arrive rather than peek the same bytes again.
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if seen == start.len() && start == *H2_PREFACE {
        tracing::debug!("refused HTTP/2 without TLS on the TLS port");
        let mut frames = Vec::with_capacity(9 + 17 + TELL.len());
        // SETTINGS: empty, stream 0.
        frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        // GOAWAY: last stream 0, INADEQUATE_SECURITY (0xc), the words as debug data.
        let length = u32::try_from(8 + TELL.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        frames.extend_from_slice(&[length[1], length[2], length[3], 0x7, 0, 0, 0, 0, 0]);
        frames.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xc]);
        frames.extend_from_slice(TELL.as_bytes());
        return answer_and_close(stream, &frames).await;
    }
    let bad = Malformed::new(StatusCode::BAD_REQUEST, "tls-required", TELL);
    refuse(stream, &bad).await;
}

/// Reads until the bytes say which path the connection takes ([`Sniffed::Partial`] never
/// comes back). An end of stream before that is an error.
async fn sniff(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    lean: &(dyn Fn(&Parts) -> bool + Send + Sync),
) -> io::Result<Sniffed> {
    loop {
        if stream.read_buf(read).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match head::sniff(read, lean) {
            Sniffed::Partial if read.len() < MAX_SNIFF_BYTES => {}
            Sniffed::Partial => return Ok(Sniffed::Malformed(too_long(read))),
            sniffed => return Ok(sniffed),
        }
    }
}

/// Why a head that did not end within [`MAX_SNIFF_BYTES`] is refused.
fn too_long(read: &[u8]) -> Malformed {
    if memchr::memchr(b'\n', read).is_none() {
        Malformed::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request line is longer than {MAX_SNIFF_BYTES} bytes"),
        )
    } else {
        Malformed::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the request head is larger than {MAX_SNIFF_BYTES} bytes"),
        )
    }
}

/// Answers a refused head with its problem, then closes.
async fn refuse(stream: TcpStream, bad: &Malformed) {
    tracing::debug!(status = %bad.status, detail = %bad.detail, "refused a request head");
    answer_and_close(stream, &bad.response()).await;
}

/// Writes `answer`, then closes. What the client still sends is read and dropped for a
/// moment, so that the close does not reset the connection before the client has read the
/// answer.
async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    if stream.write_all(answer).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSED_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
