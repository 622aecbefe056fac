//! Integration tests through real sockets on 127.0.0.1 (one test binary, many modules).

mod common;

mod admin;
mod admission;
mod alertmanager;
mod binary;
mod binary_ops;
mod cli;
mod cloudevents;
#[cfg(feature = "cluster")]
mod cluster;
mod console;
mod delivery;
mod edges;
mod filters;
mod hardening;
mod http_limits;
mod inband;
mod messages;
mod metrics;
mod publish;
mod resume;
#[cfg(feature = "opennebula")]
mod sources;
mod specs;
mod subscribe;
mod tls;
mod unsubscribe;
