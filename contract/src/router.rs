//! A lab router container's contract: what it is told (its `P2PLAB_*` environment, [`RouterEnv`])
//! and what it says when it is up (its `router_ready` line, [`RouterReady`]).
//!
//! The harness writes the environment from a topology (`layout.rs`, through
//! [`RouterEnv::to_env`]); the router reads it back with [`RouterEnv::from_env`] (the
//! `router-rules env` command of `p2plab-tools`, which `docker/router.sh` runs first), so a
//! setting means the same on both sides and a bad one is refused with one line naming the
//! variable and its value.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::nat::{Filtering, Forward, Ipv6Policy, Mapping, Profile};

/// An IPv4 prefix with no host bits set, e.g. `10.101.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub net: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    /// The prefix of `len` bits that holds `ip`.
    pub fn of(ip: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            net: Ipv4Addr::from(u32::from(ip) & u32::from(mask(len))),
            len,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(mask(self.len)) == u32::from(self.net)
    }

    /// Docker's gateway on a subnet: its first address (none for /31 and /32).
    pub fn docker_gateway(&self) -> Option<Ipv4Addr> {
        (self.len <= 30).then(|| Ipv4Addr::from(u32::from(self.net) + 1))
    }
}

/// The netmask of a prefix length (0..=32).
pub fn mask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    })
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an IPv4 prefix like 10.101.0.0/24");
        let (net, len) = s.split_once('/').ok_or_else(bad)?;
        let net: Ipv4Addr = net.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        let p = Prefix::of(net, len);
        if p.net != net {
            return Err(format!("'{s}' has host bits set (did you mean {p}?)"));
        }
        Ok(p)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The lab's ranges, routed via a stacked router's uplink gateway (never a default route): the
/// internet pool, the shared (carrier) pool and the LAN pool.
pub const LAB_RANGES: [Prefix; 3] = [
    Prefix {
        net: Ipv4Addr::new(198, 18, 0, 0),
        len: 15,
    },
    Prefix {
        net: Ipv4Addr::new(100, 64, 0, 0),
        len: 10,
    },
    Prefix {
        net: Ipv4Addr::new(10, 0, 0, 0),
        len: 8,
    },
];
/// Seconds an idle mapping lives when the topology does not say.
pub const DEFAULT_MAPPING_TIMEOUT_S: u32 = 120;
/// Seconds a router waits for its two interfaces by default.
pub const DEFAULT_WAIT_IFACES_S: u32 = 10;

/// The variables, by name.
pub mod var {
    pub const NAT: &str = "P2PLAB_NAT";
    pub const LAN_SUBNET: &str = "P2PLAB_LAN_SUBNET";
    pub const WAN_IP: &str = "P2PLAB_WAN_IP";
    pub const UPLINK_GW: &str = "P2PLAB_UPLINK_GW";
    pub const LAB_RANGES: &str = "P2PLAB_LAB_RANGES";
    pub const FORWARD: &str = "P2PLAB_FORWARD";
    pub const MAPPING_TIMEOUT: &str = "P2PLAB_MAPPING_TIMEOUT";
    pub const WAIT_IFACES: &str = "P2PLAB_WAIT_IFACES";
    pub const HAIRPIN: &str = "P2PLAB_HAIRPIN";
    pub const TCP_PORTS: &str = "P2PLAB_TCP_PORTS";
    pub const IPV6: &str = "P2PLAB_IPV6";
    pub const LAN_SUBNET6: &str = "P2PLAB_LAN_SUBNET6";
    pub const WAN_IP6: &str = "P2PLAB_WAN_IP6";
}

/// The lab's IPv6 space: every segment's /64 lies in it (`fd70::/16`, a ULA range away from the
/// machines' own `fd00::/64`). A LAN host routes it via its router, never a default route.
pub const LAB_RANGE6: Ipv6Net = match Ipv6Net::new(Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("a /16 is a valid prefix"),
};

/// A router's IPv6 side (a LAN with `family: dual` or `ipv6`): what it does to IPv6, and the
/// prefixes it routes between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Side {
    /// `P2PLAB_IPV6`.
    pub policy: Ipv6Policy,
    /// `P2PLAB_LAN_SUBNET6`: the LAN's prefix, e.g. `fd70:a65::/64`.
    pub lan: Ipv6Net,
    /// `P2PLAB_WAN_IP6`: the router's address on its uplink's /64.
    pub wan_ip: Ipv6Addr,
}

