//! `GET /healthz` (the process answers), `GET /readyz` (it can serve: the engine answers
//! and it is not shutting down) and `GET /metrics` (counters for Prometheus).

use std::sync::Arc;

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

use super::problem::Problem;
use crate::hub::Hub;

/// `GET /healthz`: the process is up and answering.
pub async fn healthz(State(hub): State<Arc<Hub>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "engine": hub.engine().name(),
        "connections": hub.fanout().connections(),
        "fanout": hub.counts(),
    }))
}

/// The media type of Prometheus' text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: the hub's gauges and counters in Prometheus' text format, for this
/// process (hubs sharing a Redis each count their own).
pub async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let fanout = hub.counts();
    let (unauthorized, forbidden) = hub.refused();
    let ready = !hub.is_shutting_down() && hub.engine().ready().await.is_ok();
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    let info = format!(
        "{{version=\"{}\",engine=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        hub.engine().name()
    );
    metric(
        "tidings_info",
        "gauge",
        "The hub's version and engine.",
        &[(&info, 1)],
    );
    metric(
        "tidings_ready",
        "gauge",
        "1 when the engine answers and the hub is not shutting down, as /readyz.",
        &[("", u64::from(ready))],
    );
    metric(
        "tidings_connections",
        "gauge",
        "Open event streams.",
        &[("", hub.fanout().connections() as u64)],
    );
    metric(
        "tidings_published_total",
        "counter",
        "Events stored through this hub (publishes and presence events).",
        &[("", hub.published())],
    );
    metric(
        "tidings_delivered_total",
        "counter",
        "Events queued to connections, one per connection per event.",
        &[("", fanout.delivered)],
    );
    metric(
        "tidings_slow_client_total",
        "counter",
        "What the slow-client policy did: connections closed, events dropped or replaced.",
        &[
            ("{action=\"disconnected\"}", fanout.disconnected_slow),
            ("{action=\"dropped_oldest\"}", fanout.dropped_oldest),
            ("{action=\"replaced\"}", fanout.replaced),
        ],
    );
    metric(
        "tidings_refused_total",
        "counter",
        "Requests refused for their token: none or an invalid one (401), a topic it does not grant (403).",
        &[
            ("{status=\"401\"}", unauthorized),
            ("{status=\"403\"}", forbidden),
        ],
    );
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    response
}

/// `GET /readyz`: 200 when the engine answers and the hub is not shutting down, else 503.
pub async fn readyz(State(hub): State<Arc<Hub>>) -> Result<Json<Value>, Problem> {
    if hub.is_shutting_down() {
        return Err(Problem::unavailable(
            "shutting-down",
            "Shutting down",
            "this hub is shutting down",
            1,
        ));
    }
    hub.engine().ready().await.map_err(|e| {
        Problem::unavailable(
            "engine-unavailable",
            "Storage unavailable",
            e.to_string(),
            1,
        )
    })?;
    Ok(Json(
        json!({ "status": "ready", "engine": hub.engine().name() }),
    ))
}
