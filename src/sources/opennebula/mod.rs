//! The OpenNebula source: OpenNebula's Hook Manager publishes every cloud event on a ZeroMQ
//! PUB socket; a bridge per `[[sources.opennebula]]` block subscribes to it, maps each message
//! to a hub event and publishes it (`docs/opennebula.md`).
//!
//! | file | concern |
//! | --- | --- |
//! | `message` | keys and `HOOK_MESSAGE` documents, as `one_hm.rb` and oned write them |
//! | `lenient` | documents oned wrote ill-formed (unescaped parameters) |
//! | `copies` | the two or three copies of each state change |
//! | `mapping` | messages → `VM_STATE_CHANGED`, `HOST_STATE_CHANGED`, `API_CALL`, … |
//! | `memory` | the last state of each VM and host, for `previous_state` |
//! | `stats` | counters for `/readyz` |
//! | `bridge` | the ZeroMQ thread |
//!
//! | `config` | `[[sources.opennebula]]` settings and their validation |
//!
//! The settings are always built, so a build without the source can say so; everything else
//! needs the cargo feature `opennebula` (on by default), which compiles libzmq.

pub mod config;

#[cfg(feature = "opennebula")]
mod bridge;
#[cfg(feature = "opennebula")]
mod copies;
#[cfg(feature = "opennebula")]
mod lenient;
#[cfg(feature = "opennebula")]
mod mapping;
#[cfg(feature = "opennebula")]
mod memory;
#[cfg(feature = "opennebula")]
mod message;
#[cfg(all(test, feature = "opennebula"))]
mod oned;
#[cfg(feature = "opennebula")]
mod source;
#[cfg(feature = "opennebula")]
mod stats;

#[cfg(feature = "opennebula")]
pub use self::{
    mapping::{SKIPPED_KINDS, host_health},
    message::MALFORMED_KINDS,
    source::OpenNebula,
    stats::Stats,
};
