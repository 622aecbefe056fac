//! Publishing in a cluster: each run of broadcast events is one `publish.lua` call (numbered,
//! kept and PUBLISHed in one atomic step); a targeted event goes to its client directly when
//! it is on this node, else through the relay to the node the registry names.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::RedisFailure;
use super::scripts::{self, PUBLISH};
use super::state::Inner;
use crate::broker::{Event, PublishError, Receipt};
use crate::protocol::{self, Envelope};

/// The frame's timestamp until `publish.lua` writes Redis's clock in its place.
const STAMP: &str = "T";
const STAMP_FIELD: &str = ",\"timestamp\":\"T\"";

/// A broadcast event serialised around its timestamp: `head` ends where the timestamp's value
/// begins, `tail` runs from its closing quote to the end without the final brace, where the
/// script adds `seq` and `epoch` (the envelope's last fields).
struct Prepared {
    id: String,
    head: String,
    tail: String,
}

impl Inner {
    pub async fn publish(&self, events: Vec<Event>) -> Result<Receipt, PublishError> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(PublishError::ShuttingDown);
        }
        let mut receipt = Receipt {
            ids: Vec::with_capacity(events.len()),
            recipients: 0,
        };
        let mut run: Vec<(Prepared, &Event)> = Vec::new();
        for event in &events {
            if event.target.is_some() {
                self.publish_run(std::mem::take(&mut run), &mut receipt)
                    .await?;
                self.publish_targeted(event, &mut receipt).await?;
            } else {
                run.push((self.prepare(event), event));
            }
        }
        self.publish_run(run, &mut receipt).await?;
        drop(closed);
        Ok(receipt)
    }

    fn prepare(&self, event: &Event) -> Prepared {
        let id = protocol::new_id();
        let frame = Envelope {
            id: &id,
            ref_id: None,
            event_type: self.channel_name(event.channel),
            timestamp: STAMP,
            message: &event.message,
            body: event.body.as_deref(),
            client_id: None,
            origin: event.origin.as_deref(),
            seq: None,
            epoch: None,
        }
        .to_frame();
        // `id` is hex and `event_type` a channel name: the first match is the envelope's own.
        let text = frame.as_str();
        let at = text.find(STAMP_FIELD).unwrap_or(text.len());
        let value = at + STAMP_FIELD.len() - 2;
        let head = text.get(..value).unwrap_or_default().to_owned();
        let tail = text
            .get(value + STAMP.len()..text.len().saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        Prepared { id, head, tail }
    }

    /// One script call for consecutive broadcast events.
    async fn publish_run(
        &self,
        run: Vec<(Prepared, &Event)>,
        receipt: &mut Receipt,
    ) -> Result<(), PublishError> {
        if run.is_empty() {
            return Ok(());
        }
        let mut call = PUBLISH.prepare_invoke();
        call.key(&self.keys.meta).arg(run.len());
        for (prepared, event) in &run {
            let keys = &self.keys.channels[event.channel.index()];
            let limits = &self.limits[event.channel.index()];
            let max_age = limits.max_age.map_or(0, |a| a.as_micros() as u64);
            call.key(&keys.stream).key(&keys.ids).key(&keys.pubsub);
            call.arg(&keys.name)
                .arg(limits.max_events)
                .arg(limits.max_bytes)
                .arg(max_age)
                .arg(&prepared.id)
                .arg(&prepared.head)
                .arg(&prepared.tail);
        }
        let answer: Vec<::redis::Value> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await
            .map_err(unavailable)?;
        let seqs: Vec<u64> = answer.iter().skip(1).filter_map(scripts::int).collect();
        if seqs.len() != run.len() {
            return Err(unavailable(RedisFailure::Unexpected("publish.lua answer")));
        }
        for ((prepared, event), seq) in run.into_iter().zip(seqs) {
            self.published[event.channel.index()].fetch_max(seq, Ordering::AcqRel);
            receipt.recipients += self.audience(event.channel);
            receipt.ids.push(prepared.id);
        }
        Ok(())
    }

    /// A targeted event is neither numbered nor kept: to its client here, or to every node.
    async fn publish_targeted(
        &self,
        event: &Event,
        receipt: &mut Receipt,
    ) -> Result<(), PublishError> {
        let Some(target) = event.target else {
            return Ok(());
        };
        let id = protocol::new_id();
        let frame = Envelope {
            id: &id,
            ref_id: None,
            event_type: self.channel_name(event.channel),
            timestamp: &protocol::timestamp(),
            message: &event.message,
            body: event.body.as_deref(),
            client_id: Some(&target),
            origin: event.origin.as_deref(),
            seq: None,
            epoch: Some(self.epoch.load(Ordering::Acquire)),
        }
        .to_frame();
        receipt.ids.push(id);
        if self.fanout.is_local(target) {
            receipt.recipients +=
                self.fanout
                    .deliver(event.channel, frame, Some(target), Instant::now());
            return Ok(());
        }
        let body = format!("{} {target} {frame}", self.channel_name(event.channel));
        receipt.recipients += self
            .relay_targeted(target, &body)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Stops publishing, then waits (briefly) until what this node published came back
    /// through pub/sub and was delivered here, so the sockets can drain it before the notice.
    pub async fn close(&self) {
        *self.closed.write().await = true;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.all_delivered().await {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("cluster: closing before this node's last publishes came back");
                return;
            }
        }
    }

    async fn all_delivered(&self) -> bool {
        for ((local, published), subscribed) in
            self.local.iter().zip(&self.published).zip(&self.subscribed)
        {
            // Only what comes back to this node: channels it follows.
            if subscribed.load(Ordering::Acquire)
                && local.lock().await.delivered < published.load(Ordering::Acquire)
            {
                return false;
            }
        }
        true
    }
}

pub(super) fn unavailable(failure: RedisFailure) -> PublishError {
    tracing::warn!(error = %failure, "cluster publish failed");
    PublishError::Unavailable(format!(
        "the cluster's Redis did not confirm the publish ({failure}); retry with the same Idempotency-Key to publish at most once"
    ))
}
