//! From a validated topology and the subnets its segments got, every container of the lab:
//! name, addresses, command, environment and what says it is ready. No Docker here; the runner
//! and `p2plab compose` both build from this, so a lab and its compose file cannot differ.
//!
//! Addresses: a LAN's router is `.254` on its LAN; on each segment the other containers take
//! `.2`, `.3`, … in this order: routers' uplink sides, VPN exits, monitors, listeners, dialers.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use ipnet::Ipv4Net;

pub use p2plab_contract::ports::{MONITOR_PORT, PEER_PORT};

use p2plab_contract::{
    host::{ipv6_only_env, routes_env, Mac, Route6, Routing, Static6, VpnEnd, VpnSide},
    nat::{Forward as NatForward, Proto},
    router::{Ipv6Side, Prefix, RouterEnv, LAB_RANGE6},
};

use crate::{
    model::{Family, NatProfile, Node, Role, Topology},
    plan::{v6_addr, v6_net},
};

/// The HTTP port (`/metrics`, `/health`, `/status`) of monitors.
pub const METRICS_PORT: u16 = 9090;
/// The UDP port of VPN exits.
pub const VPN_PORT: u16 = 51821;

// Lab-only WireGuard keys, published here on purpose (as in compose/): they protect nothing.
const VPN_EXIT_KEY: &str = "EAdnzESqunm6xq6y8rHL7jbDgoKCUAGPtN1NONhkBl4=";
const VPN_EXIT_PUB: &str = "tviNVdkFQpNKYbARTOhoYVCzkwIBIMva8K4z2+BC8DY=";
const VPN_CLIENT_KEY: &str = "WHahcM2ayiISSnIkPXa8M2mo5OheNZC6GhHx9xUT7WM=";
const VPN_CLIENT_PUB: &str = "6U5UGjQI1yZ0+Y5anNMVZiGQy/D/i0ITY+LhheomBmo=";

/// What a container is in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Router,
    VpnExit,
    Node(Role),
}

/// When a container counts as up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A stdout line containing this text.
    Line(&'static str),
    /// The node's `started` event.
    Started,
}

/// One container of the lab.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: String,
    pub kind: Kind,
    /// (segment, address) pairs; the first is the primary one.
    pub attach: Vec<(String, Ipv4Addr)>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub net_admin: bool,
    pub tun: bool,
    pub sysctls: Vec<(String, String)>,
    pub ready: Ready,
    /// Published on 127.0.0.1 (compose only): (host port, container port).
    pub publish: Option<(u16, u16)>,
    /// The node's `--key-file` in its container (monitors without a seed), which a fault with
    /// `new_identity` removes.
    pub key_file: Option<String>,
    /// Started at bring-up; else created then, and started by a `start` fault (`start: false`).
    pub start_with_lab: bool,
}

impl Planned {
    pub fn ip(&self) -> Ipv4Addr {
        self.attach.first().map_or(Ipv4Addr::UNSPECIFIED, |a| a.1)
    }
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub subnets: BTreeMap<String, Ipv4Net>,
    /// In start order: routers (uplinks first), VPN exits, monitors, listeners, dialers.
    pub containers: Vec<Planned>,
}

impl Layout {
    pub fn get(&self, name: &str) -> Option<&Planned> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The addresses other peers see packets of `node` come from: its own, and the uplink
    /// address of every router between it and the public internet.
    pub fn visible_addrs(&self, topo: &Topology, node: &str) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        let Some(c) = self.get(node) else { return out };
        out.push(c.ip());
        let routers = topo
            .node(node)
            .map(|n| topo.routers_up_from(&n.segment))
            .unwrap_or_default();
        out.extend(routers.iter().filter_map(|r| self.get(r)).map(Planned::ip));
        out
    }
}

/// A LAN router's address on its LAN: `.254`, or the last host of a smaller subnet.
fn lan_gateway(net: Ipv4Net) -> Ipv4Addr {
    let max = (1u32 << (32 - net.prefix_len())).saturating_sub(2);
    host(&net, max.min(254))
}

