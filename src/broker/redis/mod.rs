//! The cluster broker: several hub nodes share one Redis (`[cluster] redis_url`).
//!
//! Numbering, history and the order of each channel live in Redis: one Lua script per publish
//! batch takes each event's `seq`, appends it to the channel's stream and PUBLISHes it, in one
//! atomic step, so every node sees every channel in one order. Each node holds one pub/sub
//! connection and hands what arrives to its own [`Fanout`], checking seqs as it goes: an old
//! one is dropped, a jump is filled from the stream first, a reconnect catches every channel
//! up, and an idle connection is probed with PING (a pub/sub socket can die silently). Local
//! delivery is what it is on one node: one shared frame per event, via `Fanout::deliver`.
//!
//! Modelled on Centrifugo's Redis engine (`centrifugal/centrifuge`, `broker_redis.go` and
//! `internal/redis_lua/broker_history_add_stream.lua`) and unlike it where it loses events:
//! its epoch is per channel and a gap seen on the live stream makes the client resubscribe;
//! here the epoch is the cluster's and the node fills the gap from the stream itself.
//!
//! | file | concern |
//! | --- | --- |
//! | `config` | `[cluster]` settings and their checks |
//! | `keys` | the key layout |
//! | `state` | a node's shared state: connection, keys, how far each channel is delivered |
//! | `scripts` | the Lua scripts (`lua/`), `read.lua` and the view it answers |
//! | `publish` | a batch → one script call; targeted events; close |
//! | `once` | `Idempotency-Key` across the cluster: claim, publish, keep the receipt |
//! | `reads` | attach, replay, history, since_time, last_event_id from the streams |
//! | `lease` | one connection per client IP, cluster-wide: leases in Redis, renewed |
//! | `relay` | the client registry and the command relay between nodes |
//! | `audience` | each node's subscribers per channel, for a publish's `recipients` |
//! | `catchup` | filling a channel's delivery from the stream, in seq order |
//! | `interest` | following only the channels with local subscribers |
//! | `backlog` | the bounded queue between redis-rs's pub/sub stream and delivery |
//! | `delivery` | the pub/sub task: seq check, reconnect with catch-up, idle probe |
//! | `broker` | [`RedisBroker`]: building it, and the `Broker` methods |

pub mod config;

#[cfg(feature = "cluster")]
mod audience;
#[cfg(feature = "cluster")]
mod backlog;
#[cfg(feature = "cluster")]
mod catchup;
#[cfg(feature = "cluster")]
mod delivery;
#[cfg(feature = "cluster")]
mod interest;
#[cfg(feature = "cluster")]
mod keys;
#[cfg(feature = "cluster")]
mod lease;
#[cfg(feature = "cluster")]
mod once;
#[cfg(feature = "cluster")]
mod publish;
#[cfg(feature = "cluster")]
mod reads;
#[cfg(feature = "cluster")]
mod relay;
#[cfg(feature = "cluster")]
mod scripts;
#[cfg(feature = "cluster")]
mod state;

#[cfg(feature = "cluster")]
pub use self::broker::RedisBroker;

#[cfg(feature = "cluster")]
mod broker;

/// Why a Redis call did not give an answer the broker can use.
#[cfg(feature = "cluster")]
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("Redis answered something this hub cannot read ({0})")]
    Unexpected(&'static str),
    #[error("the pub/sub connection closed")]
    Closed,
    /// More than `[cluster] pubsub_backlog` messages waited for delivery (`backlog`).
    #[error("delivery fell more than {0} pub/sub messages behind")]
    FellBehind(usize),
}
