//! The leanest HTTP/1.1 client that does the job, shared by the subscribers and the
//! publisher: a request written by hand, the response head read with `httparse`, and the
//! body unframed (chunked, Content-Length, or until close) by a small state machine that
//! knows nothing of sockets.
//!
//! Why not hyper's client: 15,000 subscriber connections each cost a task, a socket, a read
//! buffer and a parser here, and nothing else, so the bench's own memory and CPU stay small
//! next to the server's on a shared machine. `https://` adds a rustls session (HTTP/1.1 by
//! ALPN) to each connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An `http://` or `https://` URL, split the way a request needs it.
#[derive(Clone)]
pub struct Target {
    /// The `Host` header value.
    pub authority: String,
    /// The request target: path and query.
    pub path_and_query: String,
    /// Where to connect.
    pub address: SocketAddr,
    /// For `https://`: the TLS client and the name the certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .field("path_and_query", &self.path_and_query)
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Parses `url` and resolves its host once; an `https://` URL is reached through
    /// `tls` (see [`tls_connector`]).
    ///
    /// # Errors
    /// The URL is not `http(s)://host[:port]/...`, or its host does not resolve.
    pub async fn resolve(url: &str, tls: &TlsConnector) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "`{url}`: only http:// and https:// URLs can be benched"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if crate::has_invalid_port(&uri) {
            return Err(format!(
                "`{url}` has an invalid port (ports go from 0 to 65535)"
            ));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = if secure {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| format!("`{url}`: {host} cannot name a certificate: {e}"))?;
            Some((tls.clone(), name))
        } else {
            None
        };
        let address = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("`{url}`: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("`{url}`: {host} has no address"))?;
        Ok(Target {
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned()),
            address,
            tls,
        })
    }

    /// Opens a connection (TCP, and TLS for `https://`), from `source` (any port) when
    /// given.
    pub async fn connect(&self, source: Option<IpAddr>) -> io::Result<Stream> {
        let socket = if self.address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(self.address).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Stream::Plain(stream)),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| io::Error::other(tidings::client::describe_error(&e)))?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// The TLS client of every `https://` connection the bench opens: the tools' (the public
