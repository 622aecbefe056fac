//! `POST /v1/events` with a body in CloudEvents form (structured, batch or binary; read in
//! `cloudevents::inbound`). The channel is the `event_type` query parameter, as a publisher of
//! the hub's own JSON names it in the body; each event's `source` + `id` is its idempotency
//! key, so a retried CloudEvent publishes nothing twice, exactly as a repeated
//! `Idempotency-Key` would.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::state::AppState;
use crate::auth;
use crate::cloudevents::inbound::{self, Inbound, Mode};
use crate::error::ApiError;
use crate::idempotency::{self, REPLAYED};
use crate::identity::Identity;
use crate::protocol::PublishEvent;

/// What the handler read, for the CloudEvents path.
pub(super) struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub mode: Mode,
    pub body: &'a [u8],
}

/// Checks every event, then publishes them one by one, each under its own key: a retried
/// batch publishes none of the events already published. `202` with the hub's ids, how many
/// sockets they reached and how many were repeats.
pub(super) async fn publish(
    app: &AppState,
    identity: &Identity,
    request: Request<'_>,
) -> Result<Response, ApiError> {
    if request.headers.contains_key("idempotency-key") {
        return Err(ApiError::BadRequest(
            "a CloudEvent's source and id are its idempotency key: send no Idempotency-Key with CloudEvents".into(),
        ));
    }
    let channel = channel(request.query)?;
    let events = inbound::parse(request.mode, request.headers, request.body)?;
    let max = app.settings.limits.max_batch_events.get();
    if events.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} events in one batch; at most {max}",
            events.len()
        )));
    }
    let (keys, origins): (Vec<String>, Vec<_>) = events
        .iter()
        .map(|event| (event.idempotency_key(), event.origin()))
        .unzip();
    let events = events.into_iter().map(|e| hub_event(&channel, e)).collect();
    let mut prepared = app.publisher.prepare(events)?;
    for (event, origin) in prepared.iter_mut().zip(origins) {
        event.origin = origin;
    }
    let (mut ids, mut recipients, mut repeated) = (Vec::new(), 0, 0);
    for (key, event) in keys.iter().zip(prepared) {
        // A repeat is a duplicate whatever it carries (spec.md: same source and id): the key
        // is its own fingerprint, so it never conflicts.
        let fingerprint = idempotency::fingerprint(key.as_bytes());
        let published = app
            .publisher
            .publish_once(identity, Some(key), fingerprint, vec![event])
            .await?;
        ids.extend(published.receipt.ids);
        recipients += published.receipt.recipients;
        repeated += usize::from(published.repeated);
    }
    let all_repeated = repeated > 0 && repeated == keys.len();
    let receipt = json!({ "ids": ids, "recipients": recipients, "repeated": repeated });
    let replayed = [(REPLAYED, if all_repeated { "true" } else { "false" })];
    Ok((StatusCode::ACCEPTED, replayed, Json(receipt)).into_response())
}

/// The `event_type` query parameter: the channel every event of the request goes to.
fn channel(query: Option<&str>) -> Result<String, ApiError> {
    let mut names = auth::form_pairs(query.unwrap_or_default())
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v);
    match (names.next(), names.next()) {
        (Some(name), None) if !name.trim().is_empty() => Ok(name),
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give the event_type query parameter once: a request publishes on one channel".into(),
        )),
        _ => Err(ApiError::BadRequest(
            "name the channel of a CloudEvent with the event_type query parameter, e.g. POST /v1/events?event_type=pdfm".into(),
        )),
    }
}

/// The hub's event: `type` is the message, `data` the body (`source`, `id` and `subject` are
/// its `origin`, set once the event is prepared).
fn hub_event(channel: &str, event: Inbound) -> PublishEvent {
    PublishEvent {
        event_type: channel.to_owned(),
        message: event.kind,
        body: event.data,
        client_id: None,
    }
}
