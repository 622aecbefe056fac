//! A cluster node's shared state: the connection, the keys, and per channel how far this
//! node has delivered. `publish`, `reads`, `catchup` and `delivery` each add methods to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use tokio::sync::{Mutex, Notify, RwLock};

use super::RedisFailure;
use super::keys::Keys;
use crate::channels::{ChannelId, Channels};
use crate::config::HistoryLimits;
use crate::fanout::Fanout;
use crate::metrics::Metrics;

/// How long one Redis command may take before the caller gets `503`.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands in flight on the shared connection: a stalled Redis makes callers wait (then
/// fail), it does not grow a queue without bound.
pub(super) const CONCURRENCY_LIMIT: usize = 1024;

/// What this node has handed to its fan-out for one channel.
#[derive(Debug, Default)]
pub(super) struct Local {
    /// The epoch `delivered` counts in; 0 until the node first heard from Redis.
    pub epoch: u64,
    /// The newest seq delivered to this node's sockets.
    pub delivered: u64,
}

pub(super) struct Inner {
    /// This node's name in lease members.
    pub node_id: String,
    /// Leases this node holds: connection → its key, renewed by `lease`.
    pub leases: dashmap::DashMap<String, String>,
    pub lease_ttl: Duration,
    /// Clients of this node in the registry: id → (key, value), renewed with the leases.
    pub announced: dashmap::DashMap<uuid::Uuid, (String, String)>,
    /// Relayed requests of this node awaiting their answer.
    pub pending: dashmap::DashMap<uuid::Uuid, tokio::sync::oneshot::Sender<String>>,
    /// Requests from other nodes for this node's hub (bounded: a flood is refused, and its
    /// senders time out with 503).
    pub relayed: tokio::sync::mpsc::Sender<crate::broker::Relayed>,
    pub channels: Arc<Channels>,
    pub fanout: Arc<Fanout>,
    pub keys: Keys,
    /// By `ChannelId::index`.
    pub limits: Vec<HistoryLimits>,
    pub client: ::redis::Client,
    pub conn: ConnectionManager,
    /// The cluster's epoch as last seen; 0 before the first answer.
    pub epoch: AtomicU64,
    /// Held while delivering on the channel and while attaching to it: a client attaches
    /// exactly where delivery stands.
    pub local: Vec<Mutex<Local>>,
    /// The newest seq this node published per channel, so `close` can wait for its delivery.
    pub published: Vec<AtomicU64>,
    /// Woken after every delivery.
    pub progress: Notify,
    /// Whether the pub/sub session is up and caught up.
    pub up: AtomicBool,
    pub closed: RwLock<bool>,
    /// Per channel: whether the pub/sub connection subscribes to it now (`interest`).
    pub subscribed: Vec<AtomicBool>,
    /// Per channel: the other nodes' subscribers as they last reported them (`audience`).
    pub elsewhere: Vec<std::sync::atomic::AtomicUsize>,
    /// Per channel: clients attaching now, whose receivers are not open yet.
    pub attaching: Vec<std::sync::atomic::AtomicUsize>,
    /// Asks the pub/sub task to follow a channel.
    pub control: tokio::sync::mpsc::Sender<(ChannelId, tokio::sync::oneshot::Sender<()>)>,
    pub metrics: Option<Arc<Metrics>>,
    /// `[cluster] pubsub_backlog`: pub/sub messages that may wait for delivery (`backlog`).
    pub pubsub_backlog: usize,
}

impl Inner {
    /// A command on the shared connection, bounded by [`RESPONSE_TIMEOUT`] (the connection's
    /// own timeout covers the answer; this covers a connect that hangs).
    pub async fn call<T, F>(
        &self,
        run: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, RedisFailure>
    where
        F: Future<Output = ::redis::RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT * 2, run(self.conn.clone())).await;
        if let Some(metrics) = &self.metrics {
            metrics.redis_call(started.elapsed());
        }
        answer
            .map_err(|_| RedisFailure::Timeout(RESPONSE_TIMEOUT * 2))?
            .map_err(Into::into)
    }

    /// [`call`](Self::call) in the background, for a clean-up its caller must not wait for
    /// (a socket's end); what it cleans up expires by itself, so a failure is only logged.
    pub fn call_in_background<T, F>(
        self: &Arc<Self>,
        what: &'static str,
        run: impl FnOnce(ConnectionManager) -> F + Send + 'static,
    ) where
        T: Send + 'static,
        F: Future<Output = ::redis::RedisResult<T>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(error) = inner.call(run).await {
                tracing::debug!(%error, "cluster: {what} not done; it expires by itself");
            }
        });
    }

    pub fn count(&self, event: crate::metrics::ClusterEvent) {
        if let Some(metrics) = &self.metrics {
            metrics.cluster(event);
        }
    }

    pub fn channel_name(&self, channel: ChannelId) -> &str {
        self.channels.name(channel)
    }
}
