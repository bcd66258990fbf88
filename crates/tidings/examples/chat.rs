//! A chat room: join and leave events to everyone, messages broadcast, and catch-up
//! after a reconnect from the channel's history (the browser sends `Last-Event-ID`).
//!
//! ```text
//! cargo run -p tidings --example chat
//! # open http://127.0.0.1:3001 in two tabs
//! ```

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use tidings::server::{Channel, HistoryLimits, Lifecycle, Session, SessionConfig, SessionStream};
use tidings::Event;

/// Each session keeps the name its user joined with.
type Room = Channel<String>;

#[derive(Deserialize)]
struct Join {
    name: String,
}

async fn events(
    State(room): State<Room>,
    Query(join): Query<Join>,
    headers: HeaderMap,
    uri: Uri,
) -> SessionStream {
    let (session, stream) = Session::new(
        SessionConfig::from_request(&headers, &uri),
        join.name.clone(),
    );
    let resumed = session.last_event_id().is_some();
    // Registering replays what this browser missed while it was away, then live events.
    if room.register(&session).is_ok() && !resumed {
        let _ = room.broadcast(&Event::new().event("join").data(join.name));
    }
    stream
}

#[derive(Deserialize)]
struct Say {
    name: String,
    text: String,
}

async fn say(
    State(room): State<Room>,
    Form(say): Form<Say>,
) -> Result<StatusCode, (StatusCode, String)> {
    let event = Event::json(&serde_json::json!({ "name": say.name, "text": say.text }))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    room.broadcast(&event.event("message"))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let room: Room = Channel::builder()
        .history(HistoryLimits::new().max_events(500))
        .build();

    // Leave events: whenever a session goes away, tell everyone who left.
    let mut lifecycle = room.lifecycle();
    let names = room.clone();
    tokio::spawn(async move {
        let mut who = std::collections::HashMap::new();
        while let Ok(change) = lifecycle.recv().await {
            match change {
                Lifecycle::Registered(id) => {
                    if let Some(s) = names.sessions().into_iter().find(|s| s.id() == id) {
                        who.insert(id, s.state().clone());
                    }
                }
                Lifecycle::Deregistered(id) => {
                    if let Some(name) = who.remove(&id) {
                        let _ = names.broadcast(&Event::new().event("leave").data(name));
                    }
                }
            }
        }
    });

    let app = Router::new()
        .route("/", get(|| async { Html(include_str!("chat.html")) }))
        .route("/events", get(events))
        .route("/say", post(say))
        .with_state(room);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("chat on http://{}", listener.local_addr()?);
    // Event streams (EventSource sends `Accept: text/event-stream`) are written straight to
    // their sockets; the page and the other routes are served by hyper.
    tidings::server::serve(listener, app)
        .direct_writes(true)
        .await
}
