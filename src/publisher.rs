//! The one way events enter the hub: routes (`POST /v1/events`), sources (OpenNebula) and
//! anything added later publish through a [`Publisher`], never through the broker directly.
//! It checks events against the configured channels, then hands them to the [`Broker`], which
//! stamps, numbers, keeps and delivers them; which broker runs is chosen once, in `app`.

use std::sync::Arc;

use crate::broker::{Broker, Event, PublishError, Receipt};
use crate::channels::{ChannelId, Channels};
use crate::idempotency::{Replies, Seen, Weight};
use crate::identity::Identity;
use crate::protocol::PublishEvent;

#[derive(Clone)]
pub struct Publisher {
    channels: Arc<Channels>,
    broker: Arc<dyn Broker>,
    /// `None` when `limits.idempotency_window_secs = 0`.
    replies: Option<Arc<Replies<Receipt>>>,
}

impl Weight for Receipt {
    fn weight(&self) -> usize {
        self.ids.len().max(1)
    }
}

/// A publish's answer, and whether it repeats an earlier one (an `Idempotency-Key` retry).
pub struct Published {
    pub receipt: Receipt,
    pub repeated: bool,
}

impl Publisher {
    pub fn new(
        channels: Arc<Channels>,
        broker: Arc<dyn Broker>,
        replies: Option<Replies<Receipt>>,
    ) -> Self {
        Self {
            channels,
            broker,
            replies: replies.map(Arc::new),
        }
    }

    /// The channel named `name`, to publish on.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        self.channels.id(name)
    }

    /// Checks a publish request against the channels and the batch rules; nothing is
    /// published unless every event passes.
    pub fn prepare(&self, events: Vec<PublishEvent>) -> Result<Vec<Event>, PublishError> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(Event {
                    channel: self.publishable(i, &e.event_type)?,
                    message: e.message,
                    body: e.body,
                    target: e.client_id,
                    origin: None,
                })
            })
            .collect()
    }

    /// Stamps each event (id, timestamp, per-channel `seq`), keeps it in history and delivers
    /// it, in order per channel. `ShuttingDown` once publishing is closed.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Receipt, PublishError> {
        self.broker.publish(events).await
    }

    /// [`publish`](Self::publish) once per `key` within the window: a repeat with the same
    /// `fingerprint` gets the first receipt and publishes nothing; the same key for another
    /// request is [`PublishError::KeyReused`]. Without a key, or with the window off, it
    /// simply publishes. Keys are `caller`'s own: the same key from two callers is two keys.
    /// Where the answers live is the broker's choice ([`Broker::publish_once`]): this node's
    /// memory, or the cluster's Redis.
    pub async fn publish_once(
        &self,
        caller: &Identity,
        key: Option<&str>,
        fingerprint: [u8; 32],
        events: Vec<Event>,
    ) -> Result<Published, PublishError> {
        let (Some(key), Some(replies)) = (key, &self.replies) else {
            let receipt = self.publish(events).await?;
            return Ok(Published {
                receipt,
                repeated: false,
            });
        };
        // NUL cannot occur in a method name or a header value: the parts cannot run together.
        let key = format!("{:?}\u{0}{}\u{0}{key}", caller.method, caller.subject);
        match self
            .broker
            .publish_once(replies, key, fingerprint, events)
            .await?
        {
            Seen::New(receipt) => Ok(Published {
                receipt,
                repeated: false,
            }),
            Seen::Repeat(receipt) => Ok(Published {
                receipt,
                repeated: true,
            }),
            Seen::Conflict => Err(PublishError::KeyReused),
        }
    }

    /// The channel event `i` of a batch names, unless it is unknown or reserved.
    fn publishable(&self, i: usize, event_type: &str) -> Result<ChannelId, PublishError> {
        let name = event_type.trim().to_ascii_lowercase();
        let refuse = |why: String| {
            PublishError::Invalid(format!(
                "event {i}: {why}; valid event types: {}",
                self.publishable_names()
            ))
        };
        let health = self.channels.id("health");
        match self.channels.id(&name) {
            None => Err(refuse(format!("unknown event_type {event_type:?}"))),
            Some(channel) if Some(channel) == health => {
                Err(refuse("`health` is reserved for ping/pong".to_owned()))
            }
            Some(channel) => Ok(channel),
        }
    }

    fn publishable_names(&self) -> String {
        let names: Vec<&str> = self
            .channels
            .names()
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "health")
            .collect();
        names.join(", ")
    }
}
