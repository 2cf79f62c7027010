//! The event loop: one `tokio::select!` over the swarm, a 25 ms tick and the shutdown future.
//!
//! What the loop does, by role:
//! - every role: dials its bootstrap addresses and keeps redialing lost ones with backoff; feeds
//!   identify's listen addresses to Kademlia; joins the DHT; reports everything as events.
//! - monitor: Kademlia server, relay server, AutoNAT server; its listen addresses (or
//!   `--external-addr`) are confirmed external from the start, so relay and DHT serve at once.
//! - listener and dialer: learn reachability from AutoNAT (or assume private after a timeout),
//!   reserve relay slots when private, switch Kademlia to server mode only when directly
//!   reachable, and close a relayed connection once a direct one to the same peer exists.
//! - listener: announces itself in its namespace (provider record + peer record).
//! - dialer: discovers the namespace's listeners and sends each `--count` acked messages.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    autonat, core::ConnectedPoint, dcutr, identify, kad, multiaddr::Protocol, relay,
    request_response::{self, OutboundRequestId},
    core::transport::ListenerId,
    swarm::{dial_opts::DialOpts, ConnectionId, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use libp2p::metrics::{Metrics as Libp2pMetrics, Recorder};
use prometheus_client::registry::Registry;

use crate::{
    cli::{Config, RelayMode, Role},
    discovery::{self, PeerRecord},
    events::{
        AddrStatus, Direction, Emitter, Event, Sink, Path, Reachability, ReachabilitySource,
        ReservationStatus, Totals, UpnpStatus,
    },
    http::{self, ConnectionStatus, Metrics, Shared},
    messaging::{Inbox, Outbox, RetryPolicy},
    swarm::{self as sw, upnp, Behaviour, BehaviourEvent, MsgAck, MsgRequest},
    RunError,
};

const TICK: Duration = Duration::from_millis(25);
const BOOT_BACKOFF_MIN: Duration = Duration::from_millis(500);
const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(15);
const RELAY_RETRY: Duration = Duration::from_secs(2);
const ANNOUNCE_DEBOUNCE: Duration = Duration::from_millis(200);
const DISCOVER_FAST: Duration = Duration::from_secs(1);
const DISCOVER_SLOW: Duration = Duration::from_secs(5);
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// One `--bootstrap` address and what became of it.
struct Boot {
    addr: Multiaddr,
    peer: Option<PeerId>,
    dialing: Option<ConnectionId>,
    connected: bool,
    next_try: Option<Instant>,
    backoff: Duration,
}

/// Where `--upnp` stands; decides whether a private verdict may reserve a relay yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpnpState {
    /// No `--upnp`.
    Off,
    /// Searching the gateway or waiting for the first mapping.
    Pending,
    /// A port is mapped (since then): AutoNAT is asked to check it.
    Mapped(Instant),
    /// No gateway, an unusable one, or a refused mapping.
    Failed,
}

struct Conn {
    peer: PeerId,
    path: Path,
    remote: Multiaddr,
}

/// A running node. Build with [`Node::start`], drive with [`Node::run`].
pub struct Node {
    cfg: Config,
    emitter: Emitter,
    swarm: Swarm<Behaviour>,
    local: PeerId,
    started: Instant,
    totals: Totals,
    shared: Arc<Shared>,
    metrics: Metrics,
    lib_metrics: Libp2pMetrics,

    boots: Vec<Boot>,
    bootstrapped: bool,
    /// A bootstrap peer (re)connected: join the DHT through it once identify tells us it serves.
    rejoin: bool,
    confirmed: HashSet<Multiaddr>,
    bootstrap_query: Option<kad::QueryId>,

    conns: HashMap<ConnectionId, Conn>,
    relayed_since: HashMap<PeerId, Instant>,

    reachability: Reachability,
    reach_deadline: Option<Instant>,
    want_relay: bool,
    /// A private verdict came while `--upnp` was still pending: relay reservations wait.
    relay_deferred: bool,
    upnp: UpnpState,
    relays: HashSet<PeerId>,
    reservations: HashMap<ListenerId, PeerId>,
    reservation_addr: HashMap<PeerId, Multiaddr>,
    reserved: HashSet<PeerId>,
    relay_retry: HashMap<PeerId, Instant>,

    announce_due: Option<Instant>,
    announce_queries: HashSet<kad::QueryId>,
    announce_failed: bool,
    announcing: Vec<Multiaddr>,

    discover_due: Instant,
    providers_query: Option<kad::QueryId>,
    record_queries: HashMap<kad::QueryId, PeerId>,
    known: HashMap<PeerId, Vec<Multiaddr>>,

    outbox: Outbox<PeerId>,
    inbox: Inbox<PeerId>,
    in_flight: HashMap<OutboundRequestId, u64>,
    sent_to: HashMap<PeerId, u64>,
    next_send: Instant,
    payload: Vec<u8>,
    status_due: Instant,
}

fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn is_unspecified(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn peer_of(a: &Multiaddr) -> Option<PeerId> {
    a.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn without_p2p(a: &Multiaddr) -> Multiaddr {
    a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

fn remote_of(endpoint: &ConnectedPoint) -> Multiaddr {
    endpoint.get_remote_address().clone()
}

fn path_of(endpoint: &ConnectedPoint) -> Path {
    if endpoint.is_relayed() {
        Path::Relayed
    } else {
        Path::Direct
    }
}

fn first_message_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Node {
    /// Builds the swarm, opens the listeners and the HTTP server, and emits `started` and
    /// `listening`. Fails on bad files, ports in use and usage errors.
    pub async fn start(cfg: Config) -> Result<Self, RunError> {
        Self::start_with(cfg, Sink::Stdout).await
    }

    /// [`Node::start`] with the events sent to `sink`.
    pub async fn start_with(cfg: Config, sink: Sink) -> Result<Self, RunError> {
        let metrics_addr = cfg.metrics_addr()?;
        let key = sw::identity(&cfg)?;
        let psk = sw::psk(&cfg)?;
        let local = key.public().to_peer_id();
        let mut registry = Registry::default();
        let mut swarm = sw::build(&cfg, key, psk, &mut registry)?;
        let lib_metrics = Libp2pMetrics::new(&mut registry);
        let metrics = Metrics::register(&mut registry);
        let shared = Shared::new(registry);
        let emitter = Emitter::with_sink(cfg.name(), sink);

        let namespace = cfg.peer.as_ref().map(|p| p.namespace.clone());
        emitter.emit(Event::Started {
            peer_id: local,
            role: cfg.role.as_str().to_string(),
            namespace: namespace.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        });

        let started = Instant::now();
        match Self::open(&cfg, &mut swarm, psk.is_some(), metrics_addr, shared.clone()).await {
            Ok(Some(addr)) => emitter.emit(Event::HttpListening { addr }),
            Ok(None) => {}
            Err(e) => {
                emitter.emit(Event::Stopped {
                    reason: format!("error: {e}"),
                    uptime_ms: ms(started.elapsed()),
                    totals: Totals::default(),
                });
                return Err(e);
            }
        }
        Self::assemble(cfg, emitter, swarm, local, shared, metrics, lib_metrics, namespace)
    }

    /// Opens the listeners and the HTTP server: what can fail because of the machine.
    async fn open(
        cfg: &Config,
        swarm: &mut Swarm<Behaviour>,
        psk: bool,
        metrics_addr: Option<std::net::SocketAddr>,
        shared: Arc<Shared>,
    ) -> Result<Option<std::net::SocketAddr>, RunError> {
        let (tcp_on, quic_on) = sw::transports(cfg, psk)?;
        let no_direct = cfg.peer.as_ref().is_some_and(|p| p.no_direct);
        if !no_direct && cfg.common.transport.memory() {
            let a = Multiaddr::empty().with(Protocol::Memory(u64::from(cfg.common.port.unwrap_or(0))));
            swarm
                .listen_on(a.clone())
                .map_err(|e| RunError::flag("--port", a.to_string(), e))?;
        } else if !no_direct {
            let port = cfg.common.port.unwrap_or(0);
            for ip in &cfg.common.listen_addrs {
                let base = Multiaddr::from(*ip);
                let mut addrs = Vec::new();
                if tcp_on {
                    addrs.push(base.clone().with(Protocol::Tcp(port)));
                }
                if quic_on {
                    addrs.push(base.clone().with(Protocol::Udp(port)).with(Protocol::QuicV1));
                }
                for a in addrs {
                    swarm.listen_on(a.clone()).map_err(|e| {
                        RunError::flag("--listen-addr/--port", a.to_string(), e)
                    })?;
                }
            }
        }
        match metrics_addr {
            Some(addr) => {
                let bound = http::serve(addr, shared).await?;
                tracing::info!("metrics on http://{bound}/metrics");
                Ok(Some(bound))
            }
            None => Ok(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: Config,
        emitter: Emitter,
        mut swarm: Swarm<Behaviour>,
        local: PeerId,
        shared: Arc<Shared>,
        metrics: Metrics,
        lib_metrics: Libp2pMetrics,
        namespace: Option<String>,
    ) -> Result<Self, RunError> {
        let no_direct = cfg.peer.as_ref().is_some_and(|p| p.no_direct);
        match cfg.role {
            Role::Monitor => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server)),
            _ => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Client)),
        }
        let mut confirmed = HashSet::new();
        for a in &cfg.common.external_addrs {
            swarm.add_external_address(a.clone());
            confirmed.insert(a.clone());
            emitter.emit(Event::ExternalAddr {
                addr: a.clone(),
                status: AddrStatus::Confirmed,
            });
        }

        let now = Instant::now();
        let boots = cfg
            .common
            .bootstrap
            .iter()
            .map(|a| Boot {
                addr: a.clone(),
                peer: peer_of(a),
                dialing: None,
                connected: false,
                next_try: Some(now),
                backoff: BOOT_BACKOFF_MIN,
            })
            .collect();

        let (traffic_deadline, payload) = match &cfg.traffic {
            Some(t) => (t.deadline, vec![0u8; t.size]),
            None => (Duration::from_secs(120), Vec::new()),
        };
        let mut want_relay = false;
        let mut reachability = Reachability::Unknown;
        if let Some(p) = &cfg.peer {
            if !cfg.common.external_addrs.is_empty() && !no_direct && p.relay != RelayMode::Always {
                reachability = Reachability::Public;
                emitter.emit(Event::Reachability {
                    status: Reachability::Public,
                    source: ReachabilitySource::Flag,
                    addr: cfg.common.external_addrs.first().cloned(),
                });
            } else if p.relay == RelayMode::Always || (no_direct && p.relay != RelayMode::Never) {
                want_relay = true;
                reachability = Reachability::Private;
                emitter.emit(Event::Reachability {
                    status: Reachability::Private,
                    source: ReachabilitySource::Flag,
                    addr: None,
                });
            }
        }
        let reach_deadline = cfg.peer.as_ref().map(|p| now + p.reachability_timeout);

        let mut node = Node {
            emitter,
            swarm,
            local,
            started: now,
            totals: Totals::default(),
            shared,
            metrics,
            lib_metrics,
            boots,
            bootstrapped: false,
            rejoin: false,
            confirmed,
            bootstrap_query: None,
            conns: HashMap::new(),
            relayed_since: HashMap::new(),
            reachability,
            reach_deadline,
            want_relay,
            relay_deferred: false,
            upnp: if cfg.common.upnp { UpnpState::Pending } else { UpnpState::Off },
            relays: HashSet::new(),
            reservations: HashMap::new(),
            reservation_addr: HashMap::new(),
            reserved: HashSet::new(),
            relay_retry: HashMap::new(),
            announce_due: None,
            announce_queries: HashSet::new(),
            announce_failed: false,
            announcing: Vec::new(),
            discover_due: now,
            providers_query: None,
            record_queries: HashMap::new(),
            known: HashMap::new(),
            // Ids start from the clock (µs since 1970), so a dialer restarted with the same
            // identity never reuses an id its listeners remember.
            outbox: Outbox::starting_at(
                RetryPolicy {
                    deadline: traffic_deadline,
                    ..RetryPolicy::default()
                },
                first_message_id(),
            ),
            inbox: Inbox::new(65_536),
            in_flight: HashMap::new(),
            sent_to: HashMap::new(),
            next_send: now,
            payload,
            status_due: now,
            cfg,
        };
        {
            let mut st = node.shared.status.write().map_err(|_| RunError::Runtime("status lock".into()))?;
            st.name = node.emitter.node().to_string();
            st.role = node.cfg.role.as_str().to_string();
            st.peer_id = Some(local);
            st.namespace = namespace;
        }
        node.update_kad_mode();
        if node.cfg.role == Role::Monitor && node.boots.is_empty() {
            // A monitor without bootstrap peers is the DHT's first member: it serves at once.
            node.shared.healthy.store(true, Ordering::Relaxed);
        }
        Ok(node)
    }

    /// Runs until `shutdown` resolves, then emits `stopped` and returns the totals.
    pub async fn run(mut self, shutdown: impl Future<Output = String>) -> Result<Totals, RunError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let reason = loop {
            tokio::select! {
                reason = &mut shutdown => break reason,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        };
        self.publish_status();
        self.emitter.emit(Event::Stopped {
            reason,
            uptime_ms: ms(self.started.elapsed()),
            totals: self.totals.clone(),
        });
        Ok(self.totals)
    }

    fn emit(&self, e: Event) {
        self.emitter.emit(e);
    }

    // ---------------------------------------------------------------- timers

    fn on_tick(&mut self, now: Instant) {
        self.dial_bootstraps(now);
        self.join_dht();
        self.check_reachability_timeout(now);
        self.release_relay_hold(now);
        self.reserve_relays(now);
        self.announce(now);
        self.discover(now);
        self.traffic(now);
        if now >= self.status_due {
            self.status_due = now + STATUS_EVERY;
            self.publish_status();
        }
    }

    fn dial_bootstraps(&mut self, now: Instant) {
        for i in 0..self.boots.len() {
            let b = &self.boots[i];
            if b.connected || b.dialing.is_some() || b.next_try.is_none_or(|t| t > now) {
                continue;
            }
            let opts = match b.peer {
                Some(p) => DialOpts::peer_id(p).addresses(vec![without_p2p(&b.addr)]).build(),
                None => DialOpts::unknown_peer_id().address(b.addr.clone()).build(),
            };
            let id = opts.connection_id();
            let addr = b.addr.clone();
            match self.swarm.dial(opts) {
                Ok(()) => self.boots[i].dialing = Some(id),
                Err(e) => self.boot_failed(i, e.to_string(), now),
            }
            tracing::debug!(%addr, "dialing bootstrap node");
        }
    }

    /// Runs a Kademlia bootstrap after a bootstrap peer (re)connected, as soon as the routing
    /// table knows a peer (identify feeds it), and again after a failed one.
    fn join_dht(&mut self) {
        if !self.rejoin || self.bootstrap_query.is_some() || !self.boots.iter().any(|b| b.connected) {
            return;
        }
        if let Ok(q) = self.swarm.behaviour_mut().kad.bootstrap() {
            self.bootstrap_query = Some(q);
            self.rejoin = false;
        }
    }

    fn boot_failed(&mut self, i: usize, error: String, now: Instant) {
        let b = &mut self.boots[i];
        b.dialing = None;
        b.connected = false;
        let wait = b.backoff;
        b.backoff = (b.backoff * 2).min(BOOT_BACKOFF_MAX);
        b.next_try = Some(now + wait);
        let addr = b.addr.clone();
        tracing::warn!(%addr, %error, "bootstrap node unreachable; retrying in {wait:?}");
        self.emit(Event::BootstrapRetry {
            addr,
            error,
            retry_in_ms: ms(wait),
        });
    }

    fn is_boot_peer(&self, peer: &PeerId) -> bool {
        self.boots.iter().any(|b| b.peer.as_ref() == Some(peer))
    }

    fn check_reachability_timeout(&mut self, now: Instant) {
        let Some(p) = &self.cfg.peer else { return };
        if self.reachability != Reachability::Unknown || !self.bootstrapped {
            return;
        }
        if self.reach_deadline.is_some_and(|d| now >= d) {
            self.reachability = Reachability::Private;
            if p.relay == RelayMode::Auto {
                self.request_relay(now);
            }
            self.emit(Event::Reachability {
                status: Reachability::Private,
                source: ReachabilitySource::Timeout,
                addr: None,
            });
        }
    }

    /// A private verdict with `--relay auto`: reserve relay slots, unless `--upnp` may still
    /// make the node reachable (see [`Node::relay_held`]).
    fn request_relay(&mut self, now: Instant) {
        if self.relay_held(now) {
            tracing::debug!("private, but UPnP is pending: relay reservations wait");
            self.relay_deferred = true;
        } else {
            self.want_relay = true;
        }
    }

    /// Whether UPnP may still make this node reachable: while the gateway search or the first
    /// mapping is pending (at most `--reachability-timeout` from start), and after a mapping until
    /// AutoNAT says public (at most `--reachability-timeout` after the mapping).
    fn relay_held(&self, now: Instant) -> bool {
        let Some(p) = &self.cfg.peer else { return false };
        upnp_holds_relay(self.upnp, self.reachability, self.started, p.reachability_timeout, now)
    }

    fn release_relay_hold(&mut self, now: Instant) {
        if self.relay_deferred && !self.relay_held(now) {
            self.relay_deferred = false;
            if self.reachability != Reachability::Public {
                self.want_relay = true;
            }
        }
    }

    fn reserve_relays(&mut self, now: Instant) {
        if !self.want_relay || self.cfg.peer.as_ref().is_some_and(|p| p.relay == RelayMode::Never) {
            return;
        }
        let candidates: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|r| !self.reservations.values().any(|x| x == *r))
            .filter(|r| self.relay_retry.get(r).is_none_or(|t| *t <= now))
            .copied()
            .collect();
        for relay in candidates {
            let Some(remote) = self
                .conns
                .values()
                .find(|c| c.peer == relay && c.path == Path::Direct)
                .map(|c| without_p2p(&c.remote))
            else {
                continue;
            };
            let addr = remote.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.reservations.insert(id, relay);
                    self.reservation_addr.insert(relay, addr);
                }
                Err(e) => {
                    self.relay_retry.insert(relay, now + RELAY_RETRY);
                    self.emit(Event::Reservation {
                        relay,
                        status: ReservationStatus::Failed,
                        addr: Some(addr),
                        renewal: false,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
    }

    fn schedule_announce(&mut self, after: Duration) {
        if self.cfg.role == Role::Listener {
            let at = Instant::now() + after;
            self.announce_due = Some(self.announce_due.map_or(at, |d| d.min(at)));
        }
    }

    fn announce(&mut self, now: Instant) {
        let Some(p) = &self.cfg.peer else { return };
        if self.cfg.role != Role::Listener || !self.bootstrapped || !self.announce_queries.is_empty() {
            return;
        }
        if self.announce_due.is_none_or(|d| d > now) {
            return;
        }
        let addrs = discovery::publishable(&self.local, self.swarm.external_addresses().cloned());
        if addrs.is_empty() {
            // Nothing reachable yet: wait for an external address (AutoNAT or a reservation).
            self.announce_due = None;
            return;
        }
        let namespace = p.namespace.clone();
        let interval = p.announce_interval;
        let record = kad::Record::new(
            discovery::peer_key(&self.local),
            PeerRecord {
                namespace: namespace.clone(),
                addrs: addrs.clone(),
            }
            .encode(),
        );
        let kad = &mut self.swarm.behaviour_mut().kad;
        match kad.put_record(record, kad::Quorum::One) {
            Ok(q) => {
                self.announce_queries.insert(q);
            }
            Err(e) => tracing::warn!("cannot store peer record: {e}"),
        }
        match kad.start_providing(discovery::namespace_key(&namespace)) {
            Ok(q) => {
                self.announce_queries.insert(q);
            }
            Err(e) => tracing::warn!("cannot provide namespace: {e}"),
        }
        self.announcing = addrs;
        self.announce_failed = false;
        self.announce_due = Some(now + interval);
    }

    fn discover(&mut self, now: Instant) {
        let Some(p) = &self.cfg.peer else { return };
        if self.cfg.role != Role::Dialer || !self.bootstrapped || self.providers_query.is_some() || now < self.discover_due {
            return;
        }
        let key = discovery::namespace_key(&p.namespace);
        self.providers_query = Some(self.swarm.behaviour_mut().kad.get_providers(key));
        let every = if self.known.is_empty() { DISCOVER_FAST } else { DISCOVER_SLOW };
        self.discover_due = now + every;
    }

    fn traffic(&mut self, now: Instant) {
        let Some(t) = self.cfg.traffic.clone() else { return };
        if now >= self.next_send {
            self.next_send = now + t.interval;
            let targets: Vec<PeerId> = self.known.keys().copied().collect();
            for peer in targets {
                let sent = self.sent_to.entry(peer).or_default();
                if t.count != 0 && *sent >= t.count {
                    continue;
                }
                *sent += 1;
                self.outbox.push(peer, t.size, now);
                self.totals.messages_sent += 1;
                self.metrics.messages_sent.inc();
            }
        }
        for a in self.outbox.due(now) {
            let req = MsgRequest {
                id: a.id,
                payload: self.payload.clone(),
            };
            let rid = self.swarm.behaviour_mut().msg.send_request(&a.to, req);
            self.in_flight.insert(rid, a.id);
            self.totals.attempts += 1;
            self.emit(Event::MessageSent {
                to: a.to,
                id: a.id,
                size: a.size,
                attempt: a.attempt,
            });
        }
        for f in self.outbox.expire(now) {
            self.message_failed(f.to, f.id, f.reason, f.attempts);
        }
    }

    fn message_failed(&mut self, to: PeerId, id: u64, reason: String, attempts: u32) {
        self.totals.messages_failed += 1;
        self.metrics.messages_failed.inc();
        self.emit(Event::MessageFailed {
            to,
            id,
            reason,
            attempts,
        });
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    fn publish_status(&mut self) {
        let rt = self.routing_table_size();
        self.metrics.routing_table_size.set(rt as i64);
        self.metrics
            .connected_peers
            .set(self.swarm.connected_peers().count() as i64);
        if let Ok(mut st) = self.shared.status.write() {
            st.bootstrapped = self.bootstrapped;
            st.listen_addrs = self.swarm.listeners().cloned().collect();
            st.external_addrs = self.swarm.external_addresses().cloned().collect();
            st.connections = self
                .conns
                .values()
                .map(|c| ConnectionStatus {
                    peer: c.peer,
                    path: c.path,
                    remote_addr: c.remote.clone(),
                })
                .collect();
            st.routing_table_size = rt;
            st.namespace_peers = self.known.keys().copied().collect();
            st.totals = self.totals.clone();
        }
    }

    // ---------------------------------------------------------------- swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.lib_metrics.record(&event);
        let now = Instant::now();
        match event {
            SwarmEvent::Behaviour(b) => self.on_behaviour(b, now),
            SwarmEvent::NewListenAddr { listener_id, address } => {
                if let Some(relay) = self.reservations.get(&listener_id) {
                    tracing::debug!(%relay, %address, "relayed listen address");
                }
                let loopback_only = self.cfg.common.listen_addrs.iter().all(|ip| ip.is_loopback());
                if self.cfg.role == Role::Monitor
                    && self.cfg.common.external_addrs.is_empty()
                    && !address.iter().any(|p| p == Protocol::P2pCircuit)
                    && (loopback_only || !is_loopback(&address))
                {
                    // A bootstrap node is public by role: serve relay and DHT from the first second.
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(Event::Listening { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::debug!(%address, "listen address expired");
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some(relay) = self.reservations.remove(&listener_id) {
                    let error = reason.err().map(|e| e.to_string());
                    let addr = self.reservation_addr.remove(&relay);
                    self.relay_retry.insert(relay, now + RELAY_RETRY);
                    let status = if self.reserved.remove(&relay) {
                        ReservationStatus::Lost
                    } else {
                        ReservationStatus::Failed
                    };
                    self.emit(Event::Reservation {
                        relay,
                        status,
                        addr,
                        renewal: false,
                        error,
                    });
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(relay) = self.reservations.get(&listener_id).copied() {
                    self.emit(Event::Reservation {
                        relay,
                        status: ReservationStatus::Failed,
                        addr: self.reservation_addr.get(&relay).cloned(),
                        renewal: false,
                        error: Some(error.to_string()),
                    });
                } else {
                    self.emit(Event::Error {
                        context: "listener".into(),
                        message: error.to_string(),
                    });
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                if !self.confirmed.insert(address.clone()) {
                    return; // AutoNAT re-confirms on every refresh: not news.
                }
                self.emit(Event::ExternalAddr {
                    addr: address.clone(),
                    status: AddrStatus::Confirmed,
                });
                self.update_kad_mode();
                self.schedule_announce(ANNOUNCE_DEBOUNCE);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.confirmed.remove(&address);
                self.emit(Event::ExternalAddr {
                    addr: address,
                    status: AddrStatus::Expired,
                });
                self.update_kad_mode();
                self.schedule_announce(ANNOUNCE_DEBOUNCE);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get(), now),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                let path = path_of(&endpoint);
                self.conns.remove(&connection_id);
                if num_established == 0 {
                    self.relayed_since.remove(&peer_id);
                }
                self.emit(Event::Disconnected {
                    peer: peer_id,
                    path,
                    remote_addr: remote_of(&endpoint),
                    connections: num_established,
                    cause: cause.map(|c| c.to_string()),
                });
                let boot_lost = self
                    .boots
                    .iter()
                    .position(|b| b.peer == Some(peer_id) && b.connected);
                if let (Some(i), 0) = (boot_lost, num_established) {
                    self.boots[i].backoff = BOOT_BACKOFF_MIN;
                    self.boot_failed(i, "connection closed".into(), now);
                }
                if num_established == 0 {
                    self.relays.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.totals.connection_failures += 1;
                self.metrics.connection_failures.inc();
                let boot = self.boots.iter().position(|b| b.dialing == Some(connection_id));
                self.emit(Event::ConnectionError {
                    peer: peer_id,
                    direction: Direction::Outbound,
                    remote_addr: boot.map(|i| self.boots[i].addr.clone()),
                    error: error.to_string(),
                });
                if let Some(i) = boot {
                    self.boot_failed(i, error.to_string(), now);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                self.totals.connection_failures += 1;
                self.metrics.connection_failures.inc();
                tracing::warn!(%send_back_addr, "incoming connection refused: {error}");
                self.emit(Event::ConnectionError {
                    peer: None,
                    direction: Direction::Inbound,
                    remote_addr: Some(send_back_addr),
                    error: error.to_string(),
                });
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint, n: u32, now: Instant) {
        let path = path_of(endpoint);
        let remote = remote_of(endpoint);
        self.totals.connections_established += 1;
        self.conns.insert(
            id,
            Conn {
                peer,
                path,
                remote: remote.clone(),
            },
        );
        self.emit(Event::Connected {
            peer,
            path,
            remote_addr: remote,
            direction: if endpoint.is_dialer() { Direction::Outbound } else { Direction::Inbound },
            connections: n,
        });
        if let Some(i) = self.boots.iter().position(|b| b.dialing == Some(id) || (b.peer == Some(peer) && !b.connected)) {
            let b = &mut self.boots[i];
            b.peer = Some(peer);
            b.dialing = None;
            b.connected = true;
            b.backoff = BOOT_BACKOFF_MIN;
            b.next_try = None;
            self.rejoin = true;
            // AutoNAT asks the bootstrap nodes only: a neighbour on the same LAN would confirm a
            // private address that nobody outside can dial (see swarm.rs, `use_connected`).
            let addr = remote_of(endpoint);
            self.swarm.behaviour_mut().autonat.add_server(peer, Some(addr));
        }
        match path {
            Path::Relayed => {
                self.relayed_since.entry(peer).or_insert(now);
            }
            Path::Direct => {
                // A direct connection replaces relayed ones: messages must take the direct path.
                let relayed: Vec<ConnectionId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.peer == peer && c.path == Path::Relayed)
                    .map(|(cid, _)| *cid)
                    .collect();
                for cid in relayed {
                    self.swarm.close_connection(cid);
                }
            }
        }
    }

    fn update_kad_mode(&mut self) {
        if self.cfg.role == Role::Monitor {
            return;
        }
        let public = self
            .swarm
            .external_addresses()
            .any(|a| Path::of([a]) == Path::Direct);
        let mode = if public { kad::Mode::Server } else { kad::Mode::Client };
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
    }

    fn on_behaviour(&mut self, event: BehaviourEvent, now: Instant) {
        match event {
            BehaviourEvent::Identify(e) => {
                self.lib_metrics.record(&e);
                if let identify::Event::Received { peer_id, info, connection_id } = e {
                    self.on_identify(peer_id, connection_id, info);
                }
            }
            BehaviourEvent::Kad(e) => {
                self.lib_metrics.record(&e);
                self.on_kad(e);
            }
            BehaviourEvent::Ping(e) => self.lib_metrics.record(&e),
            BehaviourEvent::Autonat(e) => self.on_autonat(e),
            BehaviourEvent::RelayServer(e) => {
                self.lib_metrics.record(&e);
                tracing::debug!("relay: {e:?}");
            }
            BehaviourEvent::RelayClient(e) => self.on_relay_client(e),
            BehaviourEvent::Dcutr(e) => {
                self.lib_metrics.record(&e);
                self.on_dcutr(e, now);
            }
            BehaviourEvent::Msg(e) => self.on_msg(e, now),
            BehaviourEvent::Upnp(e) => self.on_upnp(e, now),
            BehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_identify(&mut self, peer: PeerId, conn: ConnectionId, info: identify::Info) {
        let via_loopback = self.conns.get(&conn).is_some_and(|c| is_loopback(&c.remote));
        let kad_peer = info.protocols.contains(&sw::KAD_PROTOCOL);
        let hop = info.protocols.iter().any(|p| p.as_ref() == relay::HOP_PROTOCOL_NAME.as_ref());
        if kad_peer {
            for a in &info.listen_addrs {
                // Only addresses others can use: never unspecified ones, loopback ones only when
                // we reached the peer over loopback ourselves, never relayed ones.
                if is_unspecified(a) || (is_loopback(a) && !via_loopback) || Path::of([a]) == Path::Relayed {
                    continue;
                }
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
        }
        if hop && self.is_boot_peer(&peer) {
            self.relays.insert(peer);
        }
    }

    fn on_kad(&mut self, e: kad::Event) {
        let kad::Event::OutboundQueryProgressed { id, result, step, .. } = e else {
            return;
        };
        match result {
            kad::QueryResult::Bootstrap(r) => {
                if Some(id) != self.bootstrap_query || !step.last {
                    return;
                }
                self.bootstrap_query = None;
                match r {
                    Ok(_) => self.on_bootstrapped(),
                    Err(e) => {
                        self.rejoin = true;
                        self.emit(Event::Error {
                            context: "bootstrap".into(),
                            message: e.to_string(),
                        })
                    }
                }
            }
            kad::QueryResult::PutRecord(r) => self.on_announce_step(id, r.err().map(|e| e.to_string())),
            kad::QueryResult::StartProviding(r) => self.on_announce_step(id, r.err().map(|e| e.to_string())),
            kad::QueryResult::GetProviders(r) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    for p in providers {
                        if p != self.local && !self.record_queries.values().any(|x| *x == p) {
                            let q = self.swarm.behaviour_mut().kad.get_record(discovery::peer_key(&p));
                            self.record_queries.insert(q, p);
                        }
                    }
                }
                if step.last && Some(id) == self.providers_query {
                    self.providers_query = None;
                }
            }
            kad::QueryResult::GetRecord(r) => {
                let Some(peer) = self.record_queries.get(&id).copied() else { return };
                if step.last {
                    self.record_queries.remove(&id);
                }
                if let Ok(kad::GetRecordOk::FoundRecord(found)) = r {
                    self.on_peer_record(peer, found.record);
                }
            }
            _ => {}
        }
    }

    fn on_bootstrapped(&mut self) {
        let first = !self.bootstrapped;
        self.bootstrapped = true;
        self.shared.healthy.store(true, Ordering::Relaxed);
        let peer = self
            .boots
            .iter()
            .find(|b| b.connected)
            .and_then(|b| b.peer)
            .unwrap_or(self.local);
        let routing_table = self.routing_table_size();
        self.emit(Event::Bootstrapped { peer, routing_table });
        if first {
            self.schedule_announce(Duration::ZERO);
            self.discover_due = Instant::now();
        }
    }

    fn on_announce_step(&mut self, id: kad::QueryId, error: Option<String>) {
        if !self.announce_queries.remove(&id) {
            return;
        }
        if let Some(message) = error {
            self.announce_failed = true;
            self.emit(Event::Error {
                context: "announce".into(),
                message,
            });
        }
        if self.announce_queries.is_empty() {
            if self.announce_failed {
                self.schedule_announce(Duration::from_secs(2));
            } else if let Some(p) = &self.cfg.peer {
                self.emit(Event::Announced {
                    namespace: p.namespace.clone(),
                    addrs: self.announcing.clone(),
                });
            }
        }
    }

    fn on_peer_record(&mut self, peer: PeerId, record: kad::Record) {
        let Some(p) = &self.cfg.peer else { return };
        let rec = match PeerRecord::decode(&peer, record.publisher, &record.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, "ignoring peer record: {e}");
                return;
            }
        };
        if rec.namespace != p.namespace || rec.addrs.is_empty() {
            return;
        }
        let namespace = p.namespace.clone();
        if self.known.get(&peer) != Some(&rec.addrs) {
            for a in &rec.addrs {
                self.swarm.add_peer_address(peer, a.clone());
            }
            self.emit(Event::Discovered {
                peer,
                namespace,
                addrs: rec.addrs.clone(),
            });
            self.known.insert(peer, rec.addrs.clone());
        }
        if !self.swarm.is_connected(&peer) {
            let opts = DialOpts::peer_id(peer)
                .addresses(rec.addrs)
                .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, "dial: {e}");
            }
        }
    }

    fn on_autonat(&mut self, e: autonat::v1::Event) {
        let autonat::v1::Event::StatusChanged { new, .. } = e else { return };
        let Some(p) = &self.cfg.peer else { return };
        if self.reachability == Reachability::Private && self.want_relay && p.relay == RelayMode::Always {
            return;
        }
        let (status, addr) = match new {
            autonat::v1::NatStatus::Public(a) => (Reachability::Public, Some(a)),
            autonat::v1::NatStatus::Private => (Reachability::Private, None),
            autonat::v1::NatStatus::Unknown => (Reachability::Unknown, None),
        };
        let auto = p.relay == RelayMode::Auto;
        self.reachability = status;
        if status == Reachability::Private && auto {
            self.request_relay(Instant::now());
        }
        self.emit(Event::Reachability {
            status,
            source: ReachabilitySource::Autonat,
            addr,
        });
    }

    fn on_upnp(&mut self, e: upnp::Event, now: Instant) {
        let mut ev = UpnpEvent::new(UpnpStatus::Failed);
        match e {
            upnp::Event::GatewayFound { gateway, external_ip } => {
                tracing::info!(%gateway, %external_ip, "UPnP gateway found");
                ev.status = UpnpStatus::GatewayFound;
                ev.gateway = Some(gateway);
                ev.external_ip = Some(external_ip);
            }
            upnp::Event::NewExternalAddr { local_addr, external_addr } => {
                tracing::info!(%local_addr, %external_addr, "UPnP mapping");
                if !matches!(self.upnp, UpnpState::Mapped(_)) {
                    self.upnp = UpnpState::Mapped(now);
                }
                // The swarm confirms the address itself; AutoNAT is asked to check it now
                // rather than at its next refresh.
                if self.cfg.peer.is_some() {
                    self.swarm.behaviour_mut().autonat.probe_address(external_addr.clone());
                }
                ev.status = UpnpStatus::Mapped;
                ev.addr = Some(external_addr);
                ev.local_addr = Some(local_addr);
            }
            upnp::Event::ExpiredExternalAddr { local_addr, external_addr, error } => {
                tracing::warn!(%local_addr, %external_addr, "UPnP mapping lost: {error}");
                ev.status = UpnpStatus::Expired;
                ev.addr = Some(external_addr);
                ev.local_addr = Some(local_addr);
                ev.error = Some(error);
            }
            upnp::Event::MapFailed { local_addr, error, attempt, retry_in } => {
                tracing::warn!(%local_addr, attempt, "UPnP mapping failed: {error}");
                if self.upnp == UpnpState::Pending {
                    self.upnp = UpnpState::Failed;
                }
                ev.local_addr = Some(local_addr);
                ev.error = Some(error);
                ev.attempt = Some(attempt);
                ev.retry_in_ms = retry_in.map(ms);
            }
            upnp::Event::GatewayNotFound { error } => {
                tracing::warn!("no UPnP gateway: {error}");
                if self.upnp == UpnpState::Pending {
                    self.upnp = UpnpState::Failed;
                }
                ev.status = UpnpStatus::GatewayNotFound;
                ev.error = Some(error);
            }
            upnp::Event::NonRoutableGateway { gateway, external_ip } => {
                tracing::warn!(%gateway, %external_ip, "UPnP gateway is not on the internet: no mapping");
                if self.upnp == UpnpState::Pending {
                    self.upnp = UpnpState::Failed;
                }
                ev.status = UpnpStatus::NonRoutableGateway;
                ev.gateway = Some(gateway);
                ev.external_ip = Some(external_ip);
            }
        }
        self.emit(ev.into_event());
    }

    fn on_relay_client(&mut self, e: relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } = e {
            if renewal || !self.reserved.insert(relay_peer_id) {
                tracing::debug!(relay = %relay_peer_id, "reservation renewed");
                return;
            }
            self.emit(Event::Reservation {
                relay: relay_peer_id,
                status: ReservationStatus::Accepted,
                addr: self.reservation_addr.get(&relay_peer_id).cloned(),
                renewal,
                error: None,
            });
        }
    }

    fn on_dcutr(&mut self, e: dcutr::Event, now: Instant) {
        let ok = e.result.is_ok();
        if ok {
            self.totals.hole_punch_ok += 1;
        } else {
            self.totals.hole_punch_failed += 1;
        }
        self.metrics.hole_punch(ok);
        let since = self.relayed_since.get(&e.remote_peer_id).map(|t| ms(now - *t));
        self.emit(Event::HolePunch {
            peer: e.remote_peer_id,
            ok,
            error: e.result.err().map(|e| e.to_string()),
            ms: since,
        });
    }

    fn on_msg(&mut self, e: request_response::Event<MsgRequest, MsgAck>, now: Instant) {
        match e {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => {
                let path = self.conns.get(&connection_id).map_or(Path::Direct, |c| c.path);
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let duplicate = self.inbox.receive(peer, request.id);
                        if duplicate {
                            self.totals.duplicates += 1;
                            self.metrics.duplicates.inc();
                        } else {
                            self.totals.messages_received += 1;
                            self.metrics.messages_received.inc();
                        }
                        self.emit(Event::MessageReceived {
                            from: peer,
                            id: request.id,
                            size: request.payload.len(),
                            path,
                            duplicate,
                        });
                        let ack = MsgAck {
                            id: request.id,
                            duplicate,
                        };
                        if self.swarm.behaviour_mut().msg.send_response(channel, ack).is_err() {
                            tracing::debug!(%peer, id = request.id, "ack not sent: stream closed");
                        }
                    }
                    request_response::Message::Response { request_id, response } => {
                        let Some(id) = self.in_flight.remove(&request_id) else { return };
                        if response.id != id {
                            tracing::warn!(%peer, "ack for {} on request {id}", response.id);
                        }
                        match self.outbox.ack(id, now) {
                            Some(a) => {
                                let rtt = a.rtt.as_secs_f64();
                                self.totals.messages_acked += 1;
                                self.metrics.messages_acked.inc();
                                self.metrics.observe_rtt(path, rtt);
                                self.emit(Event::MessageAcked {
                                    to: a.to,
                                    id: a.id,
                                    rtt_ms: (rtt * 1e6).round() / 1e3,
                                    path,
                                    attempts: a.attempts,
                                });
                            }
                            None => tracing::debug!(%peer, id, "late ack for a settled message"),
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let Some(id) = self.in_flight.remove(&request_id) else { return };
                tracing::debug!(%peer, id, "attempt failed: {error}");
                if let Some(f) = self.outbox.fail(id, &error.to_string(), now) {
                    self.message_failed(f.to, f.id, f.reason, f.attempts);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound message failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// See [`Node::relay_held`]: `wait` is `--reachability-timeout`.
fn upnp_holds_relay(upnp: UpnpState, reachability: Reachability, started: Instant, wait: Duration, now: Instant) -> bool {
    match upnp {
        UpnpState::Off | UpnpState::Failed => false,
        UpnpState::Pending => now < started + wait,
        UpnpState::Mapped(at) => reachability != Reachability::Public && now < at + wait,
    }
}

/// The fields of an [`Event::Upnp`], filled per status.
struct UpnpEvent {
    status: UpnpStatus,
    addr: Option<Multiaddr>,
    local_addr: Option<Multiaddr>,
    gateway: Option<std::net::SocketAddr>,
    external_ip: Option<std::net::IpAddr>,
    error: Option<String>,
    attempt: Option<u32>,
    retry_in_ms: Option<u64>,
}

impl UpnpEvent {
    fn new(status: UpnpStatus) -> Self {
        UpnpEvent {
            status,
            addr: None,
            local_addr: None,
            gateway: None,
            external_ip: None,
            error: None,
            attempt: None,
            retry_in_ms: None,
        }
    }

    fn into_event(self) -> Event {
        Event::Upnp {
            status: self.status,
            addr: self.addr,
            local_addr: self.local_addr,
            gateway: self.gateway,
            external_ip: self.external_ip,
            error: self.error,
            attempt: self.attempt,
            retry_in_ms: self.retry_in_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upnp_holds_relay_reservations_only_while_it_may_still_help() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(10);
        let s = |n: u64| t0 + Duration::from_secs(n);
        let (private, public) = (Reachability::Private, Reachability::Public);
        // Without --upnp, or once it failed: never.
        assert!(!upnp_holds_relay(UpnpState::Off, private, t0, wait, t0));
        assert!(!upnp_holds_relay(UpnpState::Failed, private, t0, wait, s(1)));
        // Searching: until --reachability-timeout from start.
        assert!(upnp_holds_relay(UpnpState::Pending, private, t0, wait, s(9)));
        assert!(!upnp_holds_relay(UpnpState::Pending, private, t0, wait, s(10)));
        // Mapped: until AutoNAT says public, at most --reachability-timeout after the mapping.
        let mapped = UpnpState::Mapped(s(8));
        assert!(upnp_holds_relay(mapped, private, t0, wait, s(17)));
        assert!(!upnp_holds_relay(mapped, private, t0, wait, s(18)));
        assert!(!upnp_holds_relay(mapped, public, t0, wait, s(9)));
    }
}
