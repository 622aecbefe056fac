//! `[log]`: the tracing filter and the line format.

use serde::Deserialize;

use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text when stderr is a terminal (a person is reading), JSON otherwise (a collector is).
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines, coloured on a terminal.
    Text,
}

impl LogFormat {
    /// The format in force, with `auto` decided by whether stderr is a terminal.
    pub fn resolve(self, stderr_is_terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
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
