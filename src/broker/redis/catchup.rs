//! Bringing a channel's delivery on this node up to date from the stream: after a jump in the
//! live seqs, after a reconnect, and when a client attaches. Always under the channel's lock,
//! so what reaches the fan-out is in seq order and never twice.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::MutexGuard;

use super::RedisFailure;
use super::scripts::View;
use super::state::{Inner, Local};
use crate::channels::ChannelId;
use crate::metrics::ClusterEvent;
use crate::protocol::Frame;

/// Events read from the stream per call when filling a gap.
const CHUNK: usize = 512;

impl Inner {
    /// Delivers every kept event after `local.delivered` up to `until` from the stream, in
    /// order, and answers the last view read. The first view of a node (or of a new epoch)
    /// sets the start instead: a node that just joined delivers from now on, not the history;
    /// on a new epoch the channel's sockets are closed to resume (`Fanout::reset`).
    pub async fn fill(
        &self,
        channel: ChannelId,
        local: &mut MutexGuard<'_, Local>,
        until: u64,
    ) -> Result<View, RedisFailure> {
        loop {
            let from = local.delivered + 1;
            let view = self.read(channel, from, until, CHUNK).await?;
            if view.epoch != local.epoch {
                self.new_epoch(channel, local, &view);
                continue;
            }
            let target = until.min(view.last);
            if !view.entries.is_empty() && until != u64::MAX {
                self.count(ClusterEvent::GapFill);
            }
            if let Some(&(first, _)) = view.entries.first().filter(|(s, _)| *s > from) {
                self.skipped(channel, from, first);
            } else if view.entries.is_empty() && target >= from {
                // Nothing kept of what is still to deliver: it is gone from the stream.
                self.skipped(channel, from, target + 1);
                local.delivered = target;
            }
            for (seq, frame) in view.entries.iter().cloned() {
                self.deliver(channel, local, seq, frame);
            }
            if local.delivered >= target {
                return Ok(view);
            }
        }
    }

    fn new_epoch(&self, channel: ChannelId, local: &mut Local, view: &View) {
        if local.epoch == 0 {
            local.delivered = view.last;
        } else {
            // Before any event of the new epoch reaches them: the old seqs would run on.
            let closed = self.fanout.reset(channel);
            tracing::warn!(
                channel = self.channel_name(channel),
                old = local.epoch,
                new = view.epoch,
                closed,
                "cluster: Redis lost its data; a new epoch starts, the channel's sockets close to resume"
            );
            local.delivered = 0;
        }
        local.epoch = view.epoch;
        self.epoch.store(view.epoch, Ordering::Release);
    }

    fn skipped(&self, channel: ChannelId, from: u64, next: u64) {
        self.count(ClusterEvent::Skipped(next - from));
        tracing::warn!(
            channel = self.channel_name(channel),
            from,
            missing = next - from,
            "cluster: events left the stream before this node delivered them"
        );
    }

    pub fn deliver(&self, channel: ChannelId, local: &mut Local, seq: u64, frame: Frame) {
        if seq <= local.delivered {
            return;
        }
        let sent = self.fanout.deliver(channel, frame, None, Instant::now());
        local.delivered = seq;
        if let Some(metrics) = &self.metrics {
            metrics.published(channel, sent);
        }
        self.progress.notify_waiters();
    }
}
