//! Typed settings, loaded once at start-up and validated before anything listens.
//!
//! Precedence, later wins: the built-in defaults (`config/default.toml`, compiled in so the
//! documented file and the defaults can never drift) < `--config FILE` < `EVENTS_HUB__SECTION__KEY`
//! environment variables < command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// The commented default configuration, also the built-in defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

pub use crate::identity::{EVENTS_PUBLISH, KNOWN_CLAIMS, READ_ONLY, SUPER_USER};

/// Channels the protocol itself relies on; configuration may add more, never remove these.
pub const REQUIRED_CHANNELS: [&str; 3] = ["global", "health", "system"];
/// Channel subscriptions are a bit set in a `u64`.
pub const MAX_CHANNELS: usize = 64;

/// A setting that cannot be used: start-up stops with this message and exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub admission: AdmissionSettings,
    pub hub: HubSettings,
    pub history: HistorySettings,
    pub heartbeat: HeartbeatSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub sources: SourceSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub shutdown_grace_secs: u64,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_algorithm: String,
    pub jwt_secret: String,
    pub jwt_public_key_file: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_leeway_secs: u64,
    pub allow_query_token: bool,
    pub api_keys: Vec<ApiKeySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    pub name: String,
    pub sha256: String,
    pub claims: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub max_connections_per_identity: u32,
    pub trusted_proxies: Vec<String>,
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    pub channels: Vec<String>,
    pub send_queue: usize,
    pub write_timeout_secs: u64,
}

/// How much of each channel's past the hub keeps for resume and `GET /v1/events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    pub max_events: usize,
    pub max_bytes: usize,
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
            max_bytes: own.max_bytes.unwrap_or(self.max_bytes),
            max_age: (age > 0).then(|| Duration::from_secs(age)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_message_bytes: usize,
    pub client_messages_per_sec: u32,
    pub client_message_burst: u32,
    pub max_publish_bytes: usize,
    pub max_batch_events: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
}

/// Event sources the hub subscribes to itself (see `crate::sources`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub opennebula: Vec<OpenNebulaSource>,
}

/// One `[[sources.opennebula]]` block: a ZeroMQ SUB connection to an OpenNebula Hook Manager.
/// Only `endpoint` is required; the defaults below are the ones `config/default.toml` documents.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenNebulaSource {
    pub endpoint: String,
    #[serde(default = "OpenNebulaSource::default_subscribe")]
    pub subscribe: Vec<String>,
    #[serde(default = "OpenNebulaSource::default_channel")]
    pub channel: String,
    #[serde(default = "OpenNebulaSource::default_kinds")]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub include_xml: bool,
    #[serde(default = "OpenNebulaSource::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "OpenNebulaSource::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default = "OpenNebulaSource::default_heartbeat_secs")]
    pub heartbeat_secs: u64,
    #[serde(default = "OpenNebulaSource::default_max_tracked_objects")]
    pub max_tracked_objects: usize,
}

/// The event kinds a `[[sources.opennebula]]` block may forward.
pub const OPENNEBULA_KINDS: [&str; 3] = ["vm_state", "host_state", "api"];

impl OpenNebulaSource {
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

    fn validate(&self, i: usize, channels: &[String]) -> Result<(), ConfigError> {
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
        if self.kinds.is_empty() {
            return Err(ConfigError::new(
                at("kinds"),
                format!("must name at least one of {}", OPENNEBULA_KINDS.join(", ")),
            ));
        }
        if let Some(kind) = self
            .kinds
            .iter()
            .find(|k| !OPENNEBULA_KINDS.contains(&k.as_str()))
        {
            return Err(ConfigError::new(
                at("kinds"),
                format!(
                    "unknown kind {kind:?}; known: {}",
                    OPENNEBULA_KINDS.join(", ")
                ),
            ));
        }
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

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 3] = [
    "hub.channels",
    "admission.trusted_proxies",
    "admission.allowed_origins",
];

impl Settings {
    /// The built-in defaults alone, validated. Tests start from here.
    pub fn defaults() -> Self {
        Self::load(None, false, &[]).expect("the built-in defaults are valid")
    }

