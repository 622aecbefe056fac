//! `[heartbeat]`: how often sockets are pinged and when a silent one is dropped.

use serde::Deserialize;

use super::error::{ConfigError, positive};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
}

impl HeartbeatSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("heartbeat.ping_interval_secs", self.ping_interval_secs)?;
        positive("heartbeat.idle_timeout_secs", self.idle_timeout_secs)
    }
}
