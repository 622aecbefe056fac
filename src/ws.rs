//! One task per socket: writes channel frames, answers client messages, keeps the heartbeat,
//! and closes with a code that says why.
//!
//! The task waits on everything at once (shutdown, subscription changes, client frames, channel
//! frames, ping timer, idle deadline). When frames are ready it feeds every ready one and flushes
//! once, so a burst costs one socket write, not one per event.
//!
//! | file | concern |
//! | --- | --- |
//! | `ws.rs` | the session: welcome, the wait loop, the close handshake |
//! | `feeds` | live and replaying channel feeds, taken into the outbox |
//! | `outbox` | frames waiting for the socket; the slow-consumer rule; CloudEvents rendering |
//! | `command` | client messages as commands, answered in the client's envelope |
//! | `rate` | the client-message token bucket |
//! | `close` | close codes |

pub mod close;
mod command;
mod feeds;
mod outbox;
mod rate;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use self::feeds::{Streams, drain_replays, drop_unsubscribed, pump_replays, take, take_ready};
use self::outbox::Outbox;
use self::rate::TokenBucket;
use crate::admission::Ticket;
use crate::channels::ChannelId;
use crate::cloudevents;
use crate::config::Settings;
use crate::fanout::Activity;
use crate::hub::{Client, Feed, Recovery};
use crate::metrics::Metrics;
use crate::protocol::{self, Frame};

/// How long the hub waits for a peer to answer its close frame, and then for it to end TCP.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames written per wake-up before the task yields to its other duties.
const WRITE_BATCH: usize = 256;

/// Per-socket settings, copied out of [`Settings`] once.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub send_queue: usize,
    pub messages_per_sec: f64,
    pub message_burst: f64,
    /// Counted into when metrics are on.
    pub metrics: Option<Arc<Metrics>>,
}

impl SessionSettings {
    pub fn from_settings(s: &Settings, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            ping_interval: Duration::from_secs(s.heartbeat.ping_interval_secs.get()),
            idle_timeout: Duration::from_secs(s.heartbeat.idle_timeout_secs.get()),
            write_timeout: Duration::from_secs(s.hub.write_timeout_secs.get()),
            send_queue: s.hub.send_queue.get(),
            messages_per_sec: f64::from(s.limits.client_messages_per_sec.get()),
            message_burst: f64::from(s.limits.client_message_burst.get()),
            metrics,
        }
    }
}

