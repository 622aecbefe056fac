//! The route handlers, one file per route family; `app` puts them on paths. Every refusal is
//! an [`ApiError`], mapped to the SPEC's error body in `error.rs`.

mod admin;
mod alertmanager;
mod console;
mod extract;
mod health;
mod history;
mod metrics;
mod publish;
mod publish_cloudevents;
mod specs;
mod subscribe;
mod unsubscribe;

pub(crate) use self::admin::{channels, clients, disconnect, ws_clients, ws_stats};
pub(crate) use self::alertmanager::alertmanager;
pub(crate) use self::console::{asset as console_asset, index as console_index};
pub(crate) use self::health::{healthz, readyz};
pub(crate) use self::history::history;
pub(crate) use self::metrics::metrics;
pub(crate) use self::publish::publish;
pub(crate) use self::specs::{asyncapi, openapi};
pub use self::subscribe::conformance_router;
pub(crate) use self::subscribe::subscribe;
pub(crate) use self::unsubscribe::unsubscribe;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

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

/// Counts subscribe handshakes refused, by status (`events_hub_handshakes_refused_total`):
/// every refusal, from the credential check to admission, goes through here.
pub(crate) async fn count_refused_handshakes(
    axum::extract::State(app): axum::extract::State<crate::app::state::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if let (Some(metrics), true) = (&app.metrics, status.as_u16() >= 400) {
        metrics.handshake_refused(status.as_u16());
    }
    response
}
