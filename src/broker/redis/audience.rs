//! A publish's `recipients` in a cluster: this node's sockets now, plus the other nodes'
//! sockets as they last reported them. Each node reports its count per channel with every
//! lease renewal (every third of `[cluster] lease_ttl_secs`) and reads the others' in the same
//! script call, so the publish path makes no extra Redis call; a node that stops reporting
//! drops out after the lease TTL, as its leases do.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use ::redis::Script;

use super::state::Inner;
use crate::channels::ChannelId;

static AUDIENCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/audience.lua")));

impl Inner {
    /// Subscribers of `channel` on every node (the others' as of their last report).
    pub fn audience(&self, channel: ChannelId) -> usize {
        self.fanout.receiver_count(channel)
            + self.elsewhere[channel.index()].load(Ordering::Relaxed)
    }

    /// Reports this node's counts and keeps the other nodes' sums; on failure the old sums
    /// stand until the next renewal.
    pub async fn report_audience(&self) {
        let counts: Vec<String> = self
            .channels
            .ids()
            .map(|c| self.fanout.receiver_count(c).to_string())
            .collect();
        let mut call = AUDIENCE.prepare_invoke();
        call.key(format!("{}:audience", self.keys.prefix))
            .arg(&self.node_id)
            .arg(self.lease_ttl.as_millis() as u64)
            .arg(counts.join(" "));
        let others: Result<Vec<String>, _> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        match others {
            Ok(others) => self.keep_sums(&others),
            Err(error) => tracing::debug!(%error, "cluster: audience not reported"),
        }
    }

    fn keep_sums(&self, others: &[String]) {
        let mut sums = vec![0usize; self.elsewhere.len()];
        for entry in others {
            // "<expiry> <count per channel …>"; a node with other channels counts where it
            // agrees (the set-up requires the same channels everywhere).
            for (sum, count) in sums.iter_mut().zip(entry.split(' ').skip(1)) {
                *sum += count.parse::<usize>().unwrap_or(0);
            }
        }
        for (slot, sum) in self.elsewhere.iter().zip(sums) {
            slot.store(sum, Ordering::Relaxed);
        }
    }
}
