//! What a socket reads from one channel: first the history it missed (when it resumed), then
//! the live broadcast.
//!
//! The live receiver is opened at the same moment as the replay's end is fixed
//! (`Broker::attach`), so the replay ends exactly where the live stream begins: no gap and
//! no duplicate at the seam, whatever is being published meanwhile. The replay is read from the
//! broker's history in small chunks, so a long one never holds the history for long, and the socket task pulls
//! it only as fast as the socket takes it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt, ready};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::broker::Broker;
use crate::channels::ChannelId;
use crate::fanout::{Delivery, FilterCount};
use crate::filter::Filter;
use crate::protocol::Frame;

/// Events read from the history per call.
const REPLAY_CHUNK: usize = 256;

/// One channel's stream for one socket. A `Lagged` error means events were lost to this
/// socket (its receiver overflowed, or the history dropped what it still had to replay):
/// the socket is a slow consumer.
pub struct Feed {
    /// Boxed: only a resumed feed has one, and every subscription holds a feed.
    replay: Option<Box<Replay>>,
    live: BroadcastStream<Delivery>,
    /// Boxed for the same reason: most subscriptions have none.
    filter: Option<Box<FeedFilter>>,
}

/// A subscription's filter, counted in the fanout while it is in force, so that each event of
/// the channel is parsed once for all filtered subscribers ([`crate::fanout::EventView`]).
pub struct FeedFilter {
    filter: Filter,
    _counted: FilterCount,
}

impl FeedFilter {
    pub(super) fn new(filter: Filter, counted: FilterCount) -> Self {
        Self {
            filter,
            _counted: counted,
        }
    }

    fn passes(&self, delivery: &Delivery) -> bool {
        match &delivery.view {
            Some(view) => view
                .event(&delivery.frame)
                .is_some_and(|event| self.filter.matches(event)),
            // Delivered before this filter was counted: parse here, just this once.
            None => self.filter.matches_frame(&delivery.frame),
        }
    }
}

struct Replay {
    broker: Arc<dyn Broker>,
    channel: ChannelId,
    /// The next seq to read from the log, and the last one to replay.
    next: u64,
    until: u64,
    buffer: VecDeque<Frame>,
}

impl Feed {
    pub(super) fn live(receiver: broadcast::Receiver<Delivery>) -> Self {
        Self {
            replay: None,
            live: BroadcastStream::new(receiver),
            filter: None,
        }
    }

    /// Only events that pass `filter` come out of this feed from now on (replayed ones too);
    /// `None` lets every event through.
    pub fn set_filter(&mut self, filter: Option<FeedFilter>) {
        self.filter = filter.map(Box::new);
    }

    /// Replays seqs `after + 1 ..= until` from the log, then reads `receiver`, which was opened
    /// right after `until` was published.
    pub(super) fn resumed(
        broker: Arc<dyn Broker>,
        channel: ChannelId,
        after: u64,
        until: u64,
        receiver: broadcast::Receiver<Delivery>,
    ) -> Self {
        let replay = (after < until).then(|| {
            Box::new(Replay {
                broker,
                channel,
                next: after + 1,
                until,
                buffer: VecDeque::new(),
            })
        });
        Self {
            replay,
            live: BroadcastStream::new(receiver),
            filter: None,
        }
    }

    /// Whether events from the history are still to come before the live ones.
    pub fn is_replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// The next event of the replay that passes the filter; `None` once it is over and the
    /// feed is live. `Err` with the number of events lost when the history dropped what was
    /// still to be replayed.
    pub async fn next_replayed(&mut self) -> Option<Result<Frame, u64>> {
        loop {
            let next = self.next_kept().await?;
            let passes = |frame: &Frame| {
                self.filter
                    .as_ref()
                    .is_none_or(|f| f.filter.matches_frame(frame))
            };
            match next {
                Ok(frame) if !passes(&frame) => continue,
                other => return Some(other),
            }
        }
    }

    /// The next event of the replay, filtered or not.
    async fn next_kept(&mut self) -> Option<Result<Frame, u64>> {
        let replay = self.replay.as_mut()?;
        if replay.buffer.is_empty() && replay.next <= replay.until {
            let chunk = replay
                .broker
                .replay(replay.channel, replay.next, replay.until, REPLAY_CHUNK)
                .await;
            match chunk {
                Some(frames) if !frames.is_empty() => {
                    replay.next += frames.len() as u64;
                    replay.buffer.extend(frames);
                }
                _ => {
                    let missed = replay.until - replay.next + 1;
                    self.replay = None;
                    return Some(Err(missed));
                }
            }
        }
        let frame = replay.buffer.pop_front();
        if frame.is_none() {
            self.replay = None;
        }
        frame.map(Ok)
    }
}

/// The live part. The socket task reads it only once the replay is over.
impl Stream for Feed {
    type Item = Result<Delivery, BroadcastStreamRecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.filter.is_none() {
            return self.live.poll_next_unpin(cx);
        }
        // Events the filter drops are skipped here; the broadcast receiver's cooperative
        // budget still hands control back to the runtime on a long run of them.
        loop {
            let item = ready!(self.live.poll_next_unpin(cx));
            let dropped = match (&self.filter, &item) {
                (Some(filter), Some(Ok(delivery))) => !filter.passes(delivery),
                _ => false,
            };
            if !dropped {
                return Poll::Ready(item);
            }
        }
    }
}
