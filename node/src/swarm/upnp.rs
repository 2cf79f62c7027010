//! UPnP IGD port mapping (`--upnp`): asks the LAN's Internet Gateway Device to forward the
//! node's listen ports, and confirms `WAN_IP:port` as an external address once it has.
//!
//! Modelled on `libp2p-upnp` 0.7 (the same `igd-next` client, the same events, one mapping per
//! protocol and port, the external port equal to the internal one, a one-hour lease renewed at
//! half-time), with three differences, each needed in the lab:
//! - **which gateways count.** `libp2p-upnp` refuses a gateway whose external address is not
//!   global (`is_addr_global`), and that test includes RFC 2544's benchmarking range
//!   198.18.0.0/15, which is the lab's internet. Here [`routable`] is the same test except that
//!   it accepts 198.18.0.0/15: that range is never routed on the real internet, so accepting it
//!   cannot make a real node announce an address behind another NAT. Private, shared (CGNAT),
//!   loopback, link-local, documentation and reserved addresses are still refused.
//! - **where the search is sent from.** The SSDP search is bound to the first private IPv4
//!   listen address rather than 0.0.0.0, so it leaves on that interface even when the host has
//!   no default route (lab hosts route only the lab's ranges): Linux sends multicast from a
//!   bound source out of that source's interface.
//! - **retries.** A search that gets no answer is repeated ([`SEARCH_ATTEMPTS`] times), and a
//!   refused mapping is retried with backoff, so a lost datagram does not disable UPnP.
//! - **a known gateway** (`--upnp-gateway`). Each search also goes to the gateway itself by
//!   unicast, at the same time as the multicast one; the first answer wins. A network that drops
//!   multicast (a Docker swarm's overlay: the lab's UPnP routers on several engines) still finds
//!   its gateway.
//!
//! The gateway conversation runs in one tokio task; the behaviour itself only turns listen
//! addresses into requests and the task's reports into events and external addresses.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use igd_next::{aio::tokio::search_gateway, PortMappingProtocol, SearchOptions};
use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, ConnectionDenied, ConnectionId, ExpiredListenAddr, FromSwarm, NetworkBehaviour,
        NewListenAddr, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};
use tokio::sync::mpsc;

/// Lease asked of the gateway, in seconds (as `libp2p-upnp`).
pub const LEASE_SECS: u32 = 3600;
/// SSDP's port, where a gateway answers a unicast search too.
pub const SSDP_PORT: u16 = 1900;
/// Searches sent before giving up on finding a gateway.
pub const SEARCH_ATTEMPTS: u32 = 3;
/// How long one search waits for answers. Gateways may delay their answer by up to the
/// search's `MX` (3 s) seconds.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at one mapping before giving up on it.
pub const MAP_ATTEMPTS: u32 = 5;
/// First wait after a refused mapping; doubles per attempt.
pub const MAP_RETRY: Duration = Duration::from_secs(5);
const DESCRIPTION: &str = "p2plab-node";

/// Whether a port mapped on a gateway with this external address makes the node reachable:
/// `libp2p-upnp`'s `is_addr_global` for IPv4, except that 198.18.0.0/15 (RFC 2544
/// benchmarking, the lab's internet) is accepted. IGD maps IPv4 only: IPv6 is refused.
pub fn routable(ip: IpAddr) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || ip.is_private()
        || (a == 100 && (b & 0b1100_0000) == 0b0100_0000) // shared address space (CGNAT)
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a & 0xf0) == 0xf0 // reserved, broadcast
        || ip.is_multicast())
}

/// What the behaviour reports (mirrors `libp2p::upnp::Event`, plus the gateway found and
/// failed attempts, which `libp2p-upnp` only logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A gateway answered; `external_ip` is what it calls its external address.
    GatewayFound {
        gateway: SocketAddr,
        external_ip: IpAddr,
    },
    /// `local_addr` is mapped: others can reach it on `external_addr` (now a confirmed external
    /// address of the swarm).
    NewExternalAddr {
        local_addr: Multiaddr,
        external_addr: Multiaddr,
    },
    /// The renewal of a mapping failed: `external_addr` is no longer an external address.
    ExpiredExternalAddr {
        local_addr: Multiaddr,
        external_addr: Multiaddr,
        error: String,
    },
    /// An attempt to map `local_addr` failed; `retry_in` is `None` when no attempt is left.
    MapFailed {
        local_addr: Multiaddr,
        error: String,
        attempt: u32,
        retry_in: Option<Duration>,
    },
    /// No gateway answered (or it could not tell its external address).
    GatewayNotFound { error: String },
    /// The gateway's external address is not routable (see [`routable`]): no mapping is made.
    NonRoutableGateway {
        gateway: SocketAddr,
        external_ip: IpAddr,
    },
}

