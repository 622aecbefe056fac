//! `POST /v1/events`: validate a batch, publish it through the [`Publisher`](crate::publisher::Publisher).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::state::AppState;
use crate::auth::Identity;
use crate::config::EVENTS_PUBLISH;
use crate::error::ApiError;
use crate::protocol;

use super::read_body;

pub(crate) async fn publish(
    State(app): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    identity.require(EVENTS_PUBLISH)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the event as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let limits = &app.settings.limits;
    let bytes = read_body(&app, &headers, body, limits.max_publish_bytes.get()).await?;
    let events = protocol::parse_publish_body(&bytes).map_err(ApiError::BadRequest)?;
    if events.is_empty() {
        return Err(ApiError::BadRequest("the batch is empty".into()));
    }
    if events.len() > limits.max_batch_events.get() {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} events in one batch; at most {}",
            events.len(),
            limits.max_batch_events
        )));
    }
    let events = app.publisher.prepare(events)?;
    let receipt = app.publisher.publish(events)?;
    Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
}
