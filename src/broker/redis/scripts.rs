//! The Lua scripts (`lua/*.lua`, each with `common.lua` in front) and the typed view of what
//! `read.lua` answers. redis-rs runs them by SHA and loads them again when Redis forgot them
//! (after a restart), so a script is sent whole once per Redis start, not per call.

use std::sync::LazyLock;

use ::redis::{Script, ScriptInvocation, Value};

use super::RedisFailure;
use super::state::Inner;
use crate::broker::{Gap, Kept};
use crate::channels::ChannelId;
use crate::protocol::Frame;

pub(super) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/publish.lua")
    ))
});

/// `once.lua` needs nothing of `common.lua`.
pub(super) static ONCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/once.lua")));

pub(super) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/read.lua")
    ))
});

pub(super) static SEQ_AT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/common.lua"),
        include_str!("lua/seq_at.lua")
    ))
});

/// One channel's history as `read.lua` saw it, in one atomic step.
#[derive(Debug)]
pub(super) struct View {
    pub epoch: u64,
    pub last: u64,
    pub oldest: Option<u64>,
    pub events: usize,
    pub bytes: usize,
    /// Consecutive entries from the requested seq (or from the oldest kept, if later).
    pub entries: Vec<(u64, Frame)>,
}

impl View {
    pub fn parse(values: Vec<Value>) -> Result<Self, RedisFailure> {
        let bad = || RedisFailure::Unexpected("read.lua answer");
        let mut values = values.into_iter();
        let mut next_int = || values.next().as_ref().and_then(int).ok_or_else(bad);
        let (epoch, last, oldest) = (next_int()?, next_int()?, next_int()?);
        let (events, bytes) = (next_int()?, next_int()?);
        let mut entries = Vec::new();
        let rest: Vec<Value> = values.collect();
        for pair in rest.chunks(2) {
            let [seq, frame] = pair else {
                return Err(bad());
            };
            let seq = int(seq).ok_or_else(bad)?;
            let frame = text(frame).ok_or_else(bad)?;
            entries.push((seq, Frame::from(frame)));
        }
        Ok(Self {
            epoch,
            last,
            oldest: (oldest > 0).then_some(oldest),
            events: events as usize,
            bytes: bytes as usize,
            entries,
        })
    }

    /// Whether the history still holds every event after `after` (as `Log::covers`).
    pub fn covers(&self, after: u64) -> Result<(), Gap> {
        if after > self.last {
            return Err(Gap::Ahead {
                last_seq: self.last,
            });
        }
        match self.oldest {
            _ if after == self.last => Ok(()),
            Some(oldest) if oldest <= after + 1 => Ok(()),
            oldest => Err(Gap::Gone {
                oldest,
                last_seq: self.last,
            }),
        }
    }

    pub fn kept(&self) -> Kept {
        Kept {
            events: self.events,
            bytes: self.bytes,
            oldest_seq: self.oldest,
            last_seq: self.last,
        }
    }
}

/// An integer reply, or a bulk string holding one (the epoch is sent as a string: Lua's
/// numbers would print it in exponent form).
pub(super) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A string reply.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl Inner {
    /// A call of a script that trims `channel` first (`read.lua`, `seq_at.lua`): its keys
    /// (meta, stream, ids) and its name and `[history]` limits as the first arguments.
    pub(super) fn trimming<'a>(
        &self,
        script: &'a Script,
        channel: ChannelId,
    ) -> ScriptInvocation<'a> {
        let keys = &self.keys.channels[channel.index()];
        let limits = &self.limits[channel.index()];
        let mut call = script.prepare_invoke();
        call.key(&self.keys.meta).key(&keys.stream).key(&keys.ids);
        call.arg(&keys.name)
            .arg(limits.max_events)
            .arg(limits.max_bytes)
            .arg(limits.max_age.map_or(0, |a| a.as_micros() as u64));
        call
    }

    /// `read.lua`: seqs `from..=until`, at most `limit` (0: only the counts).
    pub async fn read(
        &self,
        channel: ChannelId,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Result<View, RedisFailure> {
        let mut call = self.trimming(&READ, channel);
        call.arg(from).arg(until).arg(limit);
        let values: Vec<Value> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        View::parse(values)
    }
}
