//! The floor: what fan-out costs with no HTTP stack at all. One thread; a subscriber is a
//! socket that sent `GET ...` and got a fixed response head; a publish (`POST` with a JSON
//! body holding `"data":"..."`) is encoded once as `data: ...\n\n` and written with one
//! non-blocking `write` per subscriber. No queues: a subscriber whose socket buffer is full
//! (a partial or refused write) is dropped, so its events show up as missing.
//!
//! Usage: `raw-floor [ADDR]` (default 127.0.0.1:8091). It answers any GET as the stream
//! (topics are ignored) and any POST as a publish.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

type Subscribers = Rc<RefCell<Vec<TcpStream>>>;

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
const PUBLISHED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"0\"}";

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::bind(&address).await?;
        let subscribers = Subscribers::default();
        loop {
            let (socket, _) = listener.accept().await?;
            tokio::task::spawn_local(connection(socket, subscribers.clone()));
        }
    })
}

async fn connection(mut socket: TcpStream, subscribers: Subscribers) {
    let _ = socket.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        if buf.starts_with(b"GET ") {
            if socket.write_all(STREAM_HEAD).await.is_ok() {
                subscribers.borrow_mut().push(socket);
            }
            return;
        }
        let length = content_length(&buf[..head_end]);
        while buf.len() < head_end + length {
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = &buf[head_end..head_end + length];
        let mut frame = b"data: ".to_vec();
        frame.extend_from_slice(json_data(body));
        frame.extend_from_slice(b"\n\n");
        subscribers
            .borrow_mut()
            .retain(|s| matches!(s.try_write(&frame), Ok(n) if n == frame.len()));
        if socket.write_all(PUBLISHED).await.is_err() {
            return;
        }
        buf.drain(..head_end + length);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.split("\r\n")
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The raw text of the `"data"` string in a JSON body (escapes left as they are), or the
/// whole body when it has none.
fn json_data(body: &[u8]) -> &[u8] {
    let Some(start) = find(body, b"\"data\":\"").map(|i| i + 8) else {
        return body;
    };
    let mut end = start;
    while end < body.len() && body[end] != b'"' {
        end += if body[end] == b'\\' { 2 } else { 1 };
    }
    &body[start..end.min(body.len())]
}
