//! The origin behind Pushpin in the comparison: answers every `GET /...?topic=T` with the
//! GRIP instruction to hold the request open as a stream subscribed to channel `T`
//! (`Grip-Hold: stream`, `Grip-Channel: T`); Pushpin then keeps the connection and the
//! bench publishes through Pushpin's own publish API.
//!
//! Usage: `grip-backend [ADDR]` (default 127.0.0.1:8092).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8092".to_owned());
    let listener = TcpListener::bind(&address).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(connection(socket));
    }
}

async fn connection(mut socket: TcpStream) {
    let mut buf = Vec::with_capacity(2048);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let target = head.split(' ').nth(1).unwrap_or("/");
        let topic = target
            .split_once("topic=")
            .map(|(_, t)| t.split('&').next().unwrap_or("a"))
            .unwrap_or("a");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             Grip-Hold: stream\r\nGrip-Channel: {topic}\r\nContent-Length: 0\r\n\r\n"
        );
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        buf.drain(..head_end);
    }
}
