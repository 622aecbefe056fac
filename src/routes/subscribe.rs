//! `GET /v1/ws/subscribe`: authentication, `event_types`, resume, `Origin`, admission, then
//! the upgrade to a socket task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::admission::Ticket;
use crate::app::state::AppState;
use crate::auth;
use crate::broker::IpLease;
use crate::channels::ChannelId;
use crate::cloudevents;
use crate::error::ApiError;
use crate::filter::{self, Filter};
use crate::hub::{Client, Filters, Hub, Recovery, Resume};
use crate::identity::Identity;
use crate::metrics::{Metrics, ResumeOutcome};
use crate::protocol;
use crate::ws::{self, Session, SessionSettings};

use super::extract::{Claimed, Read};

/// Socket buffers: tungstenite's 128 KiB defaults would cost 256 KiB per idle connection. The
/// read buffer is zero-filled to its size before every read (tungstenite `FrameCodec`), so all
/// of it is resident for every socket; client frames are commands and pongs of a few hundred
/// bytes, and a larger frame (up to `max_message_bytes`) grows the buffer while it is read.
const READ_BUFFER_BYTES: usize = 512;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

pub(crate) async fn subscribe(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Claimed(identity, _): Claimed<Read>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::UpgradeRequired(format!(
            "{rejection}; connect with a WebSocket client, e.g. websocat or wscat"
        ))
    })?;
    if app.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("the hub is shutting down".into()));
    }
    // Fail closed: a cluster node without its Redis cannot number what it would deliver.
    app.hub.available().map_err(ApiError::Unavailable)?;
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
    let resume = resume_request(&app, &pairs, &subscriptions).await?;
    let filters = filter_request(&app, &pairs, &subscriptions)?;

    let ip = app.client_ips.resolve(peer, &headers);
    let ticket = app.admission.admit(ip, &identity)?;
    // This node's slot first (atomic here), then the cluster's (atomic in Redis).
    let lease = app
        .hub
        .lease_ip(ip, app.settings.admission.max_connections_per_ip.get())
        .await?;

    let opening = Box::new(Opening {
        identity,
        ip,
        subscriptions,
        resume,
        filters,
        ignored: resolved.unknown,
        ticket,
        lease,
        hub: app.hub.clone(),
        metrics: app.metrics.clone(),
        settings: app.session_settings.clone(),
        shutdown: app.shutdown.clone(),
        tracker: app.sessions.token(),
    });
    // A client offering `cloudevents.json` gets it and reads every frame as a CloudEvent
    // (websockets-protocol-binding.md §1.4); one offering only others gets no protocol.
    Ok(
        socket_config(upgrade, app.settings.limits.max_message_bytes)
            .protocols([cloudevents::SUBPROTOCOL])
            .on_failed_upgrade(|error| tracing::debug!(%error, "upgrade failed"))
            .on_upgrade(move |socket| open(Box::new(socket), opening)),
    )
}

/// Everything an admitted handshake hands to its socket task. Boxed, with the socket: the task
/// lives as long as the connection, and a future keeps every value it was given for its whole
/// life, so what is only needed to open the session should take one pointer, not its size.
struct Opening {
    identity: Identity,
    ip: IpAddr,
    subscriptions: Vec<ChannelId>,
    resume: Resume,
    filters: Filters,
    ignored: Vec<String>,
    ticket: Ticket,
    /// This IP's slot across the cluster (nothing on a single node).
    lease: IpLease,
    hub: Arc<Hub>,
    metrics: Option<Arc<Metrics>>,
    settings: SessionSettings,
    shutdown: CancellationToken,
    tracker: TaskTrackerToken,
}

impl Opening {
    /// What the session keeps moves on; the rest (the identity with its claims, the resume
    /// request) and the box are freed here, not when the socket ends.
    fn into_session(self: Box<Self>, client: Client, recovery: Recovery) -> Session {
        let Opening {
            ticket,
            ignored,
            settings,
            shutdown,
            tracker,
            ..
        } = *self;
        Session {
            client,
            ticket,
            ignored,
            recovery,
            settings,
            shutdown,
            tracker,
        }
    }
}

