//! The hub's HTTP API as an axum [`Router`].
//!
//! | route | what |
//! |---|---|
//! | `GET /events?topic=a&topic=chat/*` | one event stream for all named topics and patterns ([`subscribe`]) |
//! | `POST /publish` | store an event or a batch, answer its id ([`publish`]) |
//! | `GET /topics` | topics, subscriber counts, last ids |
//! | `GET /topics/{topic}/events?after=&limit=` | a topic's history as JSON |
//! | `GET /healthz`, `GET /readyz` | liveness, readiness |
//! | `GET /metrics` | counters in Prometheus' text format |
//! | `GET /` | the web page ([`crate::web`]) |
//!
//! Every error is `application/problem+json` ([`problem`]); CORS is answered for the
//! configured origins only ([`cors`]); where the settings ask for tokens, requests carry
//! them as [`auth`] says.

pub mod auth;
pub mod cors;
mod form;
pub mod health;
pub mod problem;
pub mod publish;
pub mod subscribe;
pub mod topics;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::hub::Hub;

/// The path of the event stream route ([`subscribe`]).
pub const EVENTS_PATH: &str = "/events";

/// The hub's routes, with problem+json errors and (when origins are configured) CORS.
///
/// ```no_run
/// # async fn run() -> Result<(), tidings_hub::Error> {
/// use tidings_hub::{Hub, Settings};
///
/// let hub = Hub::new(Settings::default()).await?;
/// let app = tidings_hub::http::router(hub); // mount it in your own axum app, or serve it
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.expect("bind");
/// axum::serve(listener, app).await.expect("serve");
/// # Ok(()) }
/// ```
pub fn router(hub: Arc<Hub>) -> Router {
    let cors = cors::layer(&hub.settings().cors_origins);
    let router = Router::new()
        .route(EVENTS_PATH, get(subscribe::subscribe))
        .route("/publish", post(publish::publish))
        .route("/topics", get(topics::list))
        .route("/topics/{*path}", get(topics::history))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(crate::web::routes())
        .fallback(problem::not_found)
        .with_state(hub)
        .layer(axum::middleware::from_fn(problem::problem_layer));
    match cors {
        Some(cors) => router
            .layer(cors)
            .layer(axum::middleware::from_fn(cors::strip_when_not_allowed)),
        None => router,
    }
}
