//! The typed `P2PLAB_*` environment of the lab's other containers (a router's is in
//! [`crate::router`]): how a host reaches the rest of the lab (the image's entrypoint), a router's
//! link impairments (`p2plab-impair --from-env`) and the two ends of a VPN (`p2plab-vpn`). The
//! harness writes them with `to_env`; the image's shell scripts read the names in [`var`].

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

/// The variables' names.
pub mod var {
    pub const GATEWAY: &str = "P2PLAB_GATEWAY";
    pub const NO_DEFAULT_ROUTE: &str = "P2PLAB_NO_DEFAULT_ROUTE";
    pub const NO_IPV4: &str = "P2PLAB_NO_IPV4";
    pub const ROUTES: &str = "P2PLAB_ROUTES";
    pub const DELAY_MS: &str = "P2PLAB_DELAY_MS";
    pub const JITTER_MS: &str = "P2PLAB_JITTER_MS";
    pub const LOSS_PCT: &str = "P2PLAB_LOSS_PCT";
    pub const RATE: &str = "P2PLAB_RATE";
    pub const VPN_ROLE: &str = "P2PLAB_VPN_ROLE";
    pub const VPN_KEY: &str = "P2PLAB_VPN_KEY";
    pub const VPN_PEER: &str = "P2PLAB_VPN_PEER";
    pub const VPN_ADDR: &str = "P2PLAB_VPN_ADDR";
    pub const VPN_PEER_ADDR: &str = "P2PLAB_VPN_PEER_ADDR";
    pub const VPN_PORT: &str = "P2PLAB_VPN_PORT";
    pub const VPN_ENDPOINT: &str = "P2PLAB_VPN_ENDPOINT";
    pub const STATIC6: &str = "P2PLAB_STATIC6";
}

fn pair(var: &str, value: impl fmt::Display) -> (String, String) {
    (var.to_string(), value.to_string())
}

/// How a container reaches the rest of the lab. Either way it has no default route: nothing in a
/// lab has a route out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// A LAN host: the lab's ranges go via its router's LAN address.
    Gateway(Ipv4Addr),
    /// A host on a public segment (or a VPN exit): on-link only.
    Isolated,
}

impl Routing {
    pub fn to_env(self) -> Vec<(String, String)> {
        match self {
            Routing::Gateway(gw) => vec![pair(var::GATEWAY, gw)],
            Routing::Isolated => vec![pair(var::NO_DEFAULT_ROUTE, 1)],
        }
    }
}

/// A route a container adds at start (`P2PLAB_ROUTES`, `ip route replace TO via VIA`): how IPv6
/// reaches a LAN /64 behind a router (hosts on the router's uplink route it via the router's WAN
/// address) and how a LAN host reaches the lab's IPv6 space (via its router). Never a default
/// route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route6 {
    pub to: ipnet::Ipv6Net,
    pub via: std::net::Ipv6Addr,
}

/// `P2PLAB_ROUTES` for `routes` (nothing when there are none).
pub fn routes_env(routes: &[Route6]) -> Vec<(String, String)> {
    if routes.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = routes
        .iter()
        .map(|r| format!("{} via {}", r.to, r.via))
        .collect();
    vec![pair(var::ROUTES, list.join(";"))]
}

/// An IPv6-only host: the entrypoint removes every IPv4 address but loopback's before the
/// command runs (Docker 20.10 gives every network an IPv4 subnet).
pub fn ipv6_only_env() -> Vec<(String, String)> {
    vec![pair(var::NO_IPV4, 1)]
}

