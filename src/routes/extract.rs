//! Extractors the handlers share; each rejects with an [`ApiError`], so a refusal looks the
//! same whichever route gives it (axum's `error-handling` example).
//!
//! Order matters and follows the arguments: [`Claimed`] (401, 403) runs before any body or
//! query is read, so a caller without the claim is turned away before it can make the hub
//! wait for a body.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;

use crate::app::state::AppState;
use crate::auth::Identity;
use crate::cloudevents::inbound;
use crate::config::{EVENTS_ADMIN, EVENTS_PUBLISH, READ_ONLY};
use crate::error::ApiError;

/// A claim a route requires.
pub(crate) trait Claim {
    const NAME: &'static str;
}

/// `READ_ONLY`: subscribe, unsubscribe, read history.
pub(crate) struct Read;
impl Claim for Read {
    const NAME: &'static str = READ_ONLY;
}

/// `EVENTS_PUBLISH`: publish.
pub(crate) struct Publish;
impl Claim for Publish {
    const NAME: &'static str = EVENTS_PUBLISH;
}

/// `EVENTS_ADMIN`: the admin routes.
pub(crate) struct Admin;
impl Claim for Admin {
    const NAME: &'static str = EVENTS_ADMIN;
}

/// The caller, authenticated and holding claim `C`: 401 without valid credentials, 403
/// without the claim.
pub(crate) struct Claimed<C>(pub Identity, pub PhantomData<C>);

impl<C: Claim> FromRequestParts<AppState> for Claimed<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let identity = Identity::from_request_parts(parts, app).await?;
        identity.require(C::NAME)?;
        Ok(Self(identity, PhantomData))
    }
}

/// A `POST /v1/events` body: JSON (415 otherwise), at most `limits.max_publish_bytes`.
pub(crate) struct PublishBody(pub Bytes);

impl FromRequest<AppState> for PublishBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the event as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let limit = app.settings.limits.max_publish_bytes.get();
        read_body(app, request, limit).await.map(Self)
    }
}

/// A `POST /v1/events` body: the hub's JSON, or CloudEvents (`cloudevents::inbound`) in
/// structured, batch or binary mode; `415` for anything else. At most
/// `limits.max_publish_bytes`.
pub(crate) enum EventsBody {
    Json(Bytes),
    CloudEvents(inbound::Mode, Bytes),
}

impl FromRequest<AppState> for EventsBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        let limit = app.settings.limits.max_publish_bytes.get();
        // Decided from the headers, before the body is waited for.
        match inbound::mode(request.headers())? {
            Some(mode) => Ok(Self::CloudEvents(
                mode,
                read_body(app, request, limit).await?,
            )),
            None if is_json(request.headers()) => {
                read_body(app, request, limit).await.map(Self::Json)
            }
            None => Err(ApiError::UnsupportedMediaType(
                "send the event as JSON with `Content-Type: application/json`, or as a CloudEvent (`application/cloudevents+json`, `application/cloudevents-batch+json`, or binary mode with `ce-` headers)".into(),
            )),
        }
    }
}

/// Largest unsubscribe body read.
const MAX_UNSUBSCRIBE_BYTES: usize = 16 * 1024;

/// A `POST /v1/ws/unsubscribe` body, at most 16 KiB (a request names a few channels).
pub(crate) struct UnsubscribeBody(pub Bytes);

impl FromRequest<AppState> for UnsubscribeBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        read_body(app, request, MAX_UNSUBSCRIBE_BYTES)
            .await
            .map(Self)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a request body of at most `limit` bytes within `body_read_timeout`: `413` for a larger
/// one (refused from `Content-Length` alone when it says so), `408` for one that trickles in too
/// slowly.
async fn read_body(app: &AppState, request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let deadline = app.settings.body_read_timeout();
    let body = request.into_body();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs()
        ))),
    }
}
