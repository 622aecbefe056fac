//! Local delivery: one `tokio::sync::broadcast` sender per channel, and the table of live
//! clients on this node. A broker hands stamped frames here; each socket task holds a receiver
//! per subscribed channel. A frame is serialised once and shared by every subscriber.
//!
//! This is the only place frames reach sockets, whichever broker numbered them, so the socket
//! task never knows which broker runs.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::channels::{ChannelId, ChannelMask, Channels};
use crate::identity::Owner;
use crate::protocol::Frame;

/// What travels on a channel: the serialised frame, and for a targeted event its one recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Frame,
    pub target: Option<Uuid>,
    /// When it was handed to local delivery, for the publish→socket latency.
    pub published: Instant,
    /// The event parsed once for every filtered subscriber; `None` when the channel had no
    /// filtered subscriber as it was delivered, so an unfiltered channel pays nothing.
    pub view: Option<Arc<EventView>>,
}

/// An event's frame parsed on first use and shared by the filtered subscribers that see it.
#[derive(Debug, Default)]
pub struct EventView {
    parsed: OnceLock<Option<Value>>,
}

impl EventView {
    /// `frame` parsed (once for all who ask); `None` if it is not JSON.
    pub fn event(&self, frame: &str) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_str(frame).ok())
            .as_ref()
    }
}

/// A live client as the registry sees it. The socket task reads `mask` before writing each
/// frame, so clearing a bit takes effect for the very next event.
#[derive(Debug)]
pub struct ClientState {
    pub id: Uuid,
    pub(crate) owner: Owner,
    pub(crate) mask: AtomicU64,
    /// Subscriptions in the order the client asked for them (`global` last); guarded so two
    /// concurrent unsubscribes see each other's result.
    pub(crate) order: Mutex<Vec<ChannelId>>,
    pub(crate) changed: Notify,
    /// What the admin routes show; written by the socket task, read by the routes.
    pub activity: Activity,
}

/// A socket's life as an administrator sees it. Times are milliseconds since 1970, 0 = never.
#[derive(Debug)]
pub struct Activity {
    pub ip: IpAddr,
    pub connected_at: SystemTime,
    pub last_received_ms: AtomicU64,
    pub last_ping_ms: AtomicU64,
    pub last_pong_ms: AtomicU64,
    /// Frames waiting in the socket's outbox at its last wake-up.
    pub queue_depth: AtomicUsize,
    /// Set by an administrator's disconnect; the socket closes with 4001.
    pub disconnect: AtomicBool,
    /// Set when a channel's numbering restarted under the socket ([`Fanout::reset`]); the
    /// socket closes with 4009.
    pub reset: AtomicBool,
}

impl Activity {
    fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            connected_at: SystemTime::now(),
            last_received_ms: AtomicU64::new(0),
            last_ping_ms: AtomicU64::new(0),
            last_pong_ms: AtomicU64::new(0),
            queue_depth: AtomicUsize::new(0),
            disconnect: AtomicBool::new(false),
            reset: AtomicBool::new(false),
        }
    }

    /// For the admin routes: one relaxed store per wake-up, on this socket's own state.
    pub fn note_queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth, Ordering::Relaxed);
    }

    /// Records now in `at`.
    pub fn stamp(at: &AtomicU64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        at.store(now, Ordering::Relaxed);
    }
}

