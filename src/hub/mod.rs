//! The registry: the live clients of this node, what each is subscribed to, and where each
//! of its streams starts.
//!
//! Events reach sockets through [`Fanout`] (per-channel broadcast senders); a receiver that
//! falls `send_queue` events behind is a slow consumer: its socket is closed with 4008, never
//! silently skipped. Numbering and history belong to the [`Broker`]: a client that reconnects
//! with its last seq replays what it missed from the broker's history and then continues live
//! ([`Feed`]). The registry does not know which broker runs.
//!
//! Shutdown: [`Hub::close_publishing`] cuts publishing off, then each socket drains what was
//! published before the cut and sends the `SERVER_SHUTDOWN` notice as its last frame.

mod feed;
mod relay;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use uuid::Uuid;

pub use feed::{Feed, FeedFilter};

use crate::broker::{Broker, Gap, HistoryPage, Kept};
use crate::channels::{ChannelId, ChannelMask, Channels};
use crate::fanout::{ClientState, Delivery, Fanout};
use crate::filter::Filter;
use crate::identity::Identity;
use crate::protocol::{self, Frame};

/// Why the registry refused an unsubscribe; mapped to HTTP in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no live WebSocket client with id {0}")]
    UnknownClient(Uuid),
    #[error("client {0} belongs to another identity")]
    NotOwner(Uuid),
    #[error("{0}")]
    Invalid(String),
    /// The client is on another node, which could not be asked (cluster).
    #[error("{0}")]
    Unavailable(String),
}

/// The outcome of an unsubscribe that removed at least one channel. The three lists of what
/// was not removed are serialised only when one of them has something in it.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct Unsubscribed {
    pub unsubscribed: Vec<String>,
    pub remaining_subscriptions: Vec<String>,
    #[serde(flatten, skip_serializing_if = "NotRemoved::is_empty")]
    pub not_removed: NotRemoved,
}

/// What an unsubscribe request named but did not remove.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NotRemoved {
    pub invalid_event_types: Vec<String>,
    pub not_subscribed: Vec<String>,
    pub rejected: Vec<String>,
}

impl NotRemoved {
    pub fn is_empty(&self) -> bool {
        self.invalid_event_types.is_empty()
            && self.not_subscribed.is_empty()
            && self.rejected.is_empty()
    }
}

impl Unsubscribed {
    /// True when the request mixed in names that were not removed.
    pub fn is_partial(&self) -> bool {
        !self.not_removed.is_empty()
    }
}

/// Where a reconnecting client asks its streams to pick up.
#[derive(Debug, Default, Clone)]
pub struct Resume {
    /// The epoch the client's seqs come from, when it said.
    pub epoch: Option<u64>,
    /// Per channel, the seq of the last event the client has.
    pub since: Vec<(ChannelId, u64)>,
    /// A `last_event_id` that matched no kept event.
    pub unknown_event_id: Option<String>,
}

impl Resume {
    pub fn is_requested(&self) -> bool {
        !self.since.is_empty() || self.unknown_event_id.is_some()
    }
}

/// What the welcome says about where each stream starts.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Per subscribed channel, the seq the stream continues after.
    pub positions: Vec<(ChannelId, u64)>,
    /// `None` when the client did not ask to resume.
    pub recovered: Option<bool>,
    /// Why not everything could be recovered.
    pub reasons: Vec<String>,
    /// Channels that start live because their gap could not be replayed.
    pub unrecovered: Vec<ChannelId>,
}

/// Per channel, the filter a subscription asked for (at most one each).
pub type Filters = Vec<(ChannelId, Filter)>;

/// The channels added by an in-band subscribe.
#[derive(Default)]
pub struct Added {
    pub feeds: Vec<(ChannelId, Feed)>,
    pub positions: Vec<(ChannelId, u64)>,
    pub ignored: Vec<String>,
    /// New filters for channels the client already had; the socket task puts them on its
    /// feeds.
    pub refiltered: Vec<(ChannelId, FeedFilter)>,
}

/// Where one channel's stream starts for a registering client.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Replay every kept event after `after`, then live.
    Replay { after: u64 },
    /// Live from now. `gap` is set when the client asked to resume from a seq and could not:
    /// with the history's reason, or `None` when the cursor is from another epoch (the
    /// welcome says that once for every channel).
    Live { gap: Option<(u64, Option<Gap>)> },
}

