//! One task per socket: writes channel frames, answers client messages, keeps the heartbeat,
//! and closes with a code that says why.
//!
//! The task waits on everything at once (shutdown, subscription changes, client frames, channel
//! frames, ping timer, idle deadline). When frames are ready it feeds every ready one and flushes
//! once, so a burst costs one socket write, not one per event.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::admission::IpSlot;
use crate::config::Settings;
use crate::hub::{ChannelId, Client, Delivery};
use crate::protocol::{self, ClientMessageError, Frame};

/// Close codes the hub uses.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// How long the hub waits for a peer to answer its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames written per wake-up before the task yields to its other duties.
const WRITE_BATCH: usize = 256;

/// Per-socket settings, copied out of [`Settings`] once.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub messages_per_sec: f64,
    pub message_burst: f64,
}

impl SessionSettings {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            ping_interval: Duration::from_secs(s.heartbeat.ping_interval_secs),
            idle_timeout: Duration::from_secs(s.heartbeat.idle_timeout_secs),
            write_timeout: Duration::from_secs(s.hub.write_timeout_secs),
            messages_per_sec: f64::from(s.limits.client_messages_per_sec),
            message_burst: f64::from(s.limits.client_message_burst),
        }
    }
}

/// Everything a socket task owns besides the socket. Dropping it frees the IP slot, removes the
/// client from the registry and lets shutdown stop waiting for this task.
pub struct Session {
    pub client: Client,
    pub slot: IpSlot,
    pub ignored: Vec<String>,
    pub settings: SessionSettings,
    pub shutdown: CancellationToken,
    pub tracker: TaskTrackerToken,
}

/// Why the loop ended.
enum Exit {
    /// The peer closed or vanished; nothing more to send.
    Gone,
    /// The hub ends the socket with this close code and reason.
    Close(u16, &'static str),
}

pub async fn run(mut socket: WebSocket, mut session: Session) {
    let client_id = session.client.id();
    tracing::debug!(%client_id, ip = %session.slot.ip(), "socket open");
    let receivers = session.client.take_receivers();
    let exit = serve(&mut socket, &session, receivers).await;
    // Free the slot and the registry entry before the close handshake, so a client that
    // reconnects as soon as it sees our close frame is admitted.
    drop(session);
    match exit {
        Exit::Gone => {}
        Exit::Close(code, reason) => {
            tracing::debug!(%client_id, code, reason, "closing socket");
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
        }
    }
    // Read until the peer's close (the library answers a client-initiated close as it reads).
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    tracing::debug!(%client_id, "socket closed");
}

async fn serve(
    socket: &mut WebSocket,
    session: &Session,
    receivers: Vec<(ChannelId, broadcast::Receiver<Delivery>)>,
) -> Exit {
    let client = &session.client;
    let settings = &session.settings;
    // The receivers were opened at registration, before the welcome: nothing published after
    // the welcome can be missed.
    let mut streams: StreamMap<ChannelId, BroadcastStream<Delivery>> = receivers
        .into_iter()
        .map(|(channel, receiver)| (channel, BroadcastStream::new(receiver)))
        .collect();
    let welcome = protocol::welcome(&client.id(), &client.subscription_names(), &session.ignored);
    if send(socket, Message::Text(welcome), settings)
        .await
        .is_err()
    {
        return Exit::Gone;
    }

    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let idle = sleep_until(Instant::now() + settings.idle_timeout);
    tokio::pin!(idle);
    let mut bucket = TokenBucket::new(settings.messages_per_sec, settings.message_burst);

    loop {
        tokio::select! {
            biased;
            _ = session.shutdown.cancelled() => {
                // Deliver what is already queued (the SERVER_SHUTDOWN notice among it) first.
                let _ = write_ready(socket, &mut streams, client, usize::MAX, settings).await;
                return Exit::Close(close::GOING_AWAY, "server shutdown");
            }
            _ = client.state().changed() => {
                let mask = client.state().mask();
                let dropped: Vec<ChannelId> =
                    streams.keys().copied().filter(|c| !mask.contains(*c)).collect();
                for channel in dropped {
                    streams.remove(&channel);
                }
            }
            incoming = socket.next() => {
                let Some(incoming) = incoming else { return Exit::Gone };
                let message = match incoming {
                    Ok(message) => message,
                    Err(error) => return read_error(error),
                };
                idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                let reply = match message {
                    Message::Text(text) => {
                        if !bucket.take() {
                            return Exit::Close(close::POLICY, "message rate limit exceeded");
                        }
                        Some(answer(client, text.as_str()))
                    }
                    Message::Binary(_) => {
                        if !bucket.take() {
                            return Exit::Close(close::POLICY, "message rate limit exceeded");
                        }
                        Some(protocol::error_frame(
                            &client.id(),
                            None,
                            "binary frames are not supported; send JSON text frames",
                        ))
                    }
                    // Pings are answered by the library; pongs only prove liveness.
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => return Exit::Gone,
                };
                if let Some(reply) = reply
                    && send(socket, Message::Text(reply), settings).await.is_err()
                {
                    return Exit::Close(close::SLOW_CONSUMER, "slow consumer");
                }
            }
            first = streams.next(), if !streams.is_empty() => {
                let Some((channel, first)) = first else { continue };
                if let Err(exit) = accept(socket, client, channel, first, settings).await {
                    return exit;
                }
                if let Err(exit) = write_ready(socket, &mut streams, client, WRITE_BATCH, settings).await {
                    return exit;
                }
            }
            _ = ping.tick() => {
                if send(socket, Message::Ping(bytes::Bytes::new()), settings).await.is_err() {
                    return Exit::Close(close::SLOW_CONSUMER, "slow consumer");
                }
            }
            _ = &mut idle => return Exit::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
        }
    }
}

type Received = Result<Delivery, BroadcastStreamRecvError>;

/// Feeds one channel item into the socket's write buffer (no flush).
async fn accept(
    socket: &mut WebSocket,
    client: &Client,
    channel: ChannelId,
    item: Received,
    settings: &SessionSettings,
) -> Result<(), Exit> {
    match item {
        Ok(delivery) if client.wants(channel, &delivery) => timeout(
            settings.write_timeout,
            socket.feed(Message::Text(delivery.frame)),
        )
        .await
        .map_err(|_| Exit::Close(close::SLOW_CONSUMER, "slow consumer"))?
        .map_err(|_| Exit::Gone),
        Ok(_) => Ok(()),
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            tracing::info!(client_id = %client.id(), missed, "slow consumer disconnected");
            Err(Exit::Close(close::SLOW_CONSUMER, "slow consumer"))
        }
    }
}

