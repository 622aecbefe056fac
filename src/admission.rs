//! Per-IP admission: who the client is (the TCP peer, or the address a trusted proxy vouches
//! for) and how many live sockets it holds.
//!
//! A slot is an RAII guard: it is taken atomically during the handshake and freed by `Drop`,
//! so no exit path of a socket — clean close, error, panic, a failed upgrade — can leak it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ipnet::IpNet;

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

/// Live sockets per client IP.
#[derive(Debug)]
pub struct IpSlots {
    live: DashMap<IpAddr, u32>,
    max_per_ip: u32,
}

/// One reserved connection for an IP; dropping it gives the slot back.
#[derive(Debug)]
pub struct IpSlot {
    slots: Arc<IpSlots>,
    ip: IpAddr,
}

impl IpSlots {
    pub fn new(max_per_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            live: DashMap::new(),
            max_per_ip,
        })
    }

    /// Check and reserve in one step under the map's shard lock: of N simultaneous handshakes
    /// from one IP exactly `max_per_ip` succeed.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        match self.live.entry(ip) {
            Entry::Occupied(mut held) => {
                if *held.get() >= self.max_per_ip {
                    return None;
                }
                *held.get_mut() += 1;
            }
            Entry::Vacant(free) => {
                free.insert(1);
            }
        }
        Some(IpSlot {
            slots: Arc::clone(self),
            ip,
        })
    }

    /// Client IPs holding at least one slot.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

impl IpSlot {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut held) = self.slots.live.entry(self.ip) {
            if *held.get() <= 1 {
                held.remove();
            } else {
                *held.get_mut() -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn slots_are_counted_and_freed() {
        let slots = IpSlots::new(2);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let a = slots.try_acquire(ip);
        let b = slots.try_acquire(ip);
        assert!(a.is_some() && b.is_some());
        assert!(slots.try_acquire(ip).is_none());
        drop(a);
        let c = slots.try_acquire(ip);
        assert!(c.is_some());
        drop((b, c));
        assert!(slots.is_empty());
    }
}
