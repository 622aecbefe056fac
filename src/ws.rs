//! One task per socket: writes channel frames, answers client messages, keeps the heartbeat,
//! and closes with a code that says why.
//!
//! The task waits on everything at once (shutdown, subscription changes, client frames, channel
//! frames, ping timer, idle deadline). When frames are ready it feeds every ready one and flushes
//! once, so a burst costs one socket write, not one per event.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, ready};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

mod command;

use crate::admission::Ticket;
use crate::config::Settings;
use crate::hub::{ChannelId, Client, Delivery, Feed, Recovery};
use crate::protocol::{self, Frame};

/// Close codes the hub uses: RFC 6455's from axum's `close_code`, and the hub's own 4xxx.
pub mod close {
    use axum::extract::ws::close_code;

    pub const GOING_AWAY: u16 = close_code::AWAY;
    pub const PROTOCOL_ERROR: u16 = close_code::PROTOCOL;
    pub const INVALID_DATA: u16 = close_code::INVALID;
    pub const POLICY: u16 = close_code::POLICY;
    pub const TOO_BIG: u16 = close_code::SIZE;
    /// No frame from the client within `idle_timeout_secs`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The client fell `send_queue` frames behind, or its socket took nothing for
    /// `write_timeout_secs`.
    pub const SLOW_CONSUMER: u16 = 4008;
}

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
}

impl SessionSettings {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            ping_interval: Duration::from_secs(s.heartbeat.ping_interval_secs.get()),
            idle_timeout: Duration::from_secs(s.heartbeat.idle_timeout_secs.get()),
            write_timeout: Duration::from_secs(s.hub.write_timeout_secs.get()),
            send_queue: s.hub.send_queue.get(),
            messages_per_sec: f64::from(s.limits.client_messages_per_sec.get()),
            message_burst: f64::from(s.limits.client_message_burst.get()),
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

pub async fn run(mut socket: WebSocket, mut session: Session) {
    let client_id = session.client.id();
    let ip = session.ticket.ip();
    tracing::info!(
        %client_id,
        %ip,
        subscriptions = ?session.client.subscription_names(),
        recovered = ?session.recovery.recovered,
        "subscriber connected"
    );
    if session.recovery.recovered == Some(false) {
        tracing::info!(%client_id, reason = %session.recovery.reasons.join("; "), "resume incomplete");
    }
    let feeds = session.client.take_feeds();
    let mut outbox = Outbox::new(session.settings.send_queue);
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
    match exit {
        Exit::Gone => tracing::info!(%client_id, %ip, "subscriber disconnected"),
        Exit::Close(code, reason) => {
            tracing::info!(%client_id, %ip, code, reason, "closing subscriber")
        }
    }
    finish(socket, outbox, exit).await;
    drop(tracker);
}

/// Ends a socket: for a hub-initiated close, what is queued (unless the client is a slow
/// consumer) and then the close frame; in every case, reads until the peer's close so the
/// handshake completes (the library answers a client-initiated close as it reads). After a
/// read error (1002, 1007, 1009) the stream has ended and reads nothing more: dropping the
/// socket hands it to the connection's lingering close (`server::LingeringTcp`), which
/// discards what the client still sends so it reads our close frame, not a reset.
async fn finish(mut socket: WebSocket, mut outbox: Outbox, exit: Exit) {
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
    finish(socket, outbox, exit).await;
}

const SLOW: Exit = Exit::Close(close::SLOW_CONSUMER, "slow consumer");
const FLOOD: Exit = Exit::Close(close::POLICY, "message rate limit exceeded");

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
    let (replaying, live): (Vec<_>, Vec<_>) =
        feeds.into_iter().partition(|(_, f)| f.is_replaying());
    let mut streams = Streams {
        live: live.into_iter().collect(),
        replaying,
    };
    if outbox.push(Message::Text(welcome), settings).is_err() {
        return SLOW;
    }

    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
            _ = &mut shutdown => {
                // Publishing is closed: queue everything published before the cut (the rest of
                // any replay first), then the SERVER_SHUTDOWN notice as the last frame.
                drain_replays(&mut streams, client, outbox);
                if let Err(exit) = take_ready(&mut streams.live, client, outbox, usize::MAX, settings) {
                    return exit;
                }
                if let Some(notice) = client.hub().shutdown_notice() {
                    outbox.queue.push_back(Message::Text(notice));
                }
                return Exit::Close(close::GOING_AWAY, "server shutdown");
            }
            _ = &mut changed => {
                changed.set(client.state().changed());
                drop_unsubscribed(&mut streams, client);
            }
            // Writes what the outbox holds, and reads the client's next frame.
            event = poll_fn(|cx| poll_socket(cx, socket, outbox, !streams.replaying.is_empty())) => {
                let incoming = match event {
                    SocketEvent::WriteFailed => return Exit::Gone,
                    SocketEvent::Drained => continue,
                    SocketEvent::Incoming(None) => return Exit::Gone,
                    SocketEvent::Incoming(Some(Err(error))) => return read_error(error),
                    SocketEvent::Incoming(Some(Ok(message))) => message,
                };
                idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                let reply = match incoming {
                    Message::Text(text) => {
                        if !bucket.take() {
                            return FLOOD;
                        }
                        command::answer(client, &mut streams, text.as_str())
                    }
                    Message::Binary(_) => {
                        if !bucket.take() {
                            return FLOOD;
                        }
                        protocol::error_frame(
                            &client.id(),
                            None,
                            "binary frames are not supported; send JSON text frames",
                        )
                    }
                    // Pings are answered by the library; pongs only prove liveness.
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) => return Exit::Gone,
                };
                if let Err(exit) = outbox.push(Message::Text(reply), settings) {
                    return exit;
                }
            }
            // A resumed channel's missed events, as fast as the socket takes them. Its guard is
            // read only when select! starts: `Drained` from the socket branch restarts it.
            _ = std::future::ready(()), if !streams.replaying.is_empty() && outbox.queue.is_empty() => {
                if let Err(exit) = pump_replays(&mut streams, client, outbox, settings) {
                    return exit;
                }
            }
            first = streams.live.next(), if !streams.live.is_empty() => {
                let Some((channel, first)) = first else { continue };
                if let Err(exit) = take(channel, first, client, outbox, settings) {
                    return exit;
                }
                if let Err(exit) = take_ready(&mut streams.live, client, outbox, WRITE_BATCH, settings) {
                    return exit;
                }
            }
            _ = ping.tick() => {
                if let Err(exit) = outbox.push(Message::Ping(bytes::Bytes::new()), settings) {
                    return exit;
                }
            }
            _ = &mut idle => return Exit::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
        }
    }
}

