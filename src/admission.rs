//! Per-IP admission: who the client is (the TCP peer, or the address a trusted proxy vouches
//! for) and how many live sockets it holds.
//!
//! A slot is an RAII guard: it is taken atomically during the handshake and freed by `Drop`,
//! so no exit path of a socket — clean close, error, panic, a failed upgrade — can leak it.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::http::HeaderMap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ipnet::IpNet;

use crate::config::AdmissionSettings;
use crate::identity::{Identity, Owner};

/// Resolves the client IP of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted_proxies: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self { trusted_proxies }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The TCP peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is read right
    /// to left, skipping trusted hops; the first untrusted address is the client. A malformed
    /// entry ends the walk at the last hop that could be believed.
    pub fn resolve(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = normalise(peer.ip());
        if !self.is_trusted(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address with or without a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })?;
    Some(normalise(ip))
}

/// `::ffff:1.2.3.4` and `1.2.3.4` are the same client.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Live sockets counted by a key (client IP, identity), each key capped at `max`.
#[derive(Debug)]
struct SlotTable<K: Eq + Hash> {
    live: DashMap<K, u32>,
    max: u32,
}

impl<K: Eq + Hash + Clone> SlotTable<K> {
    fn new(max: u32) -> Self {
        Self {
            live: DashMap::new(),
            max,
        }
    }

    /// Check and reserve in one step under the map's shard lock: of N simultaneous attempts
    /// with one key exactly `max` succeed.
    fn try_take(&self, key: &K) -> bool {
        match self.live.entry(key.clone()) {
            Entry::Occupied(mut held) => {
                if *held.get() >= self.max {
                    return false;
                }
                *held.get_mut() += 1;
            }
            Entry::Vacant(free) => {
                free.insert(1);
            }
        }
        true
    }

    fn give_back(&self, key: &K) {
        if let Entry::Occupied(mut held) = self.live.entry(key.clone()) {
            if *held.get() <= 1 {
                held.remove();
            } else {
                *held.get_mut() -= 1;
            }
        }
    }
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The hub holds `max_connections` sockets.
    Full { max: u32 },
    /// The client IP holds `max_connections_per_ip` sockets.
    IpBusy(IpAddr),
    /// The identity holds `max_connections_per_identity` sockets.
    IdentityBusy { subject: String, max: u32 },
}

/// The admission limits: the whole hub, each client IP, each identity.
#[derive(Debug)]
pub struct Admission {
    total: AtomicU32,
    max_total: u32,
    per_ip: SlotTable<IpAddr>,
    per_identity: Option<SlotTable<Owner>>,
}

/// One admitted connection. Dropping it gives back every slot it holds, so no exit path of a
/// socket can leak one.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    owner: Option<Owner>,
}

impl Admission {
    pub fn new(settings: &AdmissionSettings) -> Arc<Self> {
        Arc::new(Self {
            total: AtomicU32::new(0),
            max_total: settings.max_connections.get(),
            per_ip: SlotTable::new(settings.max_connections_per_ip.get()),
            per_identity: (settings.max_connections_per_identity > 0)
                .then(|| SlotTable::new(settings.max_connections_per_identity)),
        })
    }

    /// Reserves a slot in every table, or none: a refusal gives back what it took.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, identity: &Identity) -> Result<Ticket, Refused> {
        let taken = self.total.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full {
                max: self.max_total,
            });
        }
        if !self.per_ip.try_take(&ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::IpBusy(ip));
        }
        // From here on, the ticket's Drop gives back what has been taken.
        let mut ticket = Ticket {
            admission: Arc::clone(self),
            ip,
            owner: None,
        };
        if let Some(per_identity) = &self.per_identity {
            let owner = identity.owner();
            if !per_identity.try_take(&owner) {
                return Err(Refused::IdentityBusy {
                    subject: identity.subject.clone(),
                    max: per_identity.max,
                });
            }
            ticket.owner = Some(owner);
        }
        Ok(ticket)
    }

    /// Client IPs holding at least one slot.
    pub fn live_ips(&self) -> usize {
        self.per_ip.live.len()
    }

    /// Admitted connections.
    pub fn live_total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.live_total() == 0 && self.per_ip.live.is_empty()
    }
}

impl Ticket {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let admission = &self.admission;
        if let (Some(per_identity), Some(owner)) = (&admission.per_identity, &self.owner) {
            per_identity.give_back(owner);
        }
        admission.per_ip.give_back(&self.ip);
        admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().expect("header value"));
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let r = ClientIpResolver::new(vec![]);
        let ip = r.resolve(peer("127.0.0.9:5000"), &headers("1.2.3.4"));
        assert_eq!(ip, "127.0.0.9".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn trusted_hops_are_skipped_right_to_left() {
        let r = ClientIpResolver::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let h = headers("9.9.9.9, 5.6.7.8:443, 10.1.1.1");
        assert_eq!(
            r.resolve(peer("10.0.0.2:1"), &h),
            "5.6.7.8".parse::<IpAddr>().expect("ip")
        );
        // A malformed hop stops the walk at the last believable address.
        let h = headers("1.1.1.1, garbage, 10.1.1.1");
        assert_eq!(
            r.resolve(peer("10.0.0.2:1"), &h),
            "10.1.1.1".parse::<IpAddr>().expect("ip")
        );
        // IPv4-mapped IPv6 is the IPv4 client.
        let h = headers("[::ffff:7.7.7.7]:99");
        assert_eq!(
            r.resolve(peer("10.0.0.2:1"), &h),
            "7.7.7.7".parse::<IpAddr>().expect("ip")
        );
    }

    fn admission(total: u32, per_ip: u32, per_identity: u32) -> Arc<Admission> {
        Admission::new(&AdmissionSettings {
            max_connections: NonZeroU32::new(total).expect("tests use positive limits"),
            max_connections_per_ip: NonZeroU32::new(per_ip).expect("tests use positive limits"),
            max_connections_per_identity: per_identity,
            trusted_proxies: vec![],
            allowed_origins: vec![],
        })
    }

    fn identity(name: &str) -> Identity {
        Identity::for_tests(name)
    }

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn slots_are_counted_and_freed() {
        let a = admission(100, 2, 0);
        let alice = identity("alice");
        let first = a.admit(addr(1), &alice);
        let second = a.admit(addr(1), &alice);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            a.admit(addr(1), &alice).err(),
            Some(Refused::IpBusy(addr(1)))
        );
        drop(first);
        let third = a.admit(addr(1), &alice);
        assert!(third.is_ok());
        drop((second, third));
        assert!(a.is_empty());
    }

    #[test]
    fn refusals_give_back_what_they_took() {
        let a = admission(2, 1, 1);
        let alice = identity("alice");
        let held = a.admit(addr(1), &alice).expect("first");
        // Same identity from another IP: refused by the identity cap, IP slot given back.
        assert!(matches!(
            a.admit(addr(2), &alice),
            Err(Refused::IdentityBusy { .. })
        ));
        assert_eq!((a.live_total(), a.live_ips()), (1, 1));
        let bob = a.admit(addr(2), &identity("bob")).expect("bob");
        assert_eq!(
            a.admit(addr(3), &identity("carol")).err(),
            Some(Refused::Full { max: 2 })
        );
        assert_eq!((a.live_total(), a.live_ips()), (2, 2));
        drop((held, bob));
        assert!(a.is_empty());
    }
}
