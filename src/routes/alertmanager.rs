//! `POST /v1/sources/alertmanager`: Prometheus Alertmanager's webhook (see
//! `sources::alertmanager`), authenticated like a publish.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::state::AppState;
use crate::broker::Event;
use crate::error::ApiError;
use crate::idempotency;
use crate::sources::alertmanager;

use super::extract::{Claimed, Publish, PublishBody};

pub(crate) async fn alertmanager(
    State(app): State<AppState>,
    Claimed(identity, _): Claimed<Publish>,
    PublishBody(bytes): PublishBody,
) -> Result<Response, ApiError> {
    let settings = &app.settings.sources.alertmanager;
    let channel = app
        .publisher
        .channel(&settings.channel)
        .filter(|_| settings.enabled)
        .ok_or_else(|| {
            ApiError::NotFound(
                "the Alertmanager receiver is off ([sources.alertmanager] enabled = false)".into(),
            )
        })?;
    let notification = alertmanager::parse(&bytes).map_err(ApiError::BadRequest)?;
    let mut ids = Vec::new();
    let (mut recipients, mut repeated) = (0, 0);
    for alert in alertmanager::events(&notification) {
        let event = Event {
            channel,
            message: alert.message.to_owned(),
            body: serde_json::value::to_raw_value(&alert.body).ok(),
            target: None,
            origin: None,
        };
        // Per alert: a retried notification publishes none of its alerts again. The key holds
        // everything that tells two notifications of an alert apart, so it never conflicts.
        let fingerprint = idempotency::fingerprint(alert.key.as_bytes());
        let published = app
            .publisher
            .publish_once(&identity, Some(&alert.key), fingerprint, vec![event])
            .await?;
        ids.extend(published.receipt.ids);
        recipients += published.receipt.recipients;
        repeated += usize::from(published.repeated);
    }
    let receipt = json!({ "ids": ids, "recipients": recipients, "repeated": repeated });
    Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
}
