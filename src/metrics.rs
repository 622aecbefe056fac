//! Prometheus metrics (`GET /metrics`), through `prometheus-client`: each hub owns its own
//! registry (no process-global recorder), so hubs started side by side in one test process
//! count separately and a test can assert exact changes.
//!
//! Two kinds of figures:
//! - **counted where they happen**, with handles made once (a per-channel `Vec`, indexed by
//!   `ChannelId`) so the hot path is one relaxed atomic add: events published and delivered,
//!   the publish→socket latency, closes, refused handshakes, resumes;
//! - **read at scrape time** ([`Snapshot`]), so they cost nothing between scrapes: live
//!   connections, subscriptions and history per channel, the sources' counters.
//!
//! Names: prefix `events_hub_`, base units (seconds, bytes), counters end in `_total`, no
//! label takes unbounded values (no client id, no IP).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::channels::{ChannelId, Channels};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Publish→socket latency buckets, in seconds: 50 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    /// The close code, or `peer` when the client closed or vanished.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Something a cluster node had to do about Redis, for `events_hub_cluster_events_total{kind}`.
#[derive(Debug, Clone, Copy)]
pub enum ClusterEvent {
    /// The pub/sub session ended and the node reconnects.
    Reconnect,
    /// A jump in a channel's seqs was filled from the stream.
    GapFill,
    /// Events left the stream before this node delivered them.
    Skipped(u64),
    /// A relayed command got no answer in time (503).
    RelayTimeout,
    /// The pub/sub backlog overflowed: the connection was dropped and the node caught up.
    FellBehind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

/// How a resume request ended, for `events_hub_resumes_total{outcome}`.
#[derive(Debug, Clone, Copy)]
pub enum ResumeOutcome {
    /// Every requested stream continues right after the client's cursor.
    Recovered,
    /// At least one stream could not be replayed (gap, other epoch, unknown event id).
    Incomplete,
}

/// The hub's metrics. `None` fields of [`AppState`](crate::app::AppState) mean metrics are
/// off, and nothing on the hot path touches them.
pub struct Metrics {
    registry: Registry,
    snapshot: std::sync::Arc<SnapshotCollector>,
    published: Vec<Counter>,
    delivered: Vec<Counter>,
    latency: Histogram,
    closes: Family<CodeLabel, Counter>,
    refused: Family<StatusLabel, Counter>,
    resumes: Family<OutcomeLabel, Counter>,
    opened: Counter,
    cluster: Family<KindLabel, Counter>,
    redis_calls: Histogram,
    relays: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(channels: &Channels) -> Self {
        let mut registry = Registry::with_prefix("events_hub");
        let per_channel = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ChannelLabel, Counter>::default();
            registry.register(name, help, family.clone());
            channels
                .ids()
                .map(|id| family.get_or_create_owned(&label(channels, id)))
                .collect::<Vec<_>>()
        };
        let published = per_channel(
            &mut registry,
            "events_published",
            "Events accepted for publishing, per channel",
        );
        let delivered = per_channel(
            &mut registry,
            "events_delivered",
            "Event frames handed to subscribers' sockets (one per recipient), per channel",
        );
        let latency = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "delivery_latency",
            "From publish to the socket task writing the event (the first of each batch)",
            Unit::Seconds,
            latency.clone(),
        );
        let closes = Family::<CodeLabel, Counter>::default();
        registry.register(
            "socket_closes",
            "Subscriber sockets ended, by close code (`peer`: the client closed or vanished)",
            closes.clone(),
        );
        let refused = Family::<StatusLabel, Counter>::default();
        registry.register(
            "handshakes_refused",
            "Subscribe handshakes refused, by HTTP status",
            refused.clone(),
        );
        let resumes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "resumes",
            "Subscribes that asked to resume, by outcome",
            resumes.clone(),
        );
        let opened = Counter::default();
        registry.register(
            "sockets_opened",
            "Subscriber sockets opened (handshakes answered 101)",
            opened.clone(),
        );
        let build = Info::new(BuildLabel {
            version: env!("CARGO_PKG_VERSION"),
        });
        registry.register("build", "The running build", build);
        zero_expected_labels(&closes, &refused, &resumes);
        let cluster = Family::<KindLabel, Counter>::default();
        registry.register(
            "cluster_events",
            "Cluster nodes: pub/sub reconnects, gaps filled from the stream, events skipped because the stream no longer held them, relayed commands unanswered",
            cluster.clone(),
        );
        let redis_calls = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "cluster_redis_call",
            "Cluster nodes: each call to Redis until its answer (publish scripts, reads, leases, registry); no samples on a single node",
            Unit::Seconds,
            redis_calls.clone(),
        );
        let relays = Histogram::new(LATENCY_BUCKETS);
        registry.register_with_unit(
            "cluster_relay",
            "Cluster nodes: a command relayed to another node (unsubscribe, targeted event) until its answer; no samples on a single node",
            Unit::Seconds,
            relays.clone(),
        );
        let snapshot = std::sync::Arc::new(SnapshotCollector::default());
        registry.register_collector(Box::new(std::sync::Arc::clone(&snapshot)));
        Self {
            cluster,
            redis_calls,
            relays,
            registry,
            snapshot,
            published,
            delivered,
            latency,
            closes,
            refused,
            resumes,
            opened,
        }
    }

    pub fn cluster(&self, event: ClusterEvent) {
        let (kind, n) = match event {
            ClusterEvent::Reconnect => ("reconnect", 1),
            ClusterEvent::GapFill => ("gap_fill", 1),
            ClusterEvent::Skipped(n) => ("skipped", n),
            ClusterEvent::RelayTimeout => ("relay_timeout", 1),
            ClusterEvent::FellBehind => ("fell_behind", 1),
        };
        self.cluster.get_or_create(&KindLabel { kind }).inc_by(n);
    }

    /// One Redis call of a cluster node took `elapsed` (answered, failed or timed out).
    pub fn redis_call(&self, elapsed: Duration) {
        self.redis_calls.observe(elapsed.as_secs_f64());
    }

    /// A relayed command was answered after `elapsed`.
    pub fn relayed(&self, elapsed: Duration) {
        self.relays.observe(elapsed.as_secs_f64());
    }

    /// One event published on `channel`, handed to `recipients` sockets.
    pub fn published(&self, channel: ChannelId, recipients: usize) {
        if let Some(c) = self.published.get(channel.index()) {
            c.inc();
        }
        if let Some(c) = self.delivered.get(channel.index()) {
            c.inc_by(recipients as u64);
        }
    }

    pub fn delivery_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn socket_opened(&self) {
        self.opened.inc();
    }

    /// A socket ended: with the hub's close `code`, or `None` when the peer ended it.
    pub fn socket_closed(&self, code: Option<u16>) {
        let code = code.map_or_else(|| "peer".to_owned(), |c| c.to_string());
        self.closes.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn handshake_refused(&self, status: u16) {
        let status = status.to_string();
        self.refused.get_or_create(&StatusLabel { status }).inc();
    }

    pub fn resumed(&self, outcome: ResumeOutcome) {
        let outcome = match outcome {
            ResumeOutcome::Recovered => "recovered",
            ResumeOutcome::Incomplete => "incomplete",
        };
        self.resumes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Events handed to sockets so far, all channels (the `messages_sent` of `/v1/ws/stats`).
    pub fn delivered_total(&self) -> u64 {
        self.delivered.iter().map(Counter::get).sum()
    }

    /// Events published on `channel` so far, and handed to sockets.
    pub fn channel_totals(&self, channel: ChannelId) -> (u64, u64) {
        let get = |list: &[Counter]| list.get(channel.index()).map_or(0, Counter::get);
        (get(&self.published), get(&self.delivered))
    }

    /// The text exposition, with `snapshot` as the scrape-time figures.
    pub fn render(&self, snapshot: Snapshot) -> String {
        // One scrape at a time: the snapshot is set and encoded together.
        let mut current = self.snapshot.0.lock().unwrap_or_else(|p| p.into_inner());
        *current = snapshot;
        drop(current);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The expected label values start at 0, so `rate()` and alerts work from the first scrape.
fn zero_expected_labels(
    closes: &Family<CodeLabel, Counter>,
    refused: &Family<StatusLabel, Counter>,
    resumes: &Family<OutcomeLabel, Counter>,
) {
    for code in [
        "peer", "1001", "1002", "1007", "1008", "1009", "4000", "4001", "4008",
    ] {
        let _ = closes.get_or_create_owned(&CodeLabel { code: code.into() });
    }
    for status in ["400", "401", "403", "409", "426", "429", "503"] {
        let status = status.into();
        let _ = refused.get_or_create_owned(&StatusLabel { status });
    }
    for outcome in ["recovered", "incomplete"] {
        let _ = resumes.get_or_create_owned(&OutcomeLabel { outcome });
    }
}

fn label(channels: &Channels, id: ChannelId) -> ChannelLabel {
    ChannelLabel {
        channel: channels.name(id).to_owned(),
    }
}

/// Figures read at scrape time, by the route that serves `/metrics`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub connections: u64,
    /// Per channel: name, live subscribers, kept events, kept bytes.
    pub channels: Vec<ChannelSample>,
    pub sources: Vec<SourceSample>,
    /// Whether this cluster node's Redis pub/sub is up and caught up; `None` on a single node.
    pub cluster_connected: Option<bool>,
}

#[derive(Debug, Default)]
pub struct ChannelSample {
    pub channel: String,
    pub subscribers: u64,
    pub history_events: u64,
    pub history_bytes: u64,
}

/// One source's figures, from its `/readyz` status.
#[derive(Debug, Default)]
pub struct SourceSample {
    pub source: String,
    pub index: usize,
    pub connected: Option<bool>,
    pub received: Option<u64>,
    pub published: Option<u64>,
    /// Messages skipped, and those that could not be read, by reason.
    pub skipped: Vec<(String, u64)>,
    pub malformed: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
    index: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReasonLabel {
    source: String,
    index: String,
    reason: String,
}

#[derive(Debug, Default)]
struct SnapshotCollector(Mutex<Snapshot>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let connections = ConstGauge::new(snapshot.connections as i64);
        connections.encode(encoder.encode_descriptor(
            "connections",
            "Live subscriber sockets.",
            None,
            connections.metric_type(),
        )?)?;
        if let Some(up) = snapshot.cluster_connected {
            let up = ConstGauge::new(i64::from(up));
            up.encode(encoder.encode_descriptor(
                "cluster_connected",
                "1 while this node's Redis pub/sub is up and caught up (cluster mode only).",
                None,
                up.metric_type(),
            )?)?;
        }
        encode_channels(&mut encoder, &snapshot.channels)?;
        encode_sources(&mut encoder, &snapshot.sources)
    }
}

/// A scrape-time figure: its name, help, unit, and how to read it off a sample.
type Figure<T, V> = (&'static str, &'static str, Option<Unit>, fn(&T) -> V);

fn encode_channels(
    encoder: &mut DescriptorEncoder,
    channels: &[ChannelSample],
) -> Result<(), std::fmt::Error> {
    let gauges: [Figure<ChannelSample, u64>; 3] = [
        (
            "subscriptions",
            "Live sockets subscribed, per channel.",
            None,
            |c| c.subscribers,
        ),
        (
            "history_events",
            "Events kept for resume, per channel.",
            None,
            |c| c.history_events,
        ),
        (
            "history",
            "Bytes of events kept for resume, per channel.",
            Some(Unit::Bytes),
            |c| c.history_bytes,
        ),
    ];
    for (name, help, unit, value) in gauges {
        let mut family = encoder.encode_descriptor(
            name,
            help,
            unit.as_ref(),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for sample in channels {
            let labels = ChannelLabel {
                channel: sample.channel.clone(),
            };
            ConstGauge::new(value(sample) as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn encode_sources(
    encoder: &mut DescriptorEncoder,
    sources: &[SourceSample],
) -> Result<(), std::fmt::Error> {
    if sources.is_empty() {
        return Ok(());
    }
    let key = |s: &SourceSample| SourceLabel {
        source: s.source.clone(),
        index: s.index.to_string(),
    };
    let mut connected = encoder.encode_descriptor(
        "source_connected",
        "1 while the source is connected to its upstream.",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for s in sources {
        if let Some(up) = s.connected {
            ConstGauge::new(i64::from(up)).encode(connected.encode_family(&key(s))?)?;
        }
    }
    encode_source_counters(encoder, sources)
}

/// A source's counters by reason: skipped on purpose, and unreadable.
fn encode_source_counters(
    encoder: &mut DescriptorEncoder,
    sources: &[SourceSample],
) -> Result<(), std::fmt::Error> {
    let key = |s: &SourceSample| SourceLabel {
        source: s.source.clone(),
        index: s.index.to_string(),
    };
    let counters: [Figure<SourceSample, Option<u64>>; 2] = [
        (
            "source_messages_received",
            "Messages the source received from its upstream.",
            None,
            |s| s.received,
        ),
        (
            "source_events_published",
            "Events the source published.",
            None,
            |s| s.published,
        ),
    ];
    for (name, help, _, value) in counters {
        let rows = sources.iter().filter_map(|s| Some((key(s), value(s)?)));
        encode_counter_family(encoder, name, help, rows)?;
    }
    type ByReason = for<'a> fn(&'a SourceSample) -> &'a [(String, u64)];
    let by_reason: [(&str, &str, ByReason); 2] = [
        (
            "source_messages_skipped",
            "Messages the source skipped on purpose, by reason.",
            |s| &s.skipped,
        ),
        (
            "source_messages_malformed",
            "Messages the source could not read, by reason.",
            |s| &s.malformed,
        ),
    ];
    for (name, help, list) in by_reason {
        let rows = sources.iter().flat_map(|s| {
            list(s).iter().map(|(reason, count)| {
                let labels = SourceReasonLabel {
                    source: s.source.clone(),
                    index: s.index.to_string(),
                    reason: reason.clone(),
                };
                (labels, *count)
            })
        });
        encode_counter_family(encoder, name, help, rows)?;
    }
    Ok(())
}

/// One counter family read at scrape time: its rows of labels and values.
fn encode_counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (Metrics, Channels) {
        let channels = Channels::new(&["global".into(), "pdfm".into()]);
        (Metrics::new(&channels), channels)
    }

    #[test]
    fn names_follow_the_conventions() {
        let (m, channels) = metrics();
        let pdfm = channels.id("pdfm").expect("configured");
        m.published(pdfm, 3);
        m.socket_closed(Some(4008));
        m.delivery_latency(Duration::from_micros(300));
        let text = m.render(Snapshot {
            connections: 2,
            channels: vec![ChannelSample {
                channel: "pdfm".into(),
                subscribers: 2,
                history_events: 1,
                history_bytes: 120,
            }],
            cluster_connected: None,
            sources: Vec::new(),
        });
        for line in [
            "events_hub_events_published_total{channel=\"pdfm\"} 1",
            "events_hub_events_delivered_total{channel=\"pdfm\"} 3",
            "events_hub_events_published_total{channel=\"global\"} 0",
            "events_hub_socket_closes_total{code=\"4008\"} 1",
            "events_hub_delivery_latency_seconds_count 1",
            "events_hub_connections 2",
            "events_hub_subscriptions{channel=\"pdfm\"} 2",
            "events_hub_history_bytes{channel=\"pdfm\"} 120",
            "events_hub_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
