//! Typed settings, loaded once at start-up and validated before anything listens.
//!
//! Precedence, later wins: the built-in defaults (`config/default.toml`, compiled in so the
//! documented file and the defaults can never drift) < `--config FILE` < `EVENTS_HUB__SECTION__KEY`
//! environment variables < command-line flags.

mod admission;
mod auth;
mod console;
pub mod error;
mod heartbeat;
mod history;
mod hub;
mod limits;
mod log;
mod metrics;
mod server;

use std::path::Path;
use std::time::Duration;

use config::builder::{ConfigBuilder, DefaultState};
use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

pub use self::admission::AdmissionSettings;
pub use self::auth::{ApiKeySettings, AuthSettings, is_hmac};
pub use self::console::ConsoleSettings;
pub use self::error::ConfigError;
pub use self::heartbeat::HeartbeatSettings;
pub use self::history::{ChannelHistorySettings, HistoryLimits, HistorySettings};
pub use self::hub::{HubSettings, MAX_CHANNELS, REQUIRED_CHANNELS};
pub use self::limits::LimitSettings;
pub use self::log::{LogFormat, LogSettings};
pub use self::metrics::MetricsSettings;
pub use self::server::{ServerSettings, TlsSettings};
pub use crate::broker::redis::config::ClusterSettings;
pub use crate::identity::{EVENTS_ADMIN, EVENTS_PUBLISH, KNOWN_CLAIMS, READ_ONLY, SUPER_USER};
pub use crate::sources::config::SourceSettings;
pub use crate::sources::opennebula::config::{OPENNEBULA_KINDS, OpenNebulaSettings};

/// The commented default configuration, also the built-in defaults.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    pub metrics: MetricsSettings,
    pub console: ConsoleSettings,
    pub sources: SourceSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
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
        Self::load_merged(file, use_env, overrides).map(|(settings, _)| settings)
    }

    /// [`Settings::load`], also returning every merged value as JSON (defaults, file,
    /// environment and flags, as the typed settings were read from), for
    /// `events-hub check-config`. Unmasked: the caller hides the secrets.
    pub fn load_merged(
        file: Option<&Path>,
        use_env: bool,
        overrides: &[(&str, String)],
    ) -> Result<(Self, serde_json::Value), ConfigError> {
        let merged = layers(file, use_env, overrides)?
            .build()
            .map_err(from_config_error)?;
        let mut settings: Settings = merged
            .clone()
            .try_deserialize()
            .map_err(from_config_error)?;
        settings.trim_lists();
        settings.validate()?;
        let values = merged.try_deserialize().map_err(from_config_error)?;
        Ok((settings, values))
    }

    /// `EVENTS_HUB__HUB__CHANNELS="global, pdfm"` means what it says (`trusted_proxies` are
    /// trimmed as they are parsed).
    fn trim_lists(&mut self) {
        for list in [&mut self.hub.channels, &mut self.admission.allowed_origins] {
            for item in list.iter_mut() {
                *item = item.trim().to_owned();
            }
        }
    }

    /// Every rule a value must satisfy, named by its key: each section checks its own; the
    /// hub's channels are passed to the sections that refer to them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        self.admission.validate()?;
        self.hub.validate()?;
        self.history.validate(&self.hub.channels)?;
        self.limits.validate()?;
        self.log.validate()?;
        self.sources.validate(&self.hub.channels)?;
        self.cluster.validate()
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs.get())
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.server.header_read_timeout_secs.get())
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.server.body_read_timeout_secs.get())
    }
}

/// The sources in precedence order, later wins.
fn layers(
    file: Option<&Path>,
    use_env: bool,
    overrides: &[(&str, String)],
) -> Result<ConfigBuilder<DefaultState>, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
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
        builder = builder.add_source(environment());
    }
    for (key, value) in overrides {
        builder = builder
            .set_override(*key, value.as_str())
            .map_err(|e| ConfigError::new(*key, e.to_string()))?;
    }
    Ok(builder)
}

/// `EVENTS_HUB__SECTION__KEY`, values parsed as numbers or booleans where they look like one,
/// and [`LIST_KEYS`] split on commas.
fn environment() -> Environment {
    let env = Environment::with_prefix("EVENTS_HUB")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",");
    LIST_KEYS
        .iter()
        .fold(env, |env, key| env.with_list_parse_key(key))
}

