//! `[admission]`: who may open a socket (connection limits, proxies, origins).

use std::num::NonZeroU32;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::error::{ConfigError, nonzero};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    #[serde(deserialize_with = "nonzero")]
    pub max_connections: NonZeroU32,
    #[serde(deserialize_with = "nonzero")]
    pub max_connections_per_ip: NonZeroU32,
    /// 0: no per-identity limit.
    pub max_connections_per_identity: u32,
    #[serde(deserialize_with = "proxies")]
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_origins: Vec<String>,
}

impl AdmissionSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/');
            if !valid {
                return Err(ConfigError::new(
                    "admission.allowed_origins",
                    format!("{origin:?}: write origins as scheme://host[:port], no trailing slash"),
                ));
            }
        }
        Ok(())
    }
}

/// CIDRs, or bare addresses taken as one-address networks; items are trimmed, because
/// `EVENTS_HUB__ADMISSION__TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1"` means what it says.
fn proxies<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|cidr| {
            let cidr = cidr.trim();
            IpNet::from_str(cidr)
                .or_else(|_| std::net::IpAddr::from_str(cidr).map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{cidr:?} is not a CIDR such as 10.0.0.0/8"))
                })
        })
        .collect()
}