impl Ipv6Side {
    /// The Docker host's addresses on the router's two IPv6 networks: Docker's gateway, the
    /// first address of each /64. Nothing is forwarded or sent there.
    pub fn host_addrs(&self) -> [Ipv6Addr; 2] {
        let first = |net: Ipv6Net| Ipv6Addr::from(u128::from(net.network()) + 1);
        let wan = Ipv6Net::new(self.wan_ip, 64).map_or(self.lan, |n| n.trunc());
        [first(self.lan), first(wan)]
    }
}

/// A router's settings (its link impairments are `p2plab-impair`'s, see `docker/impair.sh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterEnv {
    /// `P2PLAB_NAT`.
    pub profile: Profile,
    /// `P2PLAB_LAN_SUBNET`: the LAN interface is the one with an address in it. /1 to /30.
    pub lan: Prefix,
    /// `P2PLAB_WAN_IP`: the router's address on its uplink segment; the WAN interface holds it.
    pub wan_ip: Ipv4Addr,
    /// `P2PLAB_UPLINK_GW` (stacked NAT): the lab's ranges are routed via this on-link address of
    /// the WAN segment (the outer router's LAN address); never a default route.
    pub uplink_gw: Option<Ipv4Addr>,
    /// `P2PLAB_LAB_RANGES` (space-separated): what is routed via `uplink_gw`. Default
    /// [`LAB_RANGES`].
    pub lab_ranges: Vec<Prefix>,
    /// `P2PLAB_FORWARD` (comma-separated `proto:ext_port:lan_ip:lan_port`): `port-forward` only,
    /// and required there.
    pub forwards: Vec<Forward>,
    /// `P2PLAB_MAPPING_TIMEOUT`: seconds an idle mapping (and its filtering state) lives, 1 to
    /// 86,400. `None`: [`DEFAULT_MAPPING_TIMEOUT_S`].
    pub mapping_timeout_s: Option<u32>,
    /// `P2PLAB_WAIT_IFACES`: seconds to wait for the two interfaces. `None`:
    /// [`DEFAULT_WAIT_IFACES_S`].
    pub wait_ifaces_s: Option<u32>,
    /// `P2PLAB_HAIRPIN=1`: a LAN host reaches another LAN host's mapping at the router's public
    /// address, and sees it come from the sender's public address (RFC 4787 REQ-9). Only with an
    /// endpoint-independent mapping (there is no mapping to aim at otherwise); off by default.
    pub hairpin: bool,
    /// `P2PLAB_TCP_PORTS` (comma-separated, `udp-blocked` only): the only TCP ports LAN hosts may
    /// reach beyond the router (a corporate firewall that lets out 443 and little else); empty:
    /// every port. See [`RouterEnv::allows_tcp_to`].
    pub tcp_ports: Vec<u16>,
    /// The IPv6 side, when the LAN has IPv6 (`P2PLAB_IPV6` and the two below it); `None`: every
    /// forwarded IPv6 packet is dropped.
    pub ipv6: Option<Ipv6Side>,
}

/// A bad setting: `P2PLAB_X=value: why`, or `P2PLAB_X is not set (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub var: &'static str,
    /// `None`: the variable is not set.
    pub value: Option<String>,
    pub reason: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}: {}", self.var, self.reason),
            None => write!(f, "{} is not set ({})", self.var, self.reason),
        }
    }
}

impl std::error::Error for EnvError {}

impl RouterEnv {
    /// A router with only the required settings.
    pub fn new(profile: Profile, lan: Prefix, wan_ip: Ipv4Addr) -> Self {
        Self {
            profile,
            lan,
            wan_ip,
            uplink_gw: None,
            lab_ranges: LAB_RANGES.to_vec(),
            forwards: Vec::new(),
            mapping_timeout_s: None,
            wait_ifaces_s: None,
            hairpin: false,
            tcp_ports: Vec::new(),
            ipv6: None,
        }
    }

    /// Whether a LAN host's TCP connection to `port` beyond the router leaves the LAN. With an
    /// allow list a TCP hole punch fails (both sides must send to the other's peer port) and so
    /// does any direct dial out, unless the remote listens on an allowed port: such a peer is
    /// relayed, through a relay on an allowed port, or reaches nobody.
    pub fn allows_tcp_to(&self, port: u16) -> bool {
        self.tcp_ports.is_empty() || self.tcp_ports.contains(&port)
    }

    pub fn mapping_timeout_s(&self) -> u32 {
        self.mapping_timeout_s.unwrap_or(DEFAULT_MAPPING_TIMEOUT_S)
    }

    pub fn wait_ifaces_s(&self) -> u32 {
        self.wait_ifaces_s.unwrap_or(DEFAULT_WAIT_IFACES_S)
    }

