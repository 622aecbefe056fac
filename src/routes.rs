//! The route handlers: subscribe upgrade, unsubscribe, publish, history, health. `app` puts
//! them on paths.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::state::AppState;
use crate::auth::{self, Identity};
use crate::config::{EVENTS_PUBLISH, READ_ONLY};
use crate::error::{ApiError, RefusalReason};
use crate::hub::{ChannelId, Resume};
use crate::protocol;
use crate::ws::{self, Session};

/// Largest unsubscribe body read.
const MAX_UNSUBSCRIBE_BYTES: usize = 16 * 1024;
/// Socket buffers: tungstenite's 128 KiB defaults would cost 256 KiB per idle connection.
const READ_BUFFER_BYTES: usize = 2 * 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

pub(crate) async fn subscribe(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    identity: Identity,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    identity.require(READ_ONLY)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::UpgradeRequired(format!(
            "{rejection}; connect with a WebSocket client, e.g. websocat or wscat"
        ))
    })?;
    if app.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("the hub is shutting down".into()));
    }
    check_origin(&app.settings.admission.allowed_origins, &headers)?;

    let pairs: Vec<(String, String)> = auth::form_pairs(query.as_deref().unwrap_or("")).collect();
    // Every `event_types` value, merged before the names are normalised and de-duplicated.
    let requested = protocol::split_event_types(
        &pairs
            .iter()
            .filter(|(k, _)| k == "event_types")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    let channels = app.hub.channels();
    let resolved = channels.resolve(&requested);
    let subscriptions: Vec<ChannelId> = channels.subscription_list(&resolved.known);
    let resume = resume_request(&app, &pairs, &subscriptions)?;

    let ip = app.client_ips.resolve(peer, &headers);
    let ticket = app.admission.admit(ip, &identity)?;

    let hub = app.hub.clone();
    let settings = app.session_settings.clone();
    let shutdown = app.shutdown.clone();
    let tracker = app.sessions.token();
    Ok(
        socket_config(upgrade, app.settings.limits.max_message_bytes)
            .on_failed_upgrade(|error| tracing::debug!(%error, "upgrade failed"))
            .on_upgrade(move |socket| {
                let (client, recovery) = hub.register(&identity, subscriptions, &resume);
                ws::run(
                    socket,
                    Session {
                        client,
                        ticket,
                        ignored: resolved.unknown,
                        recovery,
                        settings,
                        shutdown,
                        tracker,
                    },
                )
            }),
    )
}

/// Reads `since`, `last_event_id` and `epoch` from a subscribe query. A cursor must name a
/// channel the socket subscribes to: a resume that could not be honoured is refused with `400`
/// before the upgrade, never silently dropped.
fn resume_request(
    app: &AppState,
    pairs: &[(String, String)],
    subscriptions: &[ChannelId],
) -> Result<Resume, ApiError> {
    let channels = app.hub.channels();
    let mut resume = Resume::default();
    let subscribed = |name: &str, what: &str| {
        let Some(channel) = channels.id(name) else {
            return Err(ApiError::BadRequest(format!(
                "{what} names {name:?}, which is not an event type; valid event types: {}",
                channels.describe()
            )));
        };
        if !subscriptions.contains(&channel) {
            return Err(ApiError::BadRequest(format!(
                "{what} names {name:?}, which this connection does not subscribe to; add it to event_types"
            )));
        }
        Ok(channel)
    };
    for (key, value) in pairs {
        match key.as_str() {
            "since" => {
                for (name, seq) in protocol::parse_since(value).map_err(ApiError::BadRequest)? {
                    let channel = subscribed(&name, "since")?;
                    if resume.since.iter().any(|(c, _)| *c == channel) {
                        return Err(ApiError::BadRequest(format!(
                            "since: {name:?} is given twice"
                        )));
                    }
                    resume.since.push((channel, seq));
                }
            }
            "epoch" => {
                let epoch = value.trim().parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "epoch {value:?} is not a number; send the `epoch` of the events you have"
                    ))
                })?;
                resume.epoch = Some(epoch);
            }
            _ => {}
        }
    }
    if let Some((_, id)) = pairs.iter().find(|(k, _)| k == "last_event_id") {
        let id = id.trim().to_ascii_lowercase();
        match app.hub.locate(&id) {
            Some((channel, seq)) => {
                let name = channels.name(channel);
                let channel = subscribed(name, "last_event_id")?;
                if resume.since.iter().any(|(c, _)| *c == channel) {
                    return Err(ApiError::BadRequest(format!(
                        "last_event_id and since both name {name:?}; send one"
                    )));
                }
                resume.since.push((channel, seq));
            }
            None => resume.unknown_event_id = Some(id),
        }
    }
    Ok(resume)
}

