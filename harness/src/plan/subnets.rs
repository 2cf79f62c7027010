//! Address planning without Docker: which /24s a lab may use.
//!
//! A lab subnet must never overlap a host route, the resolver's network, another Docker network,
//! or the TEST-NET ranges (real infrastructure of our machines lives there: a lab bridge on them
//! cuts the machine off its package registries).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Ranges no lab network may touch, whatever the host's routes say.
pub fn forbidden() -> Vec<Ipv4Net> {
    [
        "192.0.2.0/24",    // TEST-NET-1
        "198.51.100.0/24", // TEST-NET-2
        "203.0.113.0/24",  // TEST-NET-3
        "10.255.255.0/24", // the resolver
        "127.0.0.0/8",
        "0.0.0.0/8",
        "224.0.0.0/4",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

/// The pool for the lab's internet segments (RFC 2544 benchmarking space).
pub fn internet_pool() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15).unwrap_or_default()
}

/// The pool for LANs.
pub fn lan_pool() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap_or_default()
}

/// The pool for CGNAT and VPN segments (RFC 6598 shared space).
pub fn shared_pool() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default()
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why no subnet could be found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("no free /{prefix} left in {pool} (every one overlaps a host route, a Docker network or a reserved range)")]
pub struct Exhausted {
    pub pool: Ipv4Net,
    pub prefix: u8,
}

/// The first free /`prefix` of `pool` at or after candidate number `start` (wrapping), that
/// overlaps nothing in `used` nor [`forbidden`]. `start` spreads parallel runs over the pool.
pub fn allocate(
    pool: Ipv4Net,
    prefix: u8,
    used: &[Ipv4Net],
    start: u64,
) -> Result<Ipv4Net, Exhausted> {
    let err = Exhausted { pool, prefix };
    let subnets: Vec<Ipv4Net> = pool.subnets(prefix).map_err(|_| err.clone())?.collect();
    if subnets.is_empty() {
        return Err(err);
    }
    let bad = forbidden();
    let n = subnets.len() as u64;
    (0..n)
        .map(|i| subnets[((start + i) % n) as usize])
        .find(|s| !used.iter().chain(bad.iter()).any(|u| overlaps(s, u)))
        .ok_or(err)
}

/// Whether `subnet` may be used, and if not, what it overlaps.
pub fn check(subnet: &Ipv4Net, used: &[Ipv4Net]) -> Result<(), Ipv4Net> {
    match used
        .iter()
        .chain(forbidden().iter())
        .find(|u| overlaps(subnet, u))
    {
        Some(u) => Err(*u),
        None => Ok(()),
    }
}

/// The host's IPv4 routes (destination networks) from `/proc/net/route`'s text, the default
/// route excluded.
pub fn parse_proc_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The hex is the address in host byte order (little-endian on our machines).
            let dest = Ipv4Addr::from(dest.to_le_bytes());
            let mask = Ipv4Addr::from(mask.to_le_bytes());
            let net = Ipv4Net::with_netmask(dest, mask).ok()?;
            (net.prefix_len() > 0).then_some(net)
        })
        .collect()
}

/// The `n`th host address of `net` (1 = the first usable one).
pub fn host(net: &Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let a = u32::from(net.network()).checked_add(n)?;
    let addr = Ipv4Addr::from(a);
    (net.contains(&addr) && addr != net.broadcast()).then_some(addr)
}

/// Every lab IPv6 prefix lies in this unique-local /16 (the contract's `LAB_RANGE6`, which routers
/// and hosts route): away from the host's own `fd00::/64` and its default route via `fd00::1`, and
/// from any global address.
pub fn v6_pool() -> Ipv6Net {
    p2plab_contract::router::LAB_RANGE6
}

/// A segment's IPv6 /64, derived from its IPv4 subnet (allocated per run, so unique on the
/// machine): the IPv4 network's 32 bits after `fd70::/16`. `198.18.4.0/24` → `fd70:c612:400::/64`.
pub fn v6_net(net: Ipv4Net) -> Ipv6Net {
    let [a, b, c, d] = net.network().octets();
    let ip = Ipv6Addr::new(
        0xfd70,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
        0,
        0,
        0,
        0,
        0,
    );
    Ipv6Net::new(ip, 64).unwrap_or_default()
}

/// A host's IPv6 address on a segment: its IPv4 host number in [`v6_net`] of the segment, so the
/// two read alike: `198.18.4.10` → `fd70:c612:400::a`.
pub fn v6_addr(net: Ipv4Net, ip: Ipv4Addr) -> Ipv6Addr {
    let host = u32::from(ip).wrapping_sub(u32::from(net.network()));
    let base = u128::from(v6_net(net).network());
    Ipv6Addr::from(base | u128::from(host))
}

/// Where the kernel's IPv4 neighbour (ARP) table limit is set.
pub const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

