//! Prometheus Alertmanager as a source: its webhook (`POST /v1/sources/alertmanager`) becomes
//! one event per alert, `ALERT_FIRING` or `ALERT_RESOLVED`, on the configured channel.
//!
//! The payload is read as Alertmanager writes it (version 4): `notify/webhook/webhook.go`
//! (`Message`: the embedded `template.Data`, `version`, `groupKey`, `truncatedAlerts`) and
//! `template/template.go` (`Data`, `Alert`, `KV`) in the `prometheus/alertmanager` repository.
//! Alertmanager retries a notification that failed; each alert is published under an
//! idempotency key of its own (fingerprint, status, start, end), so a retry publishes nothing
//! twice, and a malformed payload gets a 4xx, which Alertmanager does not retry.

pub mod config;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// `notify/webhook/webhook.go`'s `Message`, with `template.Data` flattened into it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub status: String,
    pub alerts: Vec<Alert>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
}

/// `template/template.go`'s `Alert`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// One alert as the hub publishes it.
pub struct AlertEvent {
    pub message: &'static str,
    pub body: Value,
    /// Same for a retry of the same notification of this alert, different for any other.
    pub key: String,
}

/// Reads a webhook body; the error says what is wrong, for a 400.
pub fn parse(body: &[u8]) -> Result<Notification, String> {
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if notification.version != "4" {
        return Err(format!(
            "Alertmanager webhook version {:?}; this hub reads version \"4\"",
            notification.version
        ));
    }
    for (i, alert) in notification.alerts.iter().enumerate() {
        if alert.status != "firing" && alert.status != "resolved" {
            return Err(format!(
                "alert {i}: status {:?} is neither \"firing\" nor \"resolved\"",
                alert.status
            ));
        }
    }
    Ok(notification)
}

/// The events of a notification, one per alert, in its order.
pub fn events(notification: &Notification) -> Vec<AlertEvent> {
    notification
        .alerts
        .iter()
        .map(|alert| AlertEvent {
            message: if alert.status == "firing" {
                "ALERT_FIRING"
            } else {
                "ALERT_RESOLVED"
            },
            body: json!({
                "alertname": alert.labels.get("alertname"),
                "status": alert.status,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "starts_at": alert.starts_at,
                "ends_at": alert.ends_at,
                "generator_url": alert.generator_url,
                "fingerprint": alert.fingerprint,
                "receiver": notification.receiver,
                "group_key": notification.group_key,
                "external_url": notification.external_url,
            }),
            key: key(alert),
        })
        .collect()
}

/// The alert's identity in this notification: Alertmanager's fingerprint (or, when a sender
/// leaves it out, the labels), its status and its times.
fn key(alert: &Alert) -> String {
    let identity = if alert.fingerprint.is_empty() {
        serde_json::to_string(&alert.labels).unwrap_or_default()
    } else {
        alert.fingerprint.clone()
    };
    format!(
        "alertmanager\u{0}{identity}\u{0}{}\u{0}{}\u{0}{}",
        alert.status, alert.starts_at, alert.ends_at
    )
}
