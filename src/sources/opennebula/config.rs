//! `[[sources.opennebula]]`: one ZeroMQ SUB connection to an OpenNebula Hook Manager, its
//! defaults and its checks, kept beside the code that uses them.

use serde::Deserialize;

use crate::config::error::{ConfigError, only_known, positive};

/// One `[[sources.opennebula]]` block: a ZeroMQ SUB connection to an OpenNebula Hook Manager.
/// Only `endpoint` is required; the defaults below are the ones `config/default.toml` documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenNebulaSettings {
    pub endpoint: String,
    #[serde(default = "OpenNebulaSettings::default_subscribe")]
    pub subscribe: Vec<String>,
    #[serde(default = "OpenNebulaSettings::default_channel")]
    pub channel: String,
    #[serde(default = "OpenNebulaSettings::default_kinds")]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub include_xml: bool,
    #[serde(default = "OpenNebulaSettings::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "OpenNebulaSettings::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default = "OpenNebulaSettings::default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    #[serde(default = "OpenNebulaSettings::default_max_tracked_objects")]
    pub max_tracked_objects: usize,
}

/// The event kinds a `[[sources.opennebula]]` block may forward.
pub const OPENNEBULA_KINDS: [&str; 3] = ["vm_state", "host_state", "api"];

impl OpenNebulaSettings {
    fn default_subscribe() -> Vec<String> {
        vec!["EVENT ".into()]
    }
    fn default_channel() -> String {
        "orchestrator".into()
    }
    fn default_kinds() -> Vec<String> {
        OPENNEBULA_KINDS.iter().map(|k| (*k).to_owned()).collect()
    }
    fn default_reconnect_min_ms() -> u64 {
        100
    }
    fn default_reconnect_max_ms() -> u64 {
        5000
    }
    fn default_heartbeat_secs() -> u64 {
        5
    }
    fn default_max_tracked_objects() -> usize {
        100_000
    }

    /// A block with this endpoint and every other key at its default.
    pub fn with_endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            subscribe: Self::default_subscribe(),
            channel: Self::default_channel(),
            kinds: Self::default_kinds(),
            include_xml: false,
            reconnect_min_ms: Self::default_reconnect_min_ms(),
            reconnect_max_ms: Self::default_reconnect_max_ms(),
            heartbeat_secs: Self::default_heartbeat_secs(),
            max_tracked_objects: Self::default_max_tracked_objects(),
        }
    }

    /// `i` is the block's index (for the error's key); `channels` is `hub.channels`.
    pub fn validate(&self, i: usize, channels: &[String]) -> Result<(), ConfigError> {
        let at = |field: &str| format!("sources.opennebula[{i}].{field}");
        if !valid_zmq_endpoint(&self.endpoint) {
            return Err(ConfigError::new(
                at("endpoint"),
                format!(
                    "{:?} is not a ZeroMQ endpoint; write tcp://HOST:PORT (the Hook Manager \
                     publishes on tcp://<frontend>:2101) or ipc:///PATH",
                    self.endpoint
                ),
            ));
        }
        if self.subscribe.is_empty() {
            return Err(ConfigError::new(
                at("subscribe"),
                "must list at least one key prefix, e.g. [\"EVENT \"] (\"\" receives everything)",
            ));
        }
        self.validate_channel(&at, channels)?;
        self.validate_kinds(&at)?;
        positive(&at("reconnect_min_ms"), self.reconnect_min_ms)?;
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(ConfigError::new(
                at("reconnect_max_ms"),
                "must be at least reconnect_min_ms",
            ));
        }
        // libzmq takes milliseconds as a C int.
        if self.reconnect_max_ms > 3_600_000 || self.heartbeat_secs > 3600 {
            let key = if self.heartbeat_secs > 3600 {
                "heartbeat_secs"
            } else {
                "reconnect_max_ms"
            };
            return Err(ConfigError::new(at(key), "must be at most one hour"));
        }
        positive(&at("max_tracked_objects"), self.max_tracked_objects as u64)?;
        Ok(())
    }

    fn validate_channel(
        &self,
        at: &dyn Fn(&str) -> String,
        channels: &[String],
    ) -> Result<(), ConfigError> {
        if !channels.contains(&self.channel) || self.channel == "health" {
            let publishable: Vec<&str> = channels
                .iter()
                .map(String::as_str)
                .filter(|c| *c != "health")
                .collect();
            return Err(ConfigError::new(
                at("channel"),
                format!(
                    "{:?} is not a channel events can be published to; use one of {} \
                     (hub.channels, without `health`)",
                    self.channel,
                    publishable.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn validate_kinds(&self, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.kinds.is_empty() {
            return Err(ConfigError::new(
                at("kinds"),
                format!("must name at least one of {}", OPENNEBULA_KINDS.join(", ")),
            ));
        }
        only_known(at("kinds"), "kind", &self.kinds, &OPENNEBULA_KINDS)
    }
}

/// `tcp://HOST:PORT` (HOST a name, an IPv4 address or `[IPv6]`) or `ipc:///path`: what libzmq's
/// `connect` takes. Checked at start-up so a typo stops the hub instead of retrying forever.
fn valid_zmq_endpoint(endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return !path.is_empty();
    }
    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && !host.contains(char::is_whitespace)
        && (host.starts_with('[') == host.ends_with(']'));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}
