//! Reading the streams: a client's attach (where its live feed starts), its replay, the history
//! route, `since_time` and `last_event_id`. Each read is one `read.lua` or `seq_at.lua` call,
//! which applies the `[history]` limits first, so every node answers from the same history.

use chrono::{DateTime, Utc};

use super::scripts::SEQ_AT;
use super::state::Inner;
use crate::broker::{Attached, Gap, HistoryPage, Kept};
use crate::channels::ChannelId;
use crate::protocol::Frame;

impl Inner {
    /// Catches the channel's delivery up with Redis, then opens the receiver at that point,
    /// under the channel's lock: the replay up to `last_seq` and the receiver meet exactly.
    /// Without Redis, the node's own position stands and only "nothing missed" is kept.
    pub async fn attach(&self, channel: ChannelId, after: Option<u64>) -> Attached {
        let _attaching = self.attaching(channel);
        let mut local = loop {
            self.ensure_subscribed(channel).await;
            let local = self.local[channel.index()].lock().await;
            // A sweep may have dropped the channel meanwhile; it will not again while this
            // client counts as attaching. Without Redis, go on unsubscribed.
            if self.is_subscribed(channel) || !self.up.load(std::sync::atomic::Ordering::Acquire) {
                break local;
            }
        };
        // A client that resumes nothing starts where this node's delivery is, once the node
        // follows the channel live: no Redis call under the lock, so a reconnect storm's
        // handshakes do not queue behind one another's round trips.
        if after.is_none() && local.epoch != 0 && self.is_subscribed(channel) {
            return Attached {
                receiver: self.fanout.subscribe(channel),
                last_seq: local.delivered,
                kept: Ok(()),
            };
        }
        let view = self.fill(channel, &mut local, u64::MAX).await;
        let delivered = local.delivered;
        let kept = match (after, view) {
            (None, _) => Ok(()),
            (Some(after), Ok(view)) => view.covers(after),
            (Some(after), Err(_)) if after == delivered => Ok(()),
            (Some(_), Err(_)) => Err(Gap::Gone {
                oldest: None,
                last_seq: delivered,
            }),
        };
        Attached {
            receiver: self.fanout.subscribe(channel),
            last_seq: delivered,
            kept,
        }
    }

    pub async fn replay(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Option<Vec<Frame>> {
        let view = self.read(channel, from, until, limit).await.ok()?;
        let starts = view.entries.first().is_some_and(|(seq, _)| *seq == from);
        starts.then(|| view.entries.into_iter().map(|(_, f)| f).collect())
    }

    pub async fn history(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryPage {
        let view = match self
            .read(channel, after.saturating_add(1), u64::MAX, limit)
            .await
        {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(%error, "cluster: history unreadable");
                let last_seq = self.local[channel.index()].lock().await.delivered;
                return HistoryPage {
                    frames: Vec::new(),
                    next_since: after,
                    oldest_seq: None,
                    last_seq,
                    gap: None,
                };
            }
        };
        let gap = view.covers(after).err();
        let next_since = match (view.entries.last(), view.oldest) {
            (Some((seq, _)), Some(_)) => *seq,
            _ => view.last,
        };
        HistoryPage {
            frames: view.entries.into_iter().map(|(_, f)| f).collect(),
            next_since,
            oldest_seq: view.oldest,
            last_seq: view.last,
            gap,
        }
    }

    pub async fn seq_at(&self, channel: ChannelId, since: DateTime<Utc>) -> u64 {
        let mut call = self.trimming(&SEQ_AT, channel);
        call.arg(since.timestamp_micros().max(0));
        let answer: Result<u64, _> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        match answer {
            Ok(seq) => seq,
            Err(error) => {
                tracing::warn!(%error, "cluster: since_time unreadable");
                self.local[channel.index()].lock().await.delivered
            }
        }
    }

    pub async fn kept(&self, channel: ChannelId) -> Kept {
        match self.read(channel, 1, 0, 0).await {
            Ok(view) => view.kept(),
            Err(_) => Kept {
                last_seq: self.local[channel.index()].lock().await.delivered,
                ..Kept::default()
            },
        }
    }

    /// One HGET per channel, in one pipeline.
    pub async fn locate(&self, id: &str) -> Option<(ChannelId, u64)> {
        let mut pipe = ::redis::pipe();
        for keys in &self.keys.channels {
            pipe.hget(&keys.ids, id);
        }
        let found: Vec<Option<u64>> = self
            .call(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
            .ok()?;
        let ids: Vec<ChannelId> = self.channels.ids().collect();
        ids.into_iter()
            .zip(found)
            .find_map(|(channel, seq)| seq.map(|s| (channel, s)))
    }
}
