//! `[limits]`: message sizes and client message rates.

use std::num::{NonZeroU32, NonZeroUsize};

use serde::Deserialize;

use super::error::{ConfigError, nonzero};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_message_bytes: usize,
    #[serde(deserialize_with = "nonzero")]
    pub client_messages_per_sec: NonZeroU32,
    #[serde(deserialize_with = "nonzero")]
    pub client_message_burst: NonZeroU32,
    #[serde(deserialize_with = "nonzero")]
    pub max_publish_bytes: NonZeroUsize,
    #[serde(deserialize_with = "nonzero")]
    pub max_batch_events: NonZeroUsize,
    /// How long a publish's `Idempotency-Key` is remembered; 0 turns the feature off.
    pub idempotency_window_secs: u64,
    /// Event ids the remembered receipts may hold in all, the oldest dropped first.
    #[serde(deserialize_with = "nonzero")]
    pub idempotency_max_events: NonZeroUsize,
}

impl LimitSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_bytes < 128 {
            return Err(ConfigError::new(
                "limits.max_message_bytes",
                "must be at least 128",
            ));
        }
        Ok(())
    }
}
