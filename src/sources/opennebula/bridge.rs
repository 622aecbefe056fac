//! The bridge's thread: a ZeroMQ SUB socket on the Hook Manager's PUB socket, whose messages
//! are mapped (`mapping`) and published like any publisher's events.
//!
//! libzmq's API blocks, so each bridge runs on a thread of its own and never on the async
//! runtime; the thread publishes by blocking on the runtime's handle (a publish is awaited:
//! a shared broker's may do I/O). libzmq
//! reconnects by itself with exponential back-off (`reconnect_min_ms` doubling up to
//! `reconnect_max_ms`) and, with ZMTP heartbeats, also notices a publisher that vanished
//! without closing its connection. A socket monitor tells the bridge when the link is up, for
//! the logs and `/readyz`.
//!
//! Malformed messages are counted per kind, logged at `warn` the first time for each kind
//! (then at `debug`, with a `warn` summary at most every five minutes) and skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::config::OpenNebulaSettings;
use super::mapping::{Mapper, Outcome, SKIPPED_KINDS};
use super::message::MALFORMED_KINDS;
use super::stats::Stats;
use crate::broker::{Event, PublishError};
use crate::channels::ChannelId;
use crate::publisher::Publisher;

/// How long the thread waits for a message before looking at the shutdown token again.
const POLL_MS: i64 = 100;
/// Messages handled per wake-up before the shutdown token is looked at again.
const BATCH: usize = 1024;
/// Messages libzmq may queue for the bridge (its default of 1000 drops bursts silently).
const RECEIVE_QUEUE: i32 = 100_000;
/// A peer that sends a larger message is disconnected by libzmq (then reconnected): a guard
/// against an endpoint that is not a Hook Manager, far above any hook message.
const MAX_MESSAGE_BYTES: i64 = 64 << 20;
/// Malformed input is summarised at `warn` at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(300);

/// Why a ZeroMQ session ended early; the bridge starts a new one after a back-off.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
}

/// Starts bridge number `index` on its own thread. The thread holds `token` until it ends, so
/// shutdown can wait for it.
pub fn spawn(
    index: usize,
    settings: OpenNebulaSettings,
    publisher: Publisher,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    token: TaskTrackerToken,
) {
    let Some(channel) = publisher.channel(&settings.channel) else {
        // Validated at start-up; kept as a message rather than a panic.
        tracing::error!(
            source = index,
            channel = %settings.channel,
            "OpenNebula bridge not started: unknown channel"
        );
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(
            source = index,
            "OpenNebula bridge not started: not started from the async runtime"
        );
        return;
    };
    let bridge = Bridge {
        index,
        runtime,
        mapper: Mapper::new(&settings),
        settings,
        publisher,
        channel,
        stats,
        shutdown,
        link: Link::default(),
        summary: Summary::default(),
    };
    let spawned = std::thread::Builder::new()
        .name(format!("opennebula-{index}"))
        .spawn(move || {
            let _token = token;
            bridge.run();
        });
    if let Err(error) = spawned {
        tracing::error!(
            source = index,
            %error,
            "OpenNebula bridge not started: cannot start its thread"
        );
    }
}

/// Whether to go on after a message.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Bridge {
    index: usize,
    /// Where the thread's publishes run.
    runtime: tokio::runtime::Handle,
    settings: OpenNebulaSettings,
    publisher: Publisher,
    channel: ChannelId,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    mapper: Mapper,
    link: Link,
    summary: Summary,
}