/// IPv6 a container sets up itself, on a swarm (`P2PLAB_STATIC6`): Docker 20.10's swarm gives
/// overlays no IPv6 of their own (an asked-for address is ignored, and every engine hands out the
/// same ones), and Neighbor Discovery's multicast does not cross the overlay's VXLAN, whose
/// forwarding entries the engines program for known MACs only. So on each interface (found by
/// its IPv4 address) the entrypoint adds the interface's IPv6 address and a permanent neighbour
/// entry for every other container of that segment: unicast to a known MAC crosses the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static6 {
    /// The interface's IPv4 address (how the entrypoint finds it).
    pub ipv4: Ipv4Addr,
    pub addr: ipnet::Ipv6Net,
    /// Every other container of the segment: its IPv6 address and its interface's MAC.
    pub neighbours: Vec<(std::net::Ipv6Addr, Mac)>,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The MAC Docker gives an interface with IPv4 address `ip` and no MAC asked for:
    /// 02:42 and the address's four bytes.
    pub fn docker(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// `P2PLAB_STATIC6` for `ifaces` (nothing when there are none): per interface
/// `IPV4 ADDR/64 [V6@MAC ...]`, interfaces separated by `;`.
pub fn static6_env(ifaces: &[Static6]) -> Vec<(String, String)> {
    if ifaces.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = ifaces
        .iter()
        .map(|i| {
            let mut words = vec![i.ipv4.to_string(), i.addr.to_string()];
            words.extend(i.neighbours.iter().map(|(a, m)| format!("{a}@{m}")));
            words.join(" ")
        })
        .collect();
    vec![pair(var::STATIC6, list.join(";"))]
}

/// Link impairments of a router's uplink (packets leaving the LAN), as a topology's `impair`
/// and a fault's `impair` give them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Impair {
    pub delay_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    /// Percent, 0..=100.
    pub loss_pct: Option<f64>,
    /// A tc rate, e.g. `10mbit`.
    pub rate: Option<String>,
}

impl Impair {
    pub fn is_empty(&self) -> bool {
        self.delay_ms.is_none()
            && self.jitter_ms.is_none()
            && self.loss_pct.is_none()
            && self.rate.is_none()
    }

    /// The router's environment at start (`p2plab-impair --from-env` reads it).
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(d) = self.delay_ms {
            env.push(pair(var::DELAY_MS, d));
        }
        if let Some(j) = self.jitter_ms {
            env.push(pair(var::JITTER_MS, j));
        }
        if let Some(l) = self.loss_pct {
            env.push(pair(var::LOSS_PCT, l));
        }
        if let Some(r) = &self.rate {
            env.push(pair(var::RATE, r));
        }
        env
    }

    /// `p2plab-impair IFACE`'s options that set exactly these impairments (a call replaces the
    /// interface's whole set): `--clear` when there are none.
    pub fn to_args(&self) -> Vec<String> {
        if self.is_empty() {
            return vec!["--clear".into()];
        }
        let mut args = Vec::new();
        let mut opt = |flag: &str, v: String| args.extend([flag.to_string(), v]);
        if let Some(d) = self.delay_ms {
            opt("--delay", d.to_string());
        }
        if let Some(j) = self.jitter_ms {
            opt("--jitter", j.to_string());
        }
        if let Some(l) = self.loss_pct {
            opt("--loss", l.to_string());
        }
        if let Some(r) = &self.rate {
            opt("--rate", r.clone());
        }
        args
    }
}

/// One end of a lab VPN (`p2plab-vpn`, a WireGuard-like tunnel in userspace): its keys, its
/// tunnel address (a /24), and what only that end needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnEnd {
    /// This end's private key and the other end's public key (base64).
    pub key: String,
    pub peer: String,
    /// This end's tunnel address; the tunnel is its /24.
    pub addr: Ipv4Addr,
    pub side: VpnSide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnSide {
    /// The exit, on a public segment: listens on `port`; `client` is the client's tunnel address.
    Exit { port: u16, client: Ipv4Addr },
    /// The client, a node behind NATs: sends everything through the exit at `endpoint`.
    Client { endpoint: SocketAddrV4 },
}