    /// Defaults < `file` < environment (when `use_env`) < `overrides` (`("server.listen", "...")`).
    pub fn load(
        file: Option<&Path>,
        use_env: bool,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        use config::{Config, Environment, File, FileFormat};

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        if use_env {
            let mut env = Environment::with_prefix("EVENTS_HUB")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",");
            for key in LIST_KEYS {
                env = env.with_list_parse_key(key);
            }
            builder = builder.add_source(env);
        }
        for (key, value) in overrides {
            builder = builder
                .set_override(*key, value.as_str())
                .map_err(|e| ConfigError::new(*key, e.to_string()))?;
        }
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        // `EVENTS_HUB__HUB__CHANNELS="global, pdfm"` means what it says.
        for list in [
            &mut settings.hub.channels,
            &mut settings.admission.trusted_proxies,
            &mut settings.admission.allowed_origins,
        ] {
            for item in list.iter_mut() {
                *item = item.trim().to_owned();
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Every rule a value must satisfy, named by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        positive(
            "server.shutdown_grace_secs",
            self.server.shutdown_grace_secs,
        )?;
        positive(
            "server.header_read_timeout_secs",
            self.server.header_read_timeout_secs,
        )?;
        positive(
            "server.body_read_timeout_secs",
            self.server.body_read_timeout_secs,
        )?;

        let algorithm = self.jwt_algorithm()?;
        let is_hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if !is_hmac && self.auth.jwt_public_key_file.is_empty() {
            return Err(ConfigError::new(
                "auth.jwt_public_key_file",
                format!("{algorithm:?} needs a PEM public key file"),
            ));
        }
        for (i, key) in self.auth.api_keys.iter().enumerate() {
            let at = |field: &str| format!("auth.api_keys[{i}].{field}");
            if key.name.trim().is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if key.sha256.len() != 64 || !key.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    at("sha256"),
                    "must be 64 hex digits (see `events-hub hash-key`)",
                ));
            }
            for claim in &key.claims {
                if !KNOWN_CLAIMS.contains(&claim.as_str()) {
                    return Err(ConfigError::new(
                        at("claims"),
                        format!(
                            "unknown claim {claim:?}; known: {}",
                            KNOWN_CLAIMS.join(", ")
                        ),
                    ));
                }
            }
        }

        positive(
            "admission.max_connections",
            self.admission.max_connections.into(),
        )?;
        for origin in &self.admission.allowed_origins {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/');
            if !valid {
                return Err(ConfigError::new(
                    "admission.allowed_origins",
                    format!("{origin:?}: write origins as scheme://host[:port], no trailing slash"),
                ));
            }
        }
        if self.admission.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "admission.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        self.trusted_proxies()?;

        let channels = &self.hub.channels;
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
        for required in REQUIRED_CHANNELS {
            if !channels.iter().any(|c| c == required) {
                return Err(ConfigError::new(
                    "hub.channels",
                    format!("must include {required:?}"),
                ));
            }
        }
        positive("hub.send_queue", self.hub.send_queue as u64)?;
        positive("hub.write_timeout_secs", self.hub.write_timeout_secs)?;