/// The socket configuration every WebSocket of the hub gets.
fn socket_config(upgrade: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// Test-only router for `events-hub conformance-echo`: every path upgrades, without
/// credentials, to [`ws::echo`] with the hub's own socket configuration.
pub fn conformance_router(state: AppState) -> Router {
    Router::new()
        .fallback(
            |State(app): State<AppState>, upgrade: WebSocketUpgrade| async move {
                socket_config(upgrade, app.settings.limits.max_message_bytes).on_upgrade(ws::echo)
            },
        )
        .with_state(state)
}

/// Browsers always send `Origin` on a WebSocket handshake; when an allowlist is configured, a
/// page from anywhere else may not use a visitor's credentials to open a socket.
fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "origin {origin:?} is not allowed to open WebSockets on this hub"
        )))
    }
}

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
    identity: Identity,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UnsubscribeReply>, ApiError> {
    identity.require(READ_ONLY)?;
    let channels = app.hub.channels();
    let usage = || {
        format!(
            "send {{\"client_id\": \"<uuid>\", \"event_types\": [\"pdfm\"]}}; valid event types: {}",
            channels.describe()
        )
    };
    let bytes = read_body(&app, &headers, body, MAX_UNSUBSCRIBE_BYTES).await?;
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

    let outcome = app.hub.unsubscribe(client_id, &identity, &requested)?;
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

/// Reads a request body of at most `limit` bytes within `body_read_timeout`: `413` for a larger
/// one, `408` for one that trickles in too slowly.
async fn read_body(
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

/// Most events one `GET /v1/events` returns.
const MAX_HISTORY_PAGE: usize = 1000;

/// `GET /v1/events?event_type=pdfm&since=<seq>&limit=N`: kept events after `since`, for
/// clients that poll instead of holding a socket.
pub(crate) async fn history(
    State(app): State<AppState>,
    identity: Identity,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    identity.require(READ_ONLY)?;
    let channels = app.hub.channels();
    let mut channel = None;
    let mut since = 0u64;
    let mut limit = 100usize;
    let mut epoch = None;
    for (key, value) in auth::form_pairs(query.as_deref().unwrap_or("")) {
        let number = |what: &str| {
            value.trim().parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("{what} {value:?} is not a whole number >= 0"))
            })
        };
        match key.as_str() {
            "event_type" => {
                let name = value.trim().to_ascii_lowercase();
                channel = Some(channels.id(&name).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "unknown event_type {value:?}; valid event types: {}",
                        channels.describe()
                    ))
                })?);
            }
            "since" => since = number("since")?,
            "epoch" => epoch = Some(number("epoch")?),
            "limit" => {
                limit = usize::try_from(number("limit")?).unwrap_or(usize::MAX);
                if limit == 0 || limit > MAX_HISTORY_PAGE {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be 1 to {MAX_HISTORY_PAGE}"
                    )));
                }
            }
            _ => {}
        }
    }
    let channel = channel.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "missing event_type: GET /v1/events?event_type=pdfm&since=<seq>&limit=100; valid event types: {}",
            channels.describe()
        ))
    })?;
    let hub = &app.hub;
    let other_epoch = epoch.filter(|&e| e != hub.epoch());
    // A cursor from another epoch means nothing here: start from the oldest kept event.
    let after = if other_epoch.is_some() { 0 } else { since };
    let page = hub.history(channel, after, limit);
    let reason = match (other_epoch, &page.gap) {
        (Some(epoch), _) => Some(hub.other_epoch(epoch)),
        (None, Some(gap)) => Some(gap.describe(channels.name(channel), after)),
        (None, None) => None,
    };
    let reply = HistoryReply {
        event_type: channels.name(channel),
        epoch: hub.epoch(),
        oldest_seq: page.oldest_seq,
        last_seq: page.last_seq,
        recovered: reason.is_none(),
        reason,
        next_since: page.next_since,
        more: page.next_since < page.last_seq,
        // Kept frames are the hub's own JSON: embedded as they are, not re-encoded.
        events: page
            .frames
            .iter()
            .filter_map(|f| serde_json::from_str(f.as_str()).ok())
            .collect(),
    };
    Ok(Json(reply).into_response())
}

/// The `GET /v1/events` answer.
#[derive(serde::Serialize)]
pub(crate) struct HistoryReply<'a> {
    event_type: &'a str,
    epoch: u64,
    oldest_seq: Option<u64>,
    last_seq: u64,
    /// True when `events` continue right after `since`, with nothing missing in between.
    recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Pass as `since` to read on.
    next_since: u64,
    more: bool,
    events: Vec<&'a serde_json::value::RawValue>,
}

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(
    State(app): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if app.shutdown.is_cancelled() || !app.ready.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable("the hub is shutting down".into()));
    }
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

pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {method} {}; see docs/api.md",
        uri.path()
    ))
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One line per request, with the path only: query strings may carry `access_token`.
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
