//! One connection per client IP, cluster-wide: a lease per socket in `<p>:ip:<ip>`, a set of
//! connections (so `max_connections_per_ip > 1` works). A lease counts while its node is alive:
//! each node keeps one key `<p>:alive:<node>` with a TTL of `[cluster] lease_ttl_secs`,
//! renewed every third of it, and `lease.lua` drops the connections of nodes whose key is gone.
//! So a dead node's leases end together when its one key expires, and what Redis spends on
//! liveness grows with nodes, not sockets (renewing each lease cost Redis about 10 µs per socket
//! per renewal: 2 cores at 1,000,000 sockets renewed every 5 s). A socket that ends frees its
//! lease at once; the sets and the client registry only need an hourly refresh so that a
//! socket open for days keeps them.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::Script;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::state::Inner;
use crate::broker::{IpLease, LeaseError};

/// Leases refreshed per script call.
const RENEW_CHUNK: usize = 1000;
/// How long a lease set or registry entry lives in Redis without a refresh (a dead node's
/// entries are void at once through its alive key; this only bounds what they occupy).
pub(super) const KEY_TTL: Duration = Duration::from_secs(3600);
/// How often this node refreshes its lease sets and registry entries.
const REFRESH: Duration = Duration::from_secs(1200);

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease.lua")));
static RENEW_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/renew.lua")));

/// A held lease; dropping it frees it in Redis (in the background: a socket's end never waits).
struct Held {
    inner: Arc<Inner>,
    member: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some((_, key)) = self.inner.leases.remove(&self.member) else {
            return;
        };
        let member = std::mem::take(&mut self.member);
        self.inner
            .call_in_background("lease release", |mut conn| async move {
                ::redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async::<()>(&mut conn)
                    .await
            });
    }
}

impl Inner {
    fn lease_key(&self, ip: IpAddr) -> String {
        format!("{}:ip:{ip}", self.keys.prefix)
    }

    fn alive_prefix(&self) -> String {
        format!("{}:alive:", self.keys.prefix)
    }

    /// Takes one of `ip`'s `limit` slots cluster-wide, or says it is busy. Fails closed: without
    /// Redis no handshake is admitted.
    pub async fn lease_ip(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Result<IpLease, LeaseError> {
        let member = format!("{}:{}", self.node_id, Uuid::new_v4());
        let key = self.lease_key(ip);
        let mut call = LEASE.prepare_invoke();
        call.key(&key)
            .arg(&member)
            .arg(limit)
            .arg(KEY_TTL.as_millis() as u64)
            .arg(self.alive_prefix())
            .arg(&self.node_id)
            .arg(self.lease_ttl.as_millis() as u64);
        let taken: Result<(u8, u8), _> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        if let Ok((_, 1)) = taken {
            self.retake_in_background();
        }
        match taken {
            Ok((1, _)) => {
                self.leases.insert(member.clone(), key);
                let held = Held {
                    inner: Arc::clone(self),
                    member,
                };
                Ok(IpLease::held(Box::new(held)))
            }
            Ok(_) => Err(LeaseError::Busy(ip)),
            Err(error) => Err(LeaseError::Unavailable(format!(
                "the cluster's Redis is unreachable ({error}); try again shortly"
            ))),
        }
    }

    /// Keeps this node alive in Redis and its audience reported every third of the lease
    /// TTL, and its lease sets and registry entries refreshed every [`REFRESH`], until `stop`.
    pub async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let lapsed = self.heartbeat().await;
            if lapsed || refreshed.elapsed() >= REFRESH {
                refreshed = tokio::time::Instant::now();
                // After a lapse other nodes' handshakes may have dropped this node's leases
                // as dead ones: take them all again.
                self.refresh(lapsed).await;
            }
            self.report_audience().await;
        }
    }

    /// Everything again, right after (re)connecting to Redis: alive, every lease and registry
    /// entry taken again (so the limits hold after a Redis restart), the audience.
    pub async fn renew(&self) {
        self.heartbeat().await;
        self.refresh(true).await;
        self.report_audience().await;
    }

    /// This node's alive key had lapsed: other nodes' handshakes may have dropped its leases
    /// as a dead node's, so it takes them all again (once, whichever notices first).
    fn retake_in_background(self: &Arc<Self>) {
        let inner = Arc::clone(self);
        tokio::spawn(async move { inner.refresh(true).await });
    }

    /// `<p>:alive:<node>` for another lease TTL: while it exists this node's leases count.
    /// Whether the key had lapsed (expired before this renewal: the node or Redis stalled).
    async fn heartbeat(&self) -> bool {
        let key = format!("{}{}", self.alive_prefix(), self.node_id);
        let ttl = self.lease_ttl.as_millis() as u64;
        let set: Result<Option<String>, _> = self
            .call(|mut conn| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("PX")
                    .arg(ttl)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match set {
            Ok(before) => before.is_none(),
            Err(error) => {
                tracing::warn!(%error, "cluster: this node's alive key not renewed");
                false
            }
        }
    }

    /// Refreshes the lease sets and the registry. `retake`: also what Redis no longer has;
    /// otherwise only what is still there, so nothing a socket freed meanwhile comes back.
    async fn refresh(&self, retake: bool) {
        let held: Vec<(String, String)> = self
            .leases
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for chunk in held.chunks(RENEW_CHUNK) {
            let mut call = RENEW_SCRIPT.prepare_invoke();
            call.arg(KEY_TTL.as_millis() as u64)
                .arg(if retake { "" } else { "XX" });
            for (member, key) in chunk {
                call.key(key).arg(member);
            }
            let renewed: Result<u64, _> = self
                .call(|mut conn| async move { call.invoke_async(&mut conn).await })
                .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "cluster: leases not refreshed");
            }
        }
        if retake {
            self.drop_closed(&held).await;
        }
        self.renew_registry(retake).await;
    }

    /// A socket that closed while its lease was being taken again freed it before the retake
    /// wrote it back: free those again, or they would stand while this node lives.
    async fn drop_closed(&self, held: &[(String, String)]) {
        let mut pipe = ::redis::pipe();
        let mut any = false;
        for (member, key) in held {
            if !self.leases.contains_key(member) {
                pipe.cmd("ZREM").arg(key).arg(member).ignore();
                any = true;
            }
        }
        if any {
            let dropped: Result<(), _> = self
                .call(|mut conn| async move { pipe.query_async(&mut conn).await })
                .await;
            if let Err(error) = dropped {
                tracing::warn!(%error, "cluster: closed leases not freed");
            }
        }
    }

    /// Sets every client of this node in the registry again (`retake`: also what Redis lost).
    async fn renew_registry(&self, retake: bool) {
        let ttl = KEY_TTL.as_millis() as u64;
        let entries: Vec<(String, String)> =
            self.announced.iter().map(|e| e.value().clone()).collect();
        for chunk in entries.chunks(RENEW_CHUNK) {
            let mut pipe = ::redis::pipe();
            for (key, value) in chunk {
                let set = pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(ttl);
                if !retake {
                    set.arg("XX");
                }
                set.ignore();
            }
            let renewed: Result<(), _> = self
                .call(|mut conn| async move { pipe.query_async(&mut conn).await })
                .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "cluster: client registry not renewed");
            }
        }
    }
}
