//! [`RedisBroker`]: builds a node's state, starts its pub/sub task, and answers the [`Broker`]
//! methods, each a thin call into `publish` or `reads`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, Notify, RwLock};
use tokio_util::sync::CancellationToken;

use super::config::ClusterSettings;
use super::keys::Keys;
use super::state::{CONCURRENCY_LIMIT, Inner, RESPONSE_TIMEOUT};
use uuid::Uuid;

use crate::broker::{
    Announced, Attached, Broker, Event, HistoryPage, IpLease, Kept, LeaseError, PublishError,
    Receipt, RelayError, Relayed, RemoteClient,
};
use crate::channels::{ChannelId, Channels};
use crate::config::{ConfigError, HistorySettings};
use crate::fanout::Fanout;
use crate::idempotency::{Replies, Seen};
use crate::metrics::Metrics;
use crate::protocol::Frame;

/// Requests from other nodes waiting for this node's hub.
const RELAYED_QUEUE: usize = 1024;

/// The cluster broker. Dropping it stops its pub/sub task.
pub struct RedisBroker {
    inner: Arc<Inner>,
    stop: CancellationToken,
    relayed: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Relayed>>>,
}

impl RedisBroker {
    /// Starts the node's pub/sub task; nothing waits for Redis here: until it answers,
    /// publishes get `503` and handshakes are refused (see [`Broker::available`]).
    pub fn new(
        settings: &ClusterSettings,
        channels: Arc<Channels>,
        fanout: Arc<Fanout>,
        history: &HistorySettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, ConfigError> {
        let url = settings.redis_url.as_deref().unwrap_or_default();
        let refused = |why: String| ConfigError::new("cluster.redis_url", why);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(refused(
                "the cluster broker starts inside the runtime".into(),
            ));
        }
        let client = ::redis::Client::open(url).map_err(|e| refused(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_concurrency_limit(CONCURRENCY_LIMIT)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| refused(e.to_string()))?;
        let names = channels.names();
        let node_id = settings
            .node_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let (relayed_tx, relayed) = tokio::sync::mpsc::channel(RELAYED_QUEUE);
        let (control, follow) = tokio::sync::mpsc::channel(RELAYED_QUEUE);
        let inner = Arc::new(Inner {
            node_id,
            leases: dashmap::DashMap::new(),
            announced: dashmap::DashMap::new(),
            pending: dashmap::DashMap::new(),
            relayed: relayed_tx,
            lease_ttl: Duration::from_secs(settings.lease_ttl_secs),
            keys: Keys::new(&settings.key_prefix, names),
            limits: names.iter().map(|n| history.limits(n)).collect(),
            local: names.iter().map(|_| Mutex::default()).collect(),
            published: names.iter().map(|_| AtomicU64::new(0)).collect(),
            subscribed: names.iter().map(|_| AtomicBool::new(false)).collect(),
            attaching: names.iter().map(|_| Default::default()).collect(),
            elsewhere: names.iter().map(|_| Default::default()).collect(),
            control,
            channels,
            fanout,
            client,
            conn,
            epoch: AtomicU64::new(0),
            progress: Notify::new(),
            up: AtomicBool::new(false),
            closed: RwLock::new(false),
            metrics,
            pubsub_backlog: settings.pubsub_backlog,
        });
        let stop = CancellationToken::new();
        tokio::spawn(super::delivery::run(
            Arc::clone(&inner),
            follow,
            stop.clone(),
        ));
        tokio::spawn(Arc::clone(&inner).renew_leases(stop.clone()));
        Ok(Self {
            inner,
            stop,
            relayed: std::sync::Mutex::new(Some(relayed)),
        })
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Broker for RedisBroker {
    fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    fn available(&self) -> Result<(), String> {
        let inner = &self.inner;
        if inner.up.load(Ordering::Acquire) && self.epoch() != 0 {
            Ok(())
        } else {
            Err("the cluster's Redis is unreachable; try again shortly".into())
        }
    }

    fn cluster_connected(&self) -> Option<bool> {
        Some(self.available().is_ok())
    }

    fn lease_ip(&self, ip: IpAddr, limit: u32) -> BoxFuture<'_, Result<IpLease, LeaseError>> {
        async move { self.inner.lease_ip(ip, limit).await }.boxed()
    }

    fn announce(&self, client: Uuid, owner: String) -> BoxFuture<'_, Announced> {
        async move { self.inner.announce(client, owner).await }.boxed()
    }

    fn find_client(&self, client: Uuid) -> BoxFuture<'_, Result<Option<RemoteClient>, RelayError>> {
        self.inner.find_client(client).boxed()
    }

    fn relay<'a>(
        &'a self,
        node: &'a str,
        request: &'a str,
    ) -> BoxFuture<'a, Result<String, RelayError>> {
        self.inner.relay_hub(node, request).boxed()
    }

    fn relayed(&self) -> Option<tokio::sync::mpsc::Receiver<Relayed>> {
        self.relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Receipt, PublishError>> {
        self.inner.publish(events).boxed()
    }

    /// The answers live in Redis (`once`): `replies` gives only the window.
    fn publish_once<'a>(
        &'a self,
        replies: &'a Replies<Receipt>,
        key: String,
        fingerprint: [u8; 32],
        events: Vec<Event>,
    ) -> BoxFuture<'a, Result<Seen<Receipt>, PublishError>> {
        let window = replies.window();
        self.inner
            .publish_once(window, key, fingerprint, events)
            .boxed()
    }

    fn attach(&self, channel: ChannelId, after: Option<u64>) -> BoxFuture<'_, Attached> {
        self.inner.attach(channel, after).boxed()
    }

    fn replay(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> BoxFuture<'_, Option<Vec<Frame>>> {
        self.inner.replay(channel, from, until, limit).boxed()
    }

    fn history(&self, channel: ChannelId, after: u64, limit: usize) -> BoxFuture<'_, HistoryPage> {
        self.inner.history(channel, after, limit).boxed()
    }

    fn seq_at(&self, channel: ChannelId, since: DateTime<Utc>) -> BoxFuture<'_, u64> {
        self.inner.seq_at(channel, since).boxed()
    }

    fn kept(&self, channel: ChannelId) -> BoxFuture<'_, Kept> {
        self.inner.kept(channel).boxed()
    }

    fn locate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<(ChannelId, u64)>> {
        self.inner.locate(id).boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close().boxed()
    }
}
