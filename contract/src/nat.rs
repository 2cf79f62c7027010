//! A lab router's NAT profile, as the topology names it and as the router implements it.
//!
//! One definition for both sides: the harness reads a profile from a topology file and hands its
//! name to the router container (`P2PLAB_NAT`); the router (`docker/router.sh`) has the ruleset
//! rendered from the same type (`p2plab-tools`' `nft` module, the `router-rules` binary); the
//! harness flushes the router's mapping state by the names below. Each profile says what it does
//! to mappings, to filtering and so to hole punching, in the terms of RFC 4787.

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// The nftables table of a router's rules (`ip` and `ip6` families).
pub const TABLE: &str = "p2plab_router";
/// The `inet` table whose chains miniupnpd fills (the `upnp` profile only).
pub const UPNP_TABLE: &str = "p2plab_upnp";

/// How a router picks the external address and port of a LAN endpoint's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// One external port per LAN endpoint, whatever the destination (RFC 4787 "endpoint-
    /// independent"): what a peer learns from one remote (identify, AutoNAT) holds for every
    /// other, so a hole punch can aim at it.
    EndpointIndependent,
    /// A new random external port per destination (symmetric NAT): the port a remote saw is not
    /// the one the next remote will see, so hole punching toward this side fails.
    EndpointDependent,
    /// No translation.
    None,
}

/// Which inbound packets a router lets through to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Anyone may send to a mapping once it exists (full cone).
    EndpointIndependent,
    /// Only the address and port the LAN endpoint sent to (conntrack replies): a hole punch works
    /// because both sides send first.
    AddressAndPortDependent,
    /// No stateful filtering.
    None,
}

/// What a router does. The names are those of the topology files and of `P2PLAB_NAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Endpoint-independent mapping and filtering (full cone): reachable at its mappings by
    /// anyone; hole punching always works, and often is not needed.
    Open,
    /// Endpoint-independent mapping, address-and-port-dependent filtering: the common home
    /// router. Unreachable unsolicited; hole punching works.
    Home,
    /// Endpoint-dependent mapping (a random external port per connection) and address-and-port-
    /// dependent filtering: symmetric NAT. Hole punching toward it fails; relayed only, unless the
    /// other side is reachable.
    Strict,
    /// `home` plus static forwards of external ports to LAN endpoints: the forwarded endpoint is
    /// reachable directly.
    PortForward,
    /// `home` plus a UPnP IGD (miniupnpd, also NAT-PMP/PCP) on the LAN: a LAN host may map its own
    /// ports and is then reachable there; without a mapping it is `home`.
    Upnp,
    /// Plain routing: no translation, no stateful firewall.
    Routed,
    /// `home` for TCP; every UDP packet dropped, both ways (a corporate, hotel or mobile network
    /// that blocks UDP): QUIC cannot leave the LAN, so a QUIC-only peer behind it reaches nobody
    /// and a peer with both transports must use TCP (hole punching over TCP works as `home`).
    UdpBlocked,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: [Profile; 7] = [
        Self::Open,
        Self::Home,
        Self::Strict,
        Self::PortForward,
        Self::Upnp,
        Self::Routed,
        Self::UdpBlocked,
    ];
    /// The names, for messages.
    pub const NAMES: &'static str = "open, home, strict, port-forward, upnp, routed, udp-blocked";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Home => "home",
            Self::Strict => "strict",
            Self::PortForward => "port-forward",
            Self::Upnp => "upnp",
            Self::Routed => "routed",
            Self::UdpBlocked => "udp-blocked",
        }
    }

    pub fn mapping(self) -> Mapping {
        match self {
            Self::Open | Self::Home | Self::PortForward | Self::Upnp | Self::UdpBlocked => {
                Mapping::EndpointIndependent
            }
            Self::Strict => Mapping::EndpointDependent,
            Self::Routed => Mapping::None,
        }
    }

    pub fn filtering(self) -> Filtering {
        match self {
            Self::Open => Filtering::EndpointIndependent,
            Self::Home | Self::Strict | Self::PortForward | Self::Upnp | Self::UdpBlocked => {
                Filtering::AddressAndPortDependent
            }
            Self::Routed => Filtering::None,
        }
    }

    /// Whether DCUtR can punch through this router (toward a peer whose router allows it too).
    pub fn hole_punchable(self) -> bool {
        self.mapping() != Mapping::EndpointDependent
    }

    /// Whether the router drops every packet of `proto`, both ways.
    pub fn blocks(self, proto: Proto) -> bool {
        self == Self::UdpBlocked && proto == Proto::Udp
    }

    /// Whether the router translates at all.
    pub fn translates(self) -> bool {
        self.mapping() != Mapping::None
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown NAT profile '{s}' (use {})", Self::NAMES))
    }
}

/// What a router does to IPv6 between its LAN /64 and its uplink (a LAN segment with
/// `family: dual` or `ipv6`). IPv6 is never translated here: each LAN host has its own global
/// address, as on most IPv6 homes. (NPTv6 would only rewrite that prefix one-to-one, which changes
/// nothing for a hole punch; NAT66 with per-connection ports is rare; NAT64 needs DNS64 names,
/// which peers dialing multiaddrs do not use. None is built.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Policy {
    /// A stateful firewall without translation (RFC 6092, what home routers ship): LAN hosts
    /// send anywhere; inbound only for flows a LAN host opened (conntrack's established). A
    /// host's address is its own, so a hole punch aims at the right place, and both sides
    /// sending first opens both firewalls: hole punching works, over UDP and TCP.
    Firewall,
    /// Plain routing, no filtering: every LAN host is reachable at its address, as a public
    /// host is; no hole punch is needed.
    Routed,
}