/// The ARP entries a lab may hold at once: every container on a segment may learn every other
/// one. The kernel keeps one neighbour table for all network namespaces, capped by
/// `gc_thresh3` (1024 by default): past it, new neighbours fail (`neighbor table overflow`,
/// ENOBUFS) and peers on the same segment stop reaching each other.
pub fn arp_entries(containers_per_segment: impl IntoIterator<Item = usize>) -> usize {
    containers_per_segment
        .into_iter()
        .map(|n| n * n.saturating_sub(1))
        .sum()
}

/// The warning for a lab needing `needed` ARP entries when the kernel holds `limit`; `None`
/// when it fits.
pub fn arp_warning(needed: usize, limit: usize) -> Option<String> {
    (needed > limit).then(|| {
        format!(
            "this lab may need {needed} ARP entries, more than the kernel's neighbour table holds in all \
             namespaces together (net.ipv4.neigh.default.gc_thresh3 = {limit}); peers on a crowded segment \
             will stop reaching each other. Raise it: sysctl -w net.ipv4.neigh.default.gc_thresh3={} \
             net.ipv4.neigh.default.gc_thresh2={}",
            (needed * 2).next_power_of_two(),
            (needed * 2).next_power_of_two() / 2
        )
    })
}

/// The host's `gc_thresh3`, if readable.
pub fn arp_limit() -> Option<usize> {
    std::fs::read_to_string(GC_THRESH3)
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn ipv6_prefixes_follow_the_ipv4_subnets_and_stay_off_the_host() {
        let net: Ipv4Net = "198.18.4.0/24".parse().unwrap();
        assert_eq!(v6_net(net).to_string(), "fd70:c612:400::/64");
        assert_eq!(
            v6_addr(net, Ipv4Addr::new(198, 18, 4, 10)).to_string(),
            "fd70:c612:400::a"
        );
        let host: Ipv6Net = "fd00::/64".parse().unwrap();
        for n in ["10.1.0.0/24", "100.64.3.0/24", "198.19.255.0/24"] {
            let v6 = v6_net(n.parse().unwrap());
            assert!(
                v6_pool().contains(&v6)
                    && !host.contains(&v6.network())
                    && !v6.contains(&host.network()),
                "{v6}"
            );
        }
        assert_ne!(
            v6_net("10.1.0.0/24".parse().unwrap()),
            v6_net("10.1.1.0/24".parse().unwrap())
        );
    }

    use super::*;

    #[test]
    fn arp_entries_grow_with_the_square_of_a_segment() {
        assert_eq!(arp_entries([50]), 2450);
        assert_eq!(arp_entries([3, 3, 1]), 12);
        assert!(arp_warning(arp_entries([50]), 1024).is_some_and(|w| w.contains("gc_thresh3=8192")));
        assert!(arp_warning(arp_entries([20]), 1024).is_none());
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn never_allocates_test_nets_or_the_resolver() {
        let pool = net("192.0.0.0/16");
        for start in 0..300 {
            let s = allocate(pool, 24, &[], start).unwrap();
            assert_ne!(s, net("192.0.2.0/24"));
        }
        let s = allocate(net("10.255.254.0/23"), 24, &[], 1).unwrap();
        assert_eq!(s, net("10.255.254.0/24"));
    }

    #[test]
    fn skips_used_and_wraps() {
        let pool = net("198.18.0.0/22");
        let used = [net("198.18.1.0/24"), net("198.18.2.0/23")];
        assert_eq!(allocate(pool, 24, &used, 1).unwrap(), net("198.18.0.0/24"));
        assert_eq!(allocate(pool, 24, &used, 0).unwrap(), net("198.18.0.0/24"));
        let all = [net("198.18.0.0/22")];
        assert!(allocate(pool, 24, &all, 0).is_err());
    }

    #[test]
    fn a_wide_host_route_blocks_its_subnets() {
        let used = [net("10.0.0.0/9")];
        let s = allocate(lan_pool(), 24, &used, 0).unwrap();
        assert!(!net("10.0.0.0/9").contains(&s.network()), "{s}");
    }

    #[test]
    fn check_names_the_overlap() {
        assert_eq!(check(&net("192.0.2.0/25"), &[]), Err(net("192.0.2.0/24")));
        assert_eq!(
            check(&net("10.1.0.0/24"), &[net("10.0.0.0/8")]),
            Err(net("10.0.0.0/8"))
        );
        assert_eq!(check(&net("10.1.0.0/24"), &[net("10.2.0.0/24")]), Ok(()));
    }

    #[test]
    fn parses_proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_routes(text),
            vec![net("192.0.2.0/24"), net("172.17.0.0/16")]
        );
    }

    #[test]
    fn hosts_stay_inside() {
        let n = net("10.1.2.0/24");
        assert_eq!(host(&n, 1), Some(Ipv4Addr::new(10, 1, 2, 1)));
        assert_eq!(host(&n, 254), Some(Ipv4Addr::new(10, 1, 2, 254)));
        assert_eq!(host(&n, 255), None);
    }
}
