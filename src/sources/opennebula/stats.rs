//! What one bridge has done, readable while it runs: the bridge thread writes, `/readyz` reads.
//! Plain atomics, so reading never waits for the bridge.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use super::mapping::SKIPPED_KINDS;
use super::message::MALFORMED_KINDS;

#[derive(Debug, Default)]
pub struct Stats {
    /// The ZeroMQ handshake with the publisher succeeded and the connection is up.
    connected: AtomicBool,
    /// Handshakes that succeeded (1 after the first connection; +1 per reconnection).
    connections: AtomicU64,
    /// ZeroMQ messages received.
    received: AtomicU64,
    /// Hub events published.
    published: AtomicU64,
    /// Well-formed messages not forwarded, by why ([`SKIPPED_KINDS`]: copies, kinds not
    /// configured, `RETRY`, objects not mapped).
    skipped: [AtomicU64; SKIPPED_KINDS.len()],
    malformed: [AtomicU64; MALFORMED_KINDS.len()],
    /// VMs and hosts whose last state is remembered (bounded by `max_tracked_objects`).
    tracked_vms: AtomicU64,
    tracked_hosts: AtomicU64,
}

impl Stats {
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        if up {
            self.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn published(&self, events: usize) {
        self.published.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Counts a skipped message of `kind` (an index into [`SKIPPED_KINDS`]).
    pub fn skipped(&self, kind: usize) {
        if let Some(c) = self.skipped.get(kind) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a malformed message of `kind` (an index into [`MALFORMED_KINDS`]) and returns
    /// how many of that kind there have been, this one included.
    pub fn malformed(&self, kind: usize) -> u64 {
        self.malformed
            .get(kind)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn set_tracked(&self, (vms, hosts): (usize, usize)) {
        self.tracked_vms.store(vms as u64, Ordering::Relaxed);
        self.tracked_hosts.store(hosts as u64, Ordering::Relaxed);
    }

    /// Malformed messages of every kind.
    pub fn malformed_total(&self) -> u64 {
        self.malformed
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The JSON object `/readyz` shows for this bridge.
    pub fn snapshot(&self) -> Value {
        let skipped_by = by_kind(&SKIPPED_KINDS, &self.skipped);
        let skipped: u64 = self.skipped.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "received": self.received.load(Ordering::Relaxed),
            "published": self.published.load(Ordering::Relaxed),
            "skipped": skipped,
            "skipped_by": skipped_by,
            "malformed": by_kind(&MALFORMED_KINDS, &self.malformed),
            "tracked": {
                "vms": self.tracked_vms.load(Ordering::Relaxed),
                "hosts": self.tracked_hosts.load(Ordering::Relaxed),
            },
        })
    }
}

/// `{"kind": count, …}` in the kinds' order.
fn by_kind(kinds: &[&str], counters: &[AtomicU64]) -> Map<String, Value> {
    kinds
        .iter()
        .zip(counters)
        .map(|(kind, c)| ((*kind).to_owned(), c.load(Ordering::Relaxed).into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_snapshot() {
        let s = Stats::default();
        assert_eq!(s.snapshot()["connected"], false);
        s.set_connected(true);
        s.received();
        s.received();
        s.published(2);
        s.skipped(0);
        s.skipped(0);
        s.skipped(3);
        s.skipped(99);
        s.set_tracked((3, 1));
        assert_eq!(s.malformed(2), 1);
        assert_eq!(s.malformed(2), 2);
        assert_eq!(s.malformed(0), 1);
        assert_eq!(s.malformed(99), 0);
        let snap = s.snapshot();
        assert_eq!(snap["connected"], true);
        assert_eq!(snap["connections"], 1);
        assert_eq!(snap["received"], 2);
        assert_eq!(snap["published"], 2);
        assert_eq!(snap["skipped"], 3);
        assert_eq!(
            snap["skipped_by"],
            json!({"copies": 2, "not_forwarded": 0, "retry": 0, "image": 1, "net": 0,
                   "other_objects": 0})
        );
        assert_eq!(
            snap["malformed"],
            json!({"frames": 1, "unknown_key": 0, "base64": 2, "xml": 0, "schema": 0})
        );
        assert_eq!(snap["tracked"], json!({"vms": 3, "hosts": 1}));
        assert_eq!(s.malformed_total(), 3);
        s.set_connected(false);
        assert_eq!(s.snapshot()["connected"], false);
    }
}
