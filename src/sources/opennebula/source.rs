//! The OpenNebula source as the hub starts it: one bridge per block.

use std::sync::Arc;

use serde_json::Value;

use super::bridge;
use super::config::OpenNebulaSettings;
use super::stats::Stats;
use crate::sources::{Source, SourceContext, SourceStatus};

/// One `[[sources.opennebula]]` block, ready to start.
pub struct OpenNebula {
    settings: OpenNebulaSettings,
    stats: Arc<Stats>,
}

impl OpenNebula {
    pub fn new(settings: OpenNebulaSettings) -> Self {
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