/// Registers the client and serves its socket to the end.
async fn open(socket: Box<WebSocket>, mut opening: Box<Opening>) {
    let subscriptions = std::mem::take(&mut opening.subscriptions);
    let filters = std::mem::take(&mut opening.filters);
    let (client, recovery) = opening
        .hub
        .register(
            &opening.identity,
            opening.ip,
            subscriptions,
            &opening.resume,
            filters,
        )
        .await;
    // Reachable from the other nodes of a cluster while the socket lives.
    let announced = opening.hub.announce(&client).await;
    count_resume(opening.metrics.as_deref(), recovery.recovered);
    let span = session_span(&client.id(), &opening.identity, opening.ticket.ip());
    let lease = std::mem::replace(&mut opening.lease, IpLease::local());
    let session = opening.into_session(client, recovery);
    // Held for the socket's life, freed however it ends.
    let _held = (lease, announced);
    ws::run(socket, session).instrument(span).await
}

fn count_resume(metrics: Option<&Metrics>, recovered: Option<bool>) {
    let outcome = match recovered {
        Some(true) => ResumeOutcome::Recovered,
        Some(false) => ResumeOutcome::Incomplete,
        None => return,
    };
    if let Some(metrics) = metrics {
        metrics.resumed(outcome);
    }
}

/// The span every log line of a socket is written in: which client, whose, from where (the
/// admitted client IP, not a proxy's). Never a credential.
fn session_span(
    client_id: &uuid::Uuid,
    identity: &Identity,
    ip: std::net::IpAddr,
) -> tracing::Span {
    tracing::info_span!(
        "session",
        %client_id,
        owner = %identity.subject,
        method = ?identity.method,
        %ip
    )
}

/// Reads `since`, `last_event_id` and `epoch` from a subscribe query. A cursor must name a
/// channel the socket subscribes to: a resume that could not be honoured is refused with `400`
/// before the upgrade, never silently dropped.
async fn resume_request(
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
    if let Some((_, value)) = pairs.iter().find(|(k, _)| k == "since_time") {
        since_time(app, value, subscriptions, &mut resume, pairs).await?;
    }
    if let Some((_, id)) = pairs.iter().find(|(k, _)| k == "last_event_id") {
        let id = id.trim().to_ascii_lowercase();
        match app.hub.locate(&id).await {
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

/// Every `filter=<event_type>:<filter>` of a subscribe query, compiled: at most one per
/// channel, each for a channel the socket subscribes to. A bad one is refused with `400` before
/// the upgrade.
fn filter_request(
    app: &AppState,
    pairs: &[(String, String)],
    subscriptions: &[ChannelId],
) -> Result<Filters, ApiError> {
    let channels = app.hub.channels();
    let mut filters = Filters::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "filter") {
        let (name, text) = filter::split_channel(value)?;
        let channel = channels
            .id(&name)
            .filter(|c| subscriptions.contains(c))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "filter names {name:?}, which this connection does not subscribe to; add it to event_types (valid event types: {})",
                    channels.describe()
                ))
            })?;
        if filters.iter().any(|(c, _)| *c == channel) {
            return Err(ApiError::BadRequest(format!(
                "filter: {name:?} is given twice; join the conditions with `and` in one filter"
            )));
        }
        filters.push((channel, Filter::parse(text)?));
    }
    Ok(filters)
}

/// `since_time=<RFC 3339>`: every subscribed channel resumes from the first event published at
/// or after that instant. The cursors are the hub's own, of its current epoch, so `epoch` is not
/// needed; `since` or `last_event_id` beside it would be a second answer to one question.
async fn since_time(
    app: &AppState,
    value: &str,
    subscriptions: &[ChannelId],
    resume: &mut Resume,
    pairs: &[(String, String)],
) -> Result<(), ApiError> {
    if pairs
        .iter()
        .any(|(k, _)| k == "since" || k == "last_event_id")
    {
        return Err(ApiError::BadRequest(
            "since_time with since or last_event_id: send one of them".into(),
        ));
    }
    let at = protocol::parse_since_time(value).map_err(ApiError::BadRequest)?;
    resume.epoch = None;
    resume.since = Vec::with_capacity(subscriptions.len());
    for &channel in subscriptions {
        resume
            .since
            .push((channel, app.hub.seq_at(channel, at).await));
    }
    Ok(())
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
