//! `[sources.demo]`: the built-in demo source, its defaults and its checks, beside its code.

use serde::Deserialize;

use crate::config::error::{ConfigError, positive};

/// The demo source's settings; every key is optional and documented in `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Off by default: a production hub publishes nothing of its own.
    pub enabled: bool,
    /// Time between two steps of the simulation (each step publishes one or two events).
    pub interval_ms: u64,
    /// Channel of the `VM_STATE_CHANGED` events.
    pub vm_channel: String,
    /// Channel of the `HOST_VM_STATE_CHANGED` and `HOST_HEALTH_UPDATE` events.
    pub host_channel: String,
    /// Simulated VMs and hosts.
    pub vms: u64,
    pub hosts: u64,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_ms: 400,
            vm_channel: "pdfm".into(),
            host_channel: "orchestrator".into(),
            vms: 6,
            hosts: 3,
        }
    }
}

impl DemoSettings {
    /// `channels` is `hub.channels`. The numbers are checked even when disabled; the channels
    /// only when enabled, so a hub whose `hub.channels` has no `pdfm` or `orchestrator` still
    /// starts (and `--demo` on it names the setting to change).
    pub fn validate(&self, channels: &[String]) -> Result<(), ConfigError> {
        positive("sources.demo.interval_ms", self.interval_ms)?;
        if self.interval_ms > 3_600_000 {
            return Err(ConfigError::new(
                "sources.demo.interval_ms",
                "must be at most one hour",
            ));
        }
        for (key, value, most) in [("vms", self.vms, 10_000), ("hosts", self.hosts, 1_000)] {
            let key = format!("sources.demo.{key}");
            positive(&key, value)?;
            if value > most {
                return Err(ConfigError::new(key, format!("must be at most {most}")));
            }
        }
        if !self.enabled {
            return Ok(());
        }
        for (key, channel) in [
            ("vm_channel", &self.vm_channel),
            ("host_channel", &self.host_channel),
        ] {
            if !channels.contains(channel) || channel == "health" {
                return Err(ConfigError::new(
                    format!("sources.demo.{key}"),
                    format!(
                        "{channel:?} is not a channel events can be published to (hub.channels, \
                         without `health`)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_checked_only_when_enabled() {
        let channels: Vec<String> = ["global", "pdfm", "health", "system"]
            .map(String::from)
            .to_vec();
        let mut demo = DemoSettings::default();
        assert!(
            demo.validate(&channels).is_ok(),
            "off: no orchestrator is fine"
        );
        demo.enabled = true;
        let err = demo.validate(&channels).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("sources.demo.host_channel"));
        demo.host_channel = "health".into();
        let err = demo.validate(&channels).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("sources.demo.host_channel"));
        demo.host_channel = "pdfm".into();
        assert!(demo.validate(&channels).is_ok());
        demo.interval_ms = 0;
        let err = demo.validate(&channels).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("sources.demo.interval_ms"));
    }
}
