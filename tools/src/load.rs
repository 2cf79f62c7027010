//! Many p2plab nodes in one process, and the node's own round trip: the `bench` binary's `swarm`
//! and `p2p-rtt`.
//!
//! Both run the very node the `monitor`, `listener` and `dialer` binaries run ([`p2plab_node::run_with_sink`]),
//! configured through the same command lines (so the same defaults and checks), with the events
//! sent to a channel instead of stdout.
//!
//! # `bench swarm`
//! `--nodes N` nodes in namespaces of `--namespace-size K` (the last one may be smaller), each
//! with `--dialers-per-namespace D` dialers and K−D listeners. Node `i` listens on TCP
//! `--listen-addr`:`--port-base`+i and confirms that address as external from the start (no
//! AutoNAT round: every node is a public DHT server). Without `--bootstrap`, a monitor runs in the
//! same process on `--port-base`−1.
//!
//! 1. The listeners start together; the run waits until each has `announced` (or the deadline).
//! 2. The dialers start together (or `--dialer-ramp` a second); each one's discovery time is from
//!    its own `started` to the `discovered` of the last listener of its namespace.
//!
//! With `--hold` there are no dialers: once every listener is `bootstrapped` the run prints
//! `swarm_ready` and keeps the nodes up until SIGTERM (a load on a monitor in another container).
//!
//! Output: JSON lines on stdout, `swarm_ready` (with `--hold`) and `swarm_result`:
//! `{"event":"swarm_result","nodes":100,"listeners":80,"dialers":20,"namespaces":10,
//! "bootstrapped":100,"announced":80,"dialers_complete":20,"announce_ms":[...],
//! "discovery_ms":[...],"rss_kb":123456,"rss_kb_before":2345,"wall_ms":5678}`.
//!
//! # `bench p2p-rtt`
//! A dialer in this process sends `--warmup` + `--count` messages of `--size` bytes, one every
//! `--interval-ms`, to the one listener of `--namespace`, and reports the round trip of each ack
//! (the dialer's `message_acked.rtt_ms`) after the warmup, on the `--path` asked for. For
//! `relayed` the dialer listens on nothing (`--no-direct`), so that no hole punch or direct dial
//! can replace the relayed connection when the listener is also `--no-direct`.
//! Output: `{"event":"perf_result","kind":"rtt","transport":"libp2p-direct","size":64,
//! "samples_ms":[...],"other_path":0}`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use clap::{Args, ValueEnum};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{timeout_at, Instant},
};

use p2plab_node::{
    cli::{parse_duration_secs, parse_size},
    config::Transport,
    Config, Event, EventLine, Path, RunError,
};

/// `bench swarm`: see the module documentation.
#[derive(Debug, Clone, Args)]
pub struct SwarmArgs {
    /// Nodes in all (listeners and dialers; an in-process monitor is not counted).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub nodes: u32,
    /// Nodes per namespace.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=5000))]
    pub namespace_size: u32,
    /// Dialers per namespace (the others are listeners); forced to 0 by `--hold`.
    #[arg(long, default_value_t = 2)]
    pub dialers_per_namespace: u32,
    /// Bootstrap node (repeatable); none: a monitor in this process.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// The address every node listens on and announces.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_addr: IpAddr,
    /// Node i listens on port-base + i (the in-process monitor on port-base − 1).
    #[arg(long, default_value_t = 20000)]
    pub port_base: u16,
    /// Seconds each phase may take.
    #[arg(long, default_value = "120", value_parser = parse_duration_secs)]
    pub deadline: Duration,
    /// Listeners only; print `swarm_ready` once all are bootstrapped and stay up until SIGTERM.
    #[arg(long)]
    pub hold: bool,
    /// Identity seeds are seed-base + i.
    #[arg(long, default_value_t = 1_000_000)]
    pub seed_base: u64,
    /// Listeners started per second (0: all at once). The deadline of phase 1 counts from the
    /// last start.
    #[arg(long, default_value_t = 0)]
    pub ramp: u32,
    /// Dialers started per second (0: all at once, the harshest case). Each dialer's discovery
    /// time counts from its own start; the deadline of phase 2 counts from the last start.
    #[arg(long, default_value_t = 0)]
    pub dialer_ramp: u32,
    /// `tcp` (loopback sockets: both ends of every connection in this process count against the
    /// open-files limit) or `memory` (libp2p's memory transport, noise and yamux as over TCP).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: SwarmTransport,
    /// Each node's `--max-connections` (default: the node's own). Both ends of every connection
    /// are in this process, so N nodes hold about N × this many open files.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Each node's `--kad-replication` (default: the node's own, 20).
    #[arg(long, value_name = "K", value_parser = p2plab_node::config::kad_replication_parser())]
    pub kad_replication: Option<u16>,
    /// Each node's `--idle-timeout` in seconds (default: the node's own, 60; `--hold`: 3600).
    #[arg(long, value_name = "SECS", value_parser = parse_duration_secs)]
    pub idle_timeout: Option<Duration>,
    /// Each listener's `--announce-interval` in seconds (default: the node's own, 300).
    #[arg(long, value_name = "SECS", value_parser = parse_duration_secs)]
    pub announce_interval: Option<Duration>,
}

