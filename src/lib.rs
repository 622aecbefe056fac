//! events-hub: a WebSocket hub for infrastructure events.
//!
//! The modules, bottom-up (each uses only those above it; `scripts/check-module-cycles.py`
//! checks that none import each other in a circle):
//!
//! | module | concern |
//! | --- | --- |
//! | [`idempotency`] | idempotent publish: the bounded memory of answered `Idempotency-Key`s |
//! | [`identity`] | who is calling: `Identity`, `Method`, `Owner`, claim names |
//! | [`protocol`] | the wire format: event envelope, client messages, error frames |
//! | [`filter`] | server-side filters: compiled once per subscription, checked per event |
//! | [`cloudevents`] | CloudEvents 1.0: a publish request read into events, a frame rendered as a CloudEvent |
//! | [`config`] | settings: defaults, file, environment, validation |
//! | [`channels`] | the configured channels by name and id; a subscription set as a bit mask |
//! | [`metrics`] | Prometheus metrics: one registry per hub, counted on the path, read at scrape |
//! | [`fanout`] | local delivery: a broadcast sender per channel, the live clients of this node; an event parsed once for its filtered subscribers |
//! | [`broker`] | the `Broker` seam: `seq`, history, delivery into `fanout` (`MemoryBroker` on one node, `broker::redis` for a cluster sharing one Redis, docs/cluster.md) |
//! | [`hub`] | the registry: clients, subscriptions, where each stream starts (resume) |
//! | [`tls`] | native TLS: the rustls configuration, its reload, the bounded handshake |
//! | [`admission`] | who may open a socket now: per-IP, per-identity and total limits |
//! | [`error`] | every refusal as the SPEC's error body, mapped in one place |
//! | [`auth`] | credentials (JWT, API key, query token) → `Identity` |
//! | [`ws`] | one task per socket: frames out, client messages in, heartbeat, close codes |
//! | [`publisher`] | the one way events are published: routes and sources call it |
//! | [`sources`] | event sources the hub subscribes to itself (OpenNebula's Hook Manager, the demo fleet) |
//! | [`routes`] | the HTTP handlers: subscribe, unsubscribe, publish, history, health, metrics, admin, the API descriptions (`/openapi.json`, `/asyncapi.json`), the web console |
//! | [`app`] | `AppState` and `fn app(state) -> Router`: the handlers on their paths |
//! | [`refusal_body`] | the error body on hyper's own 400/414/431 answers |
//! | [`lingering_tcp`] | closing a connection without a reset |
//! | [`server`] | the accept loop and the shutdown sequence |
//! | [`cli`] | the command line; the client commands `publish`, `tail`, `check-config` (HTTP and WebSocket clients of any hub) |
//!
//! The path of an event: `routes::publish` → `publisher` (checks) → `broker` (stamp, number,
//! serialise once, keep) → `fanout` (per-channel broadcast) → `ws` (one task per socket) → the
//! subscriber. The path of a subscriber:
//! `server` (→ `tls`) → `app` → `routes::subscribe` → `auth` → `admission` → upgrade → `ws`.

pub mod admission;
pub mod app;
pub mod auth;
pub mod broker;
pub mod channels;
pub mod cli;
pub mod cloudevents;
pub mod config;
pub mod error;
pub mod fanout;
pub mod filter;
pub mod hub;
pub mod idempotency;
pub mod identity;
pub mod lingering_tcp;
pub mod metrics;
pub mod protocol;
pub mod publisher;
pub mod refusal_body;
pub mod routes;
pub mod server;
pub mod sources;
pub mod telemetry;
pub mod tls;
pub mod ws;