impl Ipv6Policy {
    pub const ALL: [Ipv6Policy; 2] = [Self::Firewall, Self::Routed];
    pub const NAMES: &'static str = "firewall or routed";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firewall => "firewall",
            Self::Routed => "routed",
        }
    }

    /// Never translated.
    pub fn mapping(self) -> Mapping {
        Mapping::None
    }

    pub fn filtering(self) -> Filtering {
        match self {
            Self::Firewall => Filtering::AddressAndPortDependent,
            Self::Routed => Filtering::None,
        }
    }
}

impl fmt::Display for Ipv6Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ipv6Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown IPv6 policy '{s}' (use {})", Self::NAMES))
    }
}

/// A transport protocol a forward or a mapping is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub const BOTH: [Proto; 2] = [Proto::Udp, Proto::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }

    /// The router's two mapping maps for this protocol: LAN endpoint → external endpoint, and
    /// external port → LAN endpoint. Flushing both (and conntrack) makes the router forget every
    /// mapping, as a router reboot would.
    pub fn maps(self) -> [&'static str; 2] {
        match self {
            Self::Udp => ["udp_int", "udp_ext"],
            Self::Tcp => ["tcp_int", "tcp_ext"],
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A static port forward of a `port-forward` router: `proto:ext_port:lan_ip:lan_port` in
/// `P2PLAB_FORWARD` (comma-separated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub ext_port: u16,
    pub lan_ip: Ipv4Addr,
    pub lan_port: u16,
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.proto, self.ext_port, self.lan_ip, self.lan_port
        )
    }
}

impl FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("bad forward '{s}' (want proto:ext_port:lan_ip:lan_port, proto tcp or udp, ports 1-65535)")
        };
        let parts: Vec<&str> = s.trim().split(':').collect();
        let [proto, ext, ip, port] = parts.as_slice() else {
            return Err(bad());
        };
        let proto = match *proto {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            _ => return Err(bad()),
        };
        let port_of = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
        Ok(Self {
            proto,
            ext_port: port_of(ext).ok_or_else(bad)?,
            lan_ip: ip.parse().map_err(|_| bad())?,
            lan_port: port_of(port).ok_or_else(bad)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
            assert!(Profile::NAMES.contains(p.as_str()));
        }
        assert_eq!("udp-blocked".parse::<Profile>(), Ok(Profile::UdpBlocked));
        let e = "cgnat".parse::<Profile>().unwrap_err();
        assert!(e.contains("'cgnat'") && e.contains("port-forward"), "{e}");
    }

    #[test]
    fn only_the_symmetric_nat_defeats_hole_punching() {
        let punchable: Vec<_> = Profile::ALL
            .into_iter()
            .filter(|p| !p.hole_punchable())
            .collect();
        assert_eq!(punchable, vec![Profile::Strict]);
        assert_eq!(
            Profile::Home.filtering(),
            Filtering::AddressAndPortDependent
        );
        assert_eq!(Profile::Open.filtering(), Filtering::EndpointIndependent);
        assert!(!Profile::Routed.translates());
        let blocking: Vec<_> = Profile::ALL
            .into_iter()
            .filter(|p| Proto::BOTH.iter().any(|&q| p.blocks(q)))
            .collect();
        assert_eq!(blocking, vec![Profile::UdpBlocked]);
        assert!(!Profile::UdpBlocked.blocks(Proto::Tcp));
    }

    #[test]
    fn ipv6_policies_never_translate_and_only_the_firewall_filters() {
        for p in Ipv6Policy::ALL {
            assert_eq!(p.as_str().parse::<Ipv6Policy>(), Ok(p));
            assert_eq!(p.mapping(), Mapping::None);
        }
        assert_eq!(
            Ipv6Policy::Firewall.filtering(),
            Filtering::AddressAndPortDependent
        );
        assert_eq!(Ipv6Policy::Routed.filtering(), Filtering::None);
        assert!("nat66"
            .parse::<Ipv6Policy>()
            .unwrap_err()
            .contains("firewall or routed"));
    }

    #[test]
    fn forwards_parse_and_print_the_env_form() {
        let f: Forward = "tcp:4001:10.101.0.10:4002".parse().unwrap();
        assert_eq!(
            f,
            Forward {
                proto: Proto::Tcp,
                ext_port: 4001,
                lan_ip: Ipv4Addr::new(10, 101, 0, 10),
                lan_port: 4002
            }
        );
        assert_eq!(f.to_string(), "tcp:4001:10.101.0.10:4002");
        for bad in [
            "",
            "sctp:1:10.0.0.1:1",
            "tcp:0:10.0.0.1:1",
            "tcp:1:10.0.0.1:70000",
            "tcp:1:10.0.0:1",
            "tcp:1:10.0.0.1",
        ] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
    }
}