/// The resume decision for one channel: `since` is the client's last seq there, if it gave
/// one; `covers` asks the channel's history whether it still holds everything after a seq.
fn decide(
    since: Option<u64>,
    epoch_matches: bool,
    covers: impl FnOnce(u64) -> Result<(), Gap>,
) -> Start {
    match since {
        None => Start::Live { gap: None },
        Some(after) if !epoch_matches => Start::Live {
            gap: Some((after, None)),
        },
        Some(after) => match covers(after) {
            Ok(()) => Start::Replay { after },
            Err(gap) => Start::Live {
                gap: Some((after, Some(gap))),
            },
        },
    }
}

pub struct Hub {
    channels: Arc<Channels>,
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
    /// Set once shutdown began: the notice every socket sends last, before closing with 1001.
    shutdown_notice: OnceLock<Frame>,
}

impl Hub {
    pub fn new(channels: Arc<Channels>, fanout: Arc<Fanout>, broker: Arc<dyn Broker>) -> Arc<Self> {
        Arc::new(Self {
            channels,
            fanout,
            broker,
            shutdown_notice: OnceLock::new(),
        })
    }

    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The broker's numbering of events; a cursor from another epoch means nothing here.
    pub fn epoch(&self) -> u64 {
        self.broker.epoch()
    }

    /// Registers `client` for the other nodes of a cluster, while the guard lives.
    pub async fn announce(&self, client: &Client) -> crate::broker::Announced {
        let state = client.state();
        self.broker
            .announce(state.id, relay::owner_key(&state.owner))
            .await
    }

    /// Starts answering what other nodes relay to this hub (a cluster node only).
    pub fn serve_relays(self: &Arc<Self>) {
        if let Some(relayed) = self.broker.relayed() {
            tokio::spawn(Arc::clone(self).serve_relayed(relayed));
        }
    }

    /// Takes one of `ip`'s connection slots across the cluster (see [`Broker::lease_ip`]).
    pub async fn lease_ip(
        &self,
        ip: IpAddr,
        limit: u32,
    ) -> Result<crate::broker::IpLease, crate::broker::LeaseError> {
        self.broker.lease_ip(ip, limit).await
    }

    /// Whether this cluster node's Redis is connected; `None` on a single node.
    pub fn cluster_connected(&self) -> Option<bool> {
        self.broker.cluster_connected()
    }

    /// Whether a new subscriber can be served now (see [`Broker::available`]).
    pub fn available(&self) -> Result<(), String> {
        self.broker.available()
    }

    /// Live clients on this node.
    pub fn client_count(&self) -> usize {
        self.fanout.client_count()
    }

    /// Registers a client subscribed to `subscriptions` (already including `global`) and opens
    /// its feeds: live from now, or, for the channels in `resume` whose gap the history still
    /// covers, replaying the gap first. A channel in `filters` lets through only the events
    /// its filter passes, replayed ones included. The registration ends when the returned
    /// handle is dropped.
    pub async fn register(
        self: &Arc<Self>,
        owner: &Identity,
        ip: IpAddr,
        subscriptions: Vec<ChannelId>,
        resume: &Resume,
        mut filters: Filters,
    ) -> (Client, Recovery) {
        let mut recovery = Recovery {
            recovered: resume.is_requested().then_some(true),
            ..Recovery::default()
        };
        if let Some(unknown) = &resume.unknown_event_id {
            recovery.reasons.push(format!(
                "last_event_id {unknown} is not in the history (too old, or from before a restart)"
            ));
        }
        let epoch_matches = resume.epoch.is_none_or(|e| e == self.epoch());
        if let (false, Some(epoch)) = (epoch_matches || resume.since.is_empty(), resume.epoch) {
            recovery.reasons.push(self.other_epoch(epoch));
        }
        let mut feeds = Vec::with_capacity(subscriptions.len());
        for &channel in &subscriptions {
            let since = resume
                .since
                .iter()
                .find(|(c, _)| *c == channel)
                .map(|&(_, seq)| seq);
            let mut feed = self
                .open_feed(channel, since, epoch_matches, &mut recovery)
                .await;
            if let Some(at) = filters.iter().position(|(c, _)| *c == channel) {
                let (_, filter) = filters.swap_remove(at);
                feed.set_filter(Some(self.feed_filter(channel, filter)));
            }
            feeds.push((channel, feed));
        }
        if !recovery.reasons.is_empty() {
            recovery.recovered = Some(false);
        }
        let state = Arc::new(ClientState::new(
            Uuid::new_v4(),
            owner.owner(),
            ip,
            subscriptions,
        ));
        self.fanout.clients.insert(state.id, Arc::clone(&state));
        let client = Client {
            hub: Arc::clone(self),
            state,
            feeds,
        };
        (client, recovery)
    }

