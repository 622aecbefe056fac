//! `POST /v1/events`: validate a batch, publish it through the [`Publisher`](crate::publisher::Publisher).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::protocol;

use super::extract::{Claimed, Publish, PublishBody};

pub(crate) async fn publish(
    State(app): State<AppState>,
    _: Claimed<Publish>,
    PublishBody(bytes): PublishBody,
) -> Result<Response, ApiError> {
    let limits = &app.settings.limits;
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
