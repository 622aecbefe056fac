//! The admin routes (claim `EVENTS_ADMIN`): the live clients, disconnecting one, per-channel
//! figures; and the public implementation's `GET /v1/ws/clients` and `GET /v1/ws/stats` in its
//! own shapes (Parallels/prl-devops-service, `src/models/event_message.go`:
//! `EventClientInfo`, `EventEmitterStats`), with the claim checked and counters that move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::fanout::ClientState;
use crate::identity::Method;

use super::extract::{Admin, Claimed};

/// `GET /v1/admin/clients`.
pub(crate) async fn clients(State(app): State<AppState>, _: Claimed<Admin>) -> Json<Value> {
    let clients: Vec<Value> = app
        .hub
        .clients()
        .iter()
        .map(|c| client_info(&app, c))
        .collect();
    Json(json!({ "clients": clients }))
}

fn client_info(app: &AppState, client: &ClientState) -> Value {
    let activity = &client.activity;
    let (method, subject) = client.owner();
    json!({
        "client_id": client.id,
        "owner": { "method": method_name(*method), "subject": subject },
        "ip": activity.ip,
        "subscriptions": app.hub.subscription_names(client),
        "connected_since": rfc3339(activity.connected_at),
        "queue_depth": activity.queue_depth.load(Ordering::Relaxed),
        "last_frame_received": millis(&activity.last_received_ms).map(rfc3339),
        "last_ping_sent": millis(&activity.last_ping_ms).map(rfc3339),
        "last_pong_received": millis(&activity.last_pong_ms).map(rfc3339),
    })
}

/// `DELETE /v1/admin/clients/{id}`: the socket closes with 4001 `disconnected by an
/// administrator`; the client may reconnect and resume.
pub(crate) async fn disconnect(
    State(app): State<AppState>,
    _: Claimed<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let client_id = Uuid::parse_str(id.trim())
        .map_err(|_| ApiError::BadRequest(format!("client id {id:?} is not a UUID")))?;
    app.hub.disconnect(client_id)?;
    Ok(Json(json!({
        "client_id": client_id,
        "disconnected": true,
        "close_code": crate::ws::close::ADMIN_DISCONNECT,
    })))
}

/// `GET /v1/admin/channels`: per channel, its subscribers, what was published and delivered,
/// and what its history holds.
pub(crate) async fn channels(State(app): State<AppState>, _: Claimed<Admin>) -> Json<Value> {
    let hub = &app.hub;
    let subscribers = hub.subscribers();
    let mut channels: Vec<Value> = Vec::new();
    for channel in hub.channels().ids() {
        let (published, delivered) = app
            .metrics
            .as_ref()
            .map(|m| m.channel_totals(channel))
            .map_or((Value::Null, Value::Null), |(p, d)| (p.into(), d.into()));
        channels.push(json!({
            "channel": hub.channels().name(channel),
            "subscribers": subscribers.get(channel.index()).copied().unwrap_or(0),
            "events_published": published,
            "events_delivered": delivered,
            "history": hub.kept(channel).await,
        }));
    }
    Json(json!({ "epoch": hub.epoch(), "channels": channels }))
}

/// `GET /v1/ws/clients`: `[]EventClientInfo`, as the public implementation answers it.
pub(crate) async fn ws_clients(State(app): State<AppState>, _: Claimed<Admin>) -> Json<Value> {
    Json(Value::Array(prl_clients(&app)))
}

/// `GET /v1/ws/stats`: `EventEmitterStats`, as the public implementation answers it, with
/// `messages_sent` counting every event handed to a socket (`events_hub_events_delivered_total`).
pub(crate) async fn ws_stats(State(app): State<AppState>, _: Claimed<Admin>) -> Json<Value> {
    let hub = &app.hub;
    let subscribers = hub.subscribers();
    let type_stats: Map<String, Value> = hub
        .channels()
        .ids()
        .map(|c| {
            let count = subscribers.get(c.index()).copied().unwrap_or(0);
            (hub.channels().name(c).to_owned(), count.into())
        })
        .collect();
    let uptime = SystemTime::now()
        .duration_since(app.started)
        .unwrap_or_default();
    Json(json!({
        "total_clients": hub.client_count(),
        "total_subscriptions": subscribers.iter().sum::<u64>(),
        "type_stats": type_stats,
        "clients": prl_clients(&app),
        "messages_sent": app.metrics.as_ref().map_or(0, |m| m.delivered_total()),
        "start_time": rfc3339(app.started),
        "uptime": go_duration(uptime),
    }))
}

/// `EventClientInfo` for every live client. The hub has one name per identity (`sub`, or the
/// API key's name), so `user_id` and `username` both carry it.
fn prl_clients(app: &AppState) -> Vec<Value> {
    app.hub
        .clients()
        .iter()
        .map(|client| {
            let activity = &client.activity;
            let (_, subject) = client.owner();
            let never = "0001-01-01T00:00:00Z".to_owned();
            let at = |ms: &AtomicU64| millis(ms).map_or_else(|| never.clone(), rfc3339);
            json!({
                "id": client.id,
                "user_id": subject,
                "username": subject,
                "connected_at": rfc3339(activity.connected_at),
                "last_ping_at": at(&activity.last_ping_ms),
                "last_pong_at": at(&activity.last_pong_ms),
                "event_subscriptions": app.hub.subscription_names(client),
                "is_alive": !client.is_disconnected(),
                "queue_depth": activity.queue_depth.load(Ordering::Relaxed),
            })
        })
        .collect()
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Jwt => "jwt",
        Method::ApiKey => "api_key",
    }
}

/// A stored time, `None` when it never happened (0).
fn millis(at: &AtomicU64) -> Option<SystemTime> {
    match at.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A duration as Go's `time.Duration.String()` writes one rounded to the second (`1h2m3s`,
/// `4m0s`, `12s`), the public implementation's `uptime`.
fn go_duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs() + u64::from(elapsed.subsec_millis() >= 500);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_go() {
        // Go: (3*time.Second).String() == "3s", (62*time.Second) == "1m2s",
        // (3600*time.Second) == "1h0m0s", 0 == "0s".
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(2_600)), "3s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90_061)), "25h1m1s");
    }
}
