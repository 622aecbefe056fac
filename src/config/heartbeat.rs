//! `[heartbeat]`: how often sockets are pinged and when a silent one is dropped; both periods
//! are typed non-zero, so the section needs no check of its own.

use std::num::NonZeroU64;

use serde::Deserialize;

use super::error::nonzero;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    #[serde(deserialize_with = "nonzero")]
    pub ping_interval_secs: NonZeroU64,
    #[serde(deserialize_with = "nonzero")]
    pub idle_timeout_secs: NonZeroU64,
}
