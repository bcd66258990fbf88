//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: the engine
//! answers and it is not shutting down).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
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
