//! Relayed peers: a direct connection over the LAN, or to a public address, instead of the relay.
//!
//! Two peers behind one home NAT meet through the relay (their records name relayed addresses
//! only). DCUtR then tries their public address, which works only when the router hairpins, and
//! most do not. So once a peer is connected **over a relay**, its identify listen addresses are
//! checked against our own: a private IPv4 address in one of our /24s, or an IPv6 ULA address in
//! one of our /64s, is dialed directly (at most once per peer every 30 s, and only while no direct
//! connection exists). When it connects, the relayed connection is closed as for any direct one.
//!
//! IPv6 unique local addresses (ULA, fc00::/7) outside our /64s are dialed too, unlike foreign
//! private IPv4 ones. A ULA prefix is a random /48 (RFC 4193), so a foreign one cannot reach a
//! host of our own LAN the way another home's 192.168.1.20 would; it is either routed to that
//! peer (sites joined by a VPN, or this lab's whole IPv6 internet, fd70::/16) or fails. This is
//! what lets a peer behind an IPv6 firewall reach a reachable ULA peer from a fresh port, without
//! waiting for DCUtR's dials from the listen port, which can meet in one TCP 4-tuple and stall
//! (the NAT matrix's firewall6 × routed6 TCP flake: two attempts timed out, direct after 20 s).
//!
//! What is revealed to whom: LAN addresses travel only in identify, to peers already connected to
//! us (libp2p's identify sends listen addresses to every connected peer anyway). They are never
//! put in the DHT: the peer record holds confirmed external addresses only
//! (`discovery::publishable`), so nobody else learns them and no one is told they are reachable.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

pub const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Lan {
    local: Vec<IpAddr>,
    tried: HashMap<(PeerId, Multiaddr), Instant>,
}

/// An address worth a direct dial from anywhere: IPv4 not private, loopback, link-local or
/// unspecified; IPv6 not loopback, link-local, multicast or unspecified (a ULA is worth it: see
/// the module's documentation).
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_private() || a.is_loopback() || a.is_link_local() || a.is_unspecified())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn ip_of(a: &Multiaddr) -> Option<IpAddr> {
    a.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether `a` and `b` are private addresses of one LAN (same /24, or same ULA /64).
pub fn same_lan(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            a.is_private() && a != b && a.octets()[..3] == b.octets()[..3]
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            (a.segments()[0] & 0xfe00) == 0xfc00 && a != b && a.segments()[..4] == b.segments()[..4]
        }
        _ => false,
    }
}

impl Lan {
    /// One of our listen addresses (a local interface address).
    pub fn listening(&mut self, addr: &Multiaddr) {
        if let Some(ip) = ip_of(addr) {
            if !self.local.contains(&ip) {
                self.local.push(ip);
            }
        }
    }

    /// `peer` told us its listen addresses. `relayed_only`: our connections to it are all relayed.
    /// Returns the addresses to dial directly (empty when none, or tried recently).
    pub fn identified(
        &mut self,
        peer: PeerId,
        relayed_only: bool,
        listen_addrs: &[Multiaddr],
        now: Instant,
    ) -> Vec<Multiaddr> {
        if !relayed_only {
            return Vec::new();
        }
        let mut out = Vec::new();
        for a in listen_addrs {
            if a.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
                continue;
            }
            let Some(ip) = ip_of(a) else { continue };
            if !(routable(ip) || self.local.iter().any(|l| same_lan(*l, ip))) {
                continue;
            }
            let key = (peer, a.clone());
            if self.tried.get(&key).is_some_and(|t| now < *t + RETRY) {
                continue;
            }
            self.tried.insert(key, now);
            out.push(a.clone());
        }
        out
    }

    pub fn forget(&mut self, peer: &PeerId) {
        self.tried.retain(|(p, _), _| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn dials_a_relayed_peers_lan_and_public_addresses_not_foreign_lans() {
        let t0 = Instant::now();
        let mut lan = Lan::default();
        lan.listening(&a("/ip4/192.168.1.10/tcp/4001"));
        lan.listening(&a("/ip4/127.0.0.1/tcp/4001"));
        let peer = PeerId::random();
        let theirs = [
            a("/ip4/127.0.0.1/tcp/4002"),
            a("/ip4/192.168.1.20/tcp/4002"),
            a("/ip4/192.168.1.20/udp/4002/quic-v1"),
            a("/ip4/192.168.2.20/tcp/4002"),
            a("/ip4/198.18.0.7/tcp/4002"),
            a("/ip4/198.18.0.10/tcp/51820/p2p/12D3KooWJHsbXYdPv9bCceBBQrxN6aTM5YTDyFCGGB3Gy4tHDQXU/p2p-circuit"),
        ];
        assert!(
            lan.identified(peer, false, &theirs, t0).is_empty(),
            "already direct"
        );
        assert_eq!(
            lan.identified(peer, true, &theirs, t0),
            [
                a("/ip4/192.168.1.20/tcp/4002"),
                a("/ip4/192.168.1.20/udp/4002/quic-v1"),
                a("/ip4/198.18.0.7/tcp/4002")
            ]
        );
        assert!(
            lan.identified(peer, true, &theirs, t0 + Duration::from_secs(1))
                .is_empty(),
            "tried recently"
        );
        // A public address confirmed later (an identify push) is tried at once.
        let later = [a("/ip4/198.18.0.9/tcp/4002")];
        assert_eq!(
            lan.identified(peer, true, &later, t0 + Duration::from_secs(1)),
            later
        );
        assert_eq!(lan.identified(peer, true, &theirs, t0 + RETRY).len(), 3);
    }

    #[test]
    fn dials_ipv6_ula_and_global_addresses_never_link_local() {
        let t0 = Instant::now();
        let mut lan = Lan::default();
        lan.listening(&a("/ip6/fd70:0:1::10/tcp/4001"));
        let peer = PeerId::random();
        let theirs = [
            a("/ip6/::1/tcp/4002"),
            a("/ip6/fe80::2/tcp/4002"),
            a("/ip6/ff02::1/tcp/4002"),
            // the same /64 (a LAN), another site's ULA, a global address
            a("/ip6/fd70:0:1::20/tcp/4002"),
            a("/ip6/fd70:0:2::20/udp/4002/quic-v1"),
            a("/ip6/2001:db8::7/tcp/4002"),
        ];
        assert_eq!(lan.identified(peer, true, &theirs, t0), theirs[3..]);
    }

    #[test]
    fn public_and_foreign_addresses_are_not_one_lan() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_lan(ip("10.1.2.3"), ip("10.1.2.4")));
        assert!(!same_lan(ip("10.1.2.3"), ip("10.1.3.4")));
        assert!(!same_lan(ip("10.1.2.3"), ip("10.1.2.3")), "ourselves");
        assert!(!same_lan(ip("198.18.0.1"), ip("198.18.0.2")), "not private");
        assert!(same_lan(ip("fd12:3456::1"), ip("fd12:3456::2")));
        assert!(!same_lan(ip("2001:db8::1"), ip("2001:db8::2")));
    }
}
