//! `[sources.alertmanager]`: Prometheus Alertmanager's webhook receiver, beside its code.

use serde::Deserialize;

use crate::config::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerSettings {
    /// Off (the default: a hub publishes nothing of its own unless asked):
    /// `POST /v1/sources/alertmanager` answers 404.
    pub enabled: bool,
    /// Where the `ALERT_FIRING` / `ALERT_RESOLVED` events are published.
    pub channel: String,
}

impl Default for AlertmanagerSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            channel: "system".into(),
        }
    }
}

impl AlertmanagerSettings {
    /// The channel must be configured, and not `health` (reserved for ping/pong). Checked only
    /// when enabled, so a hub without `system` still starts.
    pub fn validate(&self, channels: &[String]) -> Result<(), ConfigError> {
        let known = channels.iter().any(|c| c == &self.channel);
        if self.enabled && (!known || self.channel == "health") {
            return Err(ConfigError::new(
                "sources.alertmanager.channel",
                format!(
                    "{:?} is not a channel to publish on; one of hub.channels other than health: {}",
                    self.channel,
                    channels.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