        positive("history.max_bytes", self.history.max_bytes as u64)?;
        for (name, own) in &self.history.channels {
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

        positive(
            "heartbeat.ping_interval_secs",
            self.heartbeat.ping_interval_secs,
        )?;
        positive(
            "heartbeat.idle_timeout_secs",
            self.heartbeat.idle_timeout_secs,
        )?;

        if self.limits.max_message_bytes < 128 {
            return Err(ConfigError::new(
                "limits.max_message_bytes",
                "must be at least 128",
            ));
        }
        positive(
            "limits.client_messages_per_sec",
            self.limits.client_messages_per_sec.into(),
        )?;
        positive(
            "limits.client_message_burst",
            self.limits.client_message_burst.into(),
        )?;
        positive(
            "limits.max_publish_bytes",
            self.limits.max_publish_bytes as u64,
        )?;
        positive(
            "limits.max_batch_events",
            self.limits.max_batch_events as u64,
        )?;

        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            ));
        }

        for (i, source) in self.sources.opennebula.iter().enumerate() {
            source.validate(i, &self.hub.channels)?;
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(&self.server.listen).map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("{:?} is not an address:port", self.server.listen),
            )
        })
    }

    pub fn jwt_algorithm(&self) -> Result<Algorithm, ConfigError> {
        let name = self.auth.jwt_algorithm.to_ascii_uppercase();
        let algorithm = match name.as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            _ => {
                return Err(ConfigError::new(
                    "auth.jwt_algorithm",
                    format!(
                        "{:?} is not supported; use HS256/384/512, RS256/384/512 or ES256/384",
                        self.auth.jwt_algorithm
                    ),
                ));
            }
        };
        Ok(algorithm)
    }

    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.admission
            .trusted_proxies
            .iter()
            .map(|cidr| {
                IpNet::from_str(cidr)
                    .or_else(|_| std::net::IpAddr::from_str(cidr).map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            "admission.trusted_proxies",
                            format!("{cidr:?} is not a CIDR such as 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.server.header_read_timeout_secs)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.server.body_read_timeout_secs)
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

/// The `config` crate names the key in most of its messages; keep them, and point at the
/// setting when it does not.
fn from_config_error(error: config::ConfigError) -> ConfigError {
    match &error {
        config::ConfigError::Type { key: Some(key), .. } => {
            ConfigError::new(key.clone(), error.to_string())
        }
        config::ConfigError::NotFound(key) => ConfigError::new(key.clone(), "missing"),
        _ => ConfigError::new("configuration", error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_match_the_documented_file() {
        let s = Settings::defaults();
        assert_eq!(s.server.listen, "0.0.0.0:8080");
        assert_eq!(s.admission.max_connections_per_ip, 1);
        assert_eq!(
            s.hub.channels,
            ["global", "pdfm", "orchestrator", "health", "system"]
        );
        assert_eq!(s.heartbeat.ping_interval_secs, 30);
        assert_eq!(s.heartbeat.idle_timeout_secs, 60);
        assert_eq!(s.limits.max_message_bytes, 65536);
        assert_eq!(s.server.shutdown_grace_secs, 10);
    }

    #[test]
    fn overrides_win_and_bad_values_name_their_key() {
        let s = Settings::load(None, false, &[("server.listen", "127.0.0.1:0".into())]);
        assert_eq!(
            s.map(|s| s.server.listen).ok().as_deref(),
            Some("127.0.0.1:0")
        );

        let err = Settings::load(None, false, &[("server.listen", "nowhere".into())])
            .err()
            .map(|e| e.key);
        assert_eq!(err.as_deref(), Some("server.listen"));

        let err = Settings::load(None, false, &[("auth.jwt_algorithm", "none".into())])
            .err()
            .map(|e| e.key);
        assert_eq!(err.as_deref(), Some("auth.jwt_algorithm"));
    }

    #[test]
    fn history_overrides_per_channel() {
        let s = Settings::load(
            None,
            false,
            &[
                ("history.channels.pdfm.max_events", "0".into()),
                ("history.max_age_secs", "0".into()),
            ],
        )
        .expect("valid");
        let pdfm = s.history.limits("pdfm");
        assert_eq!((pdfm.max_events, pdfm.max_age), (0, None));
        let other = s.history.limits("orchestrator");
        assert_eq!((other.max_events, other.max_bytes), (10000, 64 << 20));

        let err = Settings::load(
            None,
            false,
            &[("history.channels.nope.max_events", "1".into())],
        )
        .err()
        .map(|e| e.key);
        assert_eq!(err.as_deref(), Some("history.channels.nope"));
        let err = Settings::load(
            None,
            false,
            &[("history.channels.pdfm.max_bytes", "0".into())],
        )
        .err()
        .map(|e| e.key);
        assert_eq!(err.as_deref(), Some("history.channels.pdfm.max_bytes"));
    }

    #[test]
    fn channels_must_keep_the_protocol_channels() {
        let mut s = Settings::defaults();
        s.hub.channels = vec!["global".into(), "pdfm".into()];
        let err = s.validate().err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("hub.channels"));
    }

    /// Loads the built-in defaults plus `extra` (TOML) as a `--config` file.
    fn load_with(extra: &str) -> Result<Settings, ConfigError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "events-hub-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, extra).expect("write the temporary config");
        let loaded = Settings::load(Some(&path), false, &[]);
        let _ = std::fs::remove_file(&path);
        loaded
    }

    #[test]
    fn no_source_is_configured_by_default() {
        assert!(Settings::defaults().sources.opennebula.is_empty());
    }

    #[test]
    fn the_documented_opennebula_block_is_the_default() {
        // The commented example in config/default.toml, uncommented, must mean exactly what
        // a block with only `endpoint` means: the file documents the serde defaults.
        let block: String = DEFAULT_TOML
            .lines()
            .skip_while(|l| *l != "# [[sources.opennebula]]")
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("endpoint ="), "example block not found");
        let documented = load_with(&block).expect("the documented block loads");
        let minimal = load_with("[[sources.opennebula]]\nendpoint = \"tcp://127.0.0.1:2101\"\n")
            .expect("a block with only endpoint loads");
        assert_eq!(documented.sources.opennebula, minimal.sources.opennebula);
        assert_eq!(
            minimal.sources.opennebula,
            [OpenNebulaSource::with_endpoint("tcp://127.0.0.1:2101")]
        );
    }

    #[test]
    fn opennebula_settings_are_checked_and_named_by_key() {
        let cases = [
            (
                "endpoint = \"localhost:2101\"",
                "sources.opennebula[0].endpoint",
            ),
            (
                "endpoint = \"tcp://one:0\"",
                "sources.opennebula[0].endpoint",
            ),
            ("endpoint = \"tcp://one\"", "sources.opennebula[0].endpoint"),
            (
                "endpoint = \"tcp://one:2101\"\nchannel = \"health\"",
                "sources.opennebula[0].channel",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nchannel = \"nope\"",
                "sources.opennebula[0].channel",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nkinds = [\"vm\"]",
                "sources.opennebula[0].kinds",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nkinds = []",
                "sources.opennebula[0].kinds",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nsubscribe = []",
                "sources.opennebula[0].subscribe",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nreconnect_min_ms = 0",
                "sources.opennebula[0].reconnect_min_ms",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nreconnect_min_ms = 500\nreconnect_max_ms = 100",
                "sources.opennebula[0].reconnect_max_ms",
            ),
            (
                "endpoint = \"tcp://one:2101\"\nmax_tracked_objects = 0",
                "sources.opennebula[0].max_tracked_objects",
            ),
        ];
        for (block, key) in cases {
            let err = load_with(&format!("[[sources.opennebula]]\n{block}\n")).err();
            assert_eq!(err.map(|e| e.key).as_deref(), Some(key), "{block}");
        }
        // The second block is named by its own index.
        let two = "[[sources.opennebula]]\nendpoint = \"tcp://one:2101\"\n\
                   [[sources.opennebula]]\nendpoint = \"tcp://[::1]:2101\"\nchannel = \"x\"\n";
        let err = load_with(two).err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("sources.opennebula[1].channel"));
        // Unknown keys are refused, as everywhere else.
        let err = load_with("[[sources.opennebula]]\nendpoint = \"tcp://one:2101\"\nport = 1\n");
        assert!(err.is_err());
        // Good ones load.
        let ok = load_with(
            "[[sources.opennebula]]\nendpoint = \"tcp://[::1]:2101\"\nchannel = \"pdfm\"\n\
             kinds = [\"api\"]\n[[sources.opennebula]]\nendpoint = \"ipc:///run/one/hm.sock\"\n",
        );
        assert_eq!(ok.map(|s| s.sources.opennebula.len()).ok(), Some(2));
    }
}