/// `bench p2p-rtt`: see the module documentation.
#[derive(Debug, Clone, Args)]
pub struct P2pRttArgs {
    /// Bootstrap node (repeatable).
    #[arg(long = "bootstrap", value_name = "MULTIADDR", required = true)]
    pub bootstrap: Vec<Multiaddr>,
    /// The namespace of the one listener to measure.
    #[arg(long)]
    pub namespace: String,
    /// Payload bytes per message.
    #[arg(long, value_parser = parse_size)]
    pub size: usize,
    /// Round trips reported.
    #[arg(long, default_value_t = 200)]
    pub count: u64,
    /// Round trips sent first and not reported.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Milliseconds between two messages.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// The path the messages must take.
    #[arg(long, value_enum)]
    pub path: PathArg,
    /// Seconds the whole measurement may take.
    #[arg(long, default_value = "120", value_parser = parse_duration_secs)]
    pub deadline: Duration,
    /// Identity seed of the dialer.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwarmTransport {
    Tcp,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    Direct,
    Relayed,
}

use p2plab_contract::bench::Carrier;
pub use p2plab_contract::bench::{RttResult, SwarmReady, SwarmResult};
pub use p2plab_contract::procfs::{cpu_ms, parse_stat_cpu_ms, parse_vm_rss, rss_kb};

/// The role of node `i` of a swarm: `(namespace index, is dialer)`.
pub fn plan_node(i: u32, namespace_size: u32, dialers_per_namespace: u32) -> (u32, bool) {
    let ns = i / namespace_size;
    let pos = i % namespace_size;
    (
        ns,
        pos >= namespace_size.saturating_sub(dialers_per_namespace),
    )
}

fn usage(flag: &'static str, value: impl ToString, reason: impl ToString) -> RunError {
    RunError::Usage(p2plab_node::UsageError {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    })
}

/// A node running in this process; dropping the sender of `stop` shuts every node down.
struct Nodes {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<p2plab_node::Totals, RunError>>,
    tx: mpsc::UnboundedSender<EventLine>,
}

impl Nodes {
    fn new(tx: mpsc::UnboundedSender<EventLine>) -> Self {
        Nodes {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            tx,
        }
    }

    fn spawn(&mut self, cfg: Config) {
        let mut rx = self.stop.subscribe();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
            "bench done".to_string()
        };
        self.tasks
            .spawn(p2plab_node::run_with_sink(cfg, self.tx.clone(), shutdown));
    }

    async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(Some(_)) = timeout_at(deadline, self.tasks.join_next()).await {}
        self.tasks.abort_all();
    }
}