/// The `config` crate names the key in most of its messages; keep them, and point at the
/// setting when it does not.
fn from_config_error(error: config::ConfigError) -> ConfigError {
    match &error {
        config::ConfigError::Type { key: Some(key), .. } => {
            ConfigError::new(key.clone(), error.to_string())
        }
        config::ConfigError::NotFound(key) => ConfigError::new(key.clone(), "missing"),
        // Our own deserializers' messages (`nonzero`, the algorithm, the proxies) and serde's
        // (unknown fields), with the key the `config` crate found them at.
        config::ConfigError::At {
            key: Some(key),
            error,
            ..
        } => ConfigError::new(key.clone(), error.to_string()),
        _ => ConfigError::new("configuration", error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_demo_defaults_are_the_serde_defaults() {
        // config/default.toml spells every key out; a file without [sources.demo] gets these.
        assert_eq!(
            Settings::defaults().sources.demo,
            crate::sources::demo::config::DemoSettings::default()
        );
    }

    #[test]
    fn built_in_defaults_match_the_documented_file() {
        let s = Settings::defaults();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.admission.max_connections_per_ip.get(), 1);
        assert_eq!(
            s.hub.channels,
            ["global", "pdfm", "orchestrator", "health", "system"]
        );
        assert_eq!(s.heartbeat.ping_interval_secs.get(), 30);
        assert_eq!(s.heartbeat.idle_timeout_secs.get(), 60);
        assert_eq!(s.limits.max_message_bytes, 65536);
        assert_eq!(s.server.shutdown_grace_secs.get(), 10);
    }

    #[test]
    fn overrides_win_and_bad_values_name_their_key() {
        let s = Settings::load(None, false, &[("server.listen", "127.0.0.1:0".into())]);
        assert_eq!(
            s.map(|s| s.server.listen.to_string()).ok().as_deref(),
            Some("127.0.0.1:0")
        );

        let err = refused_key("server.listen", "nowhere");
        assert_eq!(err.as_deref(), Some("server.listen"));

        let err = refused_key("auth.jwt_algorithm", "none");
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

        let err = refused_key("history.channels.nope.max_events", "1");
        assert_eq!(err.as_deref(), Some("history.channels.nope"));
        let err = refused_key("history.channels.pdfm.max_bytes", "0");
        assert_eq!(err.as_deref(), Some("history.channels.pdfm.max_bytes"));
    }

    #[test]
    fn channels_must_keep_the_protocol_channels() {
        let mut s = Settings::defaults();
        s.hub.channels = vec!["global".into(), "pdfm".into()];
        let err = s.validate().err().map(|e| e.key);
        assert_eq!(err.as_deref(), Some("hub.channels"));
    }

    /// The key a load with the defaults and `key = value` is refused for, if it is.
    fn refused_key(key: &str, value: &str) -> Option<String> {
        Settings::load(None, false, &[(key, value.into())])
            .err()
            .map(|e| e.key)
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
    fn typed_values_keep_clear_messages_naming_their_key() {
        let refused = |key: &str, value: &str| {
            Settings::load(None, false, &[(key, value.into())])
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            refused("server.listen", "nowhere").as_deref(),
            Some("invalid setting `server.listen`: \"nowhere\" is not an address:port")
        );
        assert_eq!(
            refused("hub.send_queue", "0").as_deref(),
            Some("invalid setting `hub.send_queue`: must be greater than 0")
        );
        let err = load_with("[admission]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy\"]\n");
        assert_eq!(
            err.err().map(|e| e.to_string()).as_deref(),
            Some(
                "invalid setting `admission.trusted_proxies`: \"proxy\" is not a CIDR such as 10.0.0.0/8"
            )
        );
        let ok = load_with("[admission]\ntrusted_proxies = [\" 10.0.0.0/8\", \"127.0.0.1\"]\n")
            .expect("trimmed CIDRs and bare addresses load");
        assert_eq!(ok.admission.trusted_proxies.len(), 2);
        assert_eq!(
            refused("auth.jwt_algorithm", "hs512"),
            None,
            "names are case-insensitive"
        );
    }

    #[test]
    fn log_format_and_tls_settings_load_and_are_checked() {
        let s = Settings::defaults();
        assert_eq!(s.log.format, LogFormat::Auto);
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
        assert!(!s.server.tls.is_enabled());
        let json = Settings::load(None, false, &[("log.format", "json".into())]);
        assert_eq!(json.map(|s| s.log.format).ok(), Some(LogFormat::Json));
        assert_eq!(
            refused_key("log.format", "yaml").as_deref(),
            Some("log.format")
        );
        assert_eq!(
            refused_key("server.tls.cert", "/etc/cert.pem").as_deref(),
            Some("server.tls.key"),
            "both or neither"
        );
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
            [OpenNebulaSettings::with_endpoint("tcp://127.0.0.1:2101")]
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