    /// The routes via `uplink_gw` (none without one).
    pub fn uplink_routes(&self) -> &[Prefix] {
        if self.uplink_gw.is_some() {
            &self.lab_ranges
        } else {
            &[]
        }
    }

    /// The environment, in a fixed order; only what differs from the defaults.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (var::NAT.to_string(), self.profile.as_str().to_string()),
            (var::LAN_SUBNET.to_string(), self.lan.to_string()),
            (var::WAN_IP.to_string(), self.wan_ip.to_string()),
        ];
        if let Some(gw) = self.uplink_gw {
            env.push((var::UPLINK_GW.to_string(), gw.to_string()));
        }
        if self.lab_ranges != LAB_RANGES {
            let ranges: Vec<String> = self.lab_ranges.iter().map(Prefix::to_string).collect();
            env.push((var::LAB_RANGES.to_string(), ranges.join(" ")));
        }
        if !self.forwards.is_empty() {
            let fw: Vec<String> = self.forwards.iter().map(Forward::to_string).collect();
            env.push((var::FORWARD.to_string(), fw.join(",")));
        }
        if let Some(t) = self.mapping_timeout_s {
            env.push((var::MAPPING_TIMEOUT.to_string(), t.to_string()));
        }
        if let Some(w) = self.wait_ifaces_s {
            env.push((var::WAIT_IFACES.to_string(), w.to_string()));
        }
        if self.hairpin {
            env.push((var::HAIRPIN.to_string(), "1".to_string()));
        }
        if !self.tcp_ports.is_empty() {
            let ports: Vec<String> = self.tcp_ports.iter().map(u16::to_string).collect();
            env.push((var::TCP_PORTS.to_string(), ports.join(",")));
        }
        if let Some(v6) = &self.ipv6 {
            env.push((var::IPV6.to_string(), v6.policy.to_string()));
            env.push((var::LAN_SUBNET6.to_string(), v6.lan.to_string()));
            env.push((var::WAN_IP6.to_string(), v6.wan_ip.to_string()));
        }
        env
    }

    /// Reads and checks the environment through `get` (`std::env::var(..).ok()` in a router). An
    /// empty variable counts as unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let get = |v: &str| get(v).filter(|s| !s.is_empty());
        let err = |var: &'static str, value: &str, reason: String| EnvError {
            var,
            value: Some(value.to_string()),
            reason,
        };
        let required = |var: &'static str, what: &str| {
            get(var).ok_or_else(|| EnvError {
                var,
                value: None,
                reason: what.to_string(),
            })
        };

        let nat = required(var::NAT, &format!("use {}", Profile::NAMES))?;
        let profile: Profile = nat.parse().map_err(|_| {
            err(
                var::NAT,
                &nat,
                format!(
                    "unknown profile (use {}; cgnat = a home/strict router stacked behind another)",
                    Profile::NAMES
                ),
            )
        })?;

        let lan_s = required(var::LAN_SUBNET, "the LAN prefix, e.g. 10.101.0.0/24")?;
        let lan: Prefix = lan_s
            .parse()
            .map_err(|e: String| err(var::LAN_SUBNET, &lan_s, e))?;
        if !(1..=30).contains(&lan.len) {
            return Err(err(
                var::LAN_SUBNET,
                &lan_s,
                "the prefix length must be 1 to 30".into(),
            ));
        }

        let wan_s = required(var::WAN_IP, "the router's address on its uplink segment")?;
        let wan_ip: Ipv4Addr = wan_s
            .parse()
            .map_err(|_| err(var::WAN_IP, &wan_s, "not an IPv4 address".into()))?;
        if lan.contains(wan_ip) {
            return Err(err(
                var::WAN_IP,
                &wan_s,
                format!("lies inside {}={lan}", var::LAN_SUBNET),
            ));
        }

        let uplink_gw = match get(var::UPLINK_GW) {
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| err(var::UPLINK_GW, &g, "not an IPv4 address".into()))?,
            ),
            None => None,
        };
        let lab_ranges = match get(var::LAB_RANGES) {
            None => LAB_RANGES.to_vec(),
            Some(r) => {
                let mut out = Vec::new();
                for range in r.split_whitespace() {
                    let p: Prefix = range
                        .parse()
                        .map_err(|e: String| err(var::LAB_RANGES, &r, e))?;
                    if p.len == 0 {
                        return Err(err(
                            var::LAB_RANGES,
                            &r,
                            format!(
                                "'{range}' is a default route, which would lead out of the lab"
                            ),
                        ));
                    }
                    out.push(p);
                }
                if out.is_empty() {
                    return Err(err(var::LAB_RANGES, &r, "no range given".into()));
                }
                out
            }
        };

        let number = |var: &'static str, max: u32| -> Result<Option<u32>, EnvError> {
            let Some(v) = get(var) else { return Ok(None) };
            match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(err(
                    var,
                    &v,
                    format!("not a number of seconds between 1 and {max}"),
                )),
            }
        };
        let mapping_timeout_s = number(var::MAPPING_TIMEOUT, 86_400)?;
        let wait_ifaces_s = number(var::WAIT_IFACES, 3_600)?;

        let forwards = match (profile, get(var::FORWARD)) {
            (Profile::PortForward, None) => {
                return Err(EnvError {
                    var: var::FORWARD,
                    value: None,
                    reason: format!("{}=port-forward needs e.g. tcp:4001:10.101.0.10:4001,udp:4001:10.101.0.10:4001", var::NAT),
                })
            }
            (Profile::PortForward, Some(list)) => forwards(&list, lan).map_err(|e| err(var::FORWARD, &list, e))?,
            (_, Some(list)) => {
                return Err(err(var::FORWARD, &list, format!("only used with {}=port-forward ({}={nat})", var::NAT, var::NAT)))
            }
            (_, None) => Vec::new(),
        };

        let hairpin = match get(var::HAIRPIN).as_deref() {
            None | Some("0") => false,
            Some("1") if profile.mapping() == Mapping::EndpointIndependent => true,
            Some("1") => {
                return Err(err(
                    var::HAIRPIN,
                    "1",
                    format!(
                        "needs an endpoint-independent mapping ({}={nat} has none to aim at)",
                        var::NAT
                    ),
                ))
            }
            Some(v) => return Err(err(var::HAIRPIN, v, "use 1 or 0".into())),
        };

        let tcp_ports = match get(var::TCP_PORTS) {
            None => Vec::new(),
            Some(list) if profile != Profile::UdpBlocked => {
                return Err(err(
                    var::TCP_PORTS,
                    &list,
                    format!(
                        "only used with {}=udp-blocked ({}={nat})",
                        var::NAT,
                        var::NAT
                    ),
                ))
            }
            Some(list) => tcp_ports(&list).map_err(|e| err(var::TCP_PORTS, &list, e))?,
        };

        let ipv6 = match get(var::IPV6) {
            None => {
                for v in [var::LAN_SUBNET6, var::WAN_IP6] {
                    if let Some(val) = get(v) {
                        return Err(err(v, &val, format!("only used with {} set", var::IPV6)));
                    }
                }
                None
            }
            Some(p) => {
                let policy: Ipv6Policy = p.parse().map_err(|e| err(var::IPV6, &p, e))?;
                let lan_s = required(
                    var::LAN_SUBNET6,
                    "the LAN's IPv6 prefix, e.g. fd70:a65::/64",
                )?;
                let lan: Ipv6Net = lan_s.parse().map_err(|_| {
                    err(
                        var::LAN_SUBNET6,
                        &lan_s,
                        "not an IPv6 prefix like fd70:a65::/64".into(),
                    )
                })?;
                if lan.trunc() != lan {
                    return Err(err(
                        var::LAN_SUBNET6,
                        &lan_s,
                        format!("has host bits set (did you mean {}?)", lan.trunc()),
                    ));
                }
                if !(16..=126).contains(&lan.prefix_len()) || !LAB_RANGE6.contains(&lan) {
                    return Err(err(
                        var::LAN_SUBNET6,
                        &lan_s,
                        format!("must be a /16 to /126 inside the lab's {LAB_RANGE6}"),
                    ));
                }
                let wan_s = required(var::WAN_IP6, "the router's IPv6 address on its uplink")?;
                let wan_ip: Ipv6Addr = wan_s
                    .parse()
                    .map_err(|_| err(var::WAN_IP6, &wan_s, "not an IPv6 address".into()))?;
                if lan.contains(&wan_ip) || !LAB_RANGE6.contains(&wan_ip) {
                    return Err(err(
                        var::WAN_IP6,
                        &wan_s,
                        format!(
                            "must lie inside {LAB_RANGE6} and outside {}={lan}",
                            var::LAN_SUBNET6
                        ),
                    ));
                }
                Some(Ipv6Side {
                    policy,
                    lan,
                    wan_ip,
                })
            }
        };

        Ok(Self {
            profile,
            lan,
            wan_ip,
            uplink_gw,
            lab_ranges,
            forwards,
            mapping_timeout_s,
            wait_ifaces_s,
            hairpin,
            tcp_ports,
            ipv6,
        })
    }
}

