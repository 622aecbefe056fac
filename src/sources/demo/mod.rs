//! The demo source (`events-hub serve --demo`, `[sources.demo] enabled`): a simulated fleet of
//! VMs and hosts that publishes realistic events a few times a second, so a first run shows a
//! live stream within seconds and the clients, dashboards and `tail` can be tried without any
//! infrastructure. Message names and body shapes are the seed guides' own:
//!
//! | channel (default) | message | body |
//! | --- | --- | --- |
//! | `pdfm` (`vm_channel`) | `VM_STATE_CHANGED` | `{previous_state, current_state, vm_id}` |
//! | `orchestrator` (`host_channel`) | `HOST_VM_STATE_CHANGED` | `{host_id, event: {previous_state, current_state, vm_id}}` |
//! | `orchestrator` (`host_channel`) | `HOST_HEALTH_UPDATE` | `{host_id, state}` |
//!
//! | file | concern |
//! | --- | --- |
//! | `config` | `[sources.demo]` settings and their validation |
//! | `fleet` | the simulation: VM lifecycles and host health, no I/O |
//! | `source` | the task that steps the fleet and publishes, and its `/readyz` status |

pub mod config;
mod fleet;
mod source;

pub use self::source::Demo;
