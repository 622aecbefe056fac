//! `[cluster]`: the Redis that several hub nodes share, kept beside the broker that uses it.
//! Without `redis_url` the node runs alone on the in-memory broker and needs no Redis.

use serde::Deserialize;

use crate::config::error::ConfigError;

/// `[cluster]`. Only `redis_url` switches cluster mode on; the rest has defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host[:port][/db]`; unset: a single node, no Redis.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// This node's name in the cluster's keys (client registry, leases); unset: a random one
    /// per start, which is what a node that restarts with no state should be.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Every key and Redis channel of the cluster starts with `<key_prefix>:`, so several
    /// clusters (or other applications) can share one Redis.
    #[serde(default = "ClusterSettings::default_prefix")]
    pub key_prefix: String,
    /// How long a node's alive key (and with it its per-IP leases) outlives its last renewal
    /// (renewed every third of it): how long a dead node's clients stay counted against their
    /// IPs.
    #[serde(default = "ClusterSettings::default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Pub/sub messages that may wait for this node's delivery; beyond it the node has fallen
    /// behind, drops its pub/sub connection and catches up from the streams (nothing lost).
    /// Bounds the node's memory where redis-rs's own queue has no bound.
    #[serde(default = "ClusterSettings::default_pubsub_backlog")]
    pub pubsub_backlog: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: None,
            key_prefix: Self::default_prefix(),
            lease_ttl_secs: Self::default_lease_ttl_secs(),
            pubsub_backlog: Self::default_pubsub_backlog(),
        }
    }
}

impl ClusterSettings {
    fn default_prefix() -> String {
        "events-hub".into()
    }
    fn default_lease_ttl_secs() -> u64 {
        6
    }
    fn default_pubsub_backlog() -> usize {
        10_000
    }

    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.redis_url else {
            return Ok(());
        };
        if !cfg!(feature = "cluster") {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "this build has no cluster support (cargo feature `cluster`); remove [cluster] redis_url or rebuild with it",
            ));
        }
        if !url.starts_with("redis://") {
            return Err(ConfigError::new(
                "cluster.redis_url",
                format!(
                    "{url:?} is not a redis:// URL (rediss:// is not supported: run Redis on a private network or behind a TLS tunnel)"
                ),
            ));
        }
        check_name("cluster.key_prefix", &self.key_prefix)?;
        if !(3..=3600).contains(&self.lease_ttl_secs) {
            return Err(ConfigError::new(
                "cluster.lease_ttl_secs",
                "must be 3 to 3600 (leases are renewed every third of it)",
            ));
        }
        if !(1..=1_000_000).contains(&self.pubsub_backlog) {
            return Err(ConfigError::new(
                "cluster.pubsub_backlog",
                "must be 1 to 1000000 (messages waiting for delivery)",
            ));
        }
        if let Some(node) = &self.node_id {
            check_name("cluster.node_id", node)?;
        }
        Ok(())
    }
}

/// A key part: 1 to 64 of `A-Za-z0-9._-`, so keys stay readable and `:` stays the separator.
fn check_name(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> ClusterSettings {
        ClusterSettings {
            redis_url: Some(url.into()),
            ..ClusterSettings::default()
        }
    }

    #[test]
    fn no_url_is_a_single_node() {
        let settings = ClusterSettings::default();
        assert!(!settings.enabled());
        assert!(settings.validate().is_ok());
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn only_plain_redis_urls_and_tidy_names_are_accepted() {
        assert!(with_url("redis://127.0.0.1:6379").validate().is_ok());
        let refused = |s: ClusterSettings| s.validate().err().map(|e| e.key);
        assert_eq!(
            refused(with_url("rediss://h")).as_deref(),
            Some("cluster.redis_url")
        );
        let mut spaced = with_url("redis://h");
        spaced.key_prefix = "a b".into();
        assert_eq!(refused(spaced).as_deref(), Some("cluster.key_prefix"));
    }
}
