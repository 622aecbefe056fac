//! `[admission]`: who may open a socket (connection limits, proxies, origins).

use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;

use super::error::{ConfigError, positive};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub max_connections_per_identity: u32,
    pub trusted_proxies: Vec<String>,
    pub allowed_origins: Vec<String>,
}

impl AdmissionSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("admission.max_connections", self.max_connections.into())?;
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
        if self.max_connections_per_ip == 0 {
            return Err(ConfigError::new(
                "admission.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        self.proxies().map(drop)
    }

    pub fn proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.trusted_proxies
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
}
