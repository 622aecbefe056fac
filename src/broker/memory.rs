//! The single-node broker: numbering and history in this process.
//!
//! Each channel's log lock is held while an event is numbered, sent and recorded, so
//! numbering, delivery and history happen in one order, and a client attaching under the
//! same lock sees the replay end exactly where its live receiver begins.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::history::Log;
use super::{Attached, Broker, Event, HistoryPage, PublishError, Receipt};
use crate::channels::{ChannelId, Channels};
use crate::config::HistorySettings;
use crate::fanout::Fanout;
use crate::protocol::{self, Envelope, Frame};

pub struct MemoryBroker {
    channels: Arc<Channels>,
    fanout: Arc<Fanout>,
    logs: Vec<Mutex<Log>>,
    epoch: u64,
    /// Set once publishing is closed. Publishers hold the read side while they deliver, so
    /// closing waits for them and nothing is published after it.
    closed: RwLock<bool>,
}

impl MemoryBroker {
    pub fn new(channels: Arc<Channels>, fanout: Arc<Fanout>, history: &HistorySettings) -> Self {
        let logs = channels
            .names()
            .iter()
            .map(|name| Mutex::new(Log::new(history.limits(name))))
            .collect();
        // Microseconds since 1970: differs at every start and grows, and stays below 2^53, so
        // JavaScript clients read it exactly. The history is lost at a restart; so is the epoch.
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self {
            channels,
            fanout,
            logs,
            epoch,
            closed: RwLock::new(false),
        }
    }

    fn log(&self, channel: ChannelId) -> MutexGuard<'_, Log> {
        self.logs[channel.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Stamps one event, delivers it and, unless it is targeted, numbers and keeps it.
    /// Returns its id and how many sockets it reached.
    fn publish_one(&self, event: Event) -> (String, usize) {
        let id = protocol::new_id();
        let envelope = Envelope {
            id: &id,
            ref_id: None,
            event_type: self.channels.name(event.channel),
            timestamp: &protocol::timestamp(),
            message: &event.message,
            body: event.body.as_deref(),
            client_id: event.target.as_ref(),
            seq: None,
            epoch: Some(self.epoch),
        };
        let sent = match event.target {
            // Private to one connection: neither numbered nor kept.
            Some(target) => self
                .fanout
                .deliver(event.channel, envelope.to_frame(), Some(target)),
            None => {
                let mut log = self.log(event.channel);
                let frame = Envelope {
                    seq: Some(log.next_seq()),
                    ..envelope
                }
                .to_frame();
                let sent = self.fanout.deliver(event.channel, frame.clone(), None);
                log.record(frame, Instant::now());
                sent
            }
        };
        (id, sent)
    }
}

impl Broker for MemoryBroker {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn publish(&self, events: Vec<Event>) -> Result<Receipt, PublishError> {
        let closed = self.closed.read().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return Err(PublishError::ShuttingDown);
        }
        let mut receipt = Receipt {
            ids: Vec::with_capacity(events.len()),
            recipients: 0,
        };
        for event in events {
            let (id, sent) = self.publish_one(event);
            receipt.ids.push(id);
            receipt.recipients += sent;
        }
        Ok(receipt)
    }

    fn attach(&self, channel: ChannelId, after: Option<u64>) -> Attached {
        let mut log = self.log(channel);
        let receiver = self.fanout.subscribe(channel);
        let kept = after.map_or(Ok(()), |after| log.covers(after, Instant::now()));
        Attached {
            receiver,
            last_seq: log.last_seq(),
            kept,
        }
    }

    fn replay(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Option<Vec<Frame>> {
        self.log(channel)
            .read_exact(from, until, limit, Instant::now())
    }

    fn history(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryPage {
        let mut log = self.log(channel);
        let now = Instant::now();
        let gap = log.covers(after, now).err();
        let frames = log.read(after.saturating_add(1), u64::MAX, limit, now);
        let next_since = match (frames.len(), log.oldest_seq()) {
            (0, _) | (_, None) => log.last_seq(),
            (n, Some(oldest)) => after.saturating_add(1).max(oldest) + n as u64 - 1,
        };
        HistoryPage {
            frames,
            next_since,
            oldest_seq: log.oldest_seq(),
            last_seq: log.last_seq(),
            gap,
        }
    }

    fn locate(&self, id: &str) -> Option<(ChannelId, u64)> {
        self.channels
            .ids()
            .find_map(|c| self.log(c).find(id).map(|seq| (c, seq)))
    }

    fn close(&self) {
        *self.closed.write().unwrap_or_else(|p| p.into_inner()) = true;
    }
}
