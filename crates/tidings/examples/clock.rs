//! The server's time every second, to a page with `EventSource`.
//!
//! ```text
//! cargo run -p tidings --example clock
//! # open http://127.0.0.1:3000, or: curl -N http://127.0.0.1:3000/time
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use tidings::server::{Session, SessionConfig, SessionStream};
use tidings::Event;

async fn time() -> SessionStream {
    let (session, stream) = Session::new(SessionConfig::new(), ());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
                    if session.push(&Event::new().event("tick").data(ms.to_string())).is_err() {
                        break;
                    }
                }
                _ = session.closed() => break,
            }
        }
    });
    stream
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { Html(include_str!("clock.html")) }))
        .route("/time", get(time));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("clock on http://{}", listener.local_addr()?);
    // Event streams (EventSource sends `Accept: text/event-stream`) are written straight to
    // their sockets; the page and the other routes are served by hyper.
    tidings::server::serve(listener, app)
        .direct_writes(true)
        .await
}
