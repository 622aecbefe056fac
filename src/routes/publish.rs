//! `POST /v1/events`: validate a batch, publish it through the [`Publisher`](crate::publisher::Publisher).
//! A body in CloudEvents form is read in `publish_cloudevents`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::idempotency::{self, REPLAYED};
use crate::protocol;

use super::extract::{Claimed, EventsBody, Publish};
use super::publish_cloudevents;

pub(crate) async fn publish(
    State(app): State<AppState>,
    Claimed(identity, _): Claimed<Publish>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: EventsBody,
) -> Result<Response, ApiError> {
    let bytes = match body {
        EventsBody::Json(bytes) => bytes,
        EventsBody::CloudEvents(mode, bytes) => {
            let request = publish_cloudevents::Request {
                headers: &headers,
                query: query.as_deref(),
                mode,
                body: &bytes,
            };
            return publish_cloudevents::publish(&app, &identity, request).await;
        }
    };
    let key = idempotency_key(&headers)?;
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
    let fingerprint = idempotency::fingerprint(&bytes);
    let published = app
        .publisher
        .publish_once(&identity, key, fingerprint, events)
        .await?;
    let replayed = [(REPLAYED, if published.repeated { "true" } else { "false" })];
    Ok((StatusCode::ACCEPTED, replayed, Json(published.receipt)).into_response())
}

/// The request's `Idempotency-Key`; `400` for a key that is not 1 to 255 visible ASCII
/// characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| idempotency::valid_key(k));
    let Some(key) = key else {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {} visible ASCII characters",
            idempotency::MAX_KEY_LEN
        )));
    };
    Ok(Some(key))
}
