//! The broker seam: what numbers, keeps and hands out events. [`Publisher`] calls it to
//! publish, the registry calls it to open a client's streams, the history route reads from it.
//!
//! [`MemoryBroker`] is the single-node implementation: per-channel `seq` and history in this
//! process, delivered to this node's [`Fanout`]. A shared broker (the Redis cluster) is a
//! second implementation of [`Broker`] and nothing else: it numbers and keeps events in the
//! shared store and delivers what every node publishes into each node's `Fanout`.
//!
//! [`Publisher`]: crate::publisher::Publisher
//! [`Fanout`]: crate::fanout::Fanout

mod history;
mod memory;
pub mod redis;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use history::Gap;
pub use memory::MemoryBroker;

use crate::channels::ChannelId;
use crate::fanout::Delivery;
use crate::idempotency::{Replies, Seen};
use crate::protocol::Frame;

/// A validated event, ready to stamp and deliver.
#[derive(Debug)]
pub struct Event {
    pub channel: ChannelId,
    pub message: String,
    pub body: Option<Box<RawValue>>,
    pub target: Option<Uuid>,
    /// Where a CloudEvent came from: `{"source","id","subject"}`, serialised once (the
    /// frame's `origin`); `None` for every other event.
    pub origin: Option<Box<RawValue>>,
}

/// The `202` answer to a publish (read back when a shared store kept it for a retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Receipt {
    pub ids: Vec<String>,
    pub recipients: usize,
}

/// Why a publish was refused; mapped to HTTP in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Invalid(String),
    #[error("the hub is shutting down and accepts no more events")]
    ShuttingDown,
    #[error(
        "this Idempotency-Key was used for a different request within its window; use a new key for a new request"
    )]
    KeyReused,
    /// The shared store (the cluster's Redis) did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// A hold on one of a client IP's connection slots across the cluster ([`Broker::lease_ip`]),
/// released when dropped. On a single node it holds nothing: admission alone counts.
pub struct IpLease {
    /// Held only for its `Drop`.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl IpLease {
    /// Nothing to hold: no other node can admit the IP.
    pub fn local() -> Self {
        Self { _guard: None }
    }

    /// Holds `guard`, whose `Drop` frees the slot.
    pub fn held(guard: Box<dyn Send + Sync>) -> Self {
        Self {
            _guard: Some(guard),
        }
    }
}

/// Why a cluster-wide slot was not given; mapped to HTTP in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Every slot of the IP is held on some node: the same `409` as on one node.
    #[error("IP address {0} already has an active WebSocket connection")]
    Busy(std::net::IpAddr),
    /// The shared store did not answer: fail closed.
    #[error("{0}")]
    Unavailable(String),
}

/// A client registered across the cluster ([`Broker::announce`]); unregistered when dropped.
pub struct Announced {
    /// Held only for its `Drop`.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Announced {
    /// Nothing registered: on a single node the registry is this node's own.
    pub fn none() -> Self {
        Self { _guard: None }
    }

    pub fn held(guard: Box<dyn Send + Sync>) -> Self {
        Self {
            _guard: Some(guard),
        }
    }
}

/// Where a client of another node is, by the cluster's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteClient {
    pub node: String,
    /// The owner key its node registered (see `hub::owner_key`).
    pub owner: String,
}

/// Why a relayed command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No node holds the client any more.
    #[error("the client's node is gone")]
    Gone,
    /// Redis or the other node did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

/// A request another node relayed to this node's hub; the answer goes back through `reply`.
pub struct Relayed {
    pub request: String,
    pub reply: tokio::sync::oneshot::Sender<String>,
}

/// One channel opened for a registering client ([`Broker::attach`]).
pub struct Attached {
    /// Every frame delivered on the channel after `last_seq`.
    pub receiver: broadcast::Receiver<Delivery>,
    /// The newest seq at the moment `receiver` opened.
    pub last_seq: u64,
    /// Whether the history still holds every event after the seq that was asked about
    /// (`Ok` when none was).
    pub kept: Result<(), Gap>,
}

/// A page of history for `GET /v1/events`.
#[derive(Debug)]
pub struct HistoryPage {
    /// Consecutive events from seq `next_since - frames.len() + 1`.
    pub frames: Vec<Frame>,
    /// The seq of the last event returned, or the channel's newest when none is.
    pub next_since: u64,
    pub oldest_seq: Option<u64>,
    pub last_seq: u64,
    /// Why the page does not continue right after `after`, if it does not.
    pub gap: Option<Gap>,
}

/// What a channel's history holds now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kept {
    pub events: usize,
    pub bytes: usize,
    pub oldest_seq: Option<u64>,
    pub last_seq: u64,
}