/// `P2PLAB_TCP_PORTS`'s ports: 1 to 65535, each once, at least one.
fn tcp_ports(list: &str) -> Result<Vec<u16>, String> {
    let mut out: Vec<u16> = Vec::new();
    for p in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port = p
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("'{p}' is not a port from 1 to 65535"))?;
        if out.contains(&port) {
            return Err(format!("port {port} is listed twice"));
        }
        out.push(port);
    }
    if out.is_empty() {
        return Err("no port given".into());
    }
    Ok(out)
}

/// `P2PLAB_FORWARD`'s entries: each in the LAN, one forward per external port and per LAN
/// endpoint (per protocol).
fn forwards(list: &str, lan: Prefix) -> Result<Vec<Forward>, String> {
    let mut out: Vec<Forward> = Vec::new();
    for spec in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let f: Forward = spec.parse()?;
        if !lan.contains(f.lan_ip) {
            return Err(format!(
                "{} (in '{spec}') is not in {}={lan}",
                f.lan_ip,
                var::LAN_SUBNET
            ));
        }
        for g in out.iter().filter(|g| g.proto == f.proto) {
            if g.ext_port == f.ext_port {
                return Err(format!(
                    "{} port {} is forwarded twice",
                    f.proto, f.ext_port
                ));
            }
            if (g.lan_ip, g.lan_port) == (f.lan_ip, f.lan_port) {
                return Err(format!(
                    "{} {}:{} is the target of two forwards (one external port per LAN endpoint)",
                    f.proto, f.lan_ip, f.lan_port
                ));
            }
        }
        out.push(f);
    }
    if out.is_empty() {
        return Err("no forward given".into());
    }
    Ok(out)
}

