//! The route handlers, one file per route family; `app` puts them on paths. Every refusal is
//! an [`ApiError`], mapped to the SPEC's error body in `error.rs`.

mod health;
mod history;
mod publish;
mod subscribe;
mod unsubscribe;

pub(crate) use self::health::{healthz, readyz};
pub(crate) use self::history::history;
pub(crate) use self::publish::publish;
pub use self::subscribe::conformance_router;
pub(crate) use self::subscribe::subscribe;
pub(crate) use self::unsubscribe::unsubscribe;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::state::AppState;
use crate::error::{ApiError, RefusalReason};

pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}; see docs/api.md",
        uri.path()
    ))
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One line per request, with the path only: query strings may carry a credential
/// (`access_token=`, `authorization=`), so no query string is ever logged.
/// Refusals are logged at `info` (an operator wants to see who was turned away and why),
/// successes at `debug` (publishing can be thousands of requests a second).
pub(crate) async fn log_request(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    if status >= 400 {
        let reason = response
            .extensions()
            .get::<RefusalReason>()
            .map_or("", |r| r.0.as_str());
        tracing::info!(%peer, %method, path, status, reason, micros, "request refused");
    } else {
        tracing::debug!(%peer, %method, path, status, micros, "request");
    }
    response
}

/// Reads a request body of at most `limit` bytes within `body_read_timeout`: `413` for a larger
/// one, `408` for one that trickles in too slowly.
pub(super) async fn read_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let deadline = app.settings.body_read_timeout();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs()
        ))),
    }
}
