//! The baseline a Rust developer writes today: axum's `Sse` response fed by a
//! `tokio::sync::broadcast` channel per topic, each event encoded per subscriber, and
//! `RecvError::Lagged` skipped as most examples do (so a slow subscriber loses events
//! silently). Same HTTP API as the Tidings hub: `GET /events?topic=a`,
//! `POST /publish {"topic":"a","data":"..."}`.
//!
//! Usage: `axum-broadcast [ADDR]` (default 127.0.0.1:8090).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

#[derive(Default)]
struct Topics {
    senders: Mutex<HashMap<String, broadcast::Sender<String>>>,
    next_id: AtomicU64,
}

impl Topics {
    fn sender(&self, topic: &str) -> broadcast::Sender<String> {
        let mut senders = self.senders.lock().expect("not poisoned");
        senders
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }
}

#[derive(Deserialize)]
struct Subscribe {
    topic: String,
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    data: String,
}

async fn events(
    State(topics): State<Arc<Topics>>,
    Query(query): Query<Subscribe>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = topics.sender(&query.topic).subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(data) => return Some((Ok(Event::default().data(data)), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn publish(
    State(topics): State<Arc<Topics>>,
    Json(event): Json<Publish>,
) -> Json<serde_json::Value> {
    let id = topics.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = topics.sender(&event.topic).send(event.data);
    Json(serde_json::json!({ "id": id.to_string() }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(Arc::new(Topics::default()));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await
}
