//! `[log]`: the tracing filter.

use serde::Deserialize;

use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
}

impl LogSettings {
    /// Checked here so a typo stops start-up instead of silently logging nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!("{:?} is not a log filter", self.level),
            ));
        }
        Ok(())
    }
}
