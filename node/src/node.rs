//! The event loop. It decides nothing: it turns swarm events into inputs of the state machines in
//! [`crate::state`], turns their actions into swarm calls and events, and sleeps until the earliest
//! deadline any of them asked for (no fixed tick: an idle node does not wake).
//!
//! What each role runs:
//! - every role: [`Bootstrap`] (dialing the bootstrap nodes, (re)joining the DHT), Kademlia fed by
//!   identify, the event stream, `/metrics` `/health` `/status`.
//! - monitor: Kademlia server, relay server, AutoNAT server; its listen addresses (or
//!   `--external-addr`) are confirmed external from the start, so relay and DHT serve at once.
//! - listener and dialer: [`Reach`] (reachability, relay reservations), [`Lan`] (direct
//!   connections on a shared LAN); a direct connection to a peer replaces relayed ones.
//! - listener: [`Announcer`]. Dialer: [`Discoverer`] and [`Traffic`].

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    autonat,
    core::ConnectedPoint,
    dcutr, identify,
    identity::Keypair,
    kad,
    metrics::{Metrics as Libp2pMetrics, Recorder},
    multiaddr::Protocol,
    relay,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, SwarmEvent,
    },
    Multiaddr, PeerId, Swarm,
};
use prometheus_client::registry::Registry;

use crate::{
    config::{Config, Role},
    discovery::{self, PeerRecord},
    events::{
        AddrStatus, Direction, Emitter, Event, IpFamily, Path, Reachability, Sink, Totals,
        UpnpStatus,
    },
    http::{self, ConnectionStatus, Metrics, Shared},
    messaging::{journal, Inbox, RetryPolicy},
    state::{
        announce::{self, Announcer},
        bootstrap::{self, Bootstrap},
        discover::{self, Discoverer},
        failover::{self, Failover},
        lan::Lan,
        reach::{self, Reach, Upnp},
        refresh::{self, Refresh},
        traffic::{self, Traffic},
    },
    swarm::{self as sw, msg, upnp, Behaviour, BehaviourEvent},
    RunError,
};

/// `/status` and the gauges are refreshed at most this often (and only when something happened).
const STATUS_EVERY: Duration = Duration::from_millis(500);

struct Conn {
    peer: PeerId,
    path: Path,
    remote: Multiaddr,
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

/// Swarm events taken in at shutdown, at most (those already ready; see [`Node::run`]).
const SHUTDOWN_DRAIN: usize = 10_000;

/// A running node. Build with [`Node::start`], drive with [`Node::run`].
pub struct Node {
    cfg: Config,
    role: Role,
    key: Keypair,
    emitter: Emitter,
    swarm: Swarm<Behaviour>,
    local: PeerId,
    started: Instant,
    totals: Totals,
    shared: Arc<Shared>,
    metrics: Metrics,
    lib_metrics: Libp2pMetrics,

    boot: Bootstrap,
    reach: Option<Reach>,
    announcer: Option<Announcer>,
    discoverer: Option<Discoverer>,
    traffic: Option<Traffic>,
    lan: Lan,
    failover: Failover,
    /// Each discovered peer's relayed addresses (from its record): where a fallback dials.
    relay_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// A message was written to a stream in this pass of the loop (see [`Node::run`]).
    sent: bool,
    refresh: Refresh<kad::QueryId>,

    /// The Kademlia bootstrap this node started to (re)join, and whether its outcome was reported.
    join_query: Option<(kad::QueryId, bool)>,
    bootstrapped: bool,
    confirmed: HashSet<Multiaddr>,
    conns: HashMap<ConnectionId, Conn>,
    relayed_since: HashMap<PeerId, Instant>,
    announce_queries: HashMap<kad::QueryId, u64>,
    provider_queries: HashSet<kad::QueryId>,
    record_queries: HashMap<kad::QueryId, PeerId>,
    inbox: Inbox<PeerId>,
    /// `--inbox-file`: the inbox on disk, for a restarted node.
    journal: Option<Journal>,
    payload: bytes::Bytes,
    status_due: Option<Instant>,
    /// The next `resources` event (`--resources-interval`; never when it is 0).
    resources_due: Option<Instant>,
    /// The next heap trim (see heap.rs).
    trim_due: Instant,
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
        let mut swarm = sw::build(&cfg, key.clone(), psk, &mut registry)?;
        let lib_metrics = Libp2pMetrics::new(&mut registry);
        let metrics = Metrics::register(&mut registry);
        let shared = Shared::new(registry);
        let emitter = Emitter::with_sink(cfg.name(), sink);

