//! The cluster's key layout in Redis, in one place (docs/cluster.md lists it too).
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<p>:meta` | hash | `epoch`, `t` (last stamp), per channel `seq:<c>`, `bytes:<c>`, `dseq:<c>`/`dt:<c>` (newest dropped) |
//! | `<p>:stream:<c>` | stream | the history: entry `<seq>-0`, fields `f` frame, `t` µs, `i` event id |
//! | `<p>:ids:<c>` | hash | event id → seq, for `last_event_id` |
//! | `<p>:ch:<c>` | pub/sub | `"<epoch> <seq> <frame>"` per event |
//! | `<p>:node:<node>` | pub/sub | the relay to one node: `"Q <id> <from> <kind> <body>"`, `"A <id> <body>"` |
//! | `<p>:client:<id>` | string | `"<node>\n<owner>"` of a live client, expiring like a lease |
//! | `<p>:ip:<ip>` | sorted set | connection (`<node>:<uuid>`) → lease expiry (ms, Redis clock) |
//! | `<p>:audience` | hash | node → `"<expiry ms> <sockets per channel …>"`, for `recipients` |
//! | `<p>:idem:<caller>:<key>` | string | an `Idempotency-Key`'s fingerprint and receipt, for the window |
//!
//! Numbering and history live in one hash and the streams beside it: a Redis that loses its data
//! loses them together, and the next script makes a new epoch. Keys are not spread over hash
//! slots: one Redis (or a primary with replicas), not Redis Cluster.

/// The names of one channel's keys.
pub(super) struct ChannelKeys {
    pub name: String,
    pub stream: String,
    pub ids: String,
    pub pubsub: String,
}

pub(super) struct Keys {
    pub prefix: String,
    pub meta: String,
    /// By `ChannelId::index`.
    pub channels: Vec<ChannelKeys>,
}

impl Keys {
    /// The key of an `Idempotency-Key`, `scoped` by its caller (`<method>\0<subject>\0<key>`,
    /// as the publisher writes it: the NULs keep the parts apart, and Redis keys are binary).
    pub fn idempotency(&self, scoped: &str) -> String {
        format!("{}:idem:{scoped}", self.prefix)
    }

    pub fn new(prefix: &str, channel_names: &[String]) -> Self {
        let channels = channel_names
            .iter()
            .map(|name| ChannelKeys {
                name: name.clone(),
                stream: format!("{prefix}:stream:{name}"),
                ids: format!("{prefix}:ids:{name}"),
                pubsub: format!("{prefix}:ch:{name}"),
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            meta: format!("{prefix}:meta"),
            channels,
        }
    }
}