/// The router's one line on stdout once its rules are in place:
/// `{"event":"router_ready","nat":"home",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "router_ready")]
pub struct RouterReady {
    pub nat: Profile,
    /// RFC 4787 terms: `endpoint-independent`, `endpoint-dependent` or `none`.
    pub mapping: Mapping,
    /// `endpoint-independent`, `address-and-port-dependent` or `none`.
    pub filtering: Filtering,
    pub lan: String,
    pub lan_ip: Ipv4Addr,
    pub lan_subnet: Prefix,
    pub wan: String,
    pub wan_ip: Ipv4Addr,
    pub wan_subnet: Prefix,
    pub uplink_gw: Option<Ipv4Addr>,
    pub uplink_routes: Vec<Prefix>,
    pub mapping_timeout_s: u32,
    /// Whether LAN hosts reach each other's mappings at the WAN address.
    #[serde(default)]
    pub hairpin: bool,
    /// The only TCP ports LAN hosts reach beyond the router; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_ports: Vec<u16>,
    pub forwards: Vec<ReadyForward>,
    pub upnp: Option<ReadyUpnp>,
    /// The IPv6 side, when the LAN has IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<ReadyIpv6>,
    /// The Docker host's addresses on the router's networks: nothing is forwarded or sent there.
    pub blocked_host_addrs: Vec<Ipv4Addr>,
    /// The ruleset file loaded.
    pub ruleset: String,
    /// Milliseconds to render and load the ruleset.
    pub apply_ms: u64,
}

/// A forward as `router_ready` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyForward {
    pub proto: String,
    pub port: u16,
    /// `lan_ip:lan_port`.
    pub to: String,
}

impl From<&Forward> for ReadyForward {
    fn from(f: &Forward) -> Self {
        Self {
            proto: f.proto.as_str().to_string(),
            port: f.ext_port,
            to: format!("{}:{}", f.lan_ip, f.lan_port),
        }
    }
}

/// A router's IPv6 side as `router_ready` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyIpv6 {
    pub policy: Ipv6Policy,
    /// Always `none`: IPv6 is not translated.
    pub mapping: Mapping,
    pub filtering: Filtering,
    pub lan_subnet: Ipv6Net,
    pub wan_ip: Ipv6Addr,
    /// The Docker host's IPv6 addresses on the router's networks.
    pub blocked_host_addrs: Vec<Ipv6Addr>,
}

impl From<&Ipv6Side> for ReadyIpv6 {
    fn from(v6: &Ipv6Side) -> Self {
        Self {
            policy: v6.policy,
            mapping: v6.policy.mapping(),
            filtering: v6.policy.filtering(),
            lan_subnet: v6.lan,
            wan_ip: v6.wan_ip,
            blocked_host_addrs: v6.host_addrs().to_vec(),
        }
    }
}