/// roots and `--cacert`'s), speaking HTTP/1.1. Built once for subscribers and publisher.
pub fn tls_connector(cacert: &crate::CaCertArg) -> Result<TlsConnector, String> {
    let mut config = crate::tls_client_config(cacert)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A connection to the target: plain TCP, or TLS over it.
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://` (boxed: a TLS session is many times a socket's size).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The largest refusal body read for its reason.
const MAX_REFUSAL: usize = 16 * 1024;

/// `HTTP status N`, and what the refusal's body says (an RFC 9457 problem's detail, see
/// [`tidings::client::refusal_reason`]), reading at most [`MAX_REFUSAL`] bytes of it for
/// at most a second. `buf` holds what was read after the head.
pub async fn refusal<S: AsyncRead + Unpin>(stream: &mut S, head: &mut Head, buf: &[u8]) -> String {
    let mut body = Vec::new();
    let read = async {
        let mut done = head
            .framing
            .decode(buf, |data| body.extend_from_slice(data))?;
        let mut chunk = [0u8; 4096];
        while !done && body.len() < MAX_REFUSAL {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            done = head
                .framing
                .decode(&chunk[..n], |data| body.extend_from_slice(data))?;
        }
        Ok::<(), String>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
    body.truncate(MAX_REFUSAL);
    match tidings::client::refusal_reason(&body) {
        reason if reason.is_empty() => format!("HTTP status {}", head.status),
        reason => format!("HTTP status {}: {reason}", head.status),
    }
}

/// What a response head said that matters here.
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// The Content-Type, if any.
    pub content_type: Option<String>,
    /// How the body is framed.
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Reads a response head from `stream`; bytes after it (the body's start) stay in `buf`.
///
/// # Errors
/// The connection ended or failed first, or the head is malformed or too long.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Head, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(length)) => {
                let status = response.code.unwrap_or(0);
                let mut head = Head {
                    status,
                    content_type: None,
                    framing: Framing::UntilClose,
                    close: response.version == Some(0),
                };
                let mut content_length = None;
                for header in response.headers.iter() {
                    let value = String::from_utf8_lossy(header.value);
                    let value = value.trim();
                    if header.name.eq_ignore_ascii_case("content-type") {
                        head.content_type = Some(value.to_owned());
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                        if value.to_ascii_lowercase().ends_with("chunked") {
                            head.framing = Framing::Chunked(Chunked::default());
                        }
                    } else if header.name.eq_ignore_ascii_case("content-length") {
                        content_length = value.parse::<u64>().ok();
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        head.close = value.eq_ignore_ascii_case("close");
                    }
                }
                if let (Framing::UntilClose, Some(n)) = (&head.framing, content_length) {
                    head.framing = Framing::Length(n);
                }
                if status == 204 || status == 304 || (100..200).contains(&status) {
                    head.framing = Framing::Length(0);
                }
                buf.drain(..length);
                return Ok(head);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("response head too long".to_owned()),
            Err(error) => return Err(format!("malformed response head: {error}")),
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response head: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the response head".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How a response body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
    /// `Content-Length`, with this many bytes still to come.
    Length(u64),
    /// Neither: the body ends when the connection closes.
    UntilClose,
}

impl Framing {
    /// Unframes `input`, handing the body's bytes to `body`; returns whether the body has
    /// ended (more input after that is not this body's).
    ///
    /// # Errors
    /// Malformed chunked framing.
    pub fn decode(&mut self, input: &[u8], body: impl FnMut(&[u8])) -> Result<bool, String> {
        let mut body = body;
        match self {
            Framing::Chunked(chunked) => chunked.decode(input, body),
            Framing::Length(remaining) => {
                let take = (*remaining).min(input.len() as u64) as usize;
                if take > 0 {
                    body(&input[..take]);
                }
                *remaining -= take as u64;
                Ok(*remaining == 0)
            }
            Framing::UntilClose => {
                body(input);
                Ok(false)
            }
        }
    }
}

/// The chunked transfer coding's decoder state.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal chunk size.
    #[default]
    Size,
    /// Skipping a chunk extension up to the line's LF.
    Extension,
    /// Inside a chunk's data, `size` bytes to go.
    Data,
    /// After a chunk's data: expecting CR LF.
    DataEnd,
    /// After the last (empty) chunk: skipping trailer lines up to an empty one.
    Trailer { line_empty: bool },
    /// The body has ended.
    Done,
}

impl Chunked {
    fn decode(&mut self, input: &[u8], mut body: impl FnMut(&[u8])) -> Result<bool, String> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Size => {
                    let byte = input[i];
                    i += 1;
                    match byte {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (byte as char).to_digit(16).unwrap_or(0) as u64;
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .ok_or("chunk size overflows")?;
                        }
                        b';' | b' ' | b'\t' | b'\r' => self.state = ChunkState::Extension,
                        b'\n' => self.end_size_line(),
                        _ => return Err(format!("bad byte {byte:#04x} in a chunk size")),
                    }
                }
                ChunkState::Extension => {
                    if input[i] == b'\n' {
                        self.end_size_line();
                    }
                    i += 1;
                }
                ChunkState::Data => {
                    let take = self.size.min((input.len() - i) as u64) as usize;
                    body(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    match input[i] {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        byte => return Err(format!("bad byte {byte:#04x} after a chunk")),
                    }
                    i += 1;
                }
                ChunkState::Trailer { line_empty } => {
                    match input[i] {
                        b'\r' => {}
                        b'\n' if line_empty => self.state = ChunkState::Done,
                        b'\n' => self.state = ChunkState::Trailer { line_empty: true },
                        _ => self.state = ChunkState::Trailer { line_empty: false },
                    }
                    i += 1;
                }
                ChunkState::Done => return Ok(true),
            }
        }
        Ok(self.state == ChunkState::Done)
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Trailer { line_empty: true }
        } else {
            ChunkState::Data
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_at_every_split() {
        for split in 0..=CHUNKED.len() {
            let mut framing = Framing::Chunked(Chunked::default());
            let mut out = Vec::new();
            let first = framing
                .decode(&CHUNKED[..split], |b| out.extend_from_slice(b))
                .unwrap();
            let done = framing
                .decode(&CHUNKED[split..], |b| out.extend_from_slice(b))
                .unwrap();
            assert_eq!(out, b"hello 0123456789", "split at {split}");
            assert!(done || first, "split at {split}");
        }
    }

    #[test]
    fn bad_chunk_sizes_are_errors() {
        let mut framing = Framing::Chunked(Chunked::default());
        assert!(framing.decode(b"zz\r\n", |_| {}).is_err());
    }

    #[test]
    fn content_length_stops_at_the_end() {
        let mut framing = Framing::Length(3);
        let mut out = Vec::new();
        assert!(framing
            .decode(b"abcdef", |b| out.extend_from_slice(b))
            .unwrap());
        assert_eq!(out, b"abc");
    }

    #[tokio::test]
    async fn heads_are_parsed_and_the_body_start_is_kept() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc";
        let mut buf = Vec::new();
        let head = read_head(&mut input, &mut buf).await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_type.as_deref(), Some("text/event-stream"));
        assert!(matches!(head.framing, Framing::Chunked(_)));
        assert_eq!(buf, b"3\r\nabc");
    }
}
