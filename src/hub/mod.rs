//! The registry: channels, live clients, publishing and unsubscribing.
//!
//! Each channel is a `tokio::sync::broadcast` sender; each socket task holds a receiver per
//! subscribed channel. An event is serialised once into a [`Frame`] and shared by every
//! subscriber. A receiver that falls `send_queue` events behind is a slow consumer: its socket
//! is closed with 4008, never silently skipped.
//!
//! [`Hub::publish`] accepts events and [`Hub::deliver`] hands them to local sockets; a cluster
//! relay can sit between the two without touching the socket task.
//!
//! Shutdown: [`Hub::close_publishing`] cuts publishing off, then each socket drains what was
//! published before the cut and sends the `SERVER_SHUTDOWN` notice as its last frame.
//!
//! History: every broadcast event gets the next `seq` of its channel and is kept in the
//! channel's [`history::Log`], so a client that reconnects with its last seq replays what it
//! missed and then continues live ([`Feed`]). `epoch` names this hub's numbering: it changes at
//! every start, when the history is lost.

mod channels;
mod feed;
mod history;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

pub use channels::{ChannelId, ChannelMask, Channels, Resolved};
pub use feed::Feed;
pub use history::Gap;

use crate::config::HistorySettings;
use crate::identity::{Identity, Owner};
use crate::protocol::{self, Envelope, Frame, PublishEvent};
use history::Log;

/// What travels on a channel: the serialised frame, and for a targeted event its one recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Frame,
    pub target: Option<Uuid>,
}

/// Why the hub refused a request; mapped to HTTP in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no live WebSocket client with id {0}")]
    UnknownClient(Uuid),
    #[error("client {0} belongs to another identity")]
    NotOwner(Uuid),
    #[error("{0}")]
    Invalid(String),
    #[error("the hub is shutting down and accepts no more events")]
    ShuttingDown,
}

/// A validated event, ready to stamp and deliver.
#[derive(Debug)]
pub struct Event {
    pub channel: ChannelId,
    pub message: String,
    pub body: Option<Box<RawValue>>,
    pub target: Option<Uuid>,
}

/// The `202` answer to a publish.
#[derive(Debug, Serialize)]
pub struct Receipt {
    pub ids: Vec<String>,
    pub recipients: usize,
}

/// The outcome of an unsubscribe that removed at least one channel. The three lists of what
/// was not removed are serialised only when one of them has something in it.
#[derive(Debug, Default, Serialize)]
pub struct Unsubscribed {
    pub unsubscribed: Vec<String>,
    pub remaining_subscriptions: Vec<String>,
    #[serde(flatten, skip_serializing_if = "NotRemoved::is_empty")]
    pub not_removed: NotRemoved,
}

/// What an unsubscribe request named but did not remove.
#[derive(Debug, Default, Serialize)]
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

/// A live client as the registry sees it. The socket task reads `mask` before writing each
/// frame, so clearing a bit takes effect for the very next event.
#[derive(Debug)]
pub struct ClientState {
    pub id: Uuid,
    owner: Owner,
    mask: AtomicU64,
    /// Subscriptions in the order the client asked for them (`global` last); guarded so two
    /// concurrent unsubscribes see each other's result.
    order: Mutex<Vec<ChannelId>>,
    changed: Notify,
}

impl ClientState {
    pub fn mask(&self) -> ChannelMask {
        ChannelMask(self.mask.load(Ordering::Acquire))
    }

