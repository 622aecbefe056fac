//! `[server]`: where the hub listens and how long it waits on slow peers and on shutdown; every
//! field is typed, so the section needs no check of its own.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::error::nonzero;

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
}

/// `SocketAddr`'s own message ("invalid socket address syntax") does not say what to write.
fn address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    SocketAddr::from_str(&text)
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an address:port")))
}