enum SocketEvent {
    Incoming(Option<Result<Message, axum::Error>>),
    WriteFailed,
    /// The outbox was written out, and the caller asked to hear of it.
    Drained,
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

type Received = Result<Delivery, BroadcastStreamRecvError>;
/// A socket's channel feeds: live ones, and resumed ones still replaying history (in the order
/// they were asked for). A feed moves to `live` when its replay is over; its live receiver
/// was opened at registration, so it holds everything published meanwhile.
struct Streams {
    live: StreamMap<ChannelId, Feed>,
    replaying: Vec<(ChannelId, Feed)>,
}

/// Queues up to [`WRITE_BATCH`] replayed events.
fn pump_replays(
    streams: &mut Streams,
    client: &Client,
    outbox: &mut Outbox,
    settings: &SessionSettings,
) -> Result<(), Exit> {
    let mut budget = WRITE_BATCH.min(outbox.limit);
    while budget > 0 {
        let Some((channel, feed)) = streams.replaying.first_mut() else {
            break;
        };
        // Unsubscribed over REST while replaying: in force before the task hears of it.
        if !client.state().mask().contains(*channel) {
            streams.replaying.remove(0);
            continue;
        }
        match feed.next_replayed() {
            Some(Ok(frame)) => {
                outbox.push(Message::Text(frame), settings)?;
                budget -= 1;
            }
            Some(Err(missed)) => {
                let channel = client.hub().channels().name(*channel);
                tracing::info!(client_id = %client.id(), channel, missed,
                    "history dropped events before they were replayed: slow consumer");
                return Err(SLOW);
            }
            None => {
                let (channel, feed) = streams.replaying.remove(0);
                streams.live.insert(channel, feed);
            }
        }
    }
    Ok(())
}

/// At shutdown: queues the rest of every replay, past the outbox limit. What it holds is bounded
/// by the history and shared with it; `finish` writes it within the close timeout.
fn drain_replays(streams: &mut Streams, client: &Client, outbox: &mut Outbox) {
    let mask = client.state().mask();
    for (channel, mut feed) in std::mem::take(&mut streams.replaying) {
        if !mask.contains(channel) {
            continue;
        }
        // A replay the history overtook ends here; the client resumes from its last seq.
        while let Some(Ok(frame)) = feed.next_replayed() {
            outbox.queue.push_back(Message::Text(frame));
        }
        streams.live.insert(channel, feed);
    }
}

/// Drops the feeds of channels the client no longer subscribes to.
fn drop_unsubscribed(streams: &mut Streams, client: &Client) {
    let mask = client.state().mask();
    let dropped: Vec<ChannelId> = streams
        .live
        .keys()
        .copied()
        .filter(|c| !mask.contains(*c))
        .collect();
    for channel in dropped {
        streams.live.remove(&channel);
    }
    streams.replaying.retain(|(c, _)| mask.contains(*c));
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

/// Queues one channel item for this client, if it is for this client.
fn take(
    channel: ChannelId,
    item: Received,
    client: &Client,
    outbox: &mut Outbox,
    settings: &SessionSettings,
) -> Result<(), Exit> {
    match item {
        Ok(delivery) if client.wants(channel, &delivery) => {
            outbox.push(Message::Text(delivery.frame), settings)
        }
        Ok(_) => Ok(()),
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            tracing::info!(client_id = %client.id(), missed, "slow consumer disconnected");
            Err(SLOW)
        }
    }
}

/// Queues up to `budget` channel items that are ready right now.
fn take_ready(
    streams: &mut StreamMap<ChannelId, Feed>,
    client: &Client,
    outbox: &mut Outbox,
    budget: usize,
    settings: &SessionSettings,
) -> Result<(), Exit> {
    for _ in 0..budget {
        let Some(Some((channel, item))) = streams.next().now_or_never() else {
            break;
        };
        take(channel, item, client, outbox, settings)?;
    }
    Ok(())
}

/// Frames waiting for the socket. Bounded: a client that lets `send_queue` frames pile up, or
/// whose socket accepts nothing for `write_timeout`, is a slow consumer.
struct Outbox {
    queue: VecDeque<Message>,
    limit: usize,
    unflushed: bool,
    blocked_since: Option<Instant>,
}

impl Outbox {
    fn new(limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            limit,
            unflushed: false,
            blocked_since: None,
        }
    }