/// Feeds up to `budget` frames that are ready right now, then flushes once.
async fn write_ready(
    socket: &mut WebSocket,
    streams: &mut StreamMap<ChannelId, BroadcastStream<Delivery>>,
    client: &Client,
    budget: usize,
    settings: &SessionSettings,
) -> Result<(), Exit> {
    for _ in 0..budget {
        let Some(Some((channel, item))) = streams.next().now_or_never() else {
            break;
        };
        accept(socket, client, channel, item, settings).await?;
    }
    timeout(settings.write_timeout, socket.flush())
        .await
        .map_err(|_| Exit::Close(close::SLOW_CONSUMER, "slow consumer"))?
        .map_err(|_| Exit::Gone)
}

async fn send(
    socket: &mut WebSocket,
    message: Message,
    settings: &SessionSettings,
) -> Result<(), ()> {
    match timeout(settings.write_timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The answer to one client text frame: a reply, or an error frame. Never closes the socket.
fn answer(client: &Client, text: &str) -> Frame {
    let id = client.id();
    let message = match protocol::parse_client_message(text) {
        Ok(message) => message,
        Err(error) => {
            let ref_id = ClientMessageError::ref_id(text);
            return protocol::error_frame(&id, ref_id.as_deref(), &error.to_string());
        }
    };
    let ref_id = message.id.clone();
    let error = |text: String| protocol::error_frame(&id, ref_id.as_deref(), &text);
    let channels = client.hub().channels();
    let Some(channel) = channels.id(&message.channel) else {
        return error(format!(
            "unknown event type {:?}; valid event types: {}",
            message.channel,
            channels.describe()
        ));
    };
    if !client.state().mask().contains(channel) {
        return error(format!(
            "not subscribed to {:?}; reconnect with event_types={}",
            message.channel, message.channel
        ));
    }
    let reply_id = ref_id.clone().unwrap_or_else(protocol::new_id);
    match (message.channel.as_str(), message.message.as_str()) {
        ("health", "ping") => {
            protocol::server_frame("health", "pong", Some(&reply_id), None, Some(&id))
        }
        ("system", "client-id") => protocol::server_frame(
            "system",
            "client-id",
            Some(&reply_id),
            Some(serde_json::json!({ "client-id": id })),
            Some(&id),
        ),
        (channel, other) => error(format!(
            "unsupported message {other:?} on {channel:?}; supported: health/ping, system/client-id"
        )),
    }
}

/// Maps a read error to how the socket ends.
fn read_error(error: axum::Error) -> Exit {
    let Ok(error) = error.into_inner().downcast::<tungstenite::Error>() else {
        return Exit::Gone;
    };
    match *error {
        tungstenite::Error::Capacity(_) => Exit::Close(close::TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => Exit::Close(close::INVALID_DATA, "invalid UTF-8"),
        tungstenite::Error::Protocol(_) => Exit::Close(close::PROTOCOL_ERROR, "protocol error"),
        _ => Exit::Gone,
    }
}

/// Client messages allowed: `rate` per second sustained, `burst` at once.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