    /// One channel's feed for a registering client, and what the welcome says about it.
    async fn open_feed(
        &self,
        channel: ChannelId,
        since: Option<u64>,
        epoch_matches: bool,
        recovery: &mut Recovery,
    ) -> Feed {
        // The broker opens the receiver at the point that fixes where the replay ends, so
        // replay and live meet exactly.
        let attached = self
            .broker
            .attach(channel, since.filter(|_| epoch_matches))
            .await;
        let last = attached.last_seq;
        match decide(since, epoch_matches, |_| attached.kept) {
            Start::Replay { after } => {
                recovery.positions.push((channel, after));
                Feed::resumed(
                    Arc::clone(&self.broker),
                    channel,
                    after,
                    last,
                    attached.receiver,
                )
            }
            Start::Live { gap } => {
                if let Some((after, gap)) = gap {
                    let reason = gap.map(|g| g.describe(self.channels.name(channel), after));
                    recovery.reasons.extend(reason);
                    recovery.unrecovered.push(channel);
                }
                recovery.positions.push((channel, last));
                Feed::live(attached.receiver)
            }
        }
    }

    /// `filter` on `channel`, counted so that the channel's events are parsed once for all
    /// its filtered subscribers.
    pub fn feed_filter(&self, channel: ChannelId, filter: Filter) -> FeedFilter {
        FeedFilter::new(filter, self.fanout.count_filter(channel))
    }

    /// Why a cursor from `epoch` means nothing here.
    pub fn other_epoch(&self, epoch: u64) -> String {
        format!(
            "epoch {epoch} is not the hub's epoch {}: the hub restarted and its earlier history is gone",
            self.epoch()
        )
    }

    /// The channel and seq of a kept event, by its id.
    pub async fn locate(&self, id: &str) -> Option<(ChannelId, u64)> {
        self.broker.locate(id).await
    }

    /// Up to `limit` kept events of `channel` after seq `after`, oldest first (see
    /// [`Broker::history`]).
    pub async fn history(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryPage {
        self.broker.history(channel, after, limit).await
    }

    /// The cursor for `since_time` on `channel` (see [`Broker::seq_at`]).
    pub async fn seq_at(&self, channel: ChannelId, since: chrono::DateTime<chrono::Utc>) -> u64 {
        self.broker.seq_at(channel, since).await
    }

    /// What `channel`'s history holds now.
    pub async fn kept(&self, channel: ChannelId) -> Kept {
        self.broker.kept(channel).await
    }

    /// Stops publishing (later publishes get `ShuttingDown`) and returns the `SERVER_SHUTDOWN`
    /// notice. Returns once every publish in progress has finished, so each socket can drain
    /// what is queued and then send the notice as its last frame.
    pub async fn close_publishing(&self, grace_secs: u64) -> Frame {
        self.broker.close().await;
        self.shutdown_notice
            .get_or_init(|| {
                protocol::server_frame(
                    "global",
                    "SERVER_SHUTDOWN",
                    None,
                    Some(serde_json::json!({
                        "reason": "the hub is shutting down",
                        "grace_secs": grace_secs,
                    })),
                    None,
                )
            })
            .clone()
    }

    /// The shutdown notice, once shutdown has begun.
    pub fn shutdown_notice(&self) -> Option<Frame> {
        self.shutdown_notice.get().cloned()
    }

    /// Every live client of this node, for the admin routes.
    pub fn clients(&self) -> Vec<Arc<ClientState>> {
        self.fanout
            .clients
            .iter()
            .map(|c| Arc::clone(c.value()))
            .collect()
    }

    /// Live sockets subscribed to each channel, in channel order.
    pub fn subscribers(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.channels.names().len()];
        for client in self.fanout.clients.iter() {
            let mask = client.mask();
            for channel in self.channels.ids().filter(|&c| mask.contains(c)) {
                counts[channel.index()] += 1;
            }
        }
        counts
    }

