//! `[server]`: where the hub listens and how long it waits on slow peers and on shutdown.

use std::net::SocketAddr;
use std::str::FromStr;

use serde::Deserialize;

use super::error::{ConfigError, positive};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub shutdown_grace_secs: u64,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
}

impl ServerSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        positive("server.shutdown_grace_secs", self.shutdown_grace_secs)?;
        positive(
            "server.header_read_timeout_secs",
            self.header_read_timeout_secs,
        )?;
        positive("server.body_read_timeout_secs", self.body_read_timeout_secs)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(&self.listen).map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })
    }
}
