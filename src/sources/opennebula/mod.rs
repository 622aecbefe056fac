//! The OpenNebula source: OpenNebula's Hook Manager publishes every cloud event on a ZeroMQ
//! PUB socket; a bridge per `[[sources.opennebula]]` block subscribes to it, maps each message
//! to a hub event and publishes it (`docs/opennebula.md`).
//!
//! | file | concern |
//! | --- | --- |
//! | `message` | keys and `HOOK_MESSAGE` documents, as `one_hm.rb` and oned write them |
//! | `lenient` | documents oned wrote ill-formed (unescaped parameters) |
//! | `copies` | the two or three copies of each state change |
//! | `mapping` | messages → `VM_STATE_CHANGED`, `HOST_STATE_CHANGED`, `API_CALL`, … |
//! | `memory` | the last state of each VM and host, for `previous_state` |
//! | `stats` | counters for `/readyz` |
//! | `bridge` | the ZeroMQ thread |
//!
//! Built with the cargo feature `opennebula` (on by default), which compiles libzmq.

mod bridge;
mod copies;
mod lenient;
mod mapping;
mod memory;
mod message;
#[cfg(test)]
mod oned;
mod stats;

use std::sync::Arc;

use serde_json::Value;

pub use self::mapping::{SKIPPED_KINDS, host_health};
pub use self::message::MALFORMED_KINDS;
pub use self::stats::Stats;
use super::{Source, SourceContext, SourceStatus};
use crate::config::OpenNebulaSource;

/// One `[[sources.opennebula]]` block, ready to start.
pub struct OpenNebula {
    settings: OpenNebulaSource,
    stats: Arc<Stats>,
}

impl OpenNebula {
    pub fn new(settings: OpenNebulaSource) -> Self {
        Self {
            settings,
            stats: Arc::default(),
        }
    }
}

impl SourceStatus for Stats {
    fn snapshot(&self) -> Value {
        Stats::snapshot(self)
    }
}

impl Source for OpenNebula {
    fn kind(&self) -> &'static str {
        "opennebula"
    }

    fn status(&self) -> Arc<dyn SourceStatus> {
        Arc::clone(&self.stats) as Arc<dyn SourceStatus>
    }

    fn start(self: Box<Self>, ctx: SourceContext) {
        bridge::spawn(
            ctx.index,
            self.settings,
            ctx.publisher,
            self.stats,
            ctx.shutdown,
            ctx.running,
        );
    }
}