    fn live_client(&self, client_id: Uuid) -> Result<Arc<ClientState>, HubError> {
        self.fanout
            .clients
            .get(&client_id)
            .map(|c| Arc::clone(c.value()))
            .ok_or(HubError::UnknownClient(client_id))
    }

    /// Asks a live client's socket to close with 4001 (an administrator's disconnect). When
    /// this returns `Ok`, the socket sends no event it had not already taken.
    pub fn disconnect(&self, client_id: Uuid) -> Result<(), HubError> {
        let client = self.live_client(client_id)?;
        client.activity.disconnect.store(true, Ordering::Release);
        // Clearing the mask stops delivery at once, as an unsubscribe does.
        client.mask.store(0, Ordering::Release);
        client.changed.notify_one();
        Ok(())
    }

    /// Removes channels from a live client owned by `caller`. When this returns `Ok`, no later
    /// event of a removed channel reaches that socket.
    /// A client of another node is reached through the cluster's relay.
    pub async fn unsubscribe(
        &self,
        client_id: Uuid,
        caller: &Identity,
        requested: &[String],
    ) -> Result<Unsubscribed, HubError> {
        let Ok(client) = self.live_client(client_id) else {
            return self.unsubscribe_remote(client_id, caller, requested).await;
        };
        if client.owner != caller.owner() {
            return Err(HubError::NotOwner(client_id));
        }
        let outcome = self.remove_channels(&client, requested)?;
        client.changed.notify_one();
        Ok(outcome)
    }

    /// Removes channels from a client; shared by the REST route and the in-band request.
    pub fn remove_channels(
        &self,
        client: &ClientState,
        requested: &[String],
    ) -> Result<Unsubscribed, HubError> {
        let mut order = client.order.lock().unwrap_or_else(|p| p.into_inner());
        let mut outcome = Unsubscribed::default();
        let mut removed = Vec::new();
        for name in requested {
            match self.channels.id(name) {
                None => outcome.not_removed.invalid_event_types.push(name.clone()),
                Some(id) if id == self.channels.global() => {
                    outcome.not_removed.rejected.push(name.clone())
                }
                Some(id) if !order.contains(&id) => {
                    outcome.not_removed.not_subscribed.push(name.clone())
                }
                Some(id) => {
                    removed.push(id);
                    outcome.unsubscribed.push(name.clone());
                }
            }
        }
        if removed.is_empty() {
            return Err(HubError::Invalid(self.nothing_removed(&outcome)));
        }
        order.retain(|id| !removed.contains(id));
        // Release: a socket task that sees the cleared bit also sees everything before it.
        client
            .mask
            .fetch_and(!ChannelMask::of(&removed).0, Ordering::AcqRel);
        outcome.remaining_subscriptions = order
            .iter()
            .map(|&id| self.channels.name(id).to_owned())
            .collect();
        Ok(outcome)
    }

    /// Adds channels to a client (the in-band subscribe), live from now: an event published
    /// after this returns reaches the client. Unknown names are reported, not fatal; names
    /// already subscribed change nothing, unless `filters` gives them a new filter. The channels are attached outside the client's lock
    /// (attaching may await the broker); only the socket task adds, so what was new stays new.
    pub async fn add_channels(
        &self,
        client: &ClientState,
        requested: &[String],
        mut filters: Filters,
    ) -> Added {
        let mut added = Added::default();
        let mut new = Vec::new();
        {
            let order = client.order.lock().unwrap_or_else(|p| p.into_inner());
            for name in requested {
                let Some(channel) = self.channels.id(name) else {
                    added.ignored.push(name.clone());
                    continue;
                };
                let filter = filters
                    .iter()
                    .position(|(c, _)| *c == channel)
                    .map(|at| self.feed_filter(channel, filters.swap_remove(at).1));
                if order.contains(&channel) {
                    added.refiltered.extend(filter.map(|f| (channel, f)));
                } else if !new.iter().any(|(c, _)| *c == channel) {
                    new.push((channel, filter));
                }
            }
        }
        let mut attached = Vec::with_capacity(new.len());
        for (channel, filter) in new {
            attached.push((channel, filter, self.broker.attach(channel, None).await));
        }
        let mut order = client.order.lock().unwrap_or_else(|p| p.into_inner());
        for (channel, filter, attached) in attached {
            added.positions.push((channel, attached.last_seq));
            let mut feed = Feed::live(attached.receiver);
            feed.set_filter(filter);
            added.feeds.push((channel, feed));
            // Before `global`, which stays last.
            let at = order.len().saturating_sub(1);
            order.insert(at, channel);
            client
                .mask
                .fetch_or(ChannelMask::of(&[channel]).0, Ordering::AcqRel);
        }
        added
    }