/// The `upnp` profile's IGD as `router_ready` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyUpnp {
    pub daemon: String,
    pub pid: u32,
    pub ext_ip: Ipv4Addr,
    /// `lan_ip:port` of the IGD's HTTP (control) server.
    pub http: String,
    pub ssdp_port: u16,
    pub natpmp_port: u16,
    /// miniupnpd's one `allow` rule.
    pub allow: String,
    pub start_ms: u64,
}

/// A map of variables, for tests and for `from_env` over a literal environment.
pub fn lookup(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    move |k| map.get(k).map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::Proto;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<RouterEnv, String> {
        let e = env(pairs);
        RouterEnv::from_env(lookup(&e)).map_err(|e| e.to_string())
    }

    const BASE: [(&str, &str); 3] = [
        (var::NAT, "home"),
        (var::LAN_SUBNET, "10.101.0.0/24"),
        (var::WAN_IP, "198.18.0.2"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = BASE.to_vec();
        for (k, val) in extra {
            v.retain(|(k2, _)| k2 != k);
            v.push((k, val));
        }
        v
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!(
            "10.1.2.0/24".parse::<Prefix>().unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(
            "10.1.2.3/24".parse::<Prefix>().unwrap_err(),
            "'10.1.2.3/24' has host bits set (did you mean 10.1.2.0/24?)"
        );
        for bad in ["10.1.2.0", "10.1.2.0/33", "x/24", "10.1.2.0/"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        let p: Prefix = "198.18.4.0/24".parse().unwrap();
        assert!(
            p.contains(Ipv4Addr::new(198, 18, 4, 200)) && !p.contains(Ipv4Addr::new(198, 18, 5, 1))
        );
        assert_eq!(p.docker_gateway(), Some(Ipv4Addr::new(198, 18, 4, 1)));
        assert_eq!(
            Prefix::of(Ipv4Addr::new(10, 0, 0, 9), 31).docker_gateway(),
            None
        );
    }

    #[test]
    fn the_environment_round_trips() {
        let mut r = RouterEnv::new(
            Profile::PortForward,
            "10.101.0.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        r.uplink_gw = Some(Ipv4Addr::new(100, 64, 0, 254));
        r.forwards = vec![
            "tcp:4001:10.101.0.10:4001".parse().unwrap(),
            "udp:4001:10.101.0.10:4001".parse().unwrap(),
        ];
        r.mapping_timeout_s = Some(30);
        r.hairpin = true;
        r.ipv6 = Some(Ipv6Side {
            policy: Ipv6Policy::Firewall,
            lan: "fd70:a65::/64".parse().unwrap(),
            wan_ip: "fd70:c612::2".parse().unwrap(),
        });
        let e = r.to_env();
        assert_eq!(
            e,
            env(&[
                (var::NAT, "port-forward"),
                (var::LAN_SUBNET, "10.101.0.0/24"),
                (var::WAN_IP, "198.18.0.2"),
                (var::UPLINK_GW, "100.64.0.254"),
                (
                    var::FORWARD,
                    "tcp:4001:10.101.0.10:4001,udp:4001:10.101.0.10:4001"
                ),
                (var::MAPPING_TIMEOUT, "30"),
                (var::HAIRPIN, "1"),
                (var::IPV6, "firewall"),
                (var::LAN_SUBNET6, "fd70:a65::/64"),
                (var::WAN_IP6, "fd70:c612::2"),
            ])
        );
        assert_eq!(
            r.ipv6.unwrap().host_addrs().map(|a| a.to_string()),
            ["fd70:a65::1", "fd70:c612::1"]
        );
        assert_eq!(RouterEnv::from_env(lookup(&e)), Ok(r.clone()));
        assert_eq!(r.uplink_routes(), &LAB_RANGES);
        assert_eq!(r.mapping_timeout_s(), 30);
        assert_eq!(r.wait_ifaces_s(), DEFAULT_WAIT_IFACES_S);
        let plain = RouterEnv::from_env(lookup(&env(&BASE))).unwrap();
        assert_eq!(
            plain,
            RouterEnv::new(
                Profile::Home,
                "10.101.0.0/24".parse().unwrap(),
                Ipv4Addr::new(198, 18, 0, 2)
            )
        );
        assert!(plain.uplink_routes().is_empty());
    }

    #[test]
    fn a_tcp_allow_list_round_trips_and_says_what_leaves() {
        let mut r = RouterEnv::new(
            Profile::UdpBlocked,
            "10.101.0.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert!(r.allows_tcp_to(4001), "no list: every port");
        r.tcp_ports = vec![443, 51820];
        let e = r.to_env();
        assert_eq!(
            e.last(),
            Some(&(var::TCP_PORTS.to_string(), "443,51820".to_string()))
        );
        assert_eq!(RouterEnv::from_env(lookup(&e)), Ok(r.clone()));
        assert!(r.allows_tcp_to(443) && r.allows_tcp_to(51820) && !r.allows_tcp_to(4001));
    }

    #[test]
    fn every_bad_setting_is_one_line_naming_the_variable_and_its_value() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "P2PLAB_NAT is not set (use open"),
            (with(&[(var::NAT, "cgnat")]), "P2PLAB_NAT=cgnat: unknown profile"),
            (vec![(var::NAT, "home")], "P2PLAB_LAN_SUBNET is not set"),
            (with(&[(var::LAN_SUBNET, "10.101.0.1/24")]), "P2PLAB_LAN_SUBNET=10.101.0.1/24: '10.101.0.1/24' has host bits set (did you mean 10.101.0.0/24?)"),
            (with(&[(var::LAN_SUBNET, "10.101.0.0/31")]), "P2PLAB_LAN_SUBNET=10.101.0.0/31: the prefix length must be 1 to 30"),
            (with(&[(var::WAN_IP, "10.101.0.9")]), "P2PLAB_WAN_IP=10.101.0.9: lies inside P2PLAB_LAN_SUBNET=10.101.0.0/24"),
            (with(&[(var::WAN_IP, "1.2.3")]), "P2PLAB_WAN_IP=1.2.3: not an IPv4 address"),
            (with(&[(var::UPLINK_GW, "gw")]), "P2PLAB_UPLINK_GW=gw: not an IPv4 address"),
            (with(&[(var::LAB_RANGES, "0.0.0.0/0")]), "P2PLAB_LAB_RANGES=0.0.0.0/0: '0.0.0.0/0' is a default route"),
            (with(&[(var::MAPPING_TIMEOUT, "0")]), "P2PLAB_MAPPING_TIMEOUT=0: not a number of seconds between 1 and 86400"),
            (with(&[(var::MAPPING_TIMEOUT, "86401")]), "P2PLAB_MAPPING_TIMEOUT=86401:"),
            (with(&[(var::WAIT_IFACES, "soon")]), "P2PLAB_WAIT_IFACES=soon:"),
            (with(&[(var::FORWARD, "tcp:1:10.101.0.2:1")]), "P2PLAB_FORWARD=tcp:1:10.101.0.2:1: only used with P2PLAB_NAT=port-forward (P2PLAB_NAT=home)"),
            (with(&[(var::NAT, "port-forward")]), "P2PLAB_FORWARD is not set (P2PLAB_NAT=port-forward needs"),
            (with(&[(var::NAT, "port-forward"), (var::FORWARD, "tcp:1:10.9.0.2:1")]), "P2PLAB_FORWARD=tcp:1:10.9.0.2:1: 10.9.0.2 (in 'tcp:1:10.9.0.2:1') is not in P2PLAB_LAN_SUBNET=10.101.0.0/24"),
            (with(&[(var::NAT, "port-forward"), (var::FORWARD, "tcp:1:10.101.0.2:1,tcp:1:10.101.0.3:1")]), "tcp port 1 is forwarded twice"),
            (with(&[(var::NAT, "port-forward"), (var::FORWARD, "tcp:1:10.101.0.2:1,tcp:2:10.101.0.2:1")]), "tcp 10.101.0.2:1 is the target of two forwards"),
            (with(&[(var::NAT, "port-forward"), (var::FORWARD, "tcp:1:10.101.0.2")]), "P2PLAB_FORWARD=tcp:1:10.101.0.2: bad forward 'tcp:1:10.101.0.2'"),
            (with(&[(var::NAT, "port-forward"), (var::FORWARD, " , ")]), "no forward given"),
            (with(&[(var::HAIRPIN, "yes")]), "P2PLAB_HAIRPIN=yes: use 1 or 0"),
            (with(&[(var::NAT, "strict"), (var::HAIRPIN, "1")]), "P2PLAB_HAIRPIN=1: needs an endpoint-independent mapping (P2PLAB_NAT=strict has none to aim at)"),
            (with(&[(var::NAT, "routed"), (var::HAIRPIN, "1")]), "P2PLAB_HAIRPIN=1: needs an endpoint-independent mapping"),
            (with(&[(var::TCP_PORTS, "443")]), "P2PLAB_TCP_PORTS=443: only used with P2PLAB_NAT=udp-blocked (P2PLAB_NAT=home)"),
            (with(&[(var::NAT, "udp-blocked"), (var::TCP_PORTS, "443,https")]), "P2PLAB_TCP_PORTS=443,https: 'https' is not a port from 1 to 65535"),
            (with(&[(var::NAT, "udp-blocked"), (var::TCP_PORTS, "0")]), "'0' is not a port from 1 to 65535"),
            (with(&[(var::NAT, "udp-blocked"), (var::TCP_PORTS, "443,443")]), "port 443 is listed twice"),
            (with(&[(var::NAT, "udp-blocked"), (var::TCP_PORTS, " , ")]), "no port given"),
            (with(&[(var::LAN_SUBNET6, "fd70:a65::/64")]), "P2PLAB_LAN_SUBNET6=fd70:a65::/64: only used with P2PLAB_IPV6 set"),
            (with(&[(var::IPV6, "nat66")]), "P2PLAB_IPV6=nat66: unknown IPv6 policy 'nat66' (use firewall or routed)"),
            (with(&[(var::IPV6, "firewall")]), "P2PLAB_LAN_SUBNET6 is not set"),
            (with(&[(var::IPV6, "firewall"), (var::LAN_SUBNET6, "fd70:a65::1/64")]), "P2PLAB_LAN_SUBNET6=fd70:a65::1/64: has host bits set (did you mean fd70:a65::/64?)"),
            (with(&[(var::IPV6, "firewall"), (var::LAN_SUBNET6, "fd00::/64")]), "P2PLAB_LAN_SUBNET6=fd00::/64: must be a /16 to /126 inside the lab's fd70::/16"),
            (with(&[(var::IPV6, "firewall"), (var::LAN_SUBNET6, "fd70:a65::/64")]), "P2PLAB_WAN_IP6 is not set"),
            (with(&[(var::IPV6, "firewall"), (var::LAN_SUBNET6, "fd70:a65::/64"), (var::WAN_IP6, "fd70:a65::9")]), "P2PLAB_WAN_IP6=fd70:a65::9: must lie inside fd70::/16 and outside P2PLAB_LAN_SUBNET6=fd70:a65::/64"),
        ];
        for (pairs, want) in cases {
            let got = read(&pairs).unwrap_err();
            assert!(got.contains(want), "{pairs:?}: {got}");
            assert!(!got.contains('\n'), "{got}");
        }
        // The same protocol number on another protocol is fine.
        let ok = read(&with(&[
            (var::NAT, "port-forward"),
            (var::FORWARD, "tcp:1:10.101.0.2:1, udp:1:10.101.0.2:1"),
        ]))
        .unwrap();
        assert_eq!(
            ok.forwards.iter().map(|f| f.proto).collect::<Vec<_>>(),
            [Proto::Tcp, Proto::Udp]
        );
    }

    #[test]
    fn the_ready_line_names_what_the_router_did() {
        let r = RouterReady {
            nat: Profile::PortForward,
            mapping: Profile::PortForward.mapping(),
            filtering: Profile::PortForward.filtering(),
            lan: "eth1".into(),
            lan_ip: Ipv4Addr::new(10, 101, 0, 254),
            lan_subnet: "10.101.0.0/24".parse().unwrap(),
            wan: "eth0".into(),
            wan_ip: Ipv4Addr::new(198, 18, 0, 2),
            wan_subnet: "198.18.0.0/24".parse().unwrap(),
            uplink_gw: None,
            uplink_routes: vec![],
            mapping_timeout_s: 120,
            hairpin: false,
            tcp_ports: Vec::new(),
            forwards: vec![(&"tcp:4001:10.101.0.10:4001".parse::<Forward>().unwrap()).into()],
            upnp: None,
            ipv6: None,
            blocked_host_addrs: vec![Ipv4Addr::new(198, 18, 0, 1)],
            ruleset: "/run/p2plab-router.nft".into(),
            apply_ms: 12,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"event":"router_ready","nat":"port-forward","mapping":"endpoint-independent","filtering":"address-and-port-dependent","lan":"eth1","lan_ip":"10.101.0.254","lan_subnet":"10.101.0.0/24","wan":"eth0","wan_ip":"198.18.0.2","wan_subnet":"198.18.0.0/24","uplink_gw":null,"uplink_routes":[],"mapping_timeout_s":120,"hairpin":false,"forwards":[{"proto":"tcp","port":4001,"to":"10.101.0.10:4001"}],"upnp":null,"blocked_host_addrs":["198.18.0.1"],"ruleset":"/run/p2plab-router.nft","apply_ms":12}"#
        );
        assert_eq!(serde_json::from_str::<RouterReady>(&line).unwrap(), r);
    }
}
