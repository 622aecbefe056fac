//! The single-node broker: numbering and history in this process.
//!
//! Each channel's log lock is held while an event is numbered, sent and recorded, so
//! numbering, delivery and history happen in one order, and a client attaching under the
//! same lock sees the replay end exactly where its live receiver begins.

use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::history::Log;
use super::{Attached, Broker, Event, HistoryPage, Kept, PublishError, Receipt};
use crate::channels::{ChannelId, Channels};
use crate::config::HistorySettings;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::protocol::{self, Envelope, Frame};

pub struct MemoryBroker {
    channels: Arc<Channels>,
    fanout: Arc<Fanout>,
    logs: Vec<Mutex<Log>>,
    epoch: u64,
    /// Set once publishing is closed. Publishers hold the read side while they deliver, so
    /// closing waits for them and nothing is published after it.
    closed: RwLock<bool>,
    metrics: Option<Arc<Metrics>>,
}

impl MemoryBroker {
    pub fn new(
        channels: Arc<Channels>,
        fanout: Arc<Fanout>,
        history: &HistorySettings,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
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
            metrics,
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
        let envelope = |timestamp: &str, seq: Option<u64>| {
            Envelope {
                id: &id,
                ref_id: None,
                event_type: self.channels.name(event.channel),
                timestamp,
                message: &event.message,
                body: event.body.as_deref(),
                client_id: event.target.as_ref(),
                origin: event.origin.as_deref(),
                seq,
                epoch: Some(self.epoch),
            }
            .to_frame()
        };
        let channel = event.channel;
        let sent = match event.target {
            // Private to one connection: neither numbered nor kept.
            Some(target) => {
                let frame = envelope(&protocol::timestamp(), None);
                self.fanout
                    .deliver(channel, frame, Some(target), Instant::now())
            }
            None => {
                let mut log = self.log(channel);
                // Stamped under the lock, so the history's times rise with its seqs
                // (`since_time` relies on it); one monotonic reading serves expiry and latency.
                let (published, now) = (protocol::now_micros(), Instant::now());
                let frame = envelope(&protocol::timestamp_at(published), Some(log.next_seq()));
                let sent = self.fanout.deliver(channel, frame.clone(), None, now);
                log.record(frame, now, published);
                sent
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.published(channel, sent);
        }
        (id, sent)
    }
}

impl MemoryBroker {
    fn publish_now(&self, events: Vec<Event>) -> Result<Receipt, PublishError> {
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

    fn attach_now(&self, channel: ChannelId, after: Option<u64>) -> Attached {
        let mut log = self.log(channel);
        let receiver = self.fanout.subscribe(channel);
        let kept = after.map_or(Ok(()), |after| log.covers(after, Instant::now()));
        Attached {
            receiver,
            last_seq: log.last_seq(),
            kept,
        }
    }

    fn history_now(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryPage {
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

    fn kept_now(&self, channel: ChannelId) -> Kept {
        let log = self.log(channel);
        let (events, bytes) = log.size();
        Kept {
            events,
            bytes,
            oldest_seq: log.oldest_seq(),
            last_seq: log.last_seq(),
        }
    }
}

/// Everything happens in this process under the channel's lock, so each future is ready at
/// once: the work is done before it is returned, never across an `.await`.
impl Broker for MemoryBroker {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Receipt, PublishError>> {
        Box::pin(ready(self.publish_now(events)))
    }

    fn attach(&self, channel: ChannelId, after: Option<u64>) -> BoxFuture<'_, Attached> {
        Box::pin(ready(self.attach_now(channel, after)))
    }

    fn replay(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> BoxFuture<'_, Option<Vec<Frame>>> {
        let frames = self
            .log(channel)
            .read_exact(from, until, limit, Instant::now());
        Box::pin(ready(frames))
    }

    fn history(&self, channel: ChannelId, after: u64, limit: usize) -> BoxFuture<'_, HistoryPage> {
        Box::pin(ready(self.history_now(channel, after, limit)))
    }

    fn seq_at(&self, channel: ChannelId, since: DateTime<Utc>) -> BoxFuture<'_, u64> {
        Box::pin(ready(self.log(channel).seq_at(since, Instant::now())))
    }