    fn push(&mut self, message: Message, settings: &SessionSettings) -> Result<(), Exit> {
        let stalled = self
            .blocked_since
            .is_some_and(|since| since.elapsed() >= settings.write_timeout);
        if self.queue.len() >= self.limit || stalled {
            return Err(SLOW);
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Feeds every queued frame into the socket and flushes once: a burst costs one write.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
    ) -> Poll<Result<(), axum::Error>> {
        let result = self.drive(cx, socket);
        match result {
            Poll::Pending => {
                self.blocked_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => {
                self.blocked_since = None;
                // A burst may have grown the queue; give the memory back once it is drained.
                if self.queue.capacity() > 64 {
                    self.queue.shrink_to(16);
                }
            }
        }
        result
    }

    fn drive(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
    ) -> Poll<Result<(), axum::Error>> {
        while !self.queue.is_empty() {
            ready!(socket.poll_ready_unpin(cx))?;
            if let Some(message) = self.queue.pop_front() {
                socket.start_send_unpin(message)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(socket.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
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
        // The peer closed TCP without a close frame: gone, not a protocol error to answer.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Exit::Gone,
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
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(send_queue: usize) -> SessionSettings {
        SessionSettings {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(10),
            send_queue,
            messages_per_sec: 10.0,
            message_burst: 20.0,
        }
    }

    fn text(s: &'static str) -> Message {
        Message::Text(Utf8Bytes::from_static(s))
    }

    #[test]
    fn the_outbox_refuses_the_frame_past_its_limit_as_a_slow_consumer() {
        let settings = settings(2);
        let mut outbox = Outbox::new(settings.send_queue);
        assert!(outbox.push(text("a"), &settings).is_ok());
        assert!(outbox.push(text("b"), &settings).is_ok());
        assert!(matches!(
            outbox.push(text("c"), &settings),
            Err(Exit::Close(close::SLOW_CONSUMER, _))
        ));
        assert_eq!(outbox.queue.len(), 2);
    }

    #[test]
    fn a_socket_blocked_for_the_write_timeout_is_a_slow_consumer_even_with_room() {
        let settings = settings(100);
        let mut outbox = Outbox::new(settings.send_queue);
        let now = Instant::now();
        outbox.blocked_since = now.checked_sub(Duration::from_secs(5));
        assert!(
            outbox.push(text("a"), &settings).is_ok(),
            "blocked, but not for long"
        );
        outbox.blocked_since = now.checked_sub(settings.write_timeout);
        assert!(matches!(
            outbox.push(text("b"), &settings),
            Err(Exit::Close(close::SLOW_CONSUMER, _))
        ));
    }

    #[test]
    fn the_token_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0);
        bucket.last = start;
        assert!((0..3).all(|_| bucket.take_at(start)), "the burst");
        assert!(!bucket.take_at(start), "then nothing at once");
        // 10 per second: one more after 100 ms, not before.
        assert!(!bucket.take_at(start + Duration::from_millis(50)));
        assert!(bucket.take_at(start + Duration::from_millis(100)));
        // A long pause refills to the burst, no more.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take_at(later)));
        assert!(!bucket.take_at(later));
    }
}