/// `bench swarm`.
pub async fn swarm(args: SwarmArgs) -> Result<SwarmResult, RunError> {
    let dialers_per_ns = if args.hold {
        0
    } else {
        args.dialers_per_namespace
    };
    if dialers_per_ns >= args.namespace_size {
        return Err(usage(
            "--dialers-per-namespace",
            dialers_per_ns,
            format!(
                "must be smaller than --namespace-size ({})",
                args.namespace_size
            ),
        ));
    }
    if u32::from(args.port_base) + args.nodes > 65535 || args.port_base == 0 {
        return Err(usage(
            "--port-base",
            args.port_base,
            format!("{} nodes need ports up to 65535", args.nodes),
        ));
    }
    let clock = std::time::Instant::now();
    let rss_kb_before = rss_kb();
    let cpu_before = cpu_ms();
    let (tx, mut rx) = mpsc::unbounded_channel::<EventLine>();
    let mut nodes = Nodes::new(tx);

    let memory = args.transport == SwarmTransport::Memory;
    let transport = if memory {
        Transport::Memory
    } else {
        Transport::Tcp
    };
    // node i's address
    let addr_of = |port: u16| {
        if memory {
            Multiaddr::empty().with(Protocol::Memory(u64::from(port)))
        } else {
            Multiaddr::from(args.listen_addr).with(Protocol::Tcp(port))
        }
    };
    let mut bootstrap = args.bootstrap.clone();
    if bootstrap.is_empty() {
        let port = args.port_base - 1;
        let monitor = Config::monitor()
            .named("monitor")
            .seed(1)
            .listen_addr(args.listen_addr)
            .port(port)
            .transport(transport)
            .metrics(None)
            .max_connections(100_000)
            // every node of the load comes from this one address
            .max_connections_per_ip(0);
        let monitor = match args.kad_replication {
            Some(k) => monitor.kad_replication(k),
            None => monitor,
        };
        nodes.spawn(monitor);
        let monitor_id = p2plab_node::swarm::identity_from_seed(1)
            .map_err(|e| RunError::Runtime(format!("monitor identity: {e}")))?
            .public()
            .to_peer_id();
        bootstrap.push(addr_of(port).with(Protocol::P2p(monitor_id)));
    }

    let node_cfg = |i: u32, dialer: bool, ns: u32| -> Result<Config, RunError> {
        let port = args.port_base as u32 + i;
        let namespace = format!("ns{ns}");
        let mut cfg = if dialer {
            Config::dialer(namespace)
                .count(1)
                .interval(Duration::from_secs(1))
        } else {
            Config::listener(namespace)
        }
        .named(format!("n{i}"))
        .seed(args.seed_base + u64::from(i))
        .listen_addr(args.listen_addr)
        .port(port as u16)
        .transport(transport)
        .external_addr(addr_of(port as u16))
        .relay(p2plab_node::config::RelayMode::Never)
        // every node of the load is on this one address
        .max_connections_per_ip(0);
        if let Some(m) = args.max_connections {
            cfg = cfg.max_connections(m);
        }
        if let Some(k) = args.kad_replication {
            cfg = cfg.kad_replication(k);
        }
        // a held load keeps its connections to the monitor; otherwise the node's own default
        if let Some(d) = args.idle_timeout {
            cfg = cfg.idle_timeout(d);
        } else if args.hold {
            cfg = cfg.idle_timeout(Duration::from_secs(3600));
        }
        if let Some(d) = args.announce_interval {
            cfg = cfg.announce_interval(d);
        }
        for b in &bootstrap {
            cfg = cfg.bootstrap(b.clone());
        }
        Ok(cfg)
    };

    // who is who
    let mut listeners_of: HashMap<u32, Vec<String>> = HashMap::new();
    let mut dialers: Vec<(u32, u32)> = Vec::new();
    for i in 0..args.nodes {
        let (ns, dialer) = plan_node(i, args.namespace_size, dialers_per_ns);
        if dialer {
            dialers.push((i, ns));
        } else {
            listeners_of.entry(ns).or_default().push(format!("n{i}"));
        }
    }
    let listener_count: usize = listeners_of.values().map(Vec::len).sum();

    let mut seen = Seen::default();

    // ---- phase 1: listeners (at --ramp a second, reading events meanwhile)
    let ramp_start = Instant::now();
    let mut n_started = 0u32;
    for i in 0..args.nodes {
        let (ns, dialer) = plan_node(i, args.namespace_size, dialers_per_ns);
        if !dialer {
            seen.read_until_ramp(&mut rx, ramp_start, n_started, args.ramp)
                .await;
            nodes.spawn(node_cfg(i, false, ns)?);
            n_started += 1;
        }
    }
    let deadline = Instant::now() + args.deadline;
    loop {
        let done = if args.hold {
            listeners_of
                .values()
                .flatten()
                .all(|n| seen.bootstrapped.contains(n))
        } else {
            listeners_of
                .values()
                .flatten()
                .all(|n| seen.announced.contains_key(n))
        };
        if done || seen.failed.is_some() {
            break;
        }
        if !seen.take_next(&mut rx, deadline).await {
            break;
        }
    }
    if let Some(f) = seen.failed.clone() {
        nodes.shutdown().await;
        return Err(RunError::Runtime(format!("a node failed: {f}")));
    }

    if args.hold {
        let n_boot = listeners_of
            .values()
            .flatten()
            .filter(|n| seen.bootstrapped.contains(*n))
            .count();
        println!(
            "{}",
            serde_json::to_string(&SwarmReady {
                nodes: listener_count,
                bootstrapped: n_boot,
                rss_kb: rss_kb(),
                wall_ms: clock.elapsed().as_millis() as u64
            })
            .unwrap_or_default()
        );
        let mut stop = Box::pin(p2plab_node::shutdown_signal());
        loop {
            tokio::select! {
                _ = &mut stop => break,
                l = rx.recv() => match l { Some(l) => seen.take(l), None => break },
            }
        }
    } else {
        // ---- phase 2: dialers
        let ramp_start = Instant::now();
        for (n, &(i, ns)) in (0u32..).zip(&dialers) {
            seen.read_until_ramp(&mut rx, ramp_start, n, args.dialer_ramp)
                .await;
            nodes.spawn(node_cfg(i, true, ns)?);
        }
        let deadline = Instant::now() + args.deadline;
        loop {
            let complete = dialers
                .iter()
                .all(|(i, ns)| complete_at(&format!("n{i}"), *ns, &listeners_of, &seen).is_some());
            if complete || seen.failed.is_some() {
                break;
            }
            if !seen.take_next(&mut rx, deadline).await {
                break;
            }
        }
    }
    let rss = rss_kb();
    let wall_ms = clock.elapsed().as_millis() as u64;
    let cpu_ms = cpu_ms().saturating_sub(cpu_before);
    let connections: u32 = seen
        .open
        .iter()
        .filter(|(n, _)| n.as_str() != "monitor")
        .flat_map(|(_, peers)| peers.values())
        .sum();
    nodes.shutdown().await;
    if let Some(f) = seen.failed {
        return Err(RunError::Runtime(format!("a node failed: {f}")));
    }
    let mut discovery_ms = Vec::new();
    let mut incomplete = BTreeMap::new();
    for (i, ns) in &dialers {
        let name = format!("n{i}");
        if let (Some(done), Some((t0, _))) = (
            complete_at(&name, *ns, &listeners_of, &seen),
            seen.started.get(&name),
        ) {
            discovery_ms.push(ms_between(*t0, done));
        } else {
            incomplete.insert(name.clone(), seen.found.get(&name).map_or(0, HashMap::len));
        }
    }
    let mut announce_ms: Vec<f64> = seen.announced.values().copied().collect();
    announce_ms.sort_by(f64::total_cmp);
    Ok(SwarmResult {
        nodes: args.nodes as usize,
        listeners: listener_count,
        dialers: dialers.len(),
        namespaces: listeners_of.len(),
        bootstrapped: seen
            .bootstrapped
            .iter()
            .filter(|n| n.starts_with('n'))
            .count(),
        announced: seen.announced.len(),
        dialers_complete: discovery_ms.len(),
        announce_ms,
        discovery_ms,
        rss_kb: rss,
        rss_kb_before,
        wall_ms,
        cpu_ms,
        connections_per_node: connections as f64 / f64::from(args.nodes.max(1)),
        errors: seen.errors,
        connections_opened: seen.opened,
        closed: seen.closed,
        incomplete,
    })
}

