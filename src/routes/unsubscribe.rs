//! `POST /v1/ws/unsubscribe`: remove channels from a live socket of the caller.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::protocol;

use super::extract::{Claimed, Read, UnsubscribeBody};
/// `event_types` as the seed shows it (an array), or a comma-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventTypes {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
struct UnsubscribeRequest {
    client_id: String,
    event_types: EventTypes,
}

pub(crate) async fn unsubscribe(
    State(app): State<AppState>,
    Claimed(identity, _): Claimed<Read>,
    UnsubscribeBody(bytes): UnsubscribeBody,
) -> Result<Json<UnsubscribeReply>, ApiError> {
    let channels = app.hub.channels();
    let usage = || {
        format!(
            "send {{\"client_id\": \"<uuid>\", \"event_types\": [\"pdfm\"]}}; valid event types: {}",
            channels.describe()
        )
    };
    let request: UnsubscribeRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed body ({e}): {}", usage())))?;
    let client_id = Uuid::parse_str(request.client_id.trim()).map_err(|_| {
        ApiError::BadRequest(format!(
            "client_id {:?} is not a UUID (the welcome frame's body.client_id, or ask with \
             {{\"event_type\":\"system\",\"message\":\"client-id\"}}); {}",
            request.client_id,
            usage()
        ))
    })?;
    let requested = match request.event_types {
        EventTypes::List(list) => protocol::split_event_types(&list.join(",")),
        EventTypes::Text(text) => protocol::split_event_types(&text),
    };
    if requested.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "event_types is empty: {}",
            usage()
        )));
    }

    let outcome = app
        .hub
        .unsubscribe(client_id, &identity, &requested)
        .await?;
    let guidance = outcome.is_partial().then(|| {
        format!(
            "Only the listed event types were removed. `global` cannot be removed; \
             valid event types: {}; to add channels, send a subscribe message on the socket (see docs/api.md)",
            channels.describe()
        )
    });
    Ok(Json(UnsubscribeReply {
        message: "Successfully unsubscribed from event types",
        outcome,
        guidance,
    }))
}

/// The `200` body: `message` first, as the seed guide shows it; the partial-success lists and
/// `guidance` only when something was not removed.
#[derive(serde::Serialize)]
pub(crate) struct UnsubscribeReply {
    message: &'static str,
    #[serde(flatten)]
    outcome: crate::hub::Unsubscribed,
    #[serde(skip_serializing_if = "Option::is_none")]
    guidance: Option<String>,
}