impl ClientState {
    pub fn new(id: Uuid, owner: Owner, ip: IpAddr, subscriptions: Vec<ChannelId>) -> Self {
        Self {
            id,
            owner,
            mask: AtomicU64::new(ChannelMask::of(&subscriptions).0),
            order: Mutex::new(subscriptions),
            changed: Notify::new(),
            activity: Activity::new(ip),
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether an administrator asked this socket to close.
    pub fn is_disconnected(&self) -> bool {
        self.activity.disconnect.load(Ordering::Acquire)
    }

    /// Whether a channel's numbering restarted under this socket ([`Fanout::reset`]).
    pub fn is_reset(&self) -> bool {
        self.activity.reset.load(Ordering::Acquire)
    }

    pub fn mask(&self) -> ChannelMask {
        ChannelMask(self.mask.load(Ordering::Acquire))
    }

    /// Resolves when the subscriptions were changed from outside the socket task. A change
    /// made while nobody waits is kept (`notify_one`), so none is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// The per-channel senders and the live clients of this node.
pub struct Fanout {
    senders: Vec<broadcast::Sender<Delivery>>,
    /// Per channel, how many live subscriptions carry a filter ([`FilterCount`]).
    filtered: Vec<AtomicUsize>,
    pub(crate) clients: DashMap<Uuid, Arc<ClientState>>,
}

impl Fanout {
    /// `send_queue` is how far a receiver may fall behind before it is a slow consumer.
    pub fn new(channels: &Channels, send_queue: usize) -> Arc<Self> {
        let senders = channels
            .ids()
            .map(|_| broadcast::channel(send_queue).0)
            .collect();
        let filtered = channels.ids().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Self {
            senders,
            filtered,
            clients: DashMap::new(),
        })
    }

    /// Asks every socket subscribed to `channel` to close with 4009: the channel's numbering
    /// restarted (a cluster's new epoch), so the seqs those sockets hold mean nothing now and
    /// only a resume can tell their clients. Delivery to them stops at once (their masks are
    /// cleared, as an administrator's disconnect does). Returns how many were asked.
    pub fn reset(&self, channel: ChannelId) -> usize {
        let mut asked = 0;
        for client in self.clients.iter() {
            if client.mask().contains(channel) {
                client.activity.reset.store(true, Ordering::Release);
                client.mask.store(0, Ordering::Release);
                client.changed.notify_one();
                asked += 1;
            }
        }
        asked
    }

    /// A receiver of every frame delivered on `channel` from now on.
    pub fn subscribe(&self, channel: ChannelId) -> broadcast::Receiver<Delivery> {
        self.senders[channel.index()].subscribe()
    }

    /// Delivers to every subscriber of `channel`, or to `target` alone; returns how many
    /// sockets it reached. Targeted frames travel on the channel too, so they keep their place
    /// in the channel's order.
    /// `published` is when the broker took the event, for the publish→socket latency.
    pub fn deliver(
        &self,
        channel: ChannelId,
        frame: Frame,
        target: Option<Uuid>,
        published: Instant,
    ) -> usize {
        if let Some(target) = target {
            let subscribed = self
                .clients
                .get(&target)
                .is_some_and(|c| c.mask().contains(channel));
            if !subscribed {
                return 0;
            }
        }
        let view = (self.filtered[channel.index()].load(Ordering::Relaxed) > 0)
            .then(|| Arc::new(EventView::default()));
        let sent = self.senders[channel.index()]
            .send(Delivery {
                frame,
                target,
                published,
                view,
            })
            .unwrap_or(0);
        if target.is_some() { sent.min(1) } else { sent }
    }

    /// Sockets on this node that receive `channel`.
    pub fn receiver_count(&self, channel: ChannelId) -> usize {
        self.senders[channel.index()].receiver_count()
    }

    /// Whether `client` is connected to this node.
    pub fn is_local(&self, client: Uuid) -> bool {
        self.clients.contains_key(&client)
    }

    /// Live clients on this node.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Counts a filtered subscription to `channel` until the returned guard is dropped: while
    /// any is counted, each event of the channel carries an [`EventView`].
    pub fn count_filter(self: &Arc<Self>, channel: ChannelId) -> FilterCount {
        self.filtered[channel.index()].fetch_add(1, Ordering::Relaxed);
        FilterCount {
            fanout: Arc::clone(self),
            channel,
        }
    }
}

/// One filtered subscription, counted in [`Fanout`] while it lives.
pub struct FilterCount {
    fanout: Arc<Fanout>,
    channel: ChannelId,
}

impl Drop for FilterCount {
    fn drop(&mut self) {
        self.fanout.filtered[self.channel.index()].fetch_sub(1, Ordering::Relaxed);
    }
}