type Ts = chrono::DateTime<chrono::Utc>;

/// What the nodes of a swarm reported, by node name.
#[derive(Default)]
struct Seen {
    started: HashMap<String, (Ts, PeerId)>,
    bootstrapped: HashSet<String>,
    /// Milliseconds from `started` to the first `announced`.
    announced: HashMap<String, f64>,
    found: HashMap<String, HashMap<PeerId, Ts>>,
    /// Open connections per node and remote peer.
    open: HashMap<String, HashMap<PeerId, u32>>,
    failed: Option<String>,
    errors: BTreeMap<String, u64>,
    opened: u64,
    closed: BTreeMap<String, u64>,
}

/// The next event line before `deadline`; `None` once it has passed (or every sender is gone);
/// what is still queued then is the caller's to take ([`Seen::take_next`] does).
/// `timeout_at` alone is not enough: it returns a line that is ready even past its deadline, so
/// nodes that never stop emitting (a saturated process's backlog, 2,000 nodes churning their
/// connections) kept a ramp and both phases from ever ending (2026-12-07: a run of 2,000 nodes
/// stopped by hand after 13 minutes with the heap trims already fixed; it ends within 10 now).
async fn recv_before(
    rx: &mut mpsc::UnboundedReceiver<EventLine>,
    deadline: Instant,
) -> Option<EventLine> {
    if Instant::now() >= deadline {
        return None;
    }
    timeout_at(deadline, rx.recv()).await.ok().flatten()
}