/// Everything a socket task owns besides the socket. Dropping it frees the admission slots, removes the
/// client from the registry and lets shutdown stop waiting for this task.
pub struct Session {
    pub client: Client,
    pub ticket: Ticket,
    pub ignored: Vec<String>,
    /// Where the streams start, for the welcome.
    pub recovery: Recovery,
    pub settings: SessionSettings,
    pub shutdown: CancellationToken,
    pub tracker: TaskTrackerToken,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// The peer closed or vanished; nothing more to send.
    Gone,
    /// The hub ends the socket with this close code and reason.
    Close(u16, &'static str),
}

/// Serves one socket to its end. The caller runs it inside a `session` span carrying the
/// client id, owner and client IP, so every line logged here and below names the socket.
pub async fn run(mut socket: Box<WebSocket>, mut session: Session) {
    tracing::info!(
        subscriptions = ?session.client.subscription_names(),
        recovered = ?session.recovery.recovered,
        "subscriber connected"
    );
    if session.recovery.recovered == Some(false) {
        tracing::info!(reason = %session.recovery.reasons.join("; "), "resume incomplete");
    }
    let metrics = session.settings.metrics.clone();
    if let Some(metrics) = &metrics {
        metrics.socket_opened();
    }
    let feeds = session.client.take_feeds();
    let mut outbox = Outbox::new(session.settings.send_queue);
    if socket
        .protocol()
        .is_some_and(|p| p == cloudevents::SUBPROTOCOL)
    {
        outbox.render_cloudevents();
    }
    // Written once, not kept for the socket's life.
    let welcome = welcome(&session);
    session.recovery = Recovery::default();
    let exit = serve(&mut socket, &session, &mut outbox, feeds, welcome).await;
    // Free the slot and the registry entry before the close handshake, so a client that
    // reconnects as soon as it sees our close frame is admitted. The tracker token stays until
    // the close is done: shutdown waits for the queued tail and the close frame to be written.
    let Session {
        client,
        ticket,
        tracker,
        ..
    } = session;
    drop((client, ticket));
    if let Some(metrics) = &metrics {
        metrics.socket_closed(match exit {
            Exit::Gone => None,
            Exit::Close(code, _) => Some(code),
        });
    }
    match exit {
        Exit::Gone => tracing::info!("subscriber disconnected"),
        Exit::Close(code, reason) => {
            tracing::info!(code, reason, "closing subscriber")
        }
    }
    Box::pin(finish(socket, outbox, exit)).await;
    drop(tracker);
}

/// Ends a socket: for a hub-initiated close, what is queued (unless the client is a slow
/// consumer) and then the close frame; in every case, reads until the peer's close so the
/// handshake completes (the library answers a client-initiated close as it reads). After a
/// read error (1002, 1007, 1009) the stream has ended and reads nothing more: dropping the
/// socket hands it to the connection's lingering close (`server::LingeringTcp`), which
/// discards what the client still sends so it reads our close frame, not a reset.
async fn finish(mut socket: Box<WebSocket>, mut outbox: Outbox, exit: Exit) {
    if let Exit::Close(code, reason) = exit {
        let _ = timeout(CLOSE_TIMEOUT, async {
            if code != close::SLOW_CONSUMER {
                poll_fn(|cx| outbox.poll_write(cx, &mut socket)).await?;
            }
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            socket.send(Message::Close(Some(frame))).await
        })
        .await;
    }
    let _ = timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// Test-only: echoes every message back through the same read path, outbox, error mapping and
/// close handling as a subscriber's socket, so an RFC 6455 conformance suite (Autobahn, via
/// kosoku) exercises the hub's own socket handling. Served by `events-hub conformance-echo`.
pub async fn echo(mut socket: WebSocket) {
    let mut outbox = Outbox::new(usize::MAX);
    let exit = loop {
        let message = match poll_fn(|cx| poll_socket(cx, &mut socket, &mut outbox, false)).await {
            SocketEvent::WriteFailed | SocketEvent::Incoming(None) => break Exit::Gone,
            SocketEvent::Drained => continue,
            SocketEvent::Incoming(Some(Err(error))) => break read_error(error),
            SocketEvent::Incoming(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(_) | Message::Binary(_) => outbox.queue.push_back(message),
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => break Exit::Gone,
        }
    };
    finish(Box::new(socket), outbox, exit).await;
}

const SLOW: Exit = Exit::Close(close::SLOW_CONSUMER, "slow consumer");
const ADMIN_DISCONNECT: Exit =
    Exit::Close(close::ADMIN_DISCONNECT, "disconnected by an administrator");
const HISTORY_RESET: Exit = Exit::Close(
    close::HISTORY_RESET,
    "history reset (new epoch); reconnect and resume",
);
const FLOOD: Exit = Exit::Close(close::POLICY, "message rate limit exceeded");

/// The socket's one loop. Its length is the `select!`: each branch hands its work to a function
/// of its own, and the branches read best side by side.
/// The rare paths (answering a client frame, the shutdown tail) are boxed, as `finish` is: a
/// task holds the future of every path it may take, so they live on the heap only while taken.
async fn serve(
    socket: &mut WebSocket,
    session: &Session,
    outbox: &mut Outbox,
    feeds: Vec<(ChannelId, Feed)>,
    welcome: Frame,
) -> Exit {
    let client = &session.client;
    let settings = &session.settings;
    // The feeds were opened at registration, before the welcome: nothing published after the
    // welcome's positions can be missed.
    let mut streams = Streams::new(feeds);
    if outbox.push(Message::Text(welcome), settings).is_err() {
        return SLOW;
    }
    let mut ping = ping_timer(settings.ping_interval);
    let idle = sleep_until(Instant::now() + settings.idle_timeout);
    tokio::pin!(idle);
    let mut bucket = TokenBucket::new(settings.messages_per_sec, settings.message_burst);
    // Made once, not per wake-up: each registers with a lock-guarded waiter list.
    let shutdown = session.shutdown.cancelled();
    tokio::pin!(shutdown);
    let changed = client.state().changed();
    tokio::pin!(changed);

    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return Box::pin(shutdown_tail(&mut streams, client, outbox, settings)).await,
            _ = &mut changed => {
                if client.state().is_disconnected() {
                    return ADMIN_DISCONNECT;
                }
                if client.state().is_reset() {
                    return HISTORY_RESET;
                }
                changed.set(client.state().changed());
                drop_unsubscribed(&mut streams, client);
            }
            // Writes what the outbox holds, and reads the client's next frame.
            event = poll_fn(|cx| poll_session_socket(cx, socket, outbox, client, !streams.replaying.is_empty())) => {
                let incoming = match event {
                    SocketEvent::WriteFailed => return Exit::Gone,
                    SocketEvent::Drained => continue,
                    SocketEvent::Incoming(None) => return Exit::Gone,
                    SocketEvent::Incoming(Some(Err(error))) => return read_error(error),
                    SocketEvent::Incoming(Some(Ok(message))) => message,
                };
                idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                let answered = Box::pin(answer(incoming, client, &mut streams, &mut bucket))
                    .await
                    .and_then(|reply| reply.map_or(Ok(()), |r| outbox.push(Message::Text(r), settings)));
                if let Err(exit) = answered {
                    return exit;
                }
            }
            // A resumed channel's missed events, as fast as the socket takes them. Its guard is
            // read only when select! starts: `Drained` from the socket branch restarts it.
            _ = std::future::ready(()), if !streams.replaying.is_empty() && outbox.queue.is_empty() => {
                if let Err(exit) = pump_replays(&mut streams, client, outbox, settings).await {
                    return exit;
                }
            }
            first = streams.live.next(), if !streams.live.is_empty() => {
                let Some((channel, first)) = first else { continue };
                observe_latency(&first, settings);
                let taken = take(channel, first, client, outbox, settings)
                    .and_then(|()| take_ready(&mut streams.live, client, outbox, WRITE_BATCH, settings));
                if let Err(exit) = taken {
                    return exit;
                }
            }
            _ = ping.tick() => {
                if let Err(exit) = send_ping(client, outbox, settings) {
                    return exit;
                }
            }
            _ = &mut idle => return Exit::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
        }
    }
}

/// The publish→socket latency of the first event of a wake-up: once per batch, not per frame,
/// so counting stays off the per-delivery cost.
fn observe_latency(
    first: &Result<crate::fanout::Delivery, impl Sized>,
    settings: &SessionSettings,
) {
    if let (Some(metrics), Ok(delivery)) = (&settings.metrics, first) {
        metrics.delivery_latency(delivery.published.elapsed());
    }
}

fn send_ping(client: &Client, outbox: &mut Outbox, settings: &SessionSettings) -> Result<(), Exit> {
    Activity::stamp(&client.state().activity.last_ping_ms);
    outbox.push(Message::Ping(bytes::Bytes::new()), settings)
}

/// When the client last sent a frame, and a pong.
fn note_received(client: &Client, incoming: &Message) {
    let activity = &client.state().activity;
    Activity::stamp(&activity.last_received_ms);
    if matches!(incoming, Message::Pong(_)) {
        Activity::stamp(&activity.last_pong_ms);
    }
}

/// Ticks every `interval`, first one `interval` from now; a late tick is not made up for.
fn ping_timer(interval: Duration) -> tokio::time::Interval {
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping
}

/// Publishing is closed: queues everything published before the cut (the rest of any replay
/// first), then the `SERVER_SHUTDOWN` notice as the last frame.
async fn shutdown_tail(
    streams: &mut Streams,
    client: &Client,
    outbox: &mut Outbox,
    settings: &SessionSettings,
) -> Exit {
    drain_replays(streams, client, outbox).await;
    if let Err(exit) = take_ready(&mut streams.live, client, outbox, usize::MAX, settings) {
        return exit;
    }
    if let Some(notice) = client.hub().shutdown_notice() {
        outbox.queue.push_back(Message::Text(notice));
    }
    Exit::Close(close::GOING_AWAY, "server shutdown")
}

/// The reply to a client frame; `None` when it needs none (pings are answered by the library,
/// pongs only prove liveness). Text and binary frames each take a token from the bucket.
async fn answer(
    incoming: Message,
    client: &Client,
    streams: &mut Streams,
    bucket: &mut TokenBucket,
) -> Result<Option<Frame>, Exit> {
    note_received(client, &incoming);
    let counted = matches!(incoming, Message::Text(_) | Message::Binary(_));
    if counted && !bucket.take() {
        return Err(FLOOD);
    }
    match incoming {
        Message::Text(text) => Ok(Some(command::answer(client, streams, text.as_str()).await)),
        Message::Binary(_) => Ok(Some(protocol::error_frame(
            &client.id(),
            None,
            "binary frames are not supported; send JSON text frames",
        ))),
        Message::Ping(_) | Message::Pong(_) => Ok(None),
        Message::Close(_) => Err(Exit::Gone),
    }
}

enum SocketEvent {
    Incoming(Option<Result<Message, axum::Error>>),
    WriteFailed,
    /// The outbox was written out, and the caller asked to hear of it.
    Drained,
}

/// [`poll_socket`] for a subscriber, noting what is still unwritten after this wake-up's
/// write for the admin routes (one relaxed store on the socket's own state).
fn poll_session_socket(
    cx: &mut Context<'_>,
    socket: &mut WebSocket,
    outbox: &mut Outbox,
    client: &Client,
    wake_when_drained: bool,
) -> Poll<SocketEvent> {
    let event = poll_socket(cx, socket, outbox, wake_when_drained);
    client.state().activity.note_queue_depth(outbox.queue.len());
    event
}

/// One poll of the socket in both directions: push the outbox out, then look for a frame.
fn poll_socket(
    cx: &mut Context<'_>,
    socket: &mut WebSocket,
    outbox: &mut Outbox,
    wake_when_drained: bool,
) -> Poll<SocketEvent> {
    // Unflushed counts too: a flush that was pending when the queue emptied must still report
    // `Drained` when it completes, or the replay (gated on an empty queue) never resumes.
    let had_frames = !outbox.queue.is_empty() || outbox.unflushed;
    match outbox.poll_write(cx, socket) {
        Poll::Ready(Err(_)) => return Poll::Ready(SocketEvent::WriteFailed),
        Poll::Ready(Ok(())) if had_frames && wake_when_drained => {
            return Poll::Ready(SocketEvent::Drained);
        }
        _ => {}
    }
    socket.poll_next_unpin(cx).map(SocketEvent::Incoming)
}

fn welcome(session: &Session) -> Frame {
    let client = &session.client;
    let channels = client.hub().channels();
    let names = |ids: &[ChannelId]| ids.iter().map(|&c| channels.name(c)).collect::<Vec<_>>();
    let recovery = &session.recovery;
    let start = protocol::StreamStart {
        epoch: client.hub().epoch(),
        positions: recovery
            .positions
            .iter()
            .map(|&(c, seq)| (channels.name(c), seq))
            .collect(),
        recovered: recovery.recovered,
        reasons: recovery.reasons.clone(),
        unrecovered: names(&recovery.unrecovered),
    };
    protocol::welcome(
        &client.id(),
        &client.subscription_names(),
        &session.ignored,
        &start,
    )
}

/// Maps a read error to how the socket ends.
fn read_error(error: axum::Error) -> Exit {
    let Ok(error) = error.into_inner().downcast::<tungstenite::Error>() else {
        return Exit::Gone;
    };
    match *error {
        tungstenite::Error::Capacity(_) => Exit::Close(close::TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => Exit::Close(close::INVALID_DATA, "invalid UTF-8"),
        // The peer closed TCP without a close frame: gone, not a protocol error to answer.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Exit::Gone,
        tungstenite::Error::Protocol(_) => Exit::Close(close::PROTOCOL_ERROR, "protocol error"),
        _ => Exit::Gone,
    }
}