        emitter.emit(Event::Started {
            peer_id: local,
            role: cfg.role().as_str().to_string(),
            namespace: cfg.peer().map(|p| p.namespace.clone()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        });

        let started = Instant::now();
        match Self::open(
            &cfg,
            &mut swarm,
            psk.is_some(),
            metrics_addr,
            shared.clone(),
        )
        .await
        {
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
        Self::assemble(
            cfg,
            key,
            emitter,
            swarm,
            shared,
            metrics,
            lib_metrics,
            started,
        )
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
        let no_direct = cfg.peer().is_some_and(|p| p.no_direct);
        if !no_direct && cfg.common.transport.memory() {
            let a =
                Multiaddr::empty().with(Protocol::Memory(u64::from(cfg.common.port.unwrap_or(0))));
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
                    addrs.push(
                        base.clone()
                            .with(Protocol::Udp(port))
                            .with(Protocol::QuicV1),
                    );
                }
                for a in addrs {
                    swarm
                        .listen_on(a.clone())
                        .map_err(|e| RunError::flag("--listen-addr/--port", a.to_string(), e))?;
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
        key: Keypair,
        emitter: Emitter,
        mut swarm: Swarm<Behaviour>,
        shared: Arc<Shared>,
        metrics: Metrics,
        lib_metrics: Libp2pMetrics,
        now: Instant,
    ) -> Result<Self, RunError> {
        let role = cfg.role();
        let local = key.public().to_peer_id();
        let mode = if role == Role::Monitor {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        swarm.behaviour_mut().kad.set_mode(Some(mode));
        for a in &cfg.common.external_addrs {
            swarm.add_external_address(a.clone());
            emitter.emit(Event::ExternalAddr {
                addr: a.clone(),
                status: AddrStatus::Confirmed,
            });
        }
        let reach = cfg.peer().map(|p| {
            let r = Reach::new(
                reach::Policy {
                    relay: p.relay,
                    no_direct: p.no_direct,
                    external_addr: !cfg.common.external_addrs.is_empty(),
                    timeout: p.reachability_timeout,
                    upnp: cfg.common.upnp,
                },
                now,
            );
            if let Some(e) = r.flag_event(cfg.common.external_addrs.first().cloned()) {
                emitter.emit(e);
            }
            r
        });
        let seed = u64::from_le_bytes(local.to_bytes()[2..10].try_into().unwrap_or([7; 8]));
        let announcer = cfg.peer().filter(|_| role == Role::Listener).map(|p| {
            let mut a = Announcer::new(p.announce_interval, now, seed);
            if reach
                .as_ref()
                .is_some_and(|r| r.reachability() != Reachability::Unknown)
            {
                a.verdict();
            }
            a
        });
        let discoverer = (role == Role::Dialer).then(|| Discoverer::new(seed));
        let traffic = cfg.traffic().map(|t| {
            let plan = traffic::Plan {
                count: t.count,
                interval: t.interval,
                size: t.size,
            };
            let policy = RetryPolicy {
                deadline: t.deadline,
                ..RetryPolicy::default()
            };
            // Ids start from the clock (µs since 1970), so a dialer restarted with the same
            // identity never reuses an id its listeners remember.
            Traffic::new(plan, policy, first_message_id())
        });
        let payload = bytes::Bytes::from(vec![0u8; cfg.traffic().map_or(0, |t| t.size)]);
        let (inbox, journal) = open_inbox(cfg.peer().and_then(|p| p.inbox_file.clone()))?;
        let mut node = Node {
            role,
            key,
            emitter,
            swarm,
            local,
            started: now,
            totals: Totals::default(),
            shared,
            metrics,
            lib_metrics,
            boot: Bootstrap::new(&cfg.common.bootstrap, now),
            reach,
            announcer,
            discoverer,
            traffic,
            lan: Lan::default(),
            failover: Failover::new(),
            relay_addrs: HashMap::new(),
            sent: false,
            refresh: Refresh::new(refresh::INTERVAL, seed, now),
            join_query: None,
            bootstrapped: false,
            confirmed: cfg.common.external_addrs.iter().cloned().collect(),
            conns: HashMap::new(),
            relayed_since: HashMap::new(),
            announce_queries: HashMap::new(),
            provider_queries: HashSet::new(),
            record_queries: HashMap::new(),
            inbox,
            journal,
            payload,
            status_due: Some(now),
            resources_due: (!cfg.common.resources_interval.is_zero()).then_some(now),
            trim_due: now + crate::heap::TRIM_EVERY,
            cfg,
        };
        {
            let mut st = node
                .shared
                .status
                .write()
                .map_err(|_| RunError::Runtime("status lock".into()))?;
            st.name = node.emitter.node().to_string();
            st.role = role.as_str().to_string();
            st.peer_id = Some(local);
            st.namespace = node.cfg.peer().map(|p| p.namespace.clone());
        }
        // `--external-addr`: publishable from the start.
        node.external_addrs_changed(now);
        Ok(node)
    }

    /// Runs until `shutdown` resolves, takes in the swarm events already ready (at most
    /// [`SHUTDOWN_DRAIN`]), then emits `stopped` and returns the totals.
    pub async fn run(mut self, shutdown: impl Future<Output = String>) -> Result<Totals, RunError> {
        tokio::pin!(shutdown);
        let far = || tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        self.emitter.hold();
        let reason = loop {
            self.drive(Instant::now());
            let wake = self
                .next_deadline()
                .map_or_else(far, tokio::time::Instant::from_std);
            sleep.as_mut().reset(wake);
            if std::mem::take(&mut self.sent) {
                // The messages just written reach the socket when their connection tasks run:
                // let them run before this loop's own work (the swarm's poll, the event lines).
                tokio::task::yield_now().await;
            }
            self.emitter.flush();
            tokio::select! {
                reason = &mut shutdown => break reason,
                event = self.swarm.select_next_some() => self.on_swarm_event(event, Instant::now()),
                () = &mut sleep => {}
            }
        };
        // Events already on their way when the shutdown came: a message's connection handler acks
        // it before this loop counts it (and journals it), so a `Received` still queued would be
        // acked to the sender and missing from our totals and inbox file (the loopback test
        // `messaging_goes_on_after_the_bootstrap_node_dies`: 30 acked, 29 counted, once). Only
        // what is ready now, and a bounded number of them: a stop never waits on the network.
        for _ in 0..SHUTDOWN_DRAIN {
            match futures::FutureExt::now_or_never(self.swarm.next()) {
                Some(Some(event)) => self.on_swarm_event(event, Instant::now()),
                _ => break,
            }
        }
        self.publish_status();
        self.emit(Event::Stopped {
            reason,
            uptime_ms: ms(self.started.elapsed()),
            totals: self.totals.clone(),
        });
        self.emitter.flush();
        Ok(self.totals)
    }

    fn emit(&self, e: Event) {
        self.emitter.emit(e);
    }

    // ---------------------------------------------------------------- timers and actions

    fn next_deadline(&self) -> Option<Instant> {
        crate::state::earliest([
            self.boot.poll_timeout(),
            self.reach.as_ref().and_then(Reach::poll_timeout),
            self.announcer.as_ref().and_then(Announcer::poll_timeout),
            self.discoverer.as_ref().and_then(Discoverer::poll_timeout),
            self.traffic.as_ref().and_then(Traffic::poll_timeout),
            self.failover.poll_timeout(),
            self.refresh.poll_timeout(),
            self.status_due,
            self.resources_due,
            Some(self.trim_due),
        ])
    }

    /// Wakes every machine whose deadline passed, then applies actions until none is left.
    fn drive(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.boot.poll_timeout()) {
            self.boot.handle_timeout(now);
        }
        if let Some(r) = self.reach.as_mut().filter(|r| due(r.poll_timeout())) {
            r.handle_timeout(now);
        }
        if let Some(a) = self.announcer.as_mut().filter(|a| due(a.poll_timeout())) {
            a.handle_timeout(now);
        }
        if let Some(d) = self.discoverer.as_mut().filter(|d| due(d.poll_timeout())) {
            d.handle_timeout(now);
        }
        if let Some(t) = self.traffic.as_mut().filter(|t| due(t.poll_timeout())) {
            t.handle_timeout(now);
        }
        if due(self.failover.poll_timeout()) {
            self.failover.handle_timeout(now);
        }
        if due(self.refresh.poll_timeout()) {
            self.refresh.handle_timeout(now);
        }
        // Actions feed inputs back (a refused dial, a join): loop until all are quiet.
        loop {
            let mut any = false;
            while let Some(a) = self.boot.poll_action() {
                any = true;
                self.on_bootstrap_action(a, now);
            }
            while let Some(a) = self.reach.as_mut().and_then(Reach::poll_action) {
                any = true;
                self.on_reach_action(a, now);
            }
            while let Some(a) = self.announcer.as_mut().and_then(Announcer::poll_action) {
                any = true;
                self.on_announce_action(a, now);
            }
            while let Some(e) = self.announcer.as_mut().and_then(Announcer::poll_error) {
                self.emit(Event::Error {
                    context: "announce".into(),
                    message: e,
                });
            }
            while let Some(a) = self.discoverer.as_mut().and_then(Discoverer::poll_action) {
                any = true;
                self.on_discover_action(a, now);
            }
            while let Some(a) = self.traffic.as_mut().and_then(Traffic::poll_action) {
                any = true;
                self.on_traffic_action(a);
            }
            while let Some(a) = self.failover.poll_action() {
                any = true;
                self.on_failover_action(a);
            }
            while let Some(refresh::Action::FullRefresh) = self.refresh.poll_action() {
                // No peer known yet: nothing to refresh; the next interval will try again.
                if let Ok(q) = self.swarm.behaviour_mut().kad.bootstrap() {
                    self.refresh.started_full(q);
                }
            }
            if !any {
                break;
            }
        }
        self.update_health();
        if self.resources_due.is_some_and(|t| t <= now) {
            self.resources_due = Some(now + self.cfg.common.resources_interval);
            // each sample right after a trim: samples at one point of the allocator's cycle
            // are comparable (see heap.rs)
            self.trim_heap(now);
            self.emit_resources();
        }
        if self.trim_due <= now {
            self.trim_heap(now);
        }
        if self.status_due.is_some_and(|t| t <= now) {
            self.status_due = None;
            self.publish_status();
        }
    }

    fn on_bootstrap_action(&mut self, a: bootstrap::Action, now: Instant) {
        match a {
            bootstrap::Action::Dial { index, addr, peer } => {
                let opts = match peer {
                    // Not `NotDialing`: Kademlia or a request may be dialing the same peer, and
                    // that must not count as a failure of ours.
                    Some(p) => DialOpts::peer_id(p)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::Disconnected)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
                };
                let conn = opts.connection_id();
                tracing::debug!(%addr, "dialing bootstrap node");
                match self.swarm.dial(opts) {
                    Ok(()) => self.boot.dial_started(index, conn),
                    Err(e) => self.boot.dial_refused(index, e.to_string(), now),
                }
            }
            bootstrap::Action::Retry {
                addr,
                error,
                retry_in,
            } => {
                tracing::warn!(%addr, %error, "bootstrap node unreachable; retrying in {retry_in:?}");
                self.emit(Event::BootstrapRetry {
                    addr,
                    error,
                    retry_in_ms: ms(retry_in),
                });
            }
            bootstrap::Action::Connected { peer, addr } => {
                // Held open, so that a close means the bootstrap node went (see swarm/keep.rs).
                self.swarm.behaviour_mut().keep.keep(peer);
                // AutoNAT asks the bootstrap nodes only: a neighbour on the same LAN would confirm
                // a private address that nobody outside can dial (see swarm.rs, `use_connected`).
                // A monitor is public by role, and a peer whose command line decided its
                // reachability has nothing to learn: neither asks for dial-backs.
                if self.reach.as_ref().is_some_and(Reach::wants_probes) {
                    self.swarm
                        .behaviour_mut()
                        .autonat
                        .add_server(peer, Some(addr));
                }
            }
            bootstrap::Action::IdentityChanged { addr, old, new } => {
                tracing::warn!(%addr, %old, %new, "bootstrap node has a new identity");
                self.swarm.behaviour_mut().kad.remove_peer(&old);
                self.swarm.behaviour_mut().keep.release(&old);
                if let Some(r) = &mut self.reach {
                    r.relay_gone(&old);
                }
                self.emit(Event::BootstrapChanged { addr, old, new });
            }
            bootstrap::Action::Join { rejoin } => {
                // A join still running (its bucket refreshes can take long) was started before
                // this (re)connection: end it, so this join reports and re-announces.
                if let Some((q, _)) = self.join_query.take() {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&q) {
                        q.finish();
                    }
                }
                match self.swarm.behaviour_mut().kad.bootstrap() {
                    Ok(q) => {
                        self.join_query = Some((q, false));
                        // Announce and look up at once, beside the self-lookup: the bootstrap node
                        // is in the routing table, and each of those queries walks the DHT on its
                        // own. Waiting for the self-lookup cost seconds whenever the bootstrap
                        // node's table held dead peers (each one a dial timeout).
                        if let Some(r) = &mut self.reach {
                            r.joined(now);
                        }
                        if let Some(a) = &mut self.announcer {
                            a.joined(now);
                        }
                        if let Some(d) = &mut self.discoverer {
                            d.joined(now);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(rejoin, "cannot join yet: {e}");
                        self.boot.join_failed(now);
                    }
                }
            }
            bootstrap::Action::Offline => {
                tracing::warn!("every bootstrap node is unreachable");
                if let Some(a) = &mut self.announcer {
                    a.offline();
                }
                if let Some(d) = &mut self.discoverer {
                    d.offline();
                }
            }
        }
    }

    fn on_reach_action(&mut self, a: reach::Action, now: Instant) {
        let Some(r) = &mut self.reach else { return };
        match a {
            reach::Action::Reserve { relay, addr } => match self.swarm.listen_on(addr) {
                Ok(id) => r.listening(relay, id),
                Err(e) => r.listen_failed(relay, e.to_string(), now),
            },
            reach::Action::Release { listener } => {
                tracing::info!("public: releasing a relay reservation");
                self.swarm.remove_listener(listener);
            }
            reach::Action::Emit(e) => {
                if matches!(e, Event::Reachability { .. }) {
                    if let Some(a) = &mut self.announcer {
                        a.verdict();
                    }
                }
                self.emit(e);
            }
        }
    }

    fn on_announce_action(&mut self, a: announce::Action, now: Instant) {
        let Some(ns) = self.cfg.peer().map(|p| p.namespace.clone()) else {
            return;
        };
        match a {
            announce::Action::Announce { round, addrs } => {
                let value = PeerRecord {
                    namespace: ns.clone(),
                    addrs,
                }
                .sign(&self.key);
                let record = kad::Record::new(discovery::peer_key(&self.local), value);
                let kad = &mut self.swarm.behaviour_mut().kad;
                let put = kad
                    .put_record(record, kad::Quorum::One)
                    .map_err(|e| e.to_string());
                let provide = kad
                    .start_providing(discovery::namespace_key(&ns))
                    .map_err(|e| e.to_string());
                for q in [put, provide] {
                    match q {
                        Ok(q) => {
                            self.announce_queries.insert(q, round);
                        }
                        Err(e) => {
                            if let Some(a) = &mut self.announcer {
                                a.query_done(round, Some(e), now);
                            }
                        }
                    }
                }
            }
            announce::Action::Announced { addrs } => self.emit(Event::Announced {
                namespace: ns,
                addrs,
            }),
        }
    }

    fn on_discover_action(&mut self, a: discover::Action, now: Instant) {
        match a {
            discover::Action::QueryProviders => {
                let Some(ns) = self.cfg.peer().map(|p| p.namespace.clone()) else {
                    return;
                };
                let q = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(discovery::namespace_key(&ns));
                self.provider_queries.insert(q);
            }
            discover::Action::QueryRecord { peer } => {
                let q = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(discovery::peer_key(&peer));
                self.record_queries.insert(q, peer);
            }
            discover::Action::Discovered { peer, addrs } => {
                for a in &addrs {
                    self.swarm.add_peer_address(peer, a.clone());
                }
                let relayed: Vec<Multiaddr> = addrs
                    .iter()
                    .filter(|a| Path::of([*a]) == Path::Relayed)
                    .cloned()
                    .collect();
                if !relayed.is_empty() {
                    self.relay_addrs.insert(peer, relayed);
                }
                let namespace = self
                    .cfg
                    .peer()
                    .map(|p| p.namespace.clone())
                    .unwrap_or_default();
                self.emit(Event::Discovered {
                    peer,
                    namespace,
                    addrs: addrs.clone(),
                });
                if let Some(t) = &mut self.traffic {
                    t.add_target(peer, now);
                }
                let direct: Vec<Multiaddr> = addrs
                    .iter()
                    .filter(|a| Path::of([*a]) == Path::Direct)
                    .cloned()
                    .collect();
                let has_direct = self
                    .conns
                    .values()
                    .any(|c| c.peer == peer && c.path == Path::Direct);
                if self.swarm.is_connected(&peer) && !has_direct && !direct.is_empty() {
                    // Relayed so far, and now a direct address: take it.
                    let opts = DialOpts::peer_id(peer)
                        .addresses(direct)
                        .condition(PeerCondition::Always)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, "dial: {e}");
                    }
                } else if !self.swarm.is_connected(&peer) {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, "dial: {e}");
                    }
                }
            }
            discover::Action::Rejected { peer, error } => {
                tracing::warn!(%peer, "peer record rejected: {error}");
                self.emit(Event::Error {
                    context: "record".into(),
                    message: format!("{peer}: {error}"),
                });
            }
        }
    }

    fn on_traffic_action(&mut self, a: traffic::Action) {
        match a {
            traffic::Action::Send(a) => {
                if a.attempt == 1 {
                    self.totals.messages_sent += 1;
                    self.metrics.messages_sent.inc();
                }
                self.swarm
                    .behaviour_mut()
                    .msg
                    .send(a.to, a.id, self.payload.clone());
                self.sent = true;
                self.totals.attempts += 1;
                self.emit(Event::MessageSent {
                    to: a.to,
                    id: a.id,
                    size: a.size,
                    attempt: a.attempt,
                });
            }
            traffic::Action::Failed(f) => self.message_failed(f.to, f.id, f.reason, f.attempts),
        }
    }

    /// Closes every connection to `peer` over `path`.
    fn close_connections(&mut self, peer: PeerId, path: Path) {
        let ids: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer == peer && c.path == path)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.swarm.close_connection(id);
        }
    }

    fn on_failover_action(&mut self, a: failover::Action) {
        match a {
            failover::Action::CloseDirect { peer } => {
                tracing::info!(%peer, "no ack on a direct connection in time: closing them, back to the relay");
                self.close_connections(peer, Path::Direct);
            }
            failover::Action::DialRelayed { peer } => {
                let addrs = self.relay_addrs.get(&peer).cloned().unwrap_or_default();
                if addrs.is_empty() {
                    tracing::debug!(%peer, "no relayed address to fall back to");
                    return;
                }
                // `Always`: a circuit while one exists too; each new one is a new hole punch.
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::Always)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "relayed dial: {e}");
                }
            }
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

    /// `/health`: 200 while the node serves. Monitor: it listens. Listener and dialer: it listens
    /// (or is `--no-direct`), a bootstrap connection is open, it has joined the DHT, and a listener
    /// has announced its current addresses.
    fn update_health(&mut self) {
        let listening = self.swarm.listeners().next().is_some();
        let healthy = match self.role {
            Role::Monitor => listening,
            Role::Listener | Role::Dialer => {
                let no_direct = self.cfg.peer().is_some_and(|p| p.no_direct);
                (listening || no_direct)
                    && self.boot.online()
                    && self.bootstrapped
                    && self.announcer.as_ref().is_none_or(Announcer::is_current)
            }
        };
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    fn trim_heap(&mut self, now: Instant) {
        self.trim_due = now + crate::heap::TRIM_EVERY;
        let started = Instant::now();
        if crate::heap::trim() {
            tracing::debug!(took = ?started.elapsed(), "heap trimmed");
        }
    }

    fn emit_resources(&mut self) {
        let routing_table = self.routing_table_size() as u64;
        let kad = &mut self.swarm.behaviour_mut().kad;
        let store = kad.store_mut();
        let kad_records = {
            use libp2p::kad::store::RecordStore;
            (store.records().count() + store.provided().count()) as u64
        };
        self.emit(Event::Resources {
            rss_kb: p2plab_contract::procfs::rss_kb(),
            fds: p2plab_contract::procfs::open_fds(),
            connections: u64::from(
                self.swarm
                    .network_info()
                    .connection_counters()
                    .num_established(),
            ),
            routing_table,
            kad_records,
        });
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
            st.namespace_peers = self
                .discoverer
                .as_ref()
                .map(|d| d.members().copied().collect())
                .unwrap_or_default();
            st.totals = self.totals.clone();
        }
    }

    fn update_kad_mode(&mut self) {
        if self.role == Role::Monitor {
            return;
        }
        let public = self
            .swarm
            .external_addresses()
            .any(|a| Path::of([a]) == Path::Direct);
        let mode = if public {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        self.swarm.behaviour_mut().kad.set_mode(Some(mode));
    }

    /// External addresses changed: Kademlia's mode, and what the announcer publishes.
    fn external_addrs_changed(&mut self, now: Instant) {
        self.update_kad_mode();
        let addrs = discovery::publishable(&self.local, self.swarm.external_addresses().cloned());
        if let Some(a) = &mut self.announcer {
            a.addresses(addrs, now);
        }
    }

    // ---------------------------------------------------------------- swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>, now: Instant) {
        self.lib_metrics.record(&event);
        self.status_due.get_or_insert(now + STATUS_EVERY);
        match event {
            SwarmEvent::Behaviour(b) => self.on_behaviour(b, now),
            SwarmEvent::NewListenAddr { address, .. } => {
                let circuit = address.iter().any(|p| p == Protocol::P2pCircuit);
                let loopback_only = self
                    .cfg
                    .common
                    .listen_addrs
                    .iter()
                    .all(|ip| ip.is_loopback());
                if self.role == Role::Monitor
                    && self.cfg.common.external_addrs.is_empty()
                    && !circuit
                    && (loopback_only || !is_loopback(&address))
                {
                    // A bootstrap node is public by role: serve relay and DHT from the first second.
                    self.swarm.add_external_address(address.clone());
                }
                if !circuit {
                    self.lan.listening(&address);
                }
                self.emit(Event::Listening { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::debug!(%address, "listen address expired")
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(r) = &mut self.reach {
                    r.listener_closed(listener_id, reason.err().map(|e| e.to_string()), now);
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                let reservation = self
                    .reach
                    .as_mut()
                    .is_some_and(|r| r.listener_error(listener_id, error.to_string()));
                if !reservation {
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
                    addr: address,
                    status: AddrStatus::Confirmed,
                });
                self.external_addrs_changed(now);
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.confirmed.remove(&address);
                self.emit(Event::ExternalAddr {
                    addr: address,
                    status: AddrStatus::Expired,
                });
                self.external_addrs_changed(now);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(
                peer_id,
                connection_id,
                &endpoint,
                num_established.get(),
                now,
            ),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                self.conns.remove(&connection_id);
                if num_established == 0 {
                    self.relayed_since.remove(&peer_id);
                    self.lan.forget(&peer_id);
                    if let Some(r) = &mut self.reach {
                        r.relay_gone(&peer_id);
                    }
                }
                self.emit(Event::Disconnected {
                    peer: peer_id,
                    path: path_of(&endpoint),
                    remote_addr: endpoint.get_remote_address().clone(),
                    connections: num_established,
                    cause: cause.map(|c| c.to_string()),
                });
                self.boot.disconnected(&peer_id, num_established, now);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.totals.connection_failures += 1;
                self.metrics.connection_failures.inc();
                let boot = self
                    .boot
                    .outgoing_error(connection_id, error.to_string(), now);
                if let (Some(peer), Some(d)) = (peer_id, &mut self.discoverer) {
                    d.unreachable(&peer, now);
                }
                self.emit(Event::ConnectionError {
                    peer: peer_id,
                    direction: Direction::Outbound,
                    remote_addr: boot,
                    error: error.to_string(),
                });
            }
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                // A flood is refused by the thousand: a line each would be the flood's own
                // victory on the node's disk. Counted in `/metrics`.
                self.metrics.connections_denied.inc();
                tracing::debug!(%send_back_addr, "incoming connection denied: {cause}");
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

    fn on_connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
        n: u32,
        now: Instant,
    ) {
        let path = path_of(endpoint);
        let remote = endpoint.get_remote_address().clone();
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
            remote_addr: remote.clone(),
            direction: if endpoint.is_dialer() {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            connections: n,
        });
        self.boot.connected(peer, id, &remote);
        match path {
            Path::Relayed => {
                self.relayed_since.entry(peer).or_insert(now);
            }
            Path::Direct => {
                self.failover.direct(&peer);
                // A direct connection replaces relayed ones: messages must take the direct path.
                self.close_connections(peer, Path::Relayed);
            }
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent, now: Instant) {
        match event {
            BehaviourEvent::Identify(e) => {
                self.lib_metrics.record(&e);
                if let identify::Event::Received {
                    peer_id,
                    info,
                    connection_id,
                } = e
                {
                    self.on_identify(peer_id, connection_id, info, now);
                }
            }
            BehaviourEvent::Kad(e) => {
                self.lib_metrics.record(&e);
                self.on_kad(e, now);
            }
            BehaviourEvent::Ping(e) => {
                self.lib_metrics.record(&e);
                // A bootstrap connection is held open, so nothing else would notice its path died
                // (a TCP connection with unacked data hangs for many minutes): close it, and the
                // bootstrap state machine dials again.
                if e.result.is_err() && self.boot.is_bootstrap(&e.peer) {
                    tracing::debug!(peer = %e.peer, "ping to a bootstrap node failed; closing the connection");
                    self.swarm.close_connection(e.connection);
                }
            }
            BehaviourEvent::Autonat(e) => self.on_autonat(e, now),
            BehaviourEvent::RelayServer(e) => {
                self.lib_metrics.record(&e);
                tracing::debug!("relay: {e:?}");
            }
            BehaviourEvent::RelayClient(e) => {
                if let (
                    relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
                    Some(r),
                ) = (e, &mut self.reach)
                {
                    r.accepted(relay_peer_id);
                }
            }
            BehaviourEvent::Dcutr(e) => {
                self.lib_metrics.record(&e);
                self.on_dcutr(e, now);
            }
            BehaviourEvent::Msg(e) => self.on_msg(e, now),
            BehaviourEvent::Upnp(e) => self.on_upnp(e, now),
            BehaviourEvent::Limits(never) | BehaviourEvent::Keep(never) => match never {},
        }
    }

    fn on_identify(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        info: identify::Info,
        now: Instant,
    ) {
        let via_loopback = self
            .conns
            .get(&conn)
            .is_some_and(|c| is_loopback(&c.remote));
        let kad_peer = info.protocols.contains(&sw::KAD_PROTOCOL);
        let hop = info
            .protocols
            .iter()
            .any(|p| p.as_ref() == relay::HOP_PROTOCOL_NAME.as_ref());
        if kad_peer {
            for a in &info.listen_addrs {
                // Only addresses others can use: never unspecified ones, loopback ones only when
                // we reached the peer over loopback ourselves, never relayed ones.
                if is_unspecified(a)
                    || (is_loopback(a) && !via_loopback)
                    || Path::of([a]) == Path::Relayed
                {
                    continue;
                }
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
        }
        self.boot.identified(&peer, kad_peer);
        let direct_to = |conns: &HashMap<ConnectionId, Conn>| {
            conns
                .values()
                .find(|c| c.peer == peer && c.path == Path::Direct)
                .map(|c| c.remote.clone())
        };
        if hop && self.boot.is_bootstrap(&peer) {
            if let (Some(remote), Some(r)) = (direct_to(&self.conns), &mut self.reach) {
                let remote = remote
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                r.relay_available(peer, remote, now);
            }
        }
        if self.reach.is_some() {
            let relayed_only = direct_to(&self.conns).is_none();
            let lan = self
                .lan
                .identified(peer, relayed_only, &info.listen_addrs, now);
            if !lan.is_empty() {
                tracing::info!(%peer, ?lan, "relayed peer with a LAN or public address: dialing it directly");
                // From a fresh port, never the listen port: DCUtR is punching to the same peer
                // from the listen port at this moment, and a second dial on that 4-tuple can
                // meet the peer's DCUtR dial in a TCP simultaneous open with both ends noise
                // initiators ("input error" on both; the CGNAT × port-forward flake). A
                // public or LAN address needs no mapping of ours to answer.
                let opts = DialOpts::peer_id(peer)
                    .addresses(lan)
                    .condition(PeerCondition::Always)
                    .allocate_new_port()
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "direct dial: {e}");
                }
            }
        }
    }

    fn on_kad(&mut self, e: kad::Event, now: Instant) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = e
        else {
            return;
        };
        match result {
            kad::QueryResult::Bootstrap(r) => {
                // Every bootstrap keeps its self-lookup; only the periodic full refresh goes on to
                // refresh every bucket (see state/refresh.rs). Finishing the query now, before
                // Kademlia polls it again, ends the next bucket's lookup before it sends anything.
                if self.refresh.step(id, step.last) == refresh::Step::Cut {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
                self.on_join_step(id, r.map(|_| ()).map_err(|e| e.to_string()), step.last, now)
            }
            kad::QueryResult::PutRecord(r) => {
                self.on_announce_step(id, r.err().map(|e| e.to_string()), now)
            }
            kad::QueryResult::StartProviding(r) => {
                self.on_announce_step(id, r.err().map(|e| e.to_string()), now)
            }
            kad::QueryResult::GetProviders(r) => {
                if !self.provider_queries.contains(&id) {
                    return;
                }
                if let (Ok(kad::GetProvidersOk::FoundProviders { providers, .. }), Some(d)) =
                    (r, &mut self.discoverer)
                {
                    d.providers(providers.into_iter().filter(|p| *p != self.local), now);
                }
                if step.last {
                    self.provider_queries.remove(&id);
                    if let Some(d) = &mut self.discoverer {
                        d.providers_done();
                    }
                }
            }
            kad::QueryResult::GetRecord(r) => {
                let Some(peer) = self.record_queries.get(&id).copied() else {
                    return;
                };
                let mut done = step.last;
                if let Ok(kad::GetRecordOk::FoundRecord(found)) = r {
                    let ns = self
                        .cfg
                        .peer()
                        .map(|p| p.namespace.clone())
                        .unwrap_or_default();
                    let result = PeerRecord::verify(&peer, &found.record.value)
                        .map(|rec| {
                            if rec.namespace == ns {
                                rec.addrs
                            } else {
                                Vec::new()
                            }
                        })
                        .map_err(|e| e.to_string());
                    let good = result.is_ok();
                    if let Some(d) = &mut self.discoverer {
                        d.record(peer, result, now);
                    }
                    if good {
                        // One good copy is enough: stop asking.
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                        done = true;
                    }
                }
                if done {
                    self.record_queries.remove(&id);
                    if let Some(d) = &mut self.discoverer {
                        d.record_done(&peer, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// A step of the Kademlia bootstrap that joins the DHT. The self-lookup is its first step: the
    /// node is in the DHT from then on (the bucket refreshes that follow may take long).
    fn on_join_step(
        &mut self,
        id: kad::QueryId,
        result: Result<(), String>,
        last: bool,
        now: Instant,
    ) {
        let Some((q, reported)) = self.join_query else {
            return;
        };
        if q != id {
            return;
        }
        if last {
            self.join_query = None;
        } else {
            self.join_query = Some((q, true));
        }
        if reported {
            return;
        }
        let routing_table = self.routing_table_size();
        match result {
            Err(message) if routing_table == 0 => {
                self.boot.join_failed(now);
                self.emit(Event::Error {
                    context: "bootstrap".into(),
                    message,
                });
            }
            result => {
                // A self-lookup that timed out (dead peers in the bootstrap node's table answer
                // nothing for seconds) still put us in the DHT if it filled the routing table:
                // waiting for a clean one would hold announcements and lookups back for good.
                if let Err(message) = result {
                    self.emit(Event::Error {
                        context: "bootstrap".into(),
                        message: format!(
                            "{message} (joined anyway: {routing_table} peers in the routing table)"
                        ),
                    });
                }
                self.bootstrapped = true;
                let peer = self.boot.first_connected().unwrap_or(self.local);
                self.emit(Event::Bootstrapped {
                    peer,
                    routing_table,
                });
            }
        }
    }

    fn on_announce_step(&mut self, id: kad::QueryId, error: Option<String>, now: Instant) {
        let Some(round) = self.announce_queries.remove(&id) else {
            return;
        };
        if let Some(a) = &mut self.announcer {
            a.query_done(round, error, now);
        }
    }

    fn on_autonat(&mut self, e: autonat::v1::Event, now: Instant) {
        let autonat::v1::Event::StatusChanged { new, .. } = e else {
            return;
        };
        let (status, addr) = match new {
            autonat::v1::NatStatus::Public(a) => (Reachability::Public, Some(a)),
            autonat::v1::NatStatus::Private => (Reachability::Private, None),
            autonat::v1::NatStatus::Unknown => (Reachability::Unknown, None),
        };
        if let Some(r) = &mut self.reach {
            r.autonat(status, addr, now);
        }
    }

    fn on_upnp(&mut self, e: upnp::Event, now: Instant) {
        let mut ev = UpnpEvent::new(UpnpStatus::Failed);
        let mut state = None;
        match e {
            upnp::Event::GatewayFound {
                gateway,
                external_ip,
            } => {
                tracing::info!(%gateway, %external_ip, "UPnP gateway found");
                ev.status = UpnpStatus::GatewayFound;
                ev.gateway = Some(gateway);
                ev.external_ip = Some(external_ip);
            }
            upnp::Event::NewExternalAddr {
                local_addr,
                external_addr,
            } => {
                tracing::info!(%local_addr, %external_addr, "UPnP mapping");
                state = Some(Upnp::Mapped(now));
                // The swarm confirms the address itself; AutoNAT is asked to check it now
                // rather than at its next refresh.
                if self.reach.is_some() {
                    self.swarm
                        .behaviour_mut()
                        .autonat
                        .probe_address(external_addr.clone());
                }
                ev.status = UpnpStatus::Mapped;
                ev.addr = Some(external_addr);
                ev.local_addr = Some(local_addr);
            }
            upnp::Event::ExpiredExternalAddr {
                local_addr,
                external_addr,
                error,
            } => {
                tracing::warn!(%local_addr, %external_addr, "UPnP mapping lost: {error}");
                ev.status = UpnpStatus::Expired;
                ev.addr = Some(external_addr);
                ev.local_addr = Some(local_addr);
                ev.error = Some(error);
            }
            upnp::Event::MapFailed {
                local_addr,
                error,
                attempt,
                retry_in,
            } => {
                tracing::warn!(%local_addr, attempt, "UPnP mapping failed: {error}");
                state = Some(Upnp::Failed);
                ev.local_addr = Some(local_addr);
                ev.error = Some(error);
                ev.attempt = Some(attempt);
                ev.retry_in_ms = retry_in.map(ms);
            }
            upnp::Event::GatewayNotFound { error } => {
                tracing::warn!("no UPnP gateway: {error}");
                state = Some(Upnp::Failed);
                ev.status = UpnpStatus::GatewayNotFound;
                ev.error = Some(error);
            }
            upnp::Event::NonRoutableGateway {
                gateway,
                external_ip,
            } => {
                tracing::warn!(%gateway, %external_ip, "UPnP gateway is not on the internet: no mapping");
                state = Some(Upnp::Failed);
                ev.status = UpnpStatus::NonRoutableGateway;
                ev.gateway = Some(gateway);
                ev.external_ip = Some(external_ip);
            }
        }
        if let (Some(s), Some(r)) = (state, &mut self.reach) {
            r.upnp(s, now);
        }
        self.emit(ev.into_event());
    }

    fn on_dcutr(&mut self, e: dcutr::Event, now: Instant) {
        let ok = e.result.is_ok();
        if ok {
            self.totals.hole_punch_ok += 1;
        } else {
            self.totals.hole_punch_failed += 1;
        }
        self.metrics.hole_punch(ok);
        let since = self
            .relayed_since
            .get(&e.remote_peer_id)
            .map(|t| ms(now - *t));
        self.emit(Event::HolePunch {
            peer: e.remote_peer_id,
            ok,
            error: e.result.err().map(|e| e.to_string()),
            ms: since,
        });
    }

    /// The path and IP family of a connection a message or an ack came over.
    fn path_of(&self, connection: ConnectionId) -> (Path, Option<IpFamily>) {
        self.conns
            .get(&connection)
            .map_or((Path::Direct, None), |c| (c.path, IpFamily::of(&c.remote)))
    }

    fn on_msg(&mut self, e: msg::Event, now: Instant) {
        match e {
            msg::Event::Received {
                peer,
                connection,
                id,
                size,
            } => {
                // Acked already, by the connection's handler: the sender's round trip never waits
                // for this loop.
                let (path, family) = self.path_of(connection);
                let duplicate = self.inbox.receive(peer, id);
                if !duplicate {
                    if let Some(Err(e)) = self
                        .journal
                        .as_mut()
                        .map(|j| j.append(&peer, id, &self.inbox))
                    {
                        // without it a restart could deliver twice: say so, once, and go on
                        self.journal = None;
                        self.emit(Event::Error {
                            context: "inbox-file".into(),
                            message: e.to_string(),
                        });
                    }
                }
                if duplicate {
                    self.totals.duplicates += 1;
                    self.metrics.duplicates.inc();
                } else {
                    self.totals.messages_received += 1;
                    self.metrics.messages_received.inc();
                }
                self.emit(Event::MessageReceived {
                    from: peer,
                    id,
                    size,
                    path,
                    family,
                    duplicate,
                });
            }
            msg::Event::Acked {
                peer,
                connection,
                id,
            } => {
                let (path, family) = self.path_of(connection);
                match self.traffic.as_mut().and_then(|t| t.acked(id, now)) {
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
                            family,
                            attempts: a.attempts,
                        });
                    }
                    None => tracing::debug!(%peer, id, "late ack for a settled message"),
                }
            }
            msg::Event::Failed {
                peer,
                connection,
                id,
                error,
            } => {
                tracing::debug!(%peer, id, "attempt failed: {error}");
                if let (Some(c), true) = (connection, error == msg::TIMEOUT) {
                    // open and direct: a relayed one has nothing better to fall back to
                    let direct = self.conns.get(&c).is_some_and(|c| c.path == Path::Direct);
                    self.failover.ack_timeout(peer, direct, now);
                }
                if let Some(f) = self
                    .traffic
                    .as_mut()
                    .and_then(|t| t.failed(id, &error, now))
                {
                    self.message_failed(f.to, f.id, f.reason, f.attempts);
                }
            }
        }
    }
}

/// The inbox and its journal from `--inbox-file` (none without it): every id the file holds is
/// remembered, and the file is rewritten with just those before it is appended to.
fn open_inbox(
    path: Option<std::path::PathBuf>,
) -> Result<(Inbox<PeerId>, Option<Journal>), RunError> {
    let mut inbox = Inbox::new(Inbox::<PeerId>::DEFAULT_WINDOW);
    let Some(path) = path else {
        return Ok((inbox, None));
    };
    let bad = |e: std::io::Error| RunError::flag("--inbox-file", path.display().to_string(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bad)?;
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for (peer, id) in journal::parse::<PeerId>(&text) {
                inbox.receive(peer, id);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(e)),
    }
    let journal = Journal::rewrite(path.clone(), &inbox).map_err(bad)?;
    Ok((inbox, Some(journal)))
}

/// The inbox journal's file ([`journal`]): appended to per delivered message, rewritten from the
/// inbox (bounded by its window) when the appends outgrow it.
struct Journal {
    path: std::path::PathBuf,
    file: std::fs::File,
    appended: usize,
}

impl Journal {
    fn rewrite(path: std::path::PathBuf, inbox: &Inbox<PeerId>) -> std::io::Result<Self> {
        use std::io::Write;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".new");
        let mut text = String::new();
        for (peer, id) in inbox.entries() {
            text.push_str(&journal::line(peer, id));
        }
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        file.flush()?;
        Ok(Journal {
            path,
            file,
            appended: 0,
        })
    }

    /// One write per message: it is in the kernel before the delivery is reported, so a killed
    /// process loses none (a machine crash may lose the last few).
    fn append(&mut self, peer: &PeerId, id: u64, inbox: &Inbox<PeerId>) -> std::io::Result<()> {
        use std::io::Write;
        self.appended += 1;
        if self.appended > 2 * Inbox::<PeerId>::DEFAULT_WINDOW {
            *self = Journal::rewrite(self.path.clone(), inbox)?;
            return Ok(());
        }
        self.file.write_all(journal::line(peer, id).as_bytes())
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