impl Bridge {
    fn run(mut self) {
        tracing::info!(
            source = self.index,
            endpoint = %self.settings.endpoint,
            channel = %self.settings.channel,
            "OpenNebula bridge started"
        );
        let max = Duration::from_millis(self.settings.reconnect_max_ms);
        let mut backoff = Duration::from_millis(self.settings.reconnect_min_ms);
        loop {
            match self.session() {
                Ok(()) => break,
                Err(error) => {
                    self.stats.set_connected(false);
                    tracing::error!(
                        source = self.index,
                        %error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "OpenNebula bridge: ZeroMQ failed; starting a new socket"
                    );
                    if self.sleep(backoff) == Flow::Stop {
                        break;
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        self.stats.set_connected(false);
        tracing::info!(source = self.index, "OpenNebula bridge stopped");
    }

    /// One ZeroMQ context and SUB socket, used until shutdown (`Ok`) or a ZeroMQ error.
    fn session(&mut self) -> Result<(), BridgeError> {
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB)?;
        sub.set_linger(0)?;
        sub.set_rcvhwm(RECEIVE_QUEUE)?;
        sub.set_maxmsgsize(MAX_MESSAGE_BYTES)?;
        sub.set_reconnect_ivl(millis(self.settings.reconnect_min_ms))?;
        sub.set_reconnect_ivl_max(millis(self.settings.reconnect_max_ms))?;
        if self.settings.heartbeat_secs > 0 {
            let interval = millis(self.settings.heartbeat_secs * 1000);
            sub.set_heartbeat_ivl(interval)?;
            sub.set_heartbeat_timeout(interval.saturating_mul(3))?;
        }
        for prefix in &self.settings.subscribe {
            sub.set_subscribe(prefix.as_bytes())?;
        }
        let monitor_endpoint = format!("inproc://opennebula-monitor-{}", self.index);
        let events = [
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
            zmq::SocketEvent::DISCONNECTED,
            zmq::SocketEvent::CONNECT_RETRIED,
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
        ]
        .iter()
        .fold(0, |mask, e| mask | i32::from(e.to_raw()));
        sub.monitor(&monitor_endpoint, events)?;
        let monitor = context.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&monitor_endpoint)?;
        sub.connect(&self.settings.endpoint)?;

        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let mut items = [
                sub.as_poll_item(zmq::POLLIN),
                monitor.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, POLL_MS) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
            if items[1].is_readable() {
                self.monitor_event(&monitor);
            }
            if items[0].is_readable() {
                for _ in 0..BATCH {
                    match sub.recv_multipart(zmq::DONTWAIT) {
                        Ok(frames) => {
                            if self.handle(&frames) == Flow::Stop {
                                return Ok(());
                            }
                        }
                        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => break,
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            self.summarise();
        }
    }

    /// One message from the Hook Manager: map it, publish it, or count why not.
    fn handle(&mut self, frames: &[Vec<u8>]) -> Flow {
        self.stats.received();
        let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        match self.mapper.map(&parts) {
            Ok(Outcome::Publish(mapped)) => {
                let events: Vec<Event> = mapped
                    .into_iter()
                    .map(|m| Event {
                        channel: self.channel,
                        message: m.message.to_owned(),
                        body: Some(m.body),
                        target: None,
                        origin: None,
                    })
                    .collect();
                let count = events.len();
                self.stats.set_tracked(self.mapper.remembered());
                match self.runtime.block_on(self.publisher.publish(events)) {
                    Ok(_) => self.stats.published(count),
                    Err(PublishError::ShuttingDown) => {
                        tracing::debug!(
                            source = self.index,
                            "the hub is shutting down; OpenNebula bridge stops"
                        );
                        return Flow::Stop;
                    }
                    Err(error) => {
                        tracing::warn!(
                            source = self.index,
                            %error,
                            "the hub refused an OpenNebula event"
                        );
                    }
                }
            }
            Ok(Outcome::Skip(why)) => {
                self.stats.skipped(why.kind());
                tracing::trace!(
                    source = self.index,
                    key = ?key_of(frames),
                    why = SKIPPED_KINDS[why.kind()],
                    "OpenNebula message skipped"
                );
            }
            Err(malformed) => {
                let kind = MALFORMED_KINDS
                    .get(malformed.kind())
                    .copied()
                    .unwrap_or("?");
                let count = self.stats.malformed(malformed.kind());
                let key = key_of(frames);
                if count == 1 {
                    tracing::warn!(
                        source = self.index,
                        kind,
                        key = ?key,
                        error = %malformed,
                        "skipped a malformed OpenNebula message; more of this kind are logged at \
                         debug and counted in /readyz"
                    );
                } else {
                    tracing::debug!(
                        source = self.index,
                        kind,
                        count,
                        key = ?key,
                        error = %malformed,
                        "skipped a malformed OpenNebula message"
                    );
                }
            }
        }
        Flow::Continue
    }

    /// A socket monitor event: the link to the publisher went up or down.
    fn monitor_event(&mut self, monitor: &zmq::Socket) {
        let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) else {
            return;
        };
        let Some(&[lo, hi, ..]) = frames.first().map(Vec::as_slice) else {
            return;
        };
        let event = u16::from_ne_bytes([lo, hi]);
        let endpoint = &self.settings.endpoint;
        if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
            self.stats.set_connected(true);
            self.link.complained = false;
            tracing::info!(
                source = self.index,
                %endpoint,
                "connected to the OpenNebula Hook Manager"
            );
        } else if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
            let was_up = self.stats.is_connected();
            self.stats.set_connected(false);
            if was_up {
                // Said here; the retries that follow need not say it again.
                self.link.complained = true;
                tracing::warn!(
                    source = self.index,
                    %endpoint,
                    "lost the OpenNebula Hook Manager; reconnecting with back-off"
                );
            }
        } else if !self.link.complained {
            // Refused connections and failed handshakes repeat at every retry: say it once.
            self.link.complained = true;
            let why = if event == zmq::SocketEvent::CONNECT_RETRIED.to_raw() {
                "nothing accepts connections there"
            } else {
                "the handshake failed (is it a ZeroMQ PUB socket?)"
            };
            tracing::warn!(
                source = self.index,
                %endpoint,
                why,
                retry_max_ms = self.settings.reconnect_max_ms,
                "cannot reach the OpenNebula Hook Manager; retrying with back-off"
            );
        }
    }

    /// A `warn` line when malformed messages were skipped since the last one, at most every
    /// [`SUMMARY_EVERY`].
    fn summarise(&mut self) {
        let now = Instant::now();
        let last = *self.summary.at.get_or_insert(now);
        if now.duration_since(last) < SUMMARY_EVERY {
            return;
        }
        self.summary.at = Some(now);
        let total = self.stats.malformed_total();
        if total > self.summary.malformed {
            tracing::warn!(
                source = self.index,
                skipped = total - self.summary.malformed,
                total,
                "malformed OpenNebula messages skipped in the last {} minutes (by kind: /readyz)",
                SUMMARY_EVERY.as_secs() / 60
            );
            self.summary.malformed = total;
        }
    }

    /// Sleeps `duration` unless shutdown begins first.
    fn sleep(&self, duration: Duration) -> Flow {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if self.shutdown.is_cancelled() {
                return Flow::Stop;
            }
            let left = until.saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_millis(POLL_MS as u64).min(left));
        }
        Flow::Continue
    }
}

/// What the bridge last said about the link, so it does not repeat itself.
#[derive(Debug, Default)]
struct Link {
    /// An unreachable publisher has been reported since the last connection.
    complained: bool,
}

#[derive(Debug, Default)]
struct Summary {
    at: Option<Instant>,
    malformed: u64,
}

/// The key frame, shortened, for log lines.
fn key_of(frames: &[Vec<u8>]) -> String {
    let key = frames.first().map(Vec::as_slice).unwrap_or_default();
    String::from_utf8_lossy(&key[..key.len().min(100)]).into_owned()
}

/// Settings are validated to at most an hour; libzmq takes milliseconds as a C int.
fn millis(ms: u64) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}
