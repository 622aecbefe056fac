//! One connection per client IP, cluster-wide: a lease per socket in `<p>:ip:<ip>`, a sorted
//! set of connection → expiry on Redis's own clock (so `max_connections_per_ip > 1` works and
//! no node's clock matters). The owning node renews its leases every [`RENEW`]; a socket that
//! ends frees its lease at once; a node that dies stops renewing, and its leases expire after
//! `[cluster] lease_ttl_secs` by themselves. Renewed every third of that.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ::redis::Script;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::state::Inner;
use crate::broker::{IpLease, LeaseError};

/// Leases renewed per script call.
const RENEW_CHUNK: usize = 1000;

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
        let (inner, member) = (Arc::clone(&self.inner), std::mem::take(&mut self.member));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let freed = inner
                    .call(|mut conn| async move {
                        ::redis::cmd("ZREM")
                            .arg(key)
                            .arg(member)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
                if let Err(error) = freed {
                    tracing::debug!(%error, "cluster: lease not freed; it expires by itself");
                }
            });
        }
    }
}

impl Inner {
    fn lease_key(&self, ip: IpAddr) -> String {
        format!("{}:ip:{ip}", self.keys.prefix)
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
            .arg(self.lease_ttl.as_millis() as u64);
        let taken: Result<u8, _> = self
            .call(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await;
        match taken {
            Ok(1) => {
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

    /// Renews every lease this node holds, until `stop`.
    pub async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.renew(false).await;
        }
    }

    /// One renewal of the leases and the registry. `retake`: also what Redis no longer has
    /// (right after a reconnect); otherwise only what is still there, so nothing a socket
    /// freed meanwhile comes back.
    pub async fn renew(&self, retake: bool) {
        let held: Vec<(String, String)> = self
            .leases
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for chunk in held.chunks(RENEW_CHUNK) {
            let mut call = RENEW_SCRIPT.prepare_invoke();
            call.arg(self.lease_ttl.as_millis() as u64)
                .arg(if retake { "" } else { "XX" });
            for (member, key) in chunk {
                call.key(key).arg(member);
            }
            let renewed: Result<u64, _> = self
                .call(|mut conn| async move { call.invoke_async(&mut conn).await })
                .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "cluster: leases not renewed");
            }
        }
        self.renew_registry(retake).await;
        self.report_audience().await;
    }

    /// Sets every client of this node in the registry again (`retake`: also what Redis lost).
    async fn renew_registry(&self, retake: bool) {
        let ttl = self.lease_ttl.as_millis() as u64;
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