impl Seen {
    /// Takes the events that come until the `n`th start of a ramp of `per_second` (0: no wait).
    async fn read_until_ramp(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<EventLine>,
        start: Instant,
        n: u32,
        per_second: u32,
    ) {
        if per_second == 0 {
            return;
        }
        let due = start + Duration::from_secs_f64(f64::from(n) / f64::from(per_second));
        while let Some(l) = recv_before(rx, due).await {
            self.take(l);
        }
    }

    /// Takes the next line before `deadline`. At the deadline (or with every sender gone) takes
    /// the lines already queued then (sent before it, not read yet: a saturated process's
    /// backlog) and no more, and returns false.
    async fn take_next(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<EventLine>,
        deadline: Instant,
    ) -> bool {
        match recv_before(rx, deadline).await {
            Some(l) => {
                self.take(l);
                true
            }
            None => {
                self.take_queued(rx);
                false
            }
        }
    }

    fn take_queued(&mut self, rx: &mut mpsc::UnboundedReceiver<EventLine>) {
        for _ in 0..rx.len() {
            match rx.try_recv() {
                Ok(l) => self.take(l),
                Err(_) => break,
            }
        }
    }

    fn take(&mut self, l: EventLine) {
        match &l.event {
            Event::Started { peer_id, .. } => {
                self.started.insert(l.node.clone(), (l.ts, *peer_id));
            }
            Event::Bootstrapped { .. } => {
                self.bootstrapped.insert(l.node.clone());
            }
            Event::Announced { .. } => {
                if let Some((t0, _)) = self.started.get(&l.node) {
                    let t = ms_between(*t0, l.ts);
                    self.announced.entry(l.node.clone()).or_insert(t);
                }
            }
            Event::Connected {
                peer, connections, ..
            } => {
                self.opened += 1;
                self.open
                    .entry(l.node.clone())
                    .or_default()
                    .insert(*peer, *connections);
            }
            Event::Disconnected {
                peer,
                connections,
                cause,
                ..
            } => {
                let cause = cause.as_deref().map_or("no cause".to_string(), first_words);
                *self.closed.entry(format!("closed: {cause}")).or_default() += 1;
                self.open
                    .entry(l.node.clone())
                    .or_default()
                    .insert(*peer, *connections);
            }
            Event::ConnectionError {
                direction, error, ..
            } => {
                *self
                    .closed
                    .entry(format!("{direction:?} failed: {}", first_words(error)))
                    .or_default() += 1;
            }
            Event::Discovered { peer, .. } => {
                self.found
                    .entry(l.node.clone())
                    .or_default()
                    .entry(*peer)
                    .or_insert(l.ts);
            }
            Event::Error { context, message } => {
                // Query errors carry ids and keys: tally by their first words only.
                *self
                    .errors
                    .entry(format!("{context}: {}", first_words(message)))
                    .or_default() += 1;
            }
            Event::Stopped { reason, .. } if reason.starts_with("error") => {
                self.failed
                    .get_or_insert_with(|| format!("{}: {reason}", l.node));
            }
            _ => {}
        }
    }
}

