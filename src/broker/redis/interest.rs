//! Which channels this node's pub/sub connection subscribes to: only those with local
//! subscribers. A client attaching to a channel the node does not follow asks the pub/sub
//! task to subscribe and waits until Redis confirmed it; every [`SWEEP`] the task drops the
//! channels nobody on this node reads any more. A channel followed again starts afresh from
//! Redis's newest seq (as a node that joins), so a node never fills what nobody will read.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::aio::PubSubSink;
use tokio::sync::oneshot;

use super::RedisFailure;
use super::state::{Inner, RESPONSE_TIMEOUT};
use crate::channels::ChannelId;

/// How often channels without local subscribers are dropped.
pub(super) const SWEEP: Duration = Duration::from_secs(5);

/// Counts a client as attaching to a channel until dropped: the sweep leaves it subscribed.
pub(super) struct Attaching<'a>(&'a Inner, usize);

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        self.0.attaching[self.1].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    pub fn attaching(&self, channel: ChannelId) -> Attaching<'_> {
        self.attaching[channel.index()].fetch_add(1, Ordering::AcqRel);
        Attaching(self, channel.index())
    }

    pub fn is_subscribed(&self, channel: ChannelId) -> bool {
        self.subscribed[channel.index()].load(Ordering::Acquire)
    }

    /// Whether the node should follow `channel`: someone reads it or is about to.
    pub fn wanted(&self, channel: ChannelId) -> bool {
        self.fanout.receiver_count(channel) > 0
            || self.attaching[channel.index()].load(Ordering::Acquire) > 0
    }

    /// Asks the pub/sub task to follow `channel` and waits until Redis confirmed it (bounded:
    /// without Redis the client attaches anyway, and the reconnect subscribes what is wanted).
    pub async fn ensure_subscribed(&self, channel: ChannelId) {
        if self.is_subscribed(channel) {
            return;
        }
        let (done, confirmed) = oneshot::channel();
        if self.control.send((channel, done)).await.is_ok() {
            let _ = tokio::time::timeout(RESPONSE_TIMEOUT * 2, confirmed).await;
        }
    }

    /// In the pub/sub task: SUBSCRIBE, and forget the old position (the next fill starts at
    /// the newest seq).
    pub async fn follow(
        &self,
        sink: &mut PubSubSink,
        channel: ChannelId,
    ) -> Result<(), RedisFailure> {
        if self.is_subscribed(channel) {
            return Ok(());
        }
        let name = self.keys.channels[channel.index()].pubsub.clone();
        let mut local = self.local[channel.index()].lock().await;
        local.epoch = 0;
        bounded(sink.subscribe(name)).await?;
        self.subscribed[channel.index()].store(true, Ordering::Release);
        Ok(())
    }

    /// In the pub/sub task: UNSUBSCRIBE from channels nobody here reads. A channel whose lock
    /// is held (delivering, attaching) is left for the next sweep.
    pub async fn sweep(&self, sink: &mut PubSubSink) -> Result<(), RedisFailure> {
        for channel in self.channels.ids() {
            if !self.is_subscribed(channel) || self.wanted(channel) {
                continue;
            }
            let Ok(mut local) = self.local[channel.index()].try_lock() else {
                continue;
            };
            if self.wanted(channel) {
                continue;
            }
            self.subscribed[channel.index()].store(false, Ordering::Release);
            local.epoch = 0;
            let name = self.keys.channels[channel.index()].pubsub.clone();
            bounded(sink.unsubscribe(name)).await?;
        }
        Ok(())
    }

    /// At a session's start: the channels to subscribe to; the others start afresh later.
    pub async fn wanted_channels(&self) -> Vec<ChannelId> {
        let mut wanted = Vec::new();
        for channel in self.channels.ids() {
            let want = self.wanted(channel);
            self.subscribed[channel.index()].store(want, Ordering::Release);
            if want {
                wanted.push(channel);
            } else {
                self.local[channel.index()].lock().await.epoch = 0;
            }
        }
        wanted
    }
}

pub(super) async fn bounded<T>(
    call: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, RedisFailure> {
    tokio::time::timeout(RESPONSE_TIMEOUT, call)
        .await
        .map_err(|_| RedisFailure::Timeout(RESPONSE_TIMEOUT))?
        .map_err(Into::into)
}
