//! events-hub: a WebSocket hub for infrastructure events.
//!
//! The path of an event: `routes` (publish) → `hub` (stamp, serialise once, per-channel
//! broadcast) → `ws` (one task per socket) → the subscriber. The path of a subscriber: `routes`
//! (subscribe) → `auth` → `admission` → upgrade → `ws`.

pub mod admission;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod hub;
pub mod identity;
pub mod protocol;
pub mod refusal_body;
pub mod routes;
pub mod server;
pub mod sources;
pub mod telemetry;
pub mod ws;
