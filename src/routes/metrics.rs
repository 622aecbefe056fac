//! `GET /metrics`: the Prometheus exposition, with the figures that are read at scrape time
//! (connections, subscriptions and history per channel, the sources' counters).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::state::AppState;
use crate::error::ApiError;
use crate::metrics::{self, ChannelSample, Snapshot, SourceSample};

pub(crate) async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let Some(metrics) = &app.metrics else {
        return Err(ApiError::NotFound(
            "metrics are off ([metrics] enabled = false)".into(),
        ));
    };
    let text = metrics.render(snapshot(&app).await);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

async fn snapshot(app: &AppState) -> Snapshot {
    let hub = &app.hub;
    let subscribers = hub.subscribers();
    let mut channels = Vec::new();
    for channel in hub.channels().ids() {
        let kept = hub.kept(channel).await;
        channels.push(ChannelSample {
            channel: hub.channels().name(channel).to_owned(),
            subscribers: subscribers.get(channel.index()).copied().unwrap_or(0),
            history_events: kept.events as u64,
            history_bytes: kept.bytes as u64,
        });
    }
    Snapshot {
        connections: hub.client_count() as u64,
        channels,
        sources: sources(&app.sources.status()),
        cluster_connected: hub.cluster_connected(),
    }
}

/// Each source's figures, read from its `/readyz` status by the names sources share:
/// `connected`, `received`, `published`, and `skipped_by` / `malformed` tables of counts.
fn sources(status: &Value) -> Vec<SourceSample> {
    let Some(by_kind) = status.as_object() else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    for (kind, list) in by_kind {
        for (index, source) in list.as_array().into_iter().flatten().enumerate() {
            let counts = |key: &str| {
                source[key]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(reason, n)| n.as_u64().map(|n| (reason.clone(), n)))
                    .collect()
            };
            samples.push(SourceSample {
                source: kind.clone(),
                index,
                connected: source["connected"].as_bool(),
                received: source["received"].as_u64(),
                published: source["published"].as_u64(),
                skipped: counts("skipped_by"),
                malformed: counts("malformed"),
            });
        }
    }
    samples
}