#[derive(Debug)]
enum Request {
    Add { key: Key, internal: SocketAddrV4 },
    Remove { key: Key },
}

#[derive(Debug)]
enum Report {
    Gateway {
        gateway: SocketAddr,
        external_ip: IpAddr,
        routable: bool,
    },
    NotFound(String),
    Mapped {
        key: Key,
    },
    Failed {
        key: Key,
        error: String,
        attempt: u32,
        retry_in: Option<Duration>,
        was_mapped: bool,
    },
}

/// One mapping: protocol and port (the external port is the internal one).
type Key = (PortMappingProtocol, u16);

struct Wanted {
    listener: libp2p::core::transport::ListenerId,
    local_addr: Multiaddr,
}

enum State {
    /// No private IPv4 listen address yet.
    Idle,
    /// The task runs (searching, or talking to the gateway it found).
    Running {
        tx: mpsc::UnboundedSender<Request>,
        rx: mpsc::UnboundedReceiver<Report>,
        bind: Ipv4Addr,
        external_ip: Option<IpAddr>,
    },
    /// No usable gateway: nothing more will happen.
    Done,
}

/// The UPnP behaviour. Wrap it in a `Toggle`: it searches as soon as it sees a private IPv4
/// listen address.
pub struct Behaviour {
    /// `--upnp-gateway`: also searched by unicast.
    gateway: Option<Ipv4Addr>,
    state: State,
    wanted: HashMap<Key, Wanted>,
    /// Mapped keys and the external address each one gave.
    mapped: HashMap<Key, Multiaddr>,
    pending: VecDeque<ToSwarm<Event, Infallible>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Behaviour {
    /// `gateway`: the gateway's LAN address, searched by unicast as well as by multicast.
    pub fn new(gateway: Option<Ipv4Addr>) -> Self {
        Behaviour {
            gateway,
            state: State::Idle,
            wanted: HashMap::new(),
            mapped: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn on_new_listen_addr(
        &mut self,
        listener: libp2p::core::transport::ListenerId,
        addr: &Multiaddr,
    ) {
        let Some((internal, protocol)) = mappable(addr) else {
            tracing::debug!(%addr, "upnp: not a private IPv4 TCP/UDP address, not mapped");
            return;
        };
        if let State::Idle = self.state {
            let (tx, task_rx) = mpsc::unbounded_channel();
            let (task_tx, rx) = mpsc::unbounded_channel();
            let bind = *internal.ip();
            tokio::spawn(run(bind, self.gateway, task_rx, task_tx));
            self.state = State::Running {
                tx,
                rx,
                bind,
                external_ip: None,
            };
        }
        let State::Running { tx, bind, .. } = &self.state else {
            return;
        };
        if internal.ip() != bind {
            tracing::debug!(%addr, %bind, "upnp: listen address on another interface than the search, not mapped");
            return;
        }
        let key = (protocol, internal.port());
        if self.wanted.contains_key(&key) {
            return;
        }
        self.wanted.insert(
            key,
            Wanted {
                listener,
                local_addr: addr.clone(),
            },
        );
        let _ = tx.send(Request::Add { key, internal });
    }

    fn on_expired_listen_addr(
        &mut self,
        listener: libp2p::core::transport::ListenerId,
        addr: &Multiaddr,
    ) {
        let Some((internal, protocol)) = mappable(addr) else {
            return;
        };
        let key = (protocol, internal.port());
        if !self
            .wanted
            .get(&key)
            .is_some_and(|w| w.listener == listener && &w.local_addr == addr)
        {
            return;
        }
        self.wanted.remove(&key);
        if let Some(external) = self.mapped.remove(&key) {
            self.pending
                .push_back(ToSwarm::ExternalAddrExpired(external));
        }
        if let State::Running { tx, .. } = &self.state {
            let _ = tx.send(Request::Remove { key });
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Gateway {
                gateway,
                external_ip,
                routable,
            } => {
                if routable {
                    if let State::Running { external_ip: e, .. } = &mut self.state {
                        *e = Some(external_ip);
                    }
                    self.event(Event::GatewayFound {
                        gateway,
                        external_ip,
                    });
                } else {
                    self.state = State::Done;
                    self.event(Event::NonRoutableGateway {
                        gateway,
                        external_ip,
                    });
                }
            }
            Report::NotFound(error) => {
                self.state = State::Done;
                self.event(Event::GatewayNotFound { error });
            }
            Report::Mapped { key } => {
                let (
                    Some(w),
                    State::Running {
                        external_ip: Some(ip),
                        ..
                    },
                ) = (self.wanted.get(&key), &self.state)
                else {
                    return;
                };
                let Some(external) = with_ip(&w.local_addr, *ip) else {
                    return;
                };
                let local_addr = w.local_addr.clone();
                self.mapped.insert(key, external.clone());
                self.pending
                    .push_back(ToSwarm::ExternalAddrConfirmed(external.clone()));
                self.event(Event::NewExternalAddr {
                    local_addr,
                    external_addr: external,
                });
            }
            Report::Failed {
                key,
                error,
                attempt,
                retry_in,
                was_mapped,
            } => {
                let Some(w) = self.wanted.get(&key) else {
                    return;
                };
                let local_addr = w.local_addr.clone();
                if retry_in.is_none() {
                    self.wanted.remove(&key);
                }
                if was_mapped {
                    if let Some(external) = self.mapped.remove(&key) {
                        self.pending
                            .push_back(ToSwarm::ExternalAddrExpired(external.clone()));
                        self.event(Event::ExpiredExternalAddr {
                            local_addr: local_addr.clone(),
                            external_addr: external,
                            error: error.clone(),
                        });
                    }
                }
                self.event(Event::MapFailed {
                    local_addr,
                    error,
                    attempt,
                    retry_in,
                });
            }
        }
    }

    fn event(&mut self, e: Event) {
        self.pending.push_back(ToSwarm::GenerateEvent(e));
    }
}

/// The private IPv4 socket address and protocol of a TCP or UDP (QUIC) listen address.
fn mappable(addr: &Multiaddr) -> Option<(SocketAddrV4, PortMappingProtocol)> {
    let mut it = addr.iter();
    let Some(Protocol::Ip4(ip)) = it.next() else {
        return None;
    };
    if !ip.is_private() {
        return None;
    }
    match it.next() {
        Some(Protocol::Tcp(port)) if port != 0 => {
            Some((SocketAddrV4::new(ip, port), PortMappingProtocol::TCP))
        }
        Some(Protocol::Udp(port)) if port != 0 => {
            Some((SocketAddrV4::new(ip, port), PortMappingProtocol::UDP))
        }
        _ => None,
    }
}

/// `addr` with its IP replaced by `ip`.
fn with_ip(addr: &Multiaddr, ip: IpAddr) -> Option<Multiaddr> {
    let p = match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    addr.replace(0, |_| Some(p))
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::NewListenAddr(NewListenAddr { listener_id, addr }) => {
                self.on_new_listen_addr(listener_id, addr);
            }
            FromSwarm::ExpiredListenAddr(ExpiredListenAddr { listener_id, addr }) => {
                self.on_expired_listen_addr(listener_id, addr);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Poll::Ready(e);
            }
            let State::Running { rx, .. } = &mut self.state else {
                return Poll::Pending;
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(report)) => self.on_report(report),
                Poll::Ready(None) => {
                    self.state = State::Done;
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// ------------------------------------------------------------------------------------ task

struct Slot {
    internal: SocketAddrV4,
    due: Instant,
    attempts: u32,
    mapped: bool,
}

/// The gateway conversation: search (from `bind`), ask its external address, then keep every
/// requested mapping in place until its listen address goes away.
async fn run(
    bind: Ipv4Addr,
    known: Option<Ipv4Addr>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    tx: mpsc::UnboundedSender<Report>,
) {
    let options = |to: Option<Ipv4Addr>| {
        let mut o = SearchOptions {
            bind_addr: SocketAddr::from((bind, 0)),
            timeout: Some(SEARCH_TIMEOUT),
            single_search_timeout: Some(SEARCH_TIMEOUT),
            ..Default::default()
        };
        if let Some(gw) = to {
            o.broadcast_address = SocketAddr::from((gw, SSDP_PORT));
        }
        o
    };
    // multicast, and the known gateway by unicast at the same time: the first answer wins
    let search = || {
        let targets = std::iter::once(None).chain(known.map(Some));
        futures::future::select_ok(targets.map(|to| Box::pin(search_gateway(options(to)))))
    };
    let mut gateway = None;
    let mut last_error = String::new();
    for attempt in 1..=SEARCH_ATTEMPTS {
        match search().await.map(|(g, _)| g) {
            Ok(g) => {
                gateway = Some(g);
                break;
            }
            Err(e) => {
                tracing::debug!(attempt, "upnp: search from {bind}: {e}");
                last_error = format!("search from {bind} ({attempt} attempts): {e}");
            }
        }
    }
    let Some(gateway) = gateway else {
        let _ = tx.send(Report::NotFound(last_error));
        return;
    };
    let external_ip = match gateway.get_external_ip().await {
        Ok(ip) => ip,
        Err(e) => {
            let _ = tx.send(Report::NotFound(format!(
                "gateway {}: GetExternalIPAddress: {e}",
                gateway.addr
            )));
            return;
        }
    };
    let ok = routable(external_ip);
    let _ = tx.send(Report::Gateway {
        gateway: gateway.addr,
        external_ip,
        routable: ok,
    });
    if !ok {
        return;
    }
    tracing::info!(gateway = %gateway.addr, %external_ip, "upnp: gateway found");

    let mut slots: HashMap<Key, Slot> = HashMap::new();
    loop {
        let next = slots.values().map(|s| s.due).min();
        tokio::select! {
            req = rx.recv() => match req {
                None => return,
                Some(Request::Add { key, internal }) => {
                    slots.insert(key, Slot { internal, due: Instant::now(), attempts: 0, mapped: false });
                }
                Some(Request::Remove { key }) => {
                    if slots.remove(&key).is_some_and(|s| s.mapped) {
                        if let Err(e) = gateway.remove_port(key.0, key.1).await {
                            tracing::debug!("upnp: removing {} {}: {e}", key.0, key.1);
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<Key> = slots.iter().filter(|(_, s)| s.due <= now).map(|(k, _)| *k).collect();
                for key in due {
                    let Some(s) = slots.get_mut(&key) else { continue };
                    let internal = s.internal;
                    match gateway.add_port(key.0, key.1, SocketAddr::V4(internal), LEASE_SECS, DESCRIPTION).await {
                        Ok(()) => {
                            s.attempts = 0;
                            s.due = Instant::now() + Duration::from_secs(u64::from(LEASE_SECS / 2));
                            if !s.mapped {
                                s.mapped = true;
                                let _ = tx.send(Report::Mapped { key });
                            }
                        }
                        Err(e) => {
                            s.attempts += 1;
                            let was_mapped = std::mem::replace(&mut s.mapped, false);
                            let attempt = s.attempts;
                            let retry_in = (attempt < MAP_ATTEMPTS).then(|| MAP_RETRY * 2u32.pow(attempt - 1));
                            match retry_in {
                                Some(d) => s.due = Instant::now() + d,
                                None => {
                                    slots.remove(&key);
                                }
                            }
                            let error = format!("AddPortMapping {} {} -> {internal}: {e}", key.0, key.1);
                            let _ = tx.send(Report::Failed { key, error, attempt, retry_in, was_mapped });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_internet_is_routable_private_and_cgnat_are_not() {
        for ok in ["198.18.0.2", "198.19.255.1", "1.1.1.1", "8.8.8.8"] {
            assert!(routable(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!routable(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn only_private_ipv4_tcp_and_udp_listen_addresses_are_mapped() {
        let m = |s: &str| mappable(&s.parse().unwrap());
        assert_eq!(
            m("/ip4/10.0.0.5/tcp/4001"),
            Some(("10.0.0.5:4001".parse().unwrap(), PortMappingProtocol::TCP))
        );
        assert_eq!(
            m("/ip4/10.0.0.5/udp/4001/quic-v1"),
            Some(("10.0.0.5:4001".parse().unwrap(), PortMappingProtocol::UDP))
        );
        assert_eq!(m("/ip4/127.0.0.1/tcp/4001"), None);
        assert_eq!(m("/ip4/198.18.0.5/tcp/4001"), None);
        assert_eq!(m("/ip6/::1/tcp/4001"), None);
        assert_eq!(m("/ip4/10.0.0.5/tcp/0"), None);
    }

    #[test]
    fn external_address_keeps_everything_but_the_ip() {
        let local: Multiaddr = "/ip4/10.0.0.5/udp/4001/quic-v1".parse().unwrap();
        let ext = with_ip(&local, "198.18.0.2".parse().unwrap()).unwrap();
        assert_eq!(ext.to_string(), "/ip4/198.18.0.2/udp/4001/quic-v1");
    }
}
