//! `[server]`: where the hub listens, whether it speaks TLS, and how long it waits on slow peers
//! and on shutdown.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::error::{ConfigError, nonzero};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "nonzero")]
    pub shutdown_grace_secs: NonZeroU64,
    #[serde(deserialize_with = "nonzero")]
    pub header_read_timeout_secs: NonZeroU64,
    #[serde(deserialize_with = "nonzero")]
    pub body_read_timeout_secs: NonZeroU64,
    #[serde(default)]
    pub tls: TlsSettings,
}

/// `[server.tls]`: PEM files for native TLS. Both empty (the default) means plain HTTP; the
/// files themselves are read when the state is built (`tls::Tls::load`), and again on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    #[serde(default)]
    pub cert: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: String,
}

impl TlsSettings {
    /// Whether TLS is on: both files are named.
    pub fn is_enabled(&self) -> bool {
        !self.cert.is_empty() && !self.key.is_empty()
    }
}

impl ServerSettings {
    /// A certificate without its key (or the reverse) is a half-done set-up, not plain HTTP.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        match (tls.cert.is_empty(), tls.key.is_empty()) {
            (false, true) => Err(ConfigError::new(
                "server.tls.key",
                "must be set when server.tls.cert is (both or neither)",
            )),
            (true, false) => Err(ConfigError::new(
                "server.tls.cert",
                "must be set when server.tls.key is (both or neither)",
            )),
            _ => Ok(()),
        }
    }
}

/// `SocketAddr`'s own message ("invalid socket address syntax") does not say what to write.
fn address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    SocketAddr::from_str(&text)
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an address:port")))
}