    /// The client's subscriptions, in its order.
    pub fn subscription_names(&self, client: &ClientState) -> Vec<&str> {
        let order = client.order.lock().unwrap_or_else(|p| p.into_inner());
        order.iter().map(|&id| self.channels.name(id)).collect()
    }

    fn nothing_removed(&self, outcome: &Unsubscribed) -> String {
        let mut reasons = Vec::new();
        if !outcome.not_removed.rejected.is_empty() {
            reasons.push("`global` cannot be removed".to_owned());
        }
        if !outcome.not_removed.invalid_event_types.is_empty() {
            reasons.push(format!(
                "unknown event types: {}",
                outcome.not_removed.invalid_event_types.join(", ")
            ));
        }
        if !outcome.not_removed.not_subscribed.is_empty() {
            reasons.push(format!(
                "not subscribed to: {}",
                outcome.not_removed.not_subscribed.join(", ")
            ));
        }
        if reasons.is_empty() {
            reasons.push("`event_types` is empty".to_owned());
        }
        format!(
            "nothing to unsubscribe: {}. Valid event types: {}",
            reasons.join("; "),
            self.channels.describe()
        )
    }
}

/// A registered client, owned by its socket task. Dropping it removes the client from the
/// registry, so no exit path of the task can leave a stale entry.
pub struct Client {
    hub: Arc<Hub>,
    state: Arc<ClientState>,
    feeds: Vec<(ChannelId, Feed)>,
}

impl Client {
    pub fn id(&self) -> Uuid {
        self.state.id
    }

    pub fn state(&self) -> &Arc<ClientState> {
        &self.state
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The subscription names, in the client's order.
    pub fn subscription_names(&self) -> Vec<&str> {
        self.hub.subscription_names(&self.state)
    }

    /// Hands the feeds to the socket task (once).
    pub fn take_feeds(&mut self) -> Vec<(ChannelId, Feed)> {
        std::mem::take(&mut self.feeds)
    }

    /// Whether a frame on `channel` is for this client: subscribed now, and either broadcast
    /// or targeted at it.
    pub fn wants(&self, channel: ChannelId, delivery: &Delivery) -> bool {
        self.state.mask().contains(channel) && delivery.target.is_none_or(|t| t == self.state.id)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.fanout.clients.remove(&self.state.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GONE: Gap = Gap::Gone {
        oldest: Some(50),
        last_seq: 90,
    };

    #[test]
    fn a_client_that_asks_nothing_starts_live_without_a_gap() {
        let covers = |_| panic!("the history is not asked");
        assert_eq!(decide(None, true, covers), Start::Live { gap: None });
        assert_eq!(decide(None, false, covers), Start::Live { gap: None });
    }

    #[test]
    fn a_covered_cursor_replays_from_it() {
        assert_eq!(
            decide(Some(41), true, |_| Ok(())),
            Start::Replay { after: 41 }
        );
        // 0 = "from the first event": replayed like any other cursor.
        assert_eq!(
            decide(Some(0), true, |_| Ok(())),
            Start::Replay { after: 0 }
        );
    }

    #[test]
    fn a_gap_the_history_no_longer_covers_starts_live_with_its_reason() {
        let asked = std::cell::Cell::new(None);
        let start = decide(Some(10), true, |after| {
            asked.set(Some(after));
            Err(GONE)
        });
        assert_eq!(asked.get(), Some(10));
        assert_eq!(
            start,
            Start::Live {
                gap: Some((10, Some(GONE)))
            }
        );
        let ahead = Gap::Ahead { last_seq: 3 };
        assert_eq!(
            decide(Some(9), true, |_| Err(ahead.clone())),
            Start::Live {
                gap: Some((9, Some(ahead)))
            }
        );
    }

    #[test]
    fn a_cursor_from_another_epoch_starts_live_without_asking_the_history() {
        let covers = |_| panic!("another epoch's seqs mean nothing here");
        assert_eq!(
            decide(Some(10), false, covers),
            Start::Live {
                gap: Some((10, None))
            }
        );
    }
}
