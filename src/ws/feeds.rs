//! A socket's channel feeds: live receivers and resumed ones still replaying, and how their
//! frames are taken into the outbox.

use axum::extract::ws::Message;
use futures_util::{FutureExt, StreamExt};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::outbox::Outbox;
use super::{Exit, SLOW, SessionSettings, WRITE_BATCH};
use crate::channels::ChannelId;
use crate::fanout::Delivery;
use crate::hub::{Client, Feed, FeedFilter};

type Received = Result<Delivery, BroadcastStreamRecvError>;
/// A socket's channel feeds: live ones, and resumed ones still replaying history (in the order
/// they were asked for). A feed moves to `live` when its replay is over; its live receiver
/// was opened at registration, so it holds everything published meanwhile.
pub(super) struct Streams {
    pub(super) live: StreamMap<ChannelId, Feed>,
    pub(super) replaying: Vec<(ChannelId, Feed)>,
}

impl Streams {
    pub(super) fn new(feeds: Vec<(ChannelId, Feed)>) -> Self {
        let (replaying, live): (Vec<_>, Vec<_>) =
            feeds.into_iter().partition(|(_, f)| f.is_replaying());
        Self {
            live: live.into_iter().collect(),
            replaying,
        }
    }
}

impl Streams {
    /// Puts `filter` on the channel's feed, live or still replaying.
    pub(super) fn set_filter(&mut self, channel: ChannelId, filter: FeedFilter) {
        let live = self.live.iter_mut().find(|(c, _)| *c == channel);
        let replaying = self.replaying.iter_mut().find(|(c, _)| *c == channel);
        if let Some((_, feed)) = live.or(replaying) {
            feed.set_filter(Some(filter));
        }
    }
}

/// Queues up to [`WRITE_BATCH`] replayed events.
pub(super) async fn pump_replays(
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
        match feed.next_replayed().await {
            Some(Ok(frame)) => {
                outbox.push(Message::Text(frame), settings)?;
                budget -= 1;
            }
            Some(Err(missed)) => {
                let channel = client.hub().channels().name(*channel);
                tracing::info!(
                    channel,
                    missed,
                    "history dropped events before they were replayed: slow consumer"
                );
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
pub(super) async fn drain_replays(streams: &mut Streams, client: &Client, outbox: &mut Outbox) {
    let mask = client.state().mask();
    for (channel, mut feed) in std::mem::take(&mut streams.replaying) {
        if !mask.contains(channel) {
            continue;
        }
        // A replay the history overtook ends here; the client resumes from its last seq.
        while let Some(Ok(frame)) = feed.next_replayed().await {
            outbox.queue.push_back(Message::Text(frame));
        }
        streams.live.insert(channel, feed);
    }
}

/// Drops the feeds of channels the client no longer subscribes to.
pub(super) fn drop_unsubscribed(streams: &mut Streams, client: &Client) {
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

/// Queues one channel item for this client, if it is for this client.
pub(super) fn take(
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
            tracing::info!(missed, "slow consumer disconnected");
            Err(SLOW)
        }
    }
}

/// Queues up to `budget` channel items that are ready right now.
pub(super) fn take_ready(
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