/// Numbers, keeps and delivers events. The methods that may need I/O (a shared store) return
/// boxed futures, so `Arc<dyn Broker>` keeps working; [`MemoryBroker`] answers them at once.
/// None waits long: the socket tasks and the routes await them directly.
pub trait Broker: Send + Sync + 'static {
    /// The numbering that `seq`s belong to; a cursor from another epoch means nothing here.
    fn epoch(&self) -> u64;

    /// Whether the broker can serve a new subscriber now: a cluster node that lost its Redis
    /// refuses handshakes (fail closed) rather than open feeds it cannot number. `Err` says why.
    fn available(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether a shared store is connected (for `/metrics`); `None` without one.
    fn cluster_connected(&self) -> Option<bool> {
        None
    }

    /// Takes one of `ip`'s `limit` connection slots across every node sharing this broker.
    /// Called after this node's own admission took its slot; the memory broker has no other
    /// node to ask.
    fn lease_ip(
        &self,
        _ip: std::net::IpAddr,
        _limit: u32,
    ) -> BoxFuture<'_, Result<IpLease, LeaseError>> {
        Box::pin(std::future::ready(Ok(IpLease::local())))
    }

    /// Registers a client of this node for the other nodes (unsubscribe and targeted events
    /// from any node), for as long as the guard lives.
    fn announce(&self, _client: uuid::Uuid, _owner: String) -> BoxFuture<'_, Announced> {
        Box::pin(std::future::ready(Announced::none()))
    }

    /// Where a client that is not on this node is; `None` when no node has it.
    fn find_client(
        &self,
        _client: uuid::Uuid,
    ) -> BoxFuture<'_, Result<Option<RemoteClient>, RelayError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Sends a request to `node`'s hub and waits for its answer.
    fn relay<'a>(
        &'a self,
        _node: &'a str,
        _request: &'a str,
    ) -> BoxFuture<'a, Result<String, RelayError>> {
        Box::pin(std::future::ready(Err(RelayError::Gone)))
    }

    /// The requests other nodes relay to this node's hub; `Some` once, for the task that
    /// answers them.
    fn relayed(&self) -> Option<tokio::sync::mpsc::Receiver<Relayed>> {
        None
    }

    /// Stamps each event (id, timestamp, per-channel `seq` unless targeted), keeps it in
    /// history and delivers it, in order per channel. [`PublishError::ShuttingDown`] once
    /// [`close`](Broker::close) was called.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Receipt, PublishError>>;

    /// [`publish`](Broker::publish) unless `key` (already scoped by its caller) was answered
    /// within `replies`' window: a repeat with the same `fingerprint` gets the first receipt.
    /// By default the answers are `replies`, this node's memory; a shared broker keeps them in
    /// its shared store instead (for as long as `replies.window()`), so that a retry sent to
    /// another node is answered, not published again.
    fn publish_once<'a>(
        &'a self,
        replies: &'a Replies<Receipt>,
        key: String,
        fingerprint: [u8; 32],
        events: Vec<Event>,
    ) -> BoxFuture<'a, Result<Seen<Receipt>, PublishError>> {
        Box::pin(replies.once(key, fingerprint, move || self.publish(events)))
    }

    /// Opens `channel` for a client: the live receiver opens at the very point where
    /// `last_seq` is fixed, so a replay of `after + 1 ..= last_seq` followed by the receiver
    /// has neither gap nor duplicate. `after`, when given, is checked against the history.
    fn attach(&self, channel: ChannelId, after: Option<u64>) -> BoxFuture<'_, Attached>;

    /// Seqs `from..=until` of `channel`, at most `limit`; `None` when the history no longer
    /// holds `from`.
    fn replay(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> BoxFuture<'_, Option<Vec<Frame>>>;

    /// Up to `limit` kept events of `channel` after seq `after`, oldest first; from the oldest
    /// kept one when the history no longer reaches back to `after` (then `gap` says so).
    fn history(&self, channel: ChannelId, after: u64, limit: usize) -> BoxFuture<'_, HistoryPage>;

    /// The cursor for "every event of `channel` published at or after `since`" (`since_time`):
    /// a replay after it gives exactly those, or, when some were dropped, the history reports the
    /// gap for it as for any cursor.
    fn seq_at(&self, channel: ChannelId, since: DateTime<Utc>) -> BoxFuture<'_, u64>;

    /// What `channel`'s history holds now, for metrics and the admin routes.
    fn kept(&self, channel: ChannelId) -> BoxFuture<'_, Kept>;

    /// The channel and seq of a kept event, by its id.
    fn locate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<(ChannelId, u64)>>;

    /// Stops publishing. Resolves once every publish in progress has finished, so what was
    /// published before is delivered before anything sent after this returns. Async because a
    /// shared broker's publishes in flight are awaited, not locked.
    fn close(&self) -> BoxFuture<'_, ()>;
}
