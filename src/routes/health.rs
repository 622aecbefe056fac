//! `GET /healthz` and `GET /readyz`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde_json::json;

use crate::app::state::AppState;
use crate::error::ApiError;

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if app.shutdown.is_cancelled() || !app.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the hub is shutting down".into()));
    }
    app.hub.available().map_err(ApiError::Unavailable)?;
    let mut body = json!({
        "status": "ready",
        "clients": app.hub.client_count(),
    });
    // Only with sources configured, so the body is unchanged for everyone else.
    if !app.sources.is_empty() {
        body["sources"] = app.sources.status();
    }
    Ok(Json(body))
}
