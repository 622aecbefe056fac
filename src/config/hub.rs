//! `[hub]`: the channels and the per-socket send queue.

use std::num::{NonZeroU64, NonZeroUsize};

use serde::Deserialize;

use super::error::{ConfigError, nonzero};

/// Channels the protocol itself relies on; configuration may add more, never remove these.
pub const REQUIRED_CHANNELS: [&str; 3] = ["global", "health", "system"];
/// Channel subscriptions are a bit set in a `u64`.
pub const MAX_CHANNELS: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    pub channels: Vec<String>,
    #[serde(deserialize_with = "nonzero")]
    pub send_queue: NonZeroUsize,
    #[serde(deserialize_with = "nonzero")]
    pub write_timeout_secs: NonZeroU64,
}

impl HubSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let channels = &self.channels;
        if channels.len() > MAX_CHANNELS {
            return Err(ConfigError::new(
                "hub.channels",
                format!("at most {MAX_CHANNELS} channels"),
            ));
        }
        for (i, name) in channels.iter().enumerate() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(ConfigError::new(
                    "hub.channels",
                    format!("{name:?}: names are 1-64 characters of a-z, 0-9, '-', '_', '.'"),
                ));
            }
            if channels[..i].contains(name) {
                return Err(ConfigError::new(
                    "hub.channels",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        match REQUIRED_CHANNELS
            .iter()
            .find(|required| !channels.iter().any(|c| c == *required))
        {
            Some(required) => Err(ConfigError::new(
                "hub.channels",
                format!("must include {required:?}"),
            )),
            None => Ok(()),
        }
    }
}