    /// Resolves when the subscriptions were changed from outside the socket task. A change
    /// made while nobody waits is kept (`notify_one`), so none is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
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

/// The channels added by an in-band subscribe.
#[derive(Default)]
pub struct Added {
    pub feeds: Vec<(ChannelId, Feed)>,
    pub positions: Vec<(ChannelId, u64)>,
    pub ignored: Vec<String>,
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

/// One channel: its broadcast sender and its history. The log's lock is held while an event
/// is numbered and sent, so numbering, sending and recording happen in one order.
struct Lane {
    sender: broadcast::Sender<Delivery>,
    log: Mutex<Log>,
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
    channels: Channels,
    lanes: Vec<Lane>,
    epoch: u64,
    clients: DashMap<Uuid, Arc<ClientState>>,
    /// `Some` once shutdown began: the notice every socket sends last, before closing with 1001.
    /// Publishers hold the read side while they deliver, so closing waits for them and nothing
    /// is published after it.
    shutdown_notice: RwLock<Option<Frame>>,
}

impl Hub {
    pub fn new(
        channel_names: &[String],
        send_queue: usize,
        history: &HistorySettings,
    ) -> Arc<Self> {
        let channels = Channels::new(channel_names);
        let lanes = channels
            .names()
            .iter()
            .map(|name| Lane {
                sender: broadcast::channel(send_queue).0,
                log: Mutex::new(Log::new(history.limits(name))),
            })
            .collect();
        // Microseconds since 1970: differs at every start and grows, and stays below 2^53, so
        // JavaScript clients read it exactly.
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Arc::new(Self {
            channels,
            lanes,
            epoch,
            clients: DashMap::new(),
            shutdown_notice: RwLock::new(None),
        })
    }

    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// This hub's numbering of events; a restart starts a new one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn log(&self, channel: ChannelId) -> MutexGuard<'_, Log> {
        self.lanes[channel.index()]
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Live clients in the registry.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Registers a client subscribed to `subscriptions` (already including `global`) and opens
    /// its feeds: live from now, or, for the channels in `resume` whose gap the history still
    /// covers, replaying the gap first. The registration ends when the returned handle is
    /// dropped.
    pub fn register(
        self: &Arc<Self>,
        owner: &Identity,
        subscriptions: Vec<ChannelId>,
        resume: &Resume,
    ) -> (Client, Recovery) {
        let id = Uuid::new_v4();
        let mut recovery = Recovery {
            recovered: resume.is_requested().then_some(true),
            ..Recovery::default()
        };
        if let Some(unknown) = &resume.unknown_event_id {
            recovery.reasons.push(format!(
                "last_event_id {unknown} is not in the history (too old, or from before a restart)"
            ));
        }
        let epoch_matches = resume.epoch.is_none_or(|e| e == self.epoch);
        if let (false, Some(epoch)) = (epoch_matches || resume.since.is_empty(), resume.epoch) {
            recovery.reasons.push(self.other_epoch(epoch));
        }
        let now = Instant::now();
        let mut feeds = Vec::with_capacity(subscriptions.len());
        for &channel in &subscriptions {
            let since = resume
                .since
                .iter()
                .find(|(c, _)| *c == channel)
                .map(|&(_, seq)| seq);
            // The receiver opens under the log's lock that fixes where the replay ends, so
            // replay and live meet exactly.
            let mut log = self.log(channel);
            let receiver = self.lanes[channel.index()].sender.subscribe();
            let last = log.last_seq();
            let start = decide(since, epoch_matches, |after| log.covers(after, now));
            drop(log);
            let feed = match start {
                Start::Replay { after } => {
                    recovery.positions.push((channel, after));
                    Feed::resumed(Arc::clone(self), channel, after, last, receiver)
                }
                Start::Live { gap } => {
                    if let Some((after, gap)) = gap {
                        let reason = gap.map(|g| g.describe(self.channels.name(channel), after));
                        recovery.reasons.extend(reason);
                        recovery.unrecovered.push(channel);
                    }
                    recovery.positions.push((channel, last));
                    Feed::live(receiver)
                }
            };
            feeds.push((channel, feed));
        }
        if !recovery.reasons.is_empty() {
            recovery.recovered = Some(false);
        }
        let state = Arc::new(ClientState {
            id,
            owner: owner.owner(),
            mask: AtomicU64::new(ChannelMask::of(&subscriptions).0),
            order: Mutex::new(subscriptions),
            changed: Notify::new(),
        });
        self.clients.insert(id, Arc::clone(&state));
        let client = Client {
            hub: Arc::clone(self),
            state,
            feeds,
        };
        (client, recovery)
    }

    /// Seqs `from..=until` of `channel`, at most `limit`; `None` when the log no longer holds
    /// `from`.
    pub(crate) fn replay_chunk(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Option<Vec<Frame>> {
        self.log(channel)
            .read_exact(from, until, limit, Instant::now())
    }

    /// Why a cursor from `epoch` means nothing here.
    pub fn other_epoch(&self, epoch: u64) -> String {
        format!(
            "epoch {epoch} is not the hub's epoch {}: the hub restarted and its earlier history is gone",
            self.epoch
        )
    }

    /// The channel and seq of a kept event, by its id.
    pub fn locate(&self, id: &str) -> Option<(ChannelId, u64)> {
        self.channels
            .ids()
            .find_map(|c| self.log(c).find(id).map(|seq| (c, seq)))
    }

    /// Up to `limit` kept events of `channel` after seq `after`, oldest first; from the oldest
    /// kept one when the history no longer reaches back to `after` (then `gap` says so).
    pub fn history(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryPage {
        let mut log = self.log(channel);
        let now = Instant::now();
        let gap = log.covers(after, now).err();
        let frames = log.read(after.saturating_add(1), u64::MAX, limit, now);
        let next_since = match (frames.len(), log.oldest_seq()) {
            (0, _) | (_, None) => log.last_seq(),
            (n, Some(oldest)) => after.saturating_add(1).max(oldest) + n as u64 - 1,
        };
        HistoryPage {
            frames,
            next_since,
            oldest_seq: log.oldest_seq(),
            last_seq: log.last_seq(),
            gap,
        }
    }

    /// Checks a publish request against the channels and the batch rules; nothing is published
    /// unless every event passes.
    pub fn prepare(&self, events: Vec<PublishEvent>) -> Result<Vec<Event>, HubError> {
        let health = self.channels.id("health");
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let name = e.event_type.trim().to_ascii_lowercase();
                let channel = self.channels.id(&name).ok_or_else(|| {
                    HubError::Invalid(format!(
                        "event {i}: unknown event_type {:?}; valid event types: {}",
                        e.event_type,
                        self.publishable()
                    ))
                })?;
                if Some(channel) == health {
                    return Err(HubError::Invalid(format!(
                        "event {i}: `health` is reserved for ping/pong; valid event types: {}",
                        self.publishable()
                    )));
                }
                Ok(Event {
                    channel,
                    message: e.message,
                    body: e.body,
                    target: e.client_id,
                })
            })
            .collect()
    }

