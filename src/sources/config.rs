//! `[sources]`: the event sources the hub subscribes to itself, each validated by its own code.

use serde::Deserialize;

use super::alertmanager::config::AlertmanagerSettings;
use super::demo::config::DemoSettings;
use super::opennebula::config::OpenNebulaSettings;
use crate::config::error::ConfigError;

/// Event sources the hub subscribes to itself (see `crate::sources`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub opennebula: Vec<OpenNebulaSettings>,
    /// `[sources.demo]`; absent means its defaults (off).
    #[serde(default)]
    pub demo: DemoSettings,
    /// `[sources.alertmanager]`; absent means its defaults (off, channel `system`).
    #[serde(default)]
    pub alertmanager: AlertmanagerSettings,
}

impl SourceSettings {
    /// `channels` is `hub.channels`: a source publishes to one of them.
    pub fn validate(&self, channels: &[String]) -> Result<(), ConfigError> {
        for (i, source) in self.opennebula.iter().enumerate() {
            source.validate(i, channels)?;
        }
        self.demo.validate(channels)?;
        self.alertmanager.validate(channels)
    }
}
