//! The node's pub/sub task: one connection subscribed to the Redis channels of the channels
//! this node has subscribers on (`interest`) and to its own `<p>:node:<node>` (the relay),
//! whose messages are delivered to the node's [`Fanout`] in seq order.
//!
//! Each message carries its epoch and seq. Under the channel's lock: a seq already delivered
//! is dropped; a jump is filled from the stream (XRANGE through `read.lua`) before the message
//! is delivered; a new epoch (Redis lost its data) restarts the count and closes the channel's
//! sockets with 4009, so their clients resume and are told. After every (re)connect
//! each channel is caught up from its last delivered seq before messages are read, and a
//! connection quiet for [`IDLE`] is probed with PING: a pub/sub socket can die without a
//! FIN (a paused Redis, a dropped NAT entry: centrifugo issue 1189), and without the probe the
//! node would wait on it forever. A session whose messages wait in more than `[cluster]
//! pubsub_backlog` ends too (`backlog`): the catch-up after the reconnect delivers them.
//!
//! [`Fanout`]: crate::fanout::Fanout

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use tokio::sync::{mpsc, oneshot};

use super::RedisFailure;
use super::backlog::Backlog;
use super::interest::{SWEEP, bounded};
use super::state::Inner;
use crate::channels::ChannelId;
use crate::metrics::ClusterEvent;
use crate::protocol::Frame;

/// A pub/sub connection silent this long is probed.
const IDLE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs sessions until `stop`, reconnecting with exponential back-off.
pub(super) async fn run(inner: Arc<Inner>, mut control: Control, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut was_up = false;
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session(&inner, &mut control, &mut was_up) => ended,
        };
        inner.up.store(false, Ordering::Release);
        inner.count(ClusterEvent::Reconnect);
        if let Err(RedisFailure::FellBehind(_)) = ended {
            inner.count(ClusterEvent::FellBehind);
        }
        if let Err(error) = ended {
            tracing::warn!(%error, "cluster: pub/sub session ended; reconnecting");
        }
        if was_up {
            backoff = BACKOFF_MIN;
        }
        // A back-off between attempts, not a wait for something to happen.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Requests to follow a channel, each answered once Redis confirmed the subscription.
pub(super) type Control = mpsc::Receiver<(ChannelId, oneshot::Sender<()>)>;

/// One connection: subscribe to what is wanted, catch it up, then deliver until it fails.
async fn session(
    inner: &Arc<Inner>,
    control: &mut Control,
    was_up: &mut bool,
) -> Result<(), RedisFailure> {
    let pubsub = bounded(inner.client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    let mut backlog = Backlog::new(stream, inner.pubsub_backlog);
    let wanted = inner.wanted_channels().await;
    let mut names: Vec<String> = wanted
        .iter()
        .map(|c| inner.keys.channels[c.index()].pubsub.clone())
        .collect();
    names.push(inner.node_channel(&inner.node_id));
    bounded(sink.subscribe(names)).await?;
    // The cluster's epoch (made now if Redis is new), before any channel is followed.
    if let Some(first) = inner.channels.ids().next() {
        let view = inner.read(first, 1, 0, 0).await?;
        inner.epoch.store(view.epoch, Ordering::Release);
    }
    for channel in wanted {
        let mut local = inner.local[channel.index()].lock().await;
        inner.fill(channel, &mut local, u64::MAX).await?;
    }
    // Leases and registry entries a restarted Redis lost are taken again.
    inner.renew().await;
    inner.up.store(true, Ordering::Release);
    *was_up = true;
    tracing::info!("cluster: pub/sub connected and caught up");
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reset by every message only: subscribing and sweeping do not prove the link alive.
    let idle = tokio::time::sleep(IDLE);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            message = backlog.next() => {
                let message = message?;
                inner.on_message(&message).await?;
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
            }
            _ = &mut idle => {
                bounded(sink.ping::<()>()).await?;
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
            }
            Some((channel, done)) = control.recv() => {
                inner.follow(&mut sink, channel).await?;
                let _ = done.send(());
            }
            _ = sweep.tick() => inner.sweep(&mut sink).await?,
        }
    }
}

/// `"<epoch> <seq> <frame>"` of a channel message.
fn numbered(payload: &str) -> Option<(u64, u64, &str)> {
    let (epoch, rest) = payload.split_once(' ')?;
    let (seq, frame) = rest.split_once(' ')?;
    Some((epoch.parse().ok()?, seq.parse().ok()?, frame))
}

impl Inner {
    async fn on_message(self: &Arc<Self>, message: &::redis::Msg) -> Result<(), RedisFailure> {
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return Ok(());
        };
        let name = message.get_channel_name();
        if name.strip_prefix(&self.keys.prefix) == Some(&format!(":node:{}", self.node_id)) {
            self.on_node_message(payload);
            return Ok(());
        }
        let Some(index) = self.keys.channels.iter().position(|k| k.pubsub == name) else {
            return Ok(());
        };
        let Some(channel) = self.channels.ids().nth(index) else {
            return Ok(());
        };
        let Some((epoch, seq, frame)) = numbered(payload) else {
            tracing::warn!(channel = name, "cluster: unreadable message skipped");
            return Ok(());
        };
        let mut local = self.local[index].lock().await;
        if epoch != local.epoch || seq > local.delivered + 1 {
            // A new numbering, or a jump: the stream has what came before this one.
            self.fill(channel, &mut local, seq - 1).await?;
        }
        if epoch == local.epoch && seq == local.delivered + 1 {
            self.deliver(channel, &mut local, seq, Frame::from(frame.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn a_message_is_epoch_seq_and_frame() {
        assert_eq!(numbered("17 3 {\"a\": 1}"), Some((17, 3, "{\"a\": 1}")));
        assert_eq!(numbered("17 x {}"), None);
        assert_eq!(numbered("17"), None);
    }
}
