//! `[history]`: how much of each channel's past the hub keeps for resume and `GET /v1/events`.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, nonzero};

/// How much of each channel's past the hub keeps for resume and `GET /v1/events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    pub max_events: usize,
    #[serde(deserialize_with = "nonzero")]
    pub max_bytes: NonZeroUsize,
    pub max_age_secs: u64,
    pub channels: BTreeMap<String, ChannelHistorySettings>,
}

/// Per-channel overrides of [`HistorySettings`]; unset fields take the section's value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelHistorySettings {
    pub max_events: Option<usize>,
    pub max_bytes: Option<usize>,
    pub max_age_secs: Option<u64>,
}

/// The history limits of one channel, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// 0: history is off for the channel.
    pub max_events: usize,
    pub max_bytes: usize,
    /// `None`: no age limit.
    pub max_age: Option<Duration>,
}

impl HistorySettings {
    /// The limits in force for `channel`.
    pub fn limits(&self, channel: &str) -> HistoryLimits {
        let own = self.channels.get(channel).cloned().unwrap_or_default();
        let age = own.max_age_secs.unwrap_or(self.max_age_secs);
        HistoryLimits {
            max_events: own.max_events.unwrap_or(self.max_events),
            max_bytes: own.max_bytes.unwrap_or(self.max_bytes.get()),
            max_age: (age > 0).then(|| Duration::from_secs(age)),
        }
    }

    /// `channels` is `hub.channels`: overrides may only name channels that exist.
    pub fn validate(&self, channels: &[String]) -> Result<(), ConfigError> {
        for (name, own) in &self.channels {
            if !channels.contains(name) {
                return Err(ConfigError::new(
                    format!("history.channels.{name}"),
                    format!("{name:?} is not in hub.channels"),
                ));
            }
            if own.max_bytes == Some(0) {
                return Err(ConfigError::new(
                    format!("history.channels.{name}.max_bytes"),
                    "must be greater than 0 (set max_events = 0 to turn history off)",
                ));
            }
        }
        Ok(())
    }
}