/// The first four words of an error message (the rest carries ids and addresses).
fn first_words(message: &str) -> String {
    message
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// When dialer `name` had discovered every listener of namespace `ns`.
fn complete_at(
    name: &str,
    ns: u32,
    listeners_of: &HashMap<u32, Vec<String>>,
    seen: &Seen,
) -> Option<Ts> {
    let found = seen.found.get(name)?;
    let mut last = None;
    for l in listeners_of.get(&ns)? {
        let (_, peer) = seen.started.get(l)?;
        let t = *found.get(peer)?;
        last = Some(last.map_or(t, |x: Ts| x.max(t)));
    }
    last
}

fn ms_between(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> f64 {
    (b - a).num_milliseconds() as f64
}

/// `bench p2p-rtt`.
pub async fn p2p_rtt(args: P2pRttArgs) -> Result<RttResult, RunError> {
    let total = args.warmup + args.count;
    let mut cfg = Config::dialer(args.namespace.clone())
        .named("rtt")
        .transport(Transport::Tcp)
        .relay(p2plab_node::config::RelayMode::Never)
        .count(total)
        .interval(Duration::from_millis(args.interval_ms.max(1)))
        .size(args.size)
        .idle_timeout(Duration::from_secs(3600));
    if let Some(s) = args.seed {
        cfg = cfg.seed(s);
    }
    if args.path == PathArg::Relayed {
        cfg = cfg.no_direct();
    }
    for b in &args.bootstrap {
        cfg = cfg.bootstrap(b.clone());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<EventLine>();
    let mut nodes = Nodes::new(tx);
    nodes.spawn(cfg);
    let want = match args.path {
        PathArg::Direct => Path::Direct,
        PathArg::Relayed => Path::Relayed,
    };
    let deadline = Instant::now() + args.deadline;
    let mut acked = 0u64;
    let mut samples = Vec::new();
    let mut other_path = 0u64;
    let mut error = None;
    while acked < total {
        match recv_before(&mut rx, deadline).await {
            Some(l) => match l.event {
                Event::MessageAcked { rtt_ms, path, .. } => {
                    acked += 1;
                    if acked > args.warmup {
                        if path == want {
                            samples.push(rtt_ms);
                        } else {
                            other_path += 1;
                        }
                    }
                }
                Event::MessageFailed { reason, .. } => {
                    error = Some(format!("a message failed: {reason}"));
                    break;
                }
                Event::Stopped { reason, .. } => {
                    error = Some(format!("the dialer stopped: {reason}"));
                    break;
                }
                _ => {}
            },
            None => {
                error = Some(format!(
                    "{acked} of {total} messages acked within {:?}",
                    args.deadline
                ));
                break;
            }
        }
    }
    nodes.shutdown().await;
    if let Some(e) = error {
        return Err(RunError::Runtime(e));
    }
    let carrier = match want {
        Path::Direct => Carrier::Libp2pDirect,
        Path::Relayed => Carrier::Libp2pRelayed,
    };
    Ok(RttResult {
        other_path: Some(other_path),
        ..RttResult::new(carrier, args.size, samples)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nodes_are_planned_per_namespace() {
        // 10 per namespace, 2 dialers: positions 8 and 9 dial
        let roles: Vec<_> = (0..12).map(|i| plan_node(i, 10, 2)).collect();
        assert_eq!(roles[0], (0, false));
        assert_eq!(roles[7], (0, false));
        assert_eq!(roles[8], (0, true));
        assert_eq!(roles[9], (0, true));
        assert_eq!(roles[10], (1, false));
        assert!((0..50).all(|i| !plan_node(i, 10, 0).1));
    }

    /// A small swarm on loopback, for real: every dialer finds its namespace.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_swarm_discovers_its_namespaces() {
        let args = SwarmArgs::try_parse_from_args(&[
            "--nodes",
            "12",
            "--namespace-size",
            "6",
            "--dialers-per-namespace",
            "1",
            "--port-base",
            "24100",
            "--deadline",
            "60",
        ]);
        let r = swarm(args).await.unwrap();
        assert_eq!((r.listeners, r.dialers, r.namespaces), (10, 2, 2));
        assert_eq!(r.announced, 10, "{r:?}");
        assert_eq!(r.dialers_complete, 2, "{r:?}");
        assert!(r.discovery_ms.iter().all(|&t| t >= 0.0));
    }

    /// The same over libp2p's memory transport.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_memory_swarm_discovers_its_namespaces() {
        let args = SwarmArgs::try_parse_from_args(&[
            "--nodes",
            "12",
            "--namespace-size",
            "6",
            "--dialers-per-namespace",
            "1",
            "--port-base",
            "24200",
            "--deadline",
            "60",
            "--transport",
            "memory",
        ]);
        let r = swarm(args).await.unwrap();
        assert_eq!(r.announced, 10, "{r:?}");
        assert_eq!(r.dialers_complete, 2, "{r:?}");
    }

    impl SwarmArgs {
        fn try_parse_from_args(a: &[&str]) -> SwarmArgs {
            #[derive(clap::Parser)]
            struct W {
                #[command(flatten)]
                a: SwarmArgs,
            }
            let mut v = vec!["swarm"];
            v.extend_from_slice(a);
            <W as clap::Parser>::try_parse_from(v).unwrap().a
        }
    }
}
