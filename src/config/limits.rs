//! `[limits]`: message sizes and client message rates.

use serde::Deserialize;

use super::error::{ConfigError, positive};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_message_bytes: usize,
    pub client_messages_per_sec: u32,
    pub client_message_burst: u32,
    pub max_publish_bytes: usize,
    pub max_batch_events: usize,
}

impl LimitSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_bytes < 128 {
            return Err(ConfigError::new(
                "limits.max_message_bytes",
                "must be at least 128",
            ));
        }
        positive(
            "limits.client_messages_per_sec",
            self.client_messages_per_sec.into(),
        )?;
        positive(
            "limits.client_message_burst",
            self.client_message_burst.into(),
        )?;
        positive("limits.max_publish_bytes", self.max_publish_bytes as u64)?;
        positive("limits.max_batch_events", self.max_batch_events as u64)
    }
}