impl VpnEnd {
    pub fn to_env(&self) -> Vec<(String, String)> {
        let role = match self.side {
            VpnSide::Exit { .. } => "exit",
            VpnSide::Client { .. } => "client",
        };
        let mut env = vec![
            pair(var::VPN_ROLE, role),
            pair(var::VPN_KEY, &self.key),
            pair(var::VPN_PEER, &self.peer),
            pair(var::VPN_ADDR, format!("{}/24", self.addr)),
        ];
        match self.side {
            VpnSide::Exit { port, client } => {
                env.push(pair(var::VPN_PEER_ADDR, format!("{client}/32")));
                env.push(pair(var::VPN_PORT, port));
            }
            VpnSide::Client { endpoint } => env.push(pair(var::VPN_ENDPOINT, endpoint)),
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(e: &[(String, String)]) -> Vec<String> {
        e.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn static6_names_each_interface_by_its_ipv4_and_every_neighbour_by_its_mac() {
        let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        assert_eq!(
            Mac::docker(Ipv4Addr::new(10, 77, 2, 10)).to_string(),
            "02:42:0a:4d:02:0a"
        );
        let e = static6_env(&[
            Static6 {
                ipv4: Ipv4Addr::new(10, 1, 0, 254),
                addr: "fd70:1::fe/64".parse().unwrap(),
                neighbours: vec![(ip("fd70:1::2"), Mac::docker(Ipv4Addr::new(10, 1, 0, 2)))],
            },
            Static6 {
                ipv4: Ipv4Addr::new(198, 18, 0, 3),
                addr: "fd70:2::3/64".parse().unwrap(),
                neighbours: Vec::new(),
            },
        ]);
        assert_eq!(
            env(&e),
            ["P2PLAB_STATIC6=10.1.0.254 fd70:1::fe/64 fd70:1::2@02:42:0a:01:00:02;198.18.0.3 fd70:2::3/64"]
        );
        assert!(static6_env(&[]).is_empty());
    }

    #[test]
    fn routing_is_one_variable() {
        assert_eq!(
            env(&Routing::Gateway(Ipv4Addr::new(10, 1, 0, 254)).to_env()),
            ["P2PLAB_GATEWAY=10.1.0.254"]
        );
        assert_eq!(
            env(&Routing::Isolated.to_env()),
            ["P2PLAB_NO_DEFAULT_ROUTE=1"]
        );
    }

    #[test]
    fn impairments_as_env_and_as_options() {
        let i = Impair {
            delay_ms: Some(20),
            jitter_ms: None,
            loss_pct: Some(0.5),
            rate: Some("10mbit".into()),
        };
        assert_eq!(
            env(&i.to_env()),
            [
                "P2PLAB_DELAY_MS=20",
                "P2PLAB_LOSS_PCT=0.5",
                "P2PLAB_RATE=10mbit"
            ]
        );
        assert_eq!(i.to_args().join(" "), "--delay 20 --loss 0.5 --rate 10mbit");
        assert!(Impair::default().to_env().is_empty());
        assert_eq!(Impair::default().to_args(), ["--clear"]);
    }

    #[test]
    fn each_vpn_end_says_what_only_it_needs() {
        let exit = VpnEnd {
            key: "k".into(),
            peer: "p".into(),
            addr: Ipv4Addr::new(100, 127, 255, 1),
            side: VpnSide::Exit {
                port: 51821,
                client: Ipv4Addr::new(100, 127, 255, 2),
            },
        };
        assert_eq!(
            env(&exit.to_env()),
            [
                "P2PLAB_VPN_ROLE=exit",
                "P2PLAB_VPN_KEY=k",
                "P2PLAB_VPN_PEER=p",
                "P2PLAB_VPN_ADDR=100.127.255.1/24",
                "P2PLAB_VPN_PEER_ADDR=100.127.255.2/32",
                "P2PLAB_VPN_PORT=51821"
            ]
        );
        let client = VpnEnd {
            addr: Ipv4Addr::new(100, 127, 255, 2),
            side: VpnSide::Client {
                endpoint: "198.18.0.9:51821"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            },
            ..exit
        };
        assert!(
            env(&client.to_env()).ends_with(&["P2PLAB_VPN_ENDPOINT=198.18.0.9:51821".to_string()])
        );
        assert_eq!(env(&client.to_env())[0], "P2PLAB_VPN_ROLE=client");
    }
}