    fn publishable(&self) -> String {
        let names: Vec<&str> = self
            .channels
            .names()
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "health")
            .collect();
        names.join(", ")
    }

    /// Stamps each event with an id and timestamp, serialises it once and delivers it.
    pub fn publish(&self, events: Vec<Event>) -> Result<Receipt, HubError> {
        let closing = self
            .shutdown_notice
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if closing.is_some() {
            return Err(HubError::ShuttingDown);
        }
        let mut receipt = Receipt {
            ids: Vec::with_capacity(events.len()),
            recipients: 0,
        };
        for event in events {
            let id = protocol::new_id();
            let envelope = Envelope {
                id: &id,
                ref_id: None,
                event_type: self.channels.name(event.channel),
                timestamp: &protocol::timestamp(),
                message: &event.message,
                body: event.body.as_deref(),
                client_id: event.target.as_ref(),
                seq: None,
                epoch: Some(self.epoch),
            };
            receipt.recipients += match event.target {
                // Private to one connection: neither numbered nor kept.
                Some(target) => self.deliver(event.channel, envelope.to_frame(), Some(target)),
                None => {
                    let mut log = self.log(event.channel);
                    let frame = Envelope {
                        seq: Some(log.next_seq()),
                        ..envelope
                    }
                    .to_frame();
                    let sent = self.deliver(event.channel, frame.clone(), None);
                    log.record(frame, Instant::now());
                    sent
                }
            };
            receipt.ids.push(id);
        }
        drop(closing);
        Ok(receipt)
    }

    /// Local delivery: to every subscriber of `channel`, or to `target` alone. Targeted frames
    /// travel on the channel too, so they keep their place in the channel's order.
    pub fn deliver(&self, channel: ChannelId, frame: Frame, target: Option<Uuid>) -> usize {
        if let Some(target) = target {
            let subscribed = self
                .clients
                .get(&target)
                .is_some_and(|c| c.mask().contains(channel));
            if !subscribed {
                return 0;
            }
        }
        let sent = self.lanes[channel.index()]
            .sender
            .send(Delivery { frame, target })
            .unwrap_or(0);
        if target.is_some() { sent.min(1) } else { sent }
    }

    /// Stops publishing (later publishes get [`HubError::ShuttingDown`]) and returns the
    /// `SERVER_SHUTDOWN` notice. Returns once every publish in progress has finished, so each
    /// socket can drain what is queued and then send the notice as its last frame.
    pub fn close_publishing(&self, grace_secs: u64) -> Frame {
        let mut notice = self
            .shutdown_notice
            .write()
            .unwrap_or_else(|p| p.into_inner());
        notice
            .get_or_insert_with(|| {
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
        self.shutdown_notice
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Removes channels from a live client owned by `caller`. When this returns `Ok`, no later
    /// event of a removed channel reaches that socket.
    pub fn unsubscribe(
        &self,
        client_id: Uuid,
        caller: &Identity,
        requested: &[String],
    ) -> Result<Unsubscribed, HubError> {
        let client = self
            .clients
            .get(&client_id)
            .map(|c| Arc::clone(c.value()))
            .ok_or(HubError::UnknownClient(client_id))?;
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
    /// already subscribed change nothing.
    pub fn add_channels(&self, client: &ClientState, requested: &[String]) -> Added {
        let mut order = client.order.lock().unwrap_or_else(|p| p.into_inner());
        let mut added = Added::default();
        for name in requested {
            let Some(channel) = self.channels.id(name) else {
                added.ignored.push(name.clone());
                continue;
            };
            if order.contains(&channel) {
                continue;
            }
            let log = self.log(channel);
            let receiver = self.lanes[channel.index()].sender.subscribe();
            added.positions.push((channel, log.last_seq()));
            drop(log);
            added.feeds.push((channel, Feed::live(receiver)));
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
        self.hub.clients.remove(&self.state.id);
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
