//! Integration tests through real sockets on 127.0.0.1 (one test binary, many modules).

mod common;

mod admission;
mod binary;
mod delivery;
mod edges;
mod hardening;
mod inband;
mod messages;
mod publish;
mod resume;
mod sources;
mod subscribe;
mod unsubscribe;
