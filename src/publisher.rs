//! The one way events enter the hub: routes (`POST /v1/events`), sources (OpenNebula) and
//! anything added later publish through a [`Publisher`], never through the hub's internals.
//! Today it stamps, numbers, records and delivers through the in-process [`Hub`]; a shared
//! broker (the Redis cluster) is to sit behind this same handle.

use std::sync::Arc;

use crate::hub::{ChannelId, Event, Hub, HubError, Receipt};
use crate::protocol::PublishEvent;

#[derive(Clone)]
pub struct Publisher {
    hub: Arc<Hub>,
}

impl Publisher {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }

    /// The channel named `name`, to publish on.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        self.hub.channels().id(name)
    }

    /// Checks a publish request against the channels and the batch rules; nothing is
    /// published unless every event passes.
    pub fn prepare(&self, events: Vec<PublishEvent>) -> Result<Vec<Event>, HubError> {
        self.hub.prepare(events)
    }

    /// Stamps each event (id, timestamp, per-channel `seq`), keeps it in history and delivers
    /// it, in order per channel. `ShuttingDown` once publishing is closed.
    pub fn publish(&self, events: Vec<Event>) -> Result<Receipt, HubError> {
        self.hub.publish(events)
    }
}