fn host(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    crate::plan::host(net, n).unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// Why a layout cannot be made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("segment `{0}` has no subnet")]
    NoSubnet(String),
    #[error("segment `{segment}` ({subnet}) has no room for {wanted} hosts")]
    Full {
        segment: String,
        subnet: Ipv4Net,
        wanted: u32,
    },
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Plans every container. `subnets` holds one subnet per segment.
pub fn layout(topo: &Topology, subnets: &BTreeMap<String, Ipv4Net>) -> Result<Layout, LayoutError> {
    for seg in &topo.segments {
        if !subnets.contains_key(&seg.name) {
            return Err(LayoutError::NoSubnet(seg.name.clone()));
        }
    }
    let mut next: BTreeMap<String, u32> =
        topo.segments.iter().map(|s| (s.name.clone(), 2)).collect();
    let mut take = |segment: &str| -> Result<Ipv4Addr, LayoutError> {
        let net = subnets[segment];
        let n = next.get_mut(segment).map(|n| {
            let v = *n;
            *n += 1;
            v
        });
        let n = n.unwrap_or(2);
        let max = (1u32 << (32 - net.prefix_len())).saturating_sub(2);
        if n >= max.min(254) {
            return Err(LayoutError::Full {
                segment: segment.to_string(),
                subnet: net,
                wanted: n,
            });
        }
        Ok(host(&net, n))
    };
    let gw = |segment: &str| lan_gateway(subnets[segment]);

    let mut containers = Vec::new();
    // routers, uplinks first
    let mut wan_ip: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut routers: BTreeMap<String, RouterEnv> = BTreeMap::new();
    for seg in topo.segments_uplink_first() {
        let Some(nat) = &seg.nat else { continue };
        let name = seg.router_name().unwrap_or_default();
        let wan = take(&nat.uplink)?;
        wan_ip.insert(seg.name.clone(), wan);
        let lan = subnets[&seg.name];
        let mut router = RouterEnv::new(
            nat.profile,
            Prefix {
                net: lan.network(),
                len: lan.prefix_len(),
            },
            wan,
        );
        if topo.segment(&nat.uplink).is_some_and(|u| u.nat.is_some()) {
            router.uplink_gw = Some(gw(&nat.uplink));
        }
        router.hairpin = nat.hairpin;
        router.tcp_ports = nat.tcp_ports.clone();
        let mut sysctls = vec![(s("net.ipv4.ip_forward"), s("1"))];
        if let Some(policy) = nat.ipv6 {
            // validation: the uplink is a public segment with IPv6
            router.ipv6 = Some(Ipv6Side {
                policy,
                lan: v6_net(lan),
                wan_ip: v6_addr(subnets[&nat.uplink], wan),
            });
            sysctls.push((s("net.ipv6.conf.all.forwarding"), s("1")));
        }
        router.mapping_timeout_s = nat
            .mapping_timeout_s
            .map(|t| u32::try_from(t).unwrap_or(u32::MAX));
        // The router's own settings first (forwards are added once the LAN hosts have
        // addresses), then the impairments, which are `p2plab-impair`'s.
        let env = nat.impair.to_env();
        routers.insert(name.clone(), router);
        containers.push(Planned {
            name,
            kind: Kind::Router,
            attach: vec![(nat.uplink.clone(), wan), (seg.name.clone(), gw(&seg.name))],
            cmd: vec![s("p2plab-router")],
            env,
            net_admin: true,
            tun: false,
            sysctls,
            ready: Ready::Line("router_ready"),
            publish: None,
            key_file: None,
            start_with_lab: true,
        });
    }

    // VPN exits, one per VPN node, on the public segment its LAN finally reaches
    let mut vpn_exit: BTreeMap<String, (Ipv4Addr, Ipv4Net)> = BTreeMap::new();
    for (i, n) in topo.nodes.iter().filter(|n| n.vpn).enumerate() {
        // validation gives every LAN a way up to a public segment
        let public = topo
            .public_of(&n.segment)
            .map_or(n.segment.as_str(), |s| s.name.as_str());
        let ip = take(public)?;
        // tunnel /30-ish nets from the top of the shared space, one /24 each
        let tunnel = Ipv4Net::new(
            Ipv4Addr::new(100, 127, 255u8.saturating_sub(i as u8), 0),
            24,
        )
        .unwrap_or_default();
        vpn_exit.insert(n.name.clone(), (ip, tunnel));
        containers.push(Planned {
            name: format!("{}-vpn-exit", n.name),
            kind: Kind::VpnExit,
            attach: vec![(public.to_string(), ip)],
            cmd: vec![s("p2plab-vpn")],
            env: [
                Routing::Isolated.to_env(),
                VpnEnd {
                    key: s(VPN_EXIT_KEY),
                    peer: s(VPN_CLIENT_PUB),
                    addr: host(&tunnel, 1),
                    side: VpnSide::Exit {
                        port: VPN_PORT,
                        client: host(&tunnel, 2),
                    },
                }
                .to_env(),
            ]
            .concat(),
            net_admin: true,
            tun: true,
            sysctls: vec![(s("net.ipv4.ip_forward"), s("1"))],
            ready: Ready::Line("vpn_ready"),
            publish: None,
            key_file: None,
            start_with_lab: true,
        });
    }

    // peers: monitors first, so their addresses are known
    let mut ips: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for role in [Role::Monitor, Role::Listener, Role::Dialer] {
        for n in topo.nodes.iter().filter(|n| n.role == role) {
            ips.insert(n.name.clone(), take(&n.segment)?);
        }
    }
    // port forwards, now that the LAN hosts have addresses
    for seg in &topo.segments {
        let Some(nat) = seg.nat.as_ref().filter(|n| !n.forward.is_empty()) else {
            continue;
        };
        let Some(router) = seg.router_name().and_then(|r| routers.get_mut(&r)) else {
            continue;
        };
        for f in &nat.forward {
            let Some(&lan_ip) = ips.get(&f.to) else {
                continue;
            };
            for proto in [Proto::Tcp, Proto::Udp] {
                if f.proto == proto.as_str() || f.proto == "both" {
                    router.forwards.push(NatForward {
                        proto,
                        ext_port: f.port,
                        lan_ip,
                        lan_port: f.to_port,
                    });
                }
            }
        }
    }
    for c in containers.iter_mut() {
        if let Some(r) = routers.get(&c.name) {
            let impairments = std::mem::take(&mut c.env);
            c.env = r.to_env();
            c.env.extend(impairments);
        }
    }
    let mut ports: BTreeMap<String, u16> = BTreeMap::new();
    let mut next_port: BTreeMap<&str, u16> = BTreeMap::new();
    // a port forward's target listens on the forwarded LAN port
    for seg in &topo.segments {
        for f in seg.nat.iter().flat_map(|n| n.forward.iter()) {
            ports.insert(f.to.clone(), f.to_port);
        }
    }
    let unassigned: Vec<&Node> = topo
        .nodes
        .iter()
        .filter(|n| n.role != Role::Monitor && !ports.contains_key(&n.name))
        .collect();
    for n in unassigned {
        let taken: Vec<u16> = topo
            .nodes
            .iter()
            .filter(|m| m.segment == n.segment)
            .filter_map(|m| ports.get(&m.name).copied())
            .collect();
        let p = next_port.entry(n.segment.as_str()).or_insert(PEER_PORT);
        while taken.contains(p) {
            *p = p.saturating_add(1);
        }
        ports.insert(n.name.clone(), *p);
        *p = p.saturating_add(1);
    }
    let monitors: Vec<&Node> = topo
        .nodes
        .iter()
        .filter(|n| n.role == Role::Monitor)
        .collect();
    let family = |n: &Node| topo.segment(&n.segment).map_or(Family::Ipv4, |s| s.family);
    // a node's addresses as multiaddr prefixes, IPv4 first, of the families its segment has and
    // `seen_by` has too
    let addrs_of = |n: &Node, seen_by: Family| -> Vec<String> {
        let (f, ip) = (family(n), ips[&n.name]);
        let mut out = Vec::new();
        if f.v4() && seen_by.v4() {
            out.push(format!("/ip4/{ip}"));
        }
        if f.v6() && seen_by.v6() {
            out.push(format!("/ip6/{}", v6_addr(subnets[&n.segment], ip)));
        }
        out
    };
    let bootstrap_of = |n: &Node| -> Vec<String> {
        let mut out = Vec::new();
        for m in &monitors {
            if m.name == n.name {
                continue;
            }
            // over the families both have
            for a in addrs_of(m, family(n)) {
                // dial what both sides speak; TCP first (the common denominator)
                if n.transport.tcp() && m.transport.tcp() {
                    out.push(format!("{a}/tcp/{MONITOR_PORT}"));
                }
                if n.transport.quic() && m.transport.quic() {
                    out.push(format!("{a}/udp/{MONITOR_PORT}/quic-v1"));
                }
            }
        }
        out
    };
    for role in [Role::Monitor, Role::Listener, Role::Dialer] {
        for n in topo.nodes.iter().filter(|n| n.role == role) {
            let ip = ips[&n.name];
            let seg = topo.segment(&n.segment);
            let on_lan = seg.is_some_and(|s| s.nat.is_some());
            let port = if role == Role::Monitor {
                MONITOR_PORT
            } else {
                ports.get(&n.name).copied().unwrap_or(PEER_PORT)
            };
            let mut cmd = vec![s(role.as_str()), s("--name"), n.name.clone()];
            if family(n).v4() {
                cmd.extend([s("--listen-addr"), s("0.0.0.0")]);
            }
            if family(n).v6() {
                cmd.extend([s("--listen-addr"), s("::")]);
            }
            cmd.extend([s("--port"), port.to_string()]);
            cmd.extend([s("--transport"), s(n.transport.as_str())]);
            let mut externals = Vec::new();
            if !on_lan && !n.vpn {
                externals = addrs_of(n, family(n));
            }
            // a port forward to this node: its public address is the router's, at the forwarded port
            if let Some(seg) = seg {
                if let Some(nat) = seg
                    .nat
                    .as_ref()
                    .filter(|n| n.profile == NatProfile::PortForward)
                {
                    let public_uplink = topo.segment(&nat.uplink).is_some_and(|u| u.nat.is_none());
                    for f in nat
                        .forward
                        .iter()
                        .filter(|f| f.to == n.name && f.to_port == port && public_uplink)
                    {
                        let wan = wan_ip[&seg.name];
                        if f.proto != "udp" && n.transport.tcp() {
                            cmd.extend([
                                s("--external-addr"),
                                format!("/ip4/{wan}/tcp/{}", f.port),
                            ]);
                        }
                        if f.proto != "tcp" && n.transport.quic() {
                            cmd.extend([
                                s("--external-addr"),
                                format!("/ip4/{wan}/udp/{}/quic-v1", f.port),
                            ]);
                        }
                    }
                }
            }
            for e in externals {
                if n.transport.tcp() {
                    cmd.extend([s("--external-addr"), format!("{e}/tcp/{port}")]);
                }
                if n.transport.quic() {
                    cmd.extend([s("--external-addr"), format!("{e}/udp/{port}/quic-v1")]);
                }
            }
            for b in bootstrap_of(n) {
                cmd.extend([s("--bootstrap"), b]);
            }
            if role == Role::Monitor {
                cmd.extend([s("--metrics-addr"), format!("0.0.0.0:{METRICS_PORT}")]);
            } else {
                cmd.extend([
                    s("--metrics-addr"),
                    s("off"),
                    s("--namespace"),
                    n.namespace.clone(),
                ]);
                if let Some(r) = &n.relay {
                    cmd.extend([s("--relay"), r.clone()]);
                }
            }
            if role == Role::Dialer {
                if let Some(c) = n.count {
                    cmd.extend([s("--count"), c.to_string()]);
                }
                if let Some(i) = n.interval_ms {
                    cmd.extend([s("--interval"), i.to_string()]);
                }
                if let Some(sz) = n.size {
                    cmd.extend([s("--size"), sz.to_string()]);
                }
                if let Some(d) = n.deadline_s {
                    cmd.extend([s("--deadline"), d.to_string()]);
                }
            }
            if let Some(seed) = n.seed {
                cmd.extend([s("--seed"), seed.to_string()]);
            } else if let Some(k) = n.key_file() {
                cmd.extend([s("--key-file"), s(k)]);
            }
            if let Some(f) = n.inbox_file() {
                cmd.extend([s("--inbox-file"), s(f)]);
            }
            if let Some(r) = topo.resources {
                cmd.extend([s("--resources-interval"), r.as_secs().to_string()]);
            }
            if n.upnp {
                // the router's LAN address too: on a swarm the LAN is an overlay, which drops
                // SSDP's multicast search; the node also asks the gateway by unicast
                cmd.extend([s("--upnp"), s("--upnp-gateway"), gw(&n.segment).to_string()]);
            }
            cmd.extend(n.args.iter().cloned());
            // an IPv6-only LAN host has no IPv4 to route (its IPv6 route is added below)
            let mut env = if on_lan && family(n).v4() {
                Routing::Gateway(gw(&n.segment))
            } else {
                Routing::Isolated
            }
            .to_env();
            if !family(n).v4() {
                env.extend(ipv6_only_env());
            }
            if let Some((exit_ip, tunnel)) = vpn_exit.get(&n.name) {
                cmd.insert(0, s("p2plab-vpn"));
                let client = VpnEnd {
                    key: s(VPN_CLIENT_KEY),
                    peer: s(VPN_EXIT_PUB),
                    addr: host(tunnel, 2),
                    side: VpnSide::Client {
                        endpoint: SocketAddrV4::new(*exit_ip, VPN_PORT),
                    },
                };
                env.extend(client.to_env());
            }
            containers.push(Planned {
                name: n.name.clone(),
                kind: Kind::Node(role),
                attach: vec![(n.segment.clone(), ip)],
                cmd,
                env,
                net_admin: true,
                tun: n.vpn,
                sysctls: Vec::new(),
                ready: Ready::Started,
                publish: (role == Role::Monitor).then_some((METRICS_PORT, METRICS_PORT)),
                key_file: n.key_file().map(s),
                start_with_lab: n.start_with_lab,
            });
        }
    }
    add_ipv6_routes(topo, subnets, &routers, &mut containers);
    Ok(Layout {
        subnets: subnets.clone(),
        containers,
    })
}

/// IPv6 through routers is routed, not translated: every container on a router's uplink routes
/// each /64 behind the router (its LAN's, and those of the LANs stacked behind it) via the
/// router's WAN address, and a container on a LAN (a host, or a stacked router's WAN side)
/// routes the lab's IPv6 space via that LAN's router. Nothing gets a default route.
fn add_ipv6_routes(
    topo: &Topology,
    subnets: &BTreeMap<String, Ipv4Net>,
    routers: &BTreeMap<String, RouterEnv>,
    containers: &mut [Planned],
) {
    // (a segment, the router the route goes through, the route): a LAN's /64 on the uplink of
    // every router on its way up to the public segment
    let mut behind: Vec<(&str, String, Route6)> = Vec::new();
    for seg in &topo.segments {
        let Some(lan) = seg
            .router_name()
            .and_then(|n| routers.get(&n))
            .and_then(|r| r.ipv6)
        else {
            continue;
        };
        for up in topo.uplinks(&seg.name) {
            let (Some(nat), Some(name)) = (&up.nat, up.router_name()) else {
                break;
            };
            // validation: every router on the way forwards IPv6
            let Some(via) = routers.get(&name).and_then(|r| r.ipv6) else {
                break;
            };
            behind.push((
                nat.uplink.as_str(),
                name,
                Route6 {
                    to: lan.lan,
                    via: via.wan_ip,
                },
            ));
        }
    }
    for c in containers.iter_mut() {
        let mut routes: Vec<Route6> = Vec::new();
        for (segment, _) in &c.attach {
            let Some(seg) = topo.segment(segment) else {
                continue;
            };
            let its_router = seg.router_name().is_some_and(|r| r == c.name);
            if seg.nat.as_ref().is_some_and(|n| n.ipv6.is_some()) && !its_router {
                let net = subnets[segment];
                routes.push(Route6 {
                    to: LAB_RANGE6,
                    via: v6_addr(net, lan_gateway(net)),
                });
            }
            for (_, router, route) in behind.iter().filter(|b| b.0 == segment) {
                if *router != c.name {
                    routes.push(*route);
                }
            }
        }
        c.env.extend(routes_env(&routes));
    }
}

/// Where each container goes when a lab has `engines` engines (a swarm): spread, in start
/// order, each on the engine holding the fewest so far, but never on the engine of a router of
/// a segment it is on (when another engine is free of them), so that a LAN's traffic to its
/// router, and a router's to its uplink router, crosses engines (the overlay). The lowest index
/// wins a tie. On one engine every container is on engine 0.
pub fn placement(topo: &Topology, lay: &Layout, engines: usize) -> BTreeMap<String, usize> {
    let mut load = vec![0usize; engines.max(1)];
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for c in &lay.containers {
        // `engine:` in the file, when the swarm has that engine ([`check_engines`] says so
        // before a lab is made)
        let pinned = pinned(topo, &c.name)
            .map(|e| e as usize - 1)
            .filter(|i| engines > 1 && *i < load.len());
        if let Some(i) = pinned {
            load[i] += 1;
            at.insert(c.name.clone(), i);
            continue;
        }
        let avoid: Vec<usize> = c
            .attach
            .iter()
            .filter_map(|(seg, _)| topo.segments.iter().find(|s| &s.name == seg))
            .filter_map(|s| s.router_name())
            .filter(|r| *r != c.name)
            .filter_map(|r| at.get(&r).copied())
            .collect();
        let pick = |allowed: &dyn Fn(usize) -> bool| {
            (0..load.len())
                .filter(|i| allowed(*i))
                .min_by_key(|i| (load[*i], *i))
        };
        let i = pick(&|i| !avoid.contains(&i))
            .or_else(|| pick(&|_| true))
            .unwrap_or(0);
        load[i] += 1;
        at.insert(c.name.clone(), i);
    }
    at
}

/// The `engine:` the file gives a container: a node's own, a router's from its segment.
fn pinned(topo: &Topology, container: &str) -> Option<u32> {
    topo.node(container).and_then(|n| n.engine).or_else(|| {
        topo.segments
            .iter()
            .find(|s| s.router_name().as_deref() == Some(container))
            .and_then(|s| s.engine)
    })
}

/// An `engine:` beyond the engines of the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (line {line}) asks for `engine: {engine}`, and this run has {engines} engine(s) (`--engines`)")]
pub struct EngineOutOfRange {
    /// "node `alice`" or "segment `lan-a` (its router)".
    pub what: String,
    pub line: u64,
    pub engine: u32,
    pub engines: usize,
}

/// Every `engine:` of the file fits a run on `engines` engines; on one engine (no `--engines`)
/// the key is ignored, so that one file runs both ways.
pub fn check_engines(topo: &Topology, engines: usize) -> Result<(), EngineOutOfRange> {
    if engines <= 1 {
        return Ok(());
    }
    let nodes = topo
        .nodes
        .iter()
        .filter_map(|n| Some((format!("node `{}`", n.name), n.line, n.engine?)));
    let routers = topo.segments.iter().filter_map(|s| {
        Some((
            format!("segment `{}` (its router)", s.name),
            s.line,
            s.engine?,
        ))
    });
    match nodes.chain(routers).find(|(_, _, e)| *e as usize > engines) {
        Some((what, line, engine)) => Err(EngineOutOfRange {
            what,
            line,
            engine,
            engines,
        }),
        None => Ok(()),
    }
}

/// On a swarm, the IPv6 each container sets up itself ([`Static6`] says why): for every
/// interface on a segment of `topo` with IPv6, its address and a neighbour entry for every other
/// container attached there. By container; containers with none are absent.
pub fn static6(topo: &Topology, lay: &Layout) -> BTreeMap<String, Vec<Static6>> {
    let mut out: BTreeMap<String, Vec<Static6>> = BTreeMap::new();
    for seg in topo.segments.iter().filter(|s| s.family.v6()) {
        let seg = seg.name.as_str();
        let Some(&net) = lay.subnets.get(seg) else {
            continue;
        };
        let on: Vec<(&str, Ipv4Addr)> = lay
            .containers
            .iter()
            .flat_map(|c| {
                c.attach
                    .iter()
                    .filter(move |(s, _)| s == seg)
                    .map(move |(_, ip)| (c.name.as_str(), *ip))
            })
            .collect();
        for (name, ip) in &on {
            let Ok(addr) = ipnet::Ipv6Net::new(v6_addr(net, *ip), 64) else {
                continue;
            };
            out.entry((*name).to_string()).or_default().push(Static6 {
                ipv4: *ip,
                addr,
                neighbours: on
                    .iter()
                    .filter(|(_, other)| other != ip)
                    .map(|(_, other)| (v6_addr(net, *other), Mac::docker(*other)))
                    .collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::parse;

    /// A planned container's environment variable `k`.
    fn env_of(l: &Layout, c: &str, k: &str) -> Option<String> {
        l.get(c)
            .unwrap()
            .env
            .iter()
            .find(|e| e.0 == k)
            .map(|e| e.1.clone())
    }

    fn subnets(pairs: &[(&str, &str)]) -> BTreeMap<String, Ipv4Net> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    }

    const T: &str = r#"
name: t
segments:
  internet: {}
  carrier: { nat: home }
  lan-a: { nat: home, uplink: carrier, impair: { delay: 20ms, loss: 1% } }
  lan-f: { nat: port-forward, forward: [{ port: 4001, to: fwd }] }
nodes:
  boot: { role: monitor, segment: internet }
  alice: { role: listener, segment: lan-a, namespace: demo, transport: tcp }
  fwd: { role: listener, segment: lan-f }
  d: { role: dialer, segment: internet, count: 5, vpn: true }
"#;

    fn lay() -> (Topology, Layout) {
        let t = parse("t.yaml", T).unwrap();
        let l = layout(
            &t,
            &subnets(&[
                ("internet", "198.18.0.0/24"),
                ("carrier", "100.64.0.0/24"),
                ("lan-a", "10.1.0.0/24"),
                ("lan-f", "10.2.0.0/24"),
            ]),
        )
        .unwrap();
        (t, l)
    }

    #[test]
    fn routers_stack_and_peers_get_gateways() {
        let (t, l) = lay();
        let names: Vec<&str> = l.containers.iter().map(|c| c.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("router-carrier") < pos("router-lan-a"));
        let ra = l.get("router-lan-a").unwrap();
        assert_eq!(ra.attach[0].0, "carrier");
        assert!(
            ra.env
                .contains(&("P2PLAB_UPLINK_GW".into(), "100.64.0.254".into())),
            "{:?}",
            ra.env
        );
        assert!(ra.env.contains(&("P2PLAB_DELAY_MS".into(), "20".into())));
        assert_eq!(
            ra.attach[1],
            ("lan-a".into(), "10.1.0.254".parse().unwrap())
        );
        let alice = l.get("alice").unwrap();
        assert!(alice
            .env
            .contains(&("P2PLAB_GATEWAY".into(), "10.1.0.254".into())));
        assert!(
            !alice.cmd.iter().any(|a| a == "--external-addr"),
            "a NATed peer announces no address of its own"
        );
        assert!(alice
            .cmd
            .windows(2)
            .any(|w| w[0] == "--bootstrap" && w[1].ends_with("/tcp/51820")));
        assert!(!alice.cmd.iter().any(|a| a.contains("quic")), "tcp only");
        // alice is seen from outside as the outer router's address
        let vis = l.visible_addrs(&t, "alice");
        assert_eq!(vis.len(), 3);
        assert_eq!(vis[2], l.get("router-carrier").unwrap().ip());
    }

    #[test]
    fn public_and_forwarded_peers_announce_their_public_address() {
        let (_, l) = lay();
        let boot = l.get("boot").unwrap();
        let ip = boot.ip();
        assert!(boot.cmd.contains(&format!("/ip4/{ip}/tcp/51820")));
        let fwd = l.get("fwd").unwrap();
        let router = l.get("router-lan-f").unwrap();
        let wan = router.ip();
        assert!(
            fwd.cmd.contains(&format!("/ip4/{wan}/tcp/4001")),
            "{:?}",
            fwd.cmd
        );
        let rule = format!("tcp:4001:{}:4001,udp:4001:{}:4001", fwd.ip(), fwd.ip());
        assert!(
            router.env.contains(&("P2PLAB_FORWARD".into(), rule)),
            "{:?}",
            router.env
        );
    }

    #[test]
    fn vpn_peer_gets_an_exit_and_a_tunnel() {
        let (_, l) = lay();
        let exit = l.get("d-vpn-exit").unwrap();
        assert_eq!(exit.attach[0].0, "internet");
        let d = l.get("d").unwrap();
        assert_eq!(d.cmd[0], "p2plab-vpn");
        assert!(d.tun && exit.tun);
        assert!(d
            .env
            .contains(&("P2PLAB_VPN_ENDPOINT".into(), format!("{}:51821", exit.ip()))));
        assert!(
            !d.cmd.iter().any(|a| a == "--external-addr"),
            "behind the VPN exit's translation"
        );
    }

    #[test]
    fn addresses_are_unique() {
        let (_, l) = lay();
        let mut all: Vec<Ipv4Addr> = l
            .containers
            .iter()
            .flat_map(|c| c.attach.iter().map(|a| a.1))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn a_monitor_keeps_its_key_in_a_file_unless_it_has_a_seed() {
        let t = parse(
            "t.yaml",
            "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  boot2: { role: monitor, segment: internet, seed: 9 }\n  alice: { role: listener, segment: internet }\n  bob: { role: dialer, segment: internet, count: 1 }\n",
        )
        .unwrap();
        let l = layout(&t, &subnets(&[("internet", "198.18.0.0/24")])).unwrap();
        let boot = l.get("boot").unwrap();
        let ip = boot.ip();
        let other = l.get("boot2").unwrap().ip();
        let want: Vec<String> = [
            "monitor",
            "--name",
            "boot",
            "--listen-addr",
            "0.0.0.0",
            "--port",
            "51820",
            "--transport",
            "both",
            "--external-addr",
            &format!("/ip4/{ip}/tcp/51820"),
            "--external-addr",
            &format!("/ip4/{ip}/udp/51820/quic-v1"),
            "--bootstrap",
            &format!("/ip4/{other}/tcp/51820"),
            "--bootstrap",
            &format!("/ip4/{other}/udp/51820/quic-v1"),
            "--metrics-addr",
            "0.0.0.0:9090",
            "--key-file",
            "/var/lib/p2plab/node.key",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        assert_eq!(boot.cmd, want);
        assert_eq!(boot.key_file.as_deref(), Some(crate::model::KEY_FILE));
        // a seed wins; peers have no key file (a new identity on every start, as before)
        let boot2 = l.get("boot2").unwrap();
        assert!(
            boot2.cmd.windows(2).any(|w| w == ["--seed", "9"])
                && !boot2.cmd.iter().any(|a| a == "--key-file"),
            "{:?}",
            boot2.cmd
        );
        assert_eq!(boot2.key_file, None);
        for n in ["alice", "bob"] {
            assert!(
                !l.get(n).unwrap().cmd.iter().any(|a| a == "--key-file"),
                "{n}"
            );
        }
    }

    #[test]
    fn a_node_not_started_with_the_lab_is_planned_all_the_same() {
        let t = parse(
            "t.yaml",
            "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet, start: false }\n  alice: { role: listener, segment: internet }\nfaults:\n  - { at: 5s, start: boot }\n",
        )
        .unwrap();
        let l = layout(&t, &subnets(&[("internet", "198.18.0.0/24")])).unwrap();
        let boot = l.get("boot").unwrap();
        assert!(!boot.start_with_lab);
        assert_eq!(boot.ip(), "198.18.0.2".parse::<Ipv4Addr>().unwrap());
        let alice = l.get("alice").unwrap();
        assert!(alice.start_with_lab);
        // the peers bootstrap from it all the same: its address is known from the start
        assert!(
            alice.cmd.contains(&"/ip4/198.18.0.2/tcp/51820".to_string()),
            "{:?}",
            alice.cmd
        );
    }

    #[test]
    fn a_full_segment_is_an_error() {
        let t = parse("t.yaml", "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  p: { role: listener, segment: internet, replicas: 20 }\n").unwrap();
        let e = layout(&t, &subnets(&[("internet", "198.18.0.0/28")])).unwrap_err();
        assert!(matches!(e, LayoutError::Full { .. }), "{e}");
    }

    #[test]
    fn ipv6_through_stacked_routers_is_routed_at_every_level() {
        let t = parse("t.yaml", "name: t\nsegments:\n  internet: { family: dual }\n  carrier: { nat: home, family: dual }\n  lan-a: { nat: home, family: dual, uplink: carrier }\nnodes:\n  boot: { role: monitor, segment: internet }\n  a: { role: listener, segment: lan-a }\n").unwrap();
        let l = layout(
            &t,
            &subnets(&[
                ("internet", "198.18.4.0/24"),
                ("carrier", "100.64.1.0/24"),
                ("lan-a", "10.1.0.0/24"),
            ]),
        )
        .unwrap();
        let routes = |c: &str| env_of(&l, c, "P2PLAB_ROUTES").unwrap_or_default();
        let wan6 = |c: &str| env_of(&l, c, "P2PLAB_WAN_IP6").unwrap();
        let (outer, inner) = (wan6("router-carrier"), wan6("router-lan-a"));
        // the public segment reaches both /64s through the carrier's router
        let boot = routes("boot");
        assert!(
            boot.contains(&format!("fd70:6440:100::/64 via {outer}")),
            "{boot}"
        );
        assert!(
            boot.contains(&format!("fd70:a01::/64 via {outer}")),
            "{boot}"
        );
        // the carrier's router reaches the inner LAN through the inner router
        let r = routes("router-carrier");
        assert!(r.contains(&format!("fd70:a01::/64 via {inner}")), "{r}");
        // the inner router goes up through the carrier's LAN gateway, the host through its router
        let r = routes("router-lan-a");
        assert!(r.contains("fd70::/16 via fd70:6440:100::fe"), "{r}");
        assert_eq!(routes("a"), "fd70::/16 via fd70:a01::fe");
        for c in &l.containers {
            assert!(!routes(&c.name).contains("::/0"), "{}", c.name);
        }
    }

    #[test]
    fn ipv6_lans_are_routed_via_their_routers_and_nothing_gets_a_default_route() {
        let t = parse("t.yaml", "name: t\nsegments:\n  internet: { family: dual }\n  lan-a: { nat: home, family: dual }\n  lan-b: { nat: home, family: dual, ipv6: routed }\nnodes:\n  boot: { role: monitor, segment: internet }\n  a: { role: listener, segment: lan-a }\n  b: { role: dialer, segment: lan-b }\n").unwrap();
        let l = layout(
            &t,
            &subnets(&[
                ("internet", "198.18.4.0/24"),
                ("lan-a", "10.1.0.0/24"),
                ("lan-b", "10.2.0.0/24"),
            ]),
        )
        .unwrap();
        let env = |c: &str, k: &str| env_of(&l, c, k);
        // the router: its IPv6 side, forwarding on
        assert_eq!(
            env("router-lan-a", "P2PLAB_IPV6").as_deref(),
            Some("firewall")
        );
        assert_eq!(
            env("router-lan-b", "P2PLAB_IPV6").as_deref(),
            Some("routed")
        );
        assert_eq!(
            env("router-lan-a", "P2PLAB_LAN_SUBNET6").as_deref(),
            Some("fd70:a01::/64")
        );
        assert_eq!(
            env("router-lan-a", "P2PLAB_WAN_IP6").as_deref(),
            Some("fd70:c612:400::2")
        );
        assert!(l
            .get("router-lan-a")
            .unwrap()
            .sysctls
            .contains(&(s("net.ipv6.conf.all.forwarding"), s("1"))));
        // hosts on the uplink route each LAN /64 via its router; a router not its own
        assert_eq!(
            env("boot", "P2PLAB_ROUTES").as_deref(),
            Some("fd70:a01::/64 via fd70:c612:400::2;fd70:a02::/64 via fd70:c612:400::3")
        );
        assert_eq!(
            env("router-lan-a", "P2PLAB_ROUTES").as_deref(),
            Some("fd70:a02::/64 via fd70:c612:400::3")
        );
        // a LAN host: the lab's IPv6 space via its router, IPv4 as before
        assert_eq!(
            env("a", "P2PLAB_ROUTES").as_deref(),
            Some("fd70::/16 via fd70:a01::fe")
        );
        assert_eq!(env("a", "P2PLAB_GATEWAY").as_deref(), Some("10.1.0.254"));
        for c in &l.containers {
            let routes = env(&c.name, "P2PLAB_ROUTES").unwrap_or_default();
            assert!(
                !routes.contains("::/0") && !routes.contains("default"),
                "{}: {routes}",
                c.name
            );
        }
        // both families to the bootstrap node
        let a = &l.get("a").unwrap().cmd;
        assert!(
            a.contains(&s("/ip4/198.18.4.2/tcp/51820"))
                || a.iter().any(|x| x.starts_with("/ip4/198.18.4.")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|x| x.starts_with("/ip6/fd70:c612:400::")),
            "{a:?}"
        );
    }

    #[test]
    fn a_swarm_never_puts_a_host_on_its_routers_engine() {
        let (t, l) = lay();
        let at = placement(&t, &l, 3);
        assert_eq!(at.len(), l.containers.len());
        for c in &l.containers {
            for (seg, _) in &c.attach {
                let Some(r) = t
                    .segments
                    .iter()
                    .find(|s| &s.name == seg)
                    .and_then(|s| s.router_name())
                else {
                    continue;
                };
                if r != c.name {
                    assert_ne!(at[&c.name], at[&r], "{} shares an engine with {r}", c.name);
                }
            }
        }
        // spread: no engine holds more than its share plus one
        let mut load = [0usize; 3];
        for i in at.values() {
            load[*i] += 1;
        }
        let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
        assert!(max - min <= 2, "{load:?}");
        // one engine: all on it
        assert!(placement(&t, &l, 1).values().all(|i| *i == 0));
    }

    const PINNED: &str = r#"
name: pinned
segments:
  internet: {}
  lan-a: { nat: home, engine: 3 }
nodes:
  boot: { role: monitor, segment: internet, engine: 1 }
  a: { role: listener, segment: lan-a, engine: 3 }
  b: { role: dialer, segment: internet }
"#;

    #[test]
    fn on_a_swarm_each_ipv6_interface_knows_its_segments_neighbours() {
        let t = parse("t.yaml", "name: t\nsegments:\n  internet: { family: dual }\n  lan-a: { nat: home, family: ipv6 }\n  lan-b: { nat: home }\nnodes:\n  boot: { role: monitor, segment: internet }\n  a: { role: listener, segment: lan-a }\n  b: { role: dialer, segment: lan-b }\n").unwrap();
        let l = layout(
            &t,
            &subnets(&[
                ("internet", "198.18.9.0/24"),
                ("lan-a", "10.9.1.0/24"),
                ("lan-b", "10.9.2.0/24"),
            ]),
        )
        .unwrap();
        let s = static6(&t, &l);
        assert!(!s.contains_key("b"), "lan-b has no IPv6");
        // the router: one interface on each IPv6 segment, each with the others of that segment
        let r = &s["router-lan-a"];
        assert_eq!(r.len(), 2);
        for i in r {
            let seg = if i.ipv4.octets()[0] == 198 {
                "internet"
            } else {
                "lan-a"
            };
            let net = l.subnets[seg];
            assert_eq!(i.addr.addr(), v6_addr(net, i.ipv4));
            assert_eq!(i.addr.prefix_len(), 64);
            let others: Vec<_> = l
                .containers
                .iter()
                .flat_map(|c| c.attach.iter().filter(|(s, ip)| s == seg && *ip != i.ipv4))
                .map(|(_, ip)| (v6_addr(net, *ip), Mac::docker(*ip)))
                .collect();
            assert!(!others.is_empty());
            assert_eq!(i.neighbours, others);
        }
        assert_eq!(s["a"].len(), 1);
        assert_eq!(
            s["a"][0].neighbours.len(),
            1,
            "a's LAN holds a and its router"
        );
    }

    #[test]
    fn engine_in_the_file_places_a_node_and_a_router() {
        let t = parse("<t>", PINNED).unwrap();
        let l = layout(
            &t,
            &subnets(&[("internet", "198.18.9.0/24"), ("lan-a", "10.9.1.0/24")]),
        )
        .unwrap();
        let at = placement(&t, &l, 3);
        assert_eq!(at["boot"], 0);
        assert_eq!(at["router-lan-a"], 2);
        // asked for: on its router's engine, which the spread alone never does
        assert_eq!(at["a"], 2);
        // the rest still spread, away from the pinned load
        assert_eq!(at["b"], 1);
        assert_eq!(check_engines(&t, 3), Ok(()));
        // one engine: ignored
        assert_eq!(check_engines(&t, 1), Ok(()));
        assert!(placement(&t, &l, 1).values().all(|i| *i == 0));
        // two engines: one clear error naming the node, its line and the flag
        let e = check_engines(&t, 2).unwrap_err();
        assert_eq!(e.engine, 3);
        assert_eq!(e.engines, 2);
        assert_eq!(
            e.to_string(),
            format!(
                "node `a` (line {}) asks for `engine: 3`, and this run has 2 engine(s) (`--engines`)",
                t.node("a").unwrap().line
            )
        );
    }
}