    fn kept(&self, channel: ChannelId) -> BoxFuture<'_, Kept> {
        Box::pin(ready(self.kept_now(channel)))
    }

    fn locate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<(ChannelId, u64)>> {
        let found = self
            .channels
            .ids()
            .find_map(|c| self.log(c).find(id).map(|seq| (c, seq)));
        Box::pin(ready(found))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Publishers hold the read side while they deliver: this waits for them.
        *self.closed.write().unwrap_or_else(|p| p.into_inner()) = true;
        Box::pin(ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn broker() -> (MemoryBroker, ChannelId) {
        let settings = Settings::defaults();
        let channels = Arc::new(Channels::new(&settings.hub.channels));
        let fanout = Fanout::new(&channels, 64);
        let pdfm = channels.id("pdfm").expect("pdfm is a default channel");
        let broker = MemoryBroker::new(channels, fanout, &settings.history, None);
        (broker, pdfm)
    }

    fn event(channel: ChannelId, message: &str) -> Event {
        Event {
            channel,
            message: message.to_owned(),
            body: None,
            target: None,
            origin: None,
        }
    }

    fn seq_of(frame: &Frame) -> u64 {
        let value: serde_json::Value = serde_json::from_str(frame.as_str()).expect("JSON frame");
        value["seq"].as_u64().expect("a numbered frame")
    }

    #[tokio::test]
    async fn attach_fixes_the_seam_between_replay_and_live() {
        let (broker, pdfm) = broker();
        let published = (1..=3).map(|i| event(pdfm, &format!("m{i}"))).collect();
        broker
            .publish(published)
            .await
            .expect("open for publishing");
        let mut attached = broker.attach(pdfm, Some(1)).await;
        assert_eq!(attached.last_seq, 3);
        assert_eq!(attached.kept, Ok(()));
        let replayed = broker
            .replay(pdfm, 2, attached.last_seq, 10)
            .await
            .expect("kept");
        assert_eq!(replayed.iter().map(seq_of).collect::<Vec<_>>(), [2, 3]);

        broker.publish(vec![event(pdfm, "m4")]).await.expect("open");
        let live = attached
            .receiver
            .try_recv()
            .expect("the next event is live");
        assert_eq!(seq_of(&live.frame), 4);
        assert!(attached.receiver.try_recv().is_err(), "nothing twice");
    }

    #[tokio::test]
    async fn a_cursor_ahead_of_the_numbering_is_not_kept() {
        let (broker, pdfm) = broker();
        let attached = broker.attach(pdfm, Some(7)).await;
        assert_eq!(attached.last_seq, 0);
        assert!(attached.kept.is_err());
    }

    #[tokio::test]
    async fn targeted_events_are_neither_numbered_nor_kept() {
        let (broker, pdfm) = broker();
        let mut targeted = event(pdfm, "private");
        targeted.target = Some(uuid::Uuid::new_v4());
        let receipt = broker.publish(vec![targeted]).await.expect("open");
        assert_eq!(receipt.recipients, 0, "the target is not connected");
        assert_eq!(broker.history(pdfm, 0, 10).await.last_seq, 0);
    }

    #[tokio::test]
    async fn closing_refuses_every_later_publish() {
        let (broker, pdfm) = broker();
        broker.close().await;
        let refused = broker.publish(vec![event(pdfm, "late")]).await;
        assert!(matches!(refused, Err(PublishError::ShuttingDown)));
        assert_eq!(broker.history(pdfm, 0, 10).await.last_seq, 0);
    }

    #[tokio::test]
    async fn an_event_is_found_by_its_id() {
        let (broker, pdfm) = broker();
        let receipt = broker
            .publish(vec![event(pdfm, "a"), event(pdfm, "b")])
            .await
            .expect("open");
        assert_eq!(broker.locate(&receipt.ids[1]).await, Some((pdfm, 2)));
        assert_eq!(broker.locate("no-such-id").await, None);
    }
}
