//! The measurements behind `p2plab bench`: real labs on the Docker engine, measured with the
//! node image's `bench` binary and the nodes' own events. The figures, their summaries and the
//! report are [`crate::bench`]'s.
//!
//! Groups (ids as in `--only`):
//! - `rtt`: one flat segment; the same two containers measure a raw TCP ping-pong, the node's
//!   acked messages over a direct connection, and over the monitor's relay, at 64 B, 4 KiB
//!   and 64 KiB.
//! - `throughput`: the same two containers; one stream, raw TCP vs libp2p over TCP and QUIC.
//! - `direct`: the home-NAT lab run again and again by the runner: time to direct, success.
//! - `discovery`: namespaces of 2, 10 and 50 peers; joiners timed from start to full view.
//! - `labs`: the runner brings up and tears down labs of 5 to 100 containers.
//! - `memory`: node RSS idle, monitor RSS under 10, 100 and 500 connected peers.
//! - `scale`: 100 and 1,000 nodes in one process (one container, loopback).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use p2plab_contract::{
    bench::{PerfReady, RttResult, SwarmReady, SwarmResult, ThroughputResult},
    host::Routing,
    parse_line,
};
use p2plab_contract::{ports::MONITOR_PORT, procfs::parse_vm_rss, Event, EventLine, Path, PeerId};
use serde::de::DeserializeOwned;
use tokio::{
    sync::mpsc,
    time::{timeout_at, Instant},
};

use crate::{
    bench::{Better, Figure, Group},
    engine::docker::{Attach, ContainerSpec, Engine, Lab, LogLine},
    engine::run::{self, Options},
    model::{self, Role},
    plan,
    plan::layout::{layout, Kind, Layout},
};

/// Why a benchmark could not be measured.
#[derive(Debug, thiserror::Error)]
#[error("{group}: {message}")]
pub struct BenchLabError {
    pub group: String,
    pub message: String,
}

fn err(group: &str, message: impl std::fmt::Display) -> BenchLabError {
    BenchLabError {
        group: group.to_string(),
        message: message.to_string(),
    }
}

/// Every group, in order.
pub const GROUPS: [&str; 8] = [
    "rtt",
    "throughput",
    "direct",
    "discovery",
    "labs",
    "memory",
    "scale",
    "swarm",
];

/// How much to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub image: String,
    /// Group ids to run (empty: all).
    pub only: Vec<String>,
    /// Fewer repeats everywhere (a smoke run; figures are noisier).
    pub quick: bool,
    /// Repeats of the home-NAT run (`direct`).
    pub direct_repeats: usize,
    /// The engines of a swarm (`--engines`): the `swarm` group runs only with them.
    pub swarm: Option<Engine>,
}

impl BenchOptions {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
    fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The groups' titles and methods.
pub fn groups(opts: &BenchOptions) -> Vec<Group> {
    let g = |id: &str, title: &str, method: String| Group {
        id: id.into(),
        title: title.into(),
        method,
    };
    let rtt_n = opts.pick(200, 50);
    vec![
        g("rtt", "1. Message round trip", format!(
            "Two containers on one lab segment (a veth bridge, no impairment). Each figure is {rtt_n} round trips after 10 of warm-up, one every 10 ms. \
             *Raw TCP*: a ping of the payload size answered by an 8-byte ack on one connection with TCP_NODELAY (`bench rtt`). \
             *libp2p stream*: the same ping-pong on one libp2p stream (`/p2plab/perf-ping/1.0.0`, libp2p-stream) over the peer's own transport stack (TCP, noise, yamux) with nothing else on the connection: the floor libp2p sets under the node's messages (`bench rtt --to <multiaddr>`). \
             *libp2p direct*: the node's own acked messages (a dialer's `message_acked.rtt_ms`, `bench p2p-rtt`) to a listener in the other container, over a direct TCP connection (noise, yamux, `/p2plab/msg/2.0.0`: one stream per connection, acked by the receiver's connection handler). \
             *libp2p relayed*: the same to a listener reachable only through the monitor's relay (circuit relay v2, both peers `--no-direct`); the relay is a third container on the same segment. \
             Ratios are medians over the raw TCP median.")),
        g("throughput", "2. Throughput of one stream", format!(
            "The same two containers. One stream carries {}, {} times; the receiver acks the last byte (`bench throughput`). \
             Raw TCP (a new connection each time) vs one libp2p stream (`/p2plab/perf/1.0.0`, libp2p-stream) over the peer's own transport stack, TCP (noise + yamux) and QUIC, each repeat a new stream on one connection.",
            opts.pick("128 MiB", "32 MiB"), opts.pick(5, 3))),
        g("direct", "3. Time to direct behind two home NATs", format!(
            "The runner builds a lab of a monitor and two peers, each behind its own `home` NAT (endpoint-independent mapping, address-and-port-dependent filtering), {} times from nothing. \
             From the dialer's start to its first ack over a direct connection, and from the first relayed connection to the first direct one (DCUtR). \
             The baseline is the first relayed connection (the first path there is). Success: the direct path came up and 5 of 5 messages were acked within 60 s. \
             The listener reserves its relay slot as soon as it is connected to the monitor, and announces its relayed address at most 600 ms after its start (it first gives AutoNAT that long to find it public).",
            opts.direct_repeats)),
        g("discovery", "4. Discovery after join", format!(
            "A monitor and N−1 listeners in one namespace, all announced; then {} dialers join one after the other and stay (a dialer does not announce, so the namespace stays at N), each timed from its `started` to the `discovered` of the last of the N−1 listeners (Kademlia provider lookup plus one signed peer record per member). Ratios are over the namespace of 2.",
            opts.pick(20, 3))),
        g("labs", "5. Lab bring-up and teardown", format!(
            "The runner (`p2plab run`) brings up a flat lab of one monitor and N−1 listeners (one container each, N in all) until every node has started, waits until every listener has bootstrapped, reads each container's memory (`docker stats`: usage less inactive file cache), and tears the lab down. {} runs per size. Ratios are over the 5-container lab.",
            opts.pick(3, 1))),
        g("memory", "6. Node memory", "Resident set size (`VmRSS` of the node process in its container): 10 readings 200 ms apart per figure. \
             *Idle*: a monitor with no peer; a listener bootstrapped and announced. \
             *Under load*: a fresh monitor for each size, then N full listener nodes in one other container (`bench swarm --hold`, every one a public DHT server connected to the monitor); read once the monitor counts N connected peers. \
             KB per connection = (RSS under load − the same monitor's idle RSS) / N.".to_string()),
        g("scale", "7. Many nodes in one process", "One container, one process (`bench swarm --transport memory`): an in-process monitor and N full p2plab nodes over libp2p's memory transport (noise and yamux as over TCP; loopback TCP would need two open files per connection in one process, beyond the engine's 20,000), in namespaces of 10 (8 listeners, 2 dialers), Kademlia's K = 8 (`--kad-replication 8`; the node's default is 20) and connections kept 600 s when idle. \
             The listeners start at 5 a second and must announce within 120 s of the last start; then the dialers start together, and have 120 s to find all 8 listeners of their namespace. \
             Share = dialers that did. Times are per node from its own start. Memory is the process's RSS with every node up, per node; connections are those open at the end, per node.".to_string()),
        g("swarm", "8. Lab bring-up across the engines of a swarm", format!(
            "As section 5, on a Docker Swarm of {} engines (`--engines`; `ci/swarm-bed.sh`: three engines in containers of this machine, so one kernel and two cores for all of them), in LANs of at most 100: a monitor on the public segment and, per LAN, a `home` NAT router and listeners (a segment holds at most 222 containers on a swarm). Segments are attachable overlays (VXLAN); the containers are spread over the engines, none on its router's. {} runs per size; the ratio is over section 5's flat lab of the same size on one engine, in the same run.",
            opts.swarm.as_ref().map_or(0, |s| s.members().len()),
            opts.pick(3, 1))),
    ]
    .into_iter()
    // the swarm's figures exist only with --engines
    .filter(|g| g.id != "swarm" || opts.swarm.is_some())
    .collect()
}

/// Runs the groups asked for; `progress` gets one line per step. A group that fails is
/// reported in the errors and the others still run.
pub async fn run_all(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(Vec<Figure>, Vec<BenchLabError>), BenchLabError> {
    for g in &opts.only {
        if !GROUPS.contains(&g.as_str()) {
            return Err(err(
                "--only",
                format!("unknown group '{g}' (groups: {})", GROUPS.join(", ")),
            ));
        }
    }
    let mut figures = Vec::new();
    let mut errors = Vec::new();
    let mut keep = |r: Result<Vec<Figure>, BenchLabError>| match r {
        Ok(f) => figures.extend(f),
        Err(e) => {
            progress(format!("FAILED: {e}"));
            errors.push(e);
        }
    };
    if opts.wants("rtt") || opts.wants("throughput") {
        keep(link(engine, opts, progress).await);
    }
    if opts.wants("direct") {
        keep(direct(engine, opts, progress).await);
    }
    if opts.wants("discovery") {
        keep(discovery(engine, opts, progress).await);
    }
    if opts.wants("labs") {
        keep(labs(engine, opts, progress).await);
    }
    if opts.wants("memory") {
        keep(memory(engine, opts, progress).await);
    }
    if opts.wants("scale") {
        keep(scale(engine, opts, progress).await);
    }
    match &opts.swarm {
        Some(swarm) if opts.wants("swarm") => keep(
            labs_on(
                swarm,
                opts,
                progress,
                Sizes {
                    lans: true,
                    memory: false,
                    group: "swarm",
                    sizes: &[100, 300],
                    on: format!(" on {} engines", swarm.members().len()),
                },
            )
            .await,
        ),
        None if opts.only.iter().any(|g| g == "swarm") => keep(Err(err(
            "swarm",
            "the swarm group needs --engines (ci/swarm-bed.sh up, then --engines $(ci/swarm-bed.sh env | paste -sd,))",
        ))),
        _ => {}
    }
    Ok((figures, errors))
}

// ------------------------------------------------------------------ a lab of our own

/// A lab driven step by step: planned containers from a topology, plus containers of our own.
struct BenchLab {
    group: &'static str,
    lab: Lab,
    lay: Layout,
    image: String,
    tx: mpsc::UnboundedSender<LogLine>,
    rx: mpsc::UnboundedReceiver<LogLine>,
    events: Vec<EventLine>,
    /// Lines that are not node events (e.g. `perf_ready`, `swarm_ready`), by container.
    other: Vec<(String, String)>,
}

impl BenchLab {
    async fn new(
        engine: &Engine,
        group: &'static str,
        yaml: &str,
        image: &str,
    ) -> Result<Self, BenchLabError> {
        let topo =
            model::parse(&format!("<bench {group}>"), yaml).map_err(|e| err(group, e.render()))?;
        let mut lab = Lab::new(engine.clone(), &topo.name);
        let mut subnets = BTreeMap::new();
        for seg in &topo.segments {
            let net = lab
                .allocate_network(&seg.name, topo.pool_of(seg))
                .await
                .map_err(|e| err(group, e))?;
            subnets.insert(seg.name.clone(), net);
        }
        let lay = layout(&topo, &subnets).map_err(|e| err(group, e))?;
        arp_check(group, &lay)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(BenchLab {
            group,
            lab,
            lay,
            image: image.to_string(),
            tx,
            rx,
            events: Vec::new(),
            other: Vec::new(),
        })
    }

    fn subnet(&self, seg: &str) -> Result<Ipv4Net, BenchLabError> {
        self.lay
            .subnets
            .get(seg)
            .copied()
            .ok_or_else(|| err(self.group, format!("no segment {seg}")))
    }

    fn ip(&self, name: &str) -> Result<Ipv4Addr, BenchLabError> {
        self.lay
            .containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.ip())
            .ok_or_else(|| err(self.group, format!("no container {name} planned")))
    }

    fn planned(&self, kind: Role) -> Vec<String> {
        self.lay
            .containers
            .iter()
            .filter(|c| c.kind == Kind::Node(kind))
            .map(|c| c.name.clone())
            .collect()
    }

    async fn start_planned(&mut self, name: &str) -> Result<(), BenchLabError> {
        let p = self
            .lay
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| err(self.group, format!("no container {name} planned")))?;
        let spec = run::spec(p, &self.image);
        self.start(spec).await
    }

    /// A container of our own on `seg` at host number `host`, without a route out.
    async fn start_custom(
        &mut self,
        name: &str,
        seg: &str,
        host: u32,
        cmd: &[&str],
    ) -> Result<Ipv4Addr, BenchLabError> {
        let net = self.subnet(seg)?;
        let ip = plan::host(&net, host)
            .ok_or_else(|| err(self.group, format!("no host {host} in {net}")))?;
        self.start(ContainerSpec {
            name: name.to_string(),
            image: self.image.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: Routing::Isolated.to_env(),
            attach: vec![Attach {
                network: seg.to_string(),
                ip,
            }],
            net_admin: true,
            ..Default::default()
        })
        .await?;
        Ok(ip)
    }

    async fn start(&mut self, spec: ContainerSpec) -> Result<(), BenchLabError> {
        let name = spec.name.clone();
        self.lab.start(spec).await.map_err(|e| err(self.group, e))?;
        self.lab
            .follow(&name, self.tx.clone())
            .map_err(|e| err(self.group, e))
    }

    fn take(&mut self, l: LogLine) {
        match EventLine::parse(&l.line) {
            Ok(ev) => self.events.push(ev),
            Err(_) => self.other.push((l.node, l.line)),
        }
    }

    /// Waits until `done` holds, reading the containers' output, at most `within`.
    async fn wait(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), BenchLabError> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(l) = self.rx.try_recv() {
                self.take(l);
            }
            if done(self) {
                return Ok(());
            }
            match timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(l)) => self.take(l),
                _ => {
                    let mut tails = String::new();
                    for c in self.lab_names() {
                        let t = self.lab.stderr_tail(&c, 5).await;
                        if !t.trim().is_empty() {
                            tails.push_str(&format!("\n--- {c} ---\n{t}"));
                        }
                    }
                    return Err(err(
                        self.group,
                        format!("not within {within:?}: {what}{tails}"),
                    ));
                }
            }
        }
    }

    fn lab_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lay.containers.iter().map(|c| c.name.clone()).collect();
        v.extend(self.other.iter().map(|(n, _)| n.clone()));
        v.sort();
        v.dedup();
        v
    }

    fn started(&self, node: &str) -> Option<(DateTime<Utc>, PeerId)> {
        self.events.iter().find_map(|l| match &l.event {
            Event::Started { peer_id, .. } if l.node == node => Some((l.ts, *peer_id)),
            _ => None,
        })
    }

    fn has(&self, node: &str, kind: &str) -> bool {
        self.events
            .iter()
            .any(|l| l.node == node && l.event.name() == kind)
    }

    /// The first line of `node` that reads as a `T`.
    fn line<T: DeserializeOwned>(&self, node: &str) -> Option<T> {
        self.other
            .iter()
            .filter(|(n, _)| n == node)
            .find_map(|(_, l)| parse_line(l))
    }

    /// Connected peers of `node` now, from its `connected`/`disconnected` events, but for the
    /// lab's own nodes (those that printed `started`).
    fn peers_of(&self, node: &str) -> usize {
        let lab: std::collections::HashSet<PeerId> = self
            .lay
            .containers
            .iter()
            .filter_map(|c| self.started(&c.name).map(|s| s.1))
            .collect();
        let mut open: BTreeMap<PeerId, u32> = BTreeMap::new();
        for l in self.events.iter().filter(|l| l.node == node) {
            match &l.event {
                Event::Connected {
                    peer, connections, ..
                }
                | Event::Disconnected {
                    peer, connections, ..
                } => {
                    open.insert(*peer, *connections);
                }
                _ => {}
            }
        }
        open.iter()
            .filter(|(p, c)| **c > 0 && !lab.contains(p))
            .count()
    }

    /// Runs `cmd` in `node`; its last stdout line, read as a `T`.
    async fn exec_json<T: DeserializeOwned>(
        &self,
        node: &str,
        cmd: &[&str],
    ) -> Result<T, BenchLabError> {
        let o = self
            .lab
            .exec(node, cmd)
            .await
            .map_err(|e| err(self.group, e))?;
        if o.code != 0 {
            return Err(err(
                self.group,
                format!(
                    "`{}` in {node}: exit {}: {}",
                    cmd.join(" "),
                    o.code,
                    o.stderr.trim()
                ),
            ));
        }
        let last = o
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(last).map_err(|e| {
            err(
                self.group,
                format!(
                    "`{}` printed no JSON ({e}): {}",
                    cmd.join(" "),
                    o.stdout.trim()
                ),
            )
        })
    }

    /// The resident set of the process `binary` (the oldest of that name) in `node`, in KiB.
    /// (PID 1 is the container's init.)
    async fn rss_kb(&self, node: &str, binary: &str) -> Result<f64, BenchLabError> {
        let script = format!("cat /proc/$(pgrep -o -x {binary})/status");
        let o = self
            .lab
            .exec(node, &["sh", "-c", &script])
            .await
            .map_err(|e| err(self.group, e))?;
        parse_vm_rss(&o.stdout).map(|k| k as f64).ok_or_else(|| {
            err(
                self.group,
                format!("no VmRSS for {binary} in {node}: {}", o.stderr.trim()),
            )
        })
    }

    /// 10 RSS readings 200 ms apart (a reading cadence, not a wait for an event).
    async fn rss_readings_kb(&self, node: &str, binary: &str) -> Result<Vec<f64>, BenchLabError> {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(self.rss_kb(node, binary).await?);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(v)
    }

    /// The median of [`BenchLab::rss_readings_kb`].
    async fn rss_settled_kb(&self, node: &str, binary: &str) -> Result<f64, BenchLabError> {
        let v = self.rss_readings_kb(node, binary).await?;
        Ok(crate::bench::summarize(&v).map_or(0.0, |s| s.median))
    }

    async fn teardown(mut self) -> Result<(), BenchLabError> {
        self.lab.teardown().await.map_err(|e| err(self.group, e))
    }
}

/// A benchmark lab too big for the kernel's neighbour table would measure ARP failures.
fn arp_check(group: &str, lay: &Layout) -> Result<(), BenchLabError> {
    match plan::arp_limit().and_then(|limit| plan::arp_warning(run::arp_needed(lay), limit)) {
        Some(w) => Err(err(group, w)),
        None => Ok(()),
    }
}

fn size_label(s: usize) -> String {
    if s >= 1024 {
        format!("{} KiB", s / 1024)
    } else {
        format!("{s} B")
    }
}

// ------------------------------------------------------------------ 1, 2: one link

const LINK_TOPOLOGY: &str = r#"
name: bench-link
segments:
  internet: {}
nodes:
  m: { role: monitor, segment: internet, transport: tcp, seed: 1, args: ["--idle-timeout", "3600"] }
"#;

/// `bench rtt` to `to` (raw `IP:PORT` or a libp2p multiaddr): `n` pings of `size` bytes, one
/// every 10 ms after 10 of warm-up.
fn ping_pong_cmd<'a>(to: &'a str, size: &'a str, n: &'a str) -> [&'a str; 12] {
    [
        "bench",
        "rtt",
        "--to",
        to,
        "--size",
        size,
        "--count",
        n,
        "--warmup",
        "10",
        "--interval-ms",
        "10",
    ]
}

async fn link(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    const G: &str = "rtt";
    progress("rtt/throughput: a monitor and two hosts on one segment".into());
    let mut bl = BenchLab::new(engine, G, LINK_TOPOLOGY, &opts.image).await?;
    bl.start_planned("m").await?;
    let a = bl
        .start_custom("a", "internet", 200, &["bench", "serve", "--seed", "7"])
        .await?;
    let _b = bl
        .start_custom("b", "internet", 201, &["sleep", "infinity"])
        .await?;
    bl.wait(
        Duration::from_secs(45),
        "monitor started and `bench serve` ready",
        |b| b.started("m").is_some() && b.line::<PerfReady>("a").is_some(),
    )
    .await?;
    let m_ip = bl.ip("m")?;
    let boot = format!("/ip4/{m_ip}/tcp/{}", MONITOR_PORT);
    let perf_peer = bl
        .line::<PerfReady>("a")
        .map(|r| r.peer_id.to_string())
        .unwrap_or_default();
    let mut figures = Vec::new();

    if opts.wants("rtt") {
        // two listeners in `a`, in the background: one direct, one reachable through the relay only
        let common =
            format!("--transport tcp --bootstrap {boot} --metrics-addr off --idle-timeout 3600");
        let script = format!(
            "listener --name direct --seed 11 --port 4001 --external-addr /ip4/{a}/tcp/4001 --namespace bench-direct {common} >/tmp/direct.log 2>&1 &
             listener --name relayed --seed 12 --no-direct --relay always --namespace bench-relayed {common} >/tmp/relayed.log 2>&1 &"
        );
        let o = bl
            .lab
            .exec("a", &["sh", "-c", &script])
            .await
            .map_err(|e| err(G, e))?;
        if o.code != 0 {
            return Err(err(G, format!("cannot start the listeners: {}", o.stderr)));
        }
        // both announced (the relayed one once its reservation is confirmed)
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = bl
                .lab
                .exec("a", &["sh", "-c", "grep -c '\"event\":\"announced\"' /tmp/direct.log /tmp/relayed.log || true"])
                .await
                .map_err(|e| err(G, e))?;
            if o.stdout.lines().all(|l| !l.ends_with(":0")) && o.stdout.lines().count() == 2 {
                break;
            }
            if Instant::now() >= deadline {
                let logs = bl
                    .lab
                    .exec(
                        "a",
                        &["sh", "-c", "tail -n 5 /tmp/direct.log /tmp/relayed.log"],
                    )
                    .await
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                return Err(err(
                    G,
                    format!("the listeners did not announce within 60 s:\n{logs}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let n = opts.pick(200, 50).to_string();
        for (i, size) in [64usize, 4096, 65536].into_iter().enumerate() {
            let s = size.to_string();
            let sl = size_label(size);
            let id = sl.replace(' ', "");
            progress(format!(
                "rtt {sl}: raw TCP, libp2p stream, libp2p direct, libp2p relayed"
            ));
            let raw: RttResult = bl
                .exec_json("b", &ping_pong_cmd(&format!("{a}:5201"), &s, &n))
                .await?;
            let stream: RttResult = bl
                .exec_json(
                    "b",
                    &ping_pong_cmd(&format!("/ip4/{a}/tcp/5202/p2p/{perf_peer}"), &s, &n),
                )
                .await?;
            let seed_d = (100 + 2 * i).to_string();
            let seed_r = (101 + 2 * i).to_string();
            let direct: RttResult = bl
                .exec_json(
                    "b",
                    &[
                        "bench",
                        "p2p-rtt",
                        "--bootstrap",
                        &boot,
                        "--namespace",
                        "bench-direct",
                        "--size",
                        &s,
                        "--count",
                        &n,
                        "--path",
                        "direct",
                        "--seed",
                        &seed_d,
                    ],
                )
                .await?;
            let relayed: RttResult = bl
                .exec_json(
                    "b",
                    &[
                        "bench",
                        "p2p-rtt",
                        "--bootstrap",
                        &boot,
                        "--namespace",
                        "bench-relayed",
                        "--size",
                        &s,
                        "--count",
                        &n,
                        "--path",
                        "relayed",
                        "--seed",
                        &seed_r,
                    ],
                )
                .await?;
            let raw_id = format!("rtt.raw_tcp.{id}");
            figures.push(Figure::new(
                &raw_id,
                "rtt",
                format!("raw TCP ping-pong, {sl}"),
                "ms",
                Better::Lower,
                raw.samples_ms,
            ));
            figures.push(
                Figure::new(
                    format!("rtt.libp2p_stream.{id}"),
                    "rtt",
                    format!("libp2p stream ping-pong, {sl}"),
                    "ms",
                    Better::Lower,
                    stream.samples_ms,
                )
                .vs(&raw_id),
            );
            let other = |r: &RttResult| r.other_path.unwrap_or(0);
            let mut fd = Figure::new(
                format!("rtt.libp2p_direct.{id}"),
                "rtt",
                format!("libp2p messages, direct, {sl}"),
                "ms",
                Better::Lower,
                direct.samples_ms.clone(),
            )
            .vs(&raw_id);
            if other(&direct) > 0 {
                fd = fd.note(format!(
                    "{} acks came over the relay and are not counted",
                    other(&direct)
                ));
            }
            let mut fr = Figure::new(
                format!("rtt.libp2p_relayed.{id}"),
                "rtt",
                format!("libp2p messages, relayed, {sl}"),
                "ms",
                Better::Lower,
                relayed.samples_ms.clone(),
            )
            .vs(&raw_id);
            if other(&relayed) > 0 {
                fr = fr.note(format!(
                    "{} acks came over a direct connection and are not counted",
                    other(&relayed)
                ));
            }
            figures.extend([fd, fr]);
        }
    }

    if opts.wants("throughput") {
        let bytes = opts.pick("128MiB", "32MiB");
        let repeats = opts.pick("5", "3");
        let targets = [
            ("raw_tcp", "raw TCP, one connection", format!("{a}:5201")),
            (
                "libp2p_tcp",
                "libp2p stream over TCP (noise, yamux)",
                format!("/ip4/{a}/tcp/5202/p2p/{perf_peer}"),
            ),
            (
                "libp2p_quic",
                "libp2p stream over QUIC",
                format!("/ip4/{a}/udp/5202/quic-v1/p2p/{perf_peer}"),
            ),
        ];
        for (id, label, to) in targets {
            progress(format!("throughput: {label}"));
            let v: ThroughputResult = bl
                .exec_json(
                    "b",
                    &[
                        "bench",
                        "throughput",
                        "--to",
                        &to,
                        "--bytes",
                        bytes,
                        "--repeats",
                        repeats,
                    ],
                )
                .await?;
            let mut f = Figure::new(
                format!("throughput.{id}"),
                "throughput",
                label,
                "Mbit/s",
                Better::Higher,
                v.samples_mbit_s,
            );
            if id != "raw_tcp" {
                f = f.vs("throughput.raw_tcp");
            }
            figures.push(f);
        }
    }
    bl.teardown().await?;
    Ok(figures)
}

// ------------------------------------------------------------------ 3: time to direct

const DIRECT_TOPOLOGY: &str = r#"
name: bench-direct
timeout: 90s
segments:
  internet: {}
  lan-a: { nat: home }
  lan-b: { nat: home }
nodes:
  boot:  { role: monitor,  segment: internet }
  alice: { role: listener, segment: lan-a, namespace: bench }
  bob:   { role: dialer,   segment: lan-b, namespace: bench, count: 5, interval: 250ms }
expect:
  - { direct: [bob, alice], within: 60s }
  - { delivered: { from: bob, to: alice, count: 5, lost: 0 } }
"#;

async fn direct(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    const G: &str = "direct";
    let topo = model::parse("<bench direct>", DIRECT_TOPOLOGY).map_err(|e| err(G, e.render()))?;
    let mut to_direct = Vec::new();
    let mut to_relayed = Vec::new();
    let mut relayed_to_direct = Vec::new();
    let mut ok = 0u64;
    let n = opts.direct_repeats;
    for i in 0..n {
        let mut o = Options::new(opts.image.clone());
        o.keep_on_failure = false;
        let r = run::run(engine.clone(), &topo, o, None, std::future::pending())
            .await
            .map_err(|e| err(G, e))?;
        let t = &r.timeline;
        // bob starts after alice: the pair's times count from bob's start
        if let Some(s) = t.started("bob") {
            let first_direct_ack = t.of("bob").find_map(|l| match &l.event {
                Event::MessageAcked {
                    path: Path::Direct, ..
                } => Some(l.ts),
                _ => None,
            });
            if let Some(d) = first_direct_ack {
                to_direct.push((d - s).num_milliseconds() as f64 / 1000.0);
            }
        }
        if let Some(m) = r.metrics.first() {
            if let Some(x) = m.first_relayed_ms {
                to_relayed.push(x as f64 / 1000.0);
            }
            if let Some(x) = m.relayed_to_direct_ms {
                relayed_to_direct.push(x as f64);
            }
        }
        if r.ok {
            ok += 1;
        }
        progress(format!(
            "direct: run {} of {n}: {}",
            i + 1,
            if r.ok { "direct" } else { "FAILED" }
        ));
    }
    let (lo, hi) = crate::report::wilson(ok, n as u64);
    Ok(vec![
        Figure::new(
            "direct.first_relayed",
            G,
            "dialer start → first relayed connection",
            "s",
            Better::Lower,
            to_relayed,
        ),
        Figure::new(
            "direct.first_direct_ack",
            G,
            "dialer start → first direct ack",
            "s",
            Better::Lower,
            to_direct,
        )
        .vs("direct.first_relayed"),
        Figure::new(
            "direct.relayed_to_direct",
            G,
            "first relayed connection → first direct one",
            "ms",
            Better::Lower,
            relayed_to_direct,
        ),
        Figure::new(
            "direct.success",
            G,
            "runs that went direct",
            "%",
            Better::Higher,
            vec![100.0 * ok as f64 / n.max(1) as f64],
        )
        .note(format!(
            "{ok} of {n} runs; Wilson 95% interval {:.0}–{:.0}%",
            lo * 100.0,
            hi * 100.0
        )),
    ])
}

// ------------------------------------------------------------------ 4: discovery

async fn discovery(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    const G: &str = "discovery";
    // Enough joiners that a p95 means something.
    let joiners = opts.pick(20, 3);
    let mut figures = Vec::new();
    for n in [2usize, 10, 50] {
        progress(format!(
            "discovery: namespace of {n}: {} listeners, then {joiners} joiners",
            n - 1
        ));
        let yaml = format!(
            "name: bench-discovery\nsegments:\n  internet: {{}}\nnodes:\n  m: {{ role: monitor, segment: internet, transport: tcp }}\n  \
             l: {{ role: listener, segment: internet, namespace: bench, transport: tcp, replicas: {} }}\n  \
             j: {{ role: dialer, segment: internet, namespace: bench, transport: tcp, replicas: {joiners}, count: 1 }}\n",
            n - 1
        );
        let mut bl = BenchLab::new(engine, G, &yaml, &opts.image).await?;
        bl.start_planned("m").await?;
        bl.wait(Duration::from_secs(45), "monitor started", |b| {
            b.started("m").is_some()
        })
        .await?;
        let listeners = bl.planned(Role::Listener);
        for l in &listeners {
            bl.start_planned(l).await?;
        }
        bl.wait(Duration::from_secs(120), "every listener announced", |b| {
            listeners.iter().all(|l| b.has(l, "announced"))
        })
        .await?;
        let ids: Vec<PeerId> = listeners
            .iter()
            .filter_map(|l| bl.started(l).map(|s| s.1))
            .collect();
        let mut samples = Vec::new();
        for j in bl.planned(Role::Dialer) {
            bl.start_planned(&j).await?;
            let jj = j.clone();
            let ids2 = ids.clone();
            bl.wait(
                Duration::from_secs(60),
                &format!("{j} discovered all {} listeners", ids.len()),
                move |b| b.started(&jj).is_some() && discovered_all(b, &jj, &ids2).is_some(),
            )
            .await?;
            if let (Some((t0, _)), Some(t)) = (bl.started(&j), discovered_all(&bl, &j, &ids)) {
                samples.push((t - t0).num_milliseconds() as f64);
            }
            // The joiner stays: a dialer does not announce, so the namespace stays at N, and the
            // next joiner meets live peers. (Killed joiners stayed in every routing table as dead
            // Kademlia servers, and the figure became the time to wait them out.)
        }
        bl.teardown().await?;
        let mut f = Figure::new(
            format!("discovery.{n}"),
            G,
            format!("namespace of {n}: join → all {} others found", n - 1),
            "ms",
            Better::Lower,
            samples,
        );
        if n != 2 {
            f = f.vs("discovery.2");
        }
        figures.push(f);
    }
    Ok(figures)
}

/// When `node` had discovered every peer of `ids`.
fn discovered_all(b: &BenchLab, node: &str, ids: &[PeerId]) -> Option<DateTime<Utc>> {
    let mut last: Option<DateTime<Utc>> = None;
    for id in ids {
        let t = b.events.iter().find_map(|l| match &l.event {
            Event::Discovered { peer, .. } if l.node == node && peer == id => Some(l.ts),
            _ => None,
        })?;
        last = Some(last.map_or(t, |x| x.max(t)));
    }
    last
}

// ------------------------------------------------------------------ 5: labs

async fn labs(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    let sizes = Sizes {
        lans: false,
        memory: true,
        group: "labs",
        sizes: &[5, 20, 50, 100],
        on: String::new(),
    };
    labs_on(engine, opts, progress, sizes).await
}

/// A lab of `n` containers in LANs of at most 100 (a segment holds at most 222 on a swarm, and
/// 254 anywhere): a monitor on the public segment, and per LAN a `home` router and listeners
/// (behind NAT, as most peers are; public hosts have no routes into a LAN, so `routed` would not
/// do). Returns its YAML and the containers per segment.
fn lans_lab(n: usize) -> (String, Vec<usize>) {
    let lans = n.div_ceil(100).max(1);
    let listeners = n.saturating_sub(1 + lans);
    let mut yaml = String::from("name: bench-swarm\ntimeout: 600s\nsegments:\n  internet: {}\n");
    for i in 1..=lans {
        yaml.push_str(&format!("  lan-{i}: {{ nat: home }}\n"));
    }
    yaml.push_str("nodes:\n  m: { role: monitor, segment: internet }\n");
    let mut per_segment = vec![1 + lans];
    for i in 1..=lans {
        let k = listeners / lans + usize::from(i <= listeners % lans);
        yaml.push_str(&format!(
            "  l{i}: {{ role: listener, segment: lan-{i}, namespace: bench, replicas: {k} }}\n"
        ));
        per_segment.push(k + 1);
    }
    yaml.push_str(&format!(
        "expect:\n  - {{ event: {{ kind: bootstrapped, min: {listeners} }} }}\n"
    ));
    (yaml, per_segment)
}

/// Which labs a bring-up group measures.
struct Sizes {
    /// In LANs of at most 100 ([`lans_lab`]) instead of one flat segment.
    lans: bool,
    /// Whether each container's memory is a figure of the group.
    memory: bool,
    /// The group, and the prefix of its figures' ids.
    group: &'static str,
    /// Containers per lab, smallest first: the ratios are over the first (over one engine's
    /// lab of the same size, for a swarm).
    sizes: &'static [usize],
    /// After "N containers" in the figures' names (" on 3 engines").
    on: String,
}

async fn labs_on(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
    sizes: Sizes,
) -> Result<Vec<Figure>, BenchLabError> {
    let g = sizes.group;
    let on = &sizes.on;
    let first = sizes.sizes.first().copied().unwrap_or(0);
    let runs = opts.pick(3, 1);
    let mut figures = Vec::new();
    for &n in sizes.sizes {
        let (yaml, per_segment) = if sizes.lans {
            lans_lab(n)
        } else {
            (
                format!(
                    "name: bench-labs\ntimeout: 300s\nsegments:\n  internet: {{}}\nnodes:\n  m: {{ role: monitor, segment: internet }}\n  \
                     l: {{ role: listener, segment: internet, namespace: bench, replicas: {} }}\nexpect:\n  - {{ event: {{ kind: bootstrapped, min: {} }} }}\n",
                    n - 1,
                    n - 1
                ),
                vec![n],
            )
        };
        let topo = model::parse("<bench labs>", &yaml).map_err(|e| err(g, e.render()))?;
        if let Some(w) = plan::arp_limit()
            .and_then(|limit| plan::arp_warning(plan::arp_entries(per_segment), limit))
        {
            return Err(err(g, w));
        }
        let (mut up, mut down, mut mem) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let mut o = Options::new(opts.image.clone());
            o.keep_on_failure = false;
            o.sample_memory = true;
            let r = run::run(engine.clone(), &topo, o, None, std::future::pending())
                .await
                .map_err(|e| err(g, e))?;
            if !r.ok {
                return Err(err(
                    g,
                    format!(
                        "the lab of {n} did not come up: {:?}",
                        r.verdicts
                            .iter()
                            .filter(|v| !v.held)
                            .map(|v| v.name.clone())
                            .collect::<Vec<_>>()
                    ),
                ));
            }
            up.push(r.bringup_ms as f64 / 1000.0);
            down.push(r.teardown_ms as f64 / 1000.0);
            mem.extend(r.memory.values().map(|b| *b as f64 / (1024.0 * 1024.0)));
            progress(format!(
                "{g}: {n} containers{on}, run {} of {runs}: up {:.1} s, down {:.1} s",
                i + 1,
                r.bringup_ms as f64 / 1000.0,
                r.teardown_ms as f64 / 1000.0
            ));
        }
        // the ratio: over the first size of the group; a swarm's over one engine's lab of the
        // same size (section 5, when it ran)
        let base = |what: &str| match g {
            "labs" => (n != first).then(|| format!("labs.{what}.{first}")),
            _ => Some(format!("labs.{what}.{n}")),
        };
        let figure = |what: &str, name: &str, unit: &str, v: Vec<f64>| {
            let f = Figure::new(
                format!("{g}.{what}.{n}"),
                g,
                format!("{n} containers{on}: {name}"),
                unit,
                Better::Lower,
                v,
            );
            match base(what) {
                Some(b) => f.vs(&b),
                None => f,
            }
        };
        figures.push(figure("up", "bring-up", "s", up));
        figures.push(figure("down", "teardown", "s", down));
        // Not on a swarm: an engine in a container (the test bed) reports 0 for most of its
        // containers and its own total for some (0 and 3,913 MiB in one run).
        if sizes.memory {
            figures.push(figure("memory", "memory per container", "MiB", mem));
        }
    }
    Ok(figures)
}

// ------------------------------------------------------------------ 6: memory

async fn memory(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    const G: &str = "memory";
    let sizes = [10usize, 100, 500];
    // the monitors m0 (idle), m10, m100, m500 and a listener on m0
    let yaml = "name: bench-memory\nsegments:\n  internet: {}\nnodes:\n  \
        m0: { role: monitor, segment: internet, transport: tcp, args: [\"--idle-timeout\", \"3600\"] }\n  \
        m10: { role: monitor, segment: internet, transport: tcp, args: [\"--idle-timeout\", \"3600\", \"--max-connections\", \"4096\", \"--max-connections-per-ip\", \"0\"] }\n  \
        m100: { role: monitor, segment: internet, transport: tcp, args: [\"--idle-timeout\", \"3600\", \"--max-connections\", \"4096\", \"--max-connections-per-ip\", \"0\"] }\n  \
        m500: { role: monitor, segment: internet, transport: tcp, args: [\"--idle-timeout\", \"3600\", \"--max-connections\", \"4096\", \"--max-connections-per-ip\", \"0\"] }\n  \
        l: { role: listener, segment: internet, namespace: bench, transport: tcp }\n";
    let mut bl = BenchLab::new(engine, G, yaml, &opts.image).await?;
    // every monitor bootstraps from the others in the layout: start them all, but load one at a time
    progress("memory: idle monitor and listener".into());
    for m in ["m0", "m10", "m100", "m500"] {
        bl.start_planned(m).await?;
    }
    bl.wait(Duration::from_secs(45), "monitors started", |b| {
        ["m0", "m10", "m100", "m500"]
            .iter()
            .all(|m| b.started(m).is_some())
    })
    .await?;
    let mut figures = Vec::new();
    let idle_monitor = bl.rss_readings_kb("m0", "monitor").await?;
    bl.start_planned("l").await?;
    bl.wait(Duration::from_secs(60), "listener announced", |b| {
        b.has("l", "announced")
    })
    .await?;
    let idle_listener = bl.rss_readings_kb("l", "listener").await?;
    let mib = |v: &[f64]| v.iter().map(|k| k / 1024.0).collect::<Vec<f64>>();
    figures.push(Figure::new(
        "memory.idle.monitor",
        G,
        "monitor, idle",
        "MiB",
        Better::Lower,
        mib(&idle_monitor),
    ));
    figures.push(Figure::new(
        "memory.idle.listener",
        G,
        "listener, idle (bootstrapped, announced)",
        "MiB",
        Better::Lower,
        mib(&idle_listener),
    ));
    let net = bl.subnet("internet")?;
    for (i, n) in sizes.into_iter().enumerate() {
        let m = format!("m{n}");
        let m_ip = bl.ip(&m)?;
        let m_id = bl
            .started(&m)
            .map(|s| s.1)
            .ok_or_else(|| err(G, format!("{m} has no peer id")))?;
        let before = bl.rss_settled_kb(&m, "monitor").await?;
        progress(format!("memory: {n} peers on a fresh monitor"));
        let load = format!("load{n}");
        let host = 200 + i as u32;
        let load_ip = plan::host(&net, host).ok_or_else(|| err(G, "no address for the load"))?;
        let boot = format!("/ip4/{m_ip}/tcp/{}/p2p/{m_id}", MONITOR_PORT);
        let ns = n.to_string();
        let seed_base = (2_000_000 + 10_000 * i).to_string();
        bl.start_custom(
            &load,
            "internet",
            host,
            &[
                "bench",
                "swarm",
                "--hold",
                "--nodes",
                &ns,
                "--namespace-size",
                "10",
                "--bootstrap",
                &boot,
                "--listen-addr",
                &load_ip.to_string(),
                "--seed-base",
                &seed_base,
            ],
        )
        .await?;
        let mm = m.clone();
        let ll = load.clone();
        bl.wait(
            Duration::from_secs(180),
            &format!("{n} peers connected to {m}"),
            move |b| b.line::<SwarmReady>(&ll).is_some() && b.peers_of(&mm) >= n,
        )
        .await?;
        let under = bl.rss_readings_kb(&m, "monitor").await?;
        let peers = bl.peers_of(&m);
        let per_conn: Vec<f64> = under
            .iter()
            .map(|u| (u - before) / peers.max(1) as f64)
            .collect();
        figures.push(
            Figure::new(
                format!("memory.monitor.{n}"),
                G,
                format!("monitor with {n} connected peers"),
                "MiB",
                Better::Lower,
                mib(&under),
            )
            .vs("memory.idle.monitor")
            .note(format!(
                "{peers} peers connected when read; the same monitor idle: {:.1} MiB",
                before / 1024.0
            )),
        );
        figures.push(Figure::new(
            format!("memory.per_connection.{n}"),
            G,
            format!("KB per connected peer, {n} peers"),
            "KiB",
            Better::Lower,
            per_conn,
        ));
        // 0: the load could not read its own /proc/self/status (out of open files)
        if let Some(ready) = bl.line::<SwarmReady>(&load).filter(|r| r.rss_kb > 0) {
            figures.push(Figure::new(
                format!("memory.load_node.{n}"),
                G,
                format!("one node of {n} in one process (the load)"),
                "KiB",
                Better::Lower,
                vec![ready.rss_kb as f64 / n as f64],
            ));
        }
        // free the machine before the next size
        bl.lab
            .signal(&load, "SIGKILL")
            .await
            .map_err(|e| err(G, e))?;
        bl.lab.signal(&m, "SIGKILL").await.map_err(|e| err(G, e))?;
    }
    bl.teardown().await?;
    Ok(figures)
}

// ------------------------------------------------------------------ 7: scale

async fn scale(
    engine: &Engine,
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Figure>, BenchLabError> {
    const G: &str = "scale";
    let yaml = "name: bench-scale\nsegments:\n  internet: {}\nnodes:\n  m: { role: monitor, segment: internet }\n";
    let mut bl = BenchLab::new(engine, G, yaml, &opts.image).await?;
    let mut figures = Vec::new();
    for (i, n) in [100usize, 1000].into_iter().enumerate() {
        progress(format!("scale: {n} nodes in one process"));
        let name = format!("swarm{n}");
        bl.start_custom(&name, "internet", 200 + i as u32, &["sleep", "infinity"])
            .await?;
        // the memory transport: over loopback TCP both ends of every connection are files of this
        // one process, and 1,000 nodes need far more than the engine's 20,000
        let v: SwarmResult = bl
            .exec_json(
                &name,
                &[
                    "bench",
                    "swarm",
                    "--transport",
                    "memory",
                    "--nodes",
                    &n.to_string(),
                    "--namespace-size",
                    "10",
                    "--dialers-per-namespace",
                    "2",
                    "--deadline",
                    "120",
                    "--kad-replication",
                    "8",
                    "--ramp",
                    "5",
                    "--idle-timeout",
                    "600",
                ],
            )
            .await?;
        let (dialers, complete) = (v.dialers, v.dialers_complete);
        let rss = v.rss_kb.saturating_sub(v.rss_kb_before) as f64;
        let share = if dialers > 0 {
            100.0 * complete as f64 / dialers as f64
        } else {
            0.0
        };
        figures.push(
            Figure::new(
                format!("scale.share.{n}"),
                G,
                format!("{n} nodes: dialers that found their whole namespace"),
                "%",
                Better::Higher,
                vec![share],
            )
            .note(format!(
                "{complete} of {dialers} dialers; {} of {} listeners announced",
                v.announced, v.listeners
            )),
        );
        let mut f = Figure::new(
            format!("scale.discovery.{n}"),
            G,
            format!("{n} nodes: dialer start → whole namespace found"),
            "ms",
            Better::Lower,
            v.discovery_ms.clone(),
        );
        if n != 100 {
            f = f.vs("scale.discovery.100");
        }
        figures.push(f);
        let mut f = Figure::new(
            format!("scale.announce.{n}"),
            G,
            format!("{n} nodes: listener start → announced"),
            "ms",
            Better::Lower,
            v.announce_ms.clone(),
        );
        if n != 100 {
            f = f.vs("scale.announce.100");
        }
        figures.push(f);
        figures.push(Figure::new(
            format!("scale.memory.{n}"),
            G,
            format!("{n} nodes: memory per node"),
            "KiB",
            Better::Lower,
            vec![rss / (n as f64 + 1.0)],
        ));
        figures.push(Figure::new(
            format!("scale.connections.{n}"),
            G,
            format!("{n} nodes: connections open per node at the end"),
            "conns",
            Better::Lower,
            vec![v.connections_per_node],
        ));
        bl.lab
            .signal(&name, "SIGKILL")
            .await
            .map_err(|e| err(G, e))?;
    }
    bl.teardown().await?;
    Ok(figures)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opts() -> BenchOptions {
        BenchOptions {
            image: "img".into(),
            only: Vec::new(),
            quick: false,
            direct_repeats: 30,
            swarm: None,
        }
    }

    /// Every lab the benchmarks build is a valid topology with a layout (no Docker).
    #[test]
    fn bench_topologies_validate_and_lay_out() {
        let discovery = "name: bench-discovery\nsegments:\n  internet: {}\nnodes:\n  m: { role: monitor, segment: internet }\n  \
            l: { role: listener, segment: internet, namespace: bench, replicas: 49 }\n  j: { role: dialer, segment: internet, namespace: bench, replicas: 5, count: 1 }\n";
        for (name, yaml) in [
            ("link", LINK_TOPOLOGY),
            ("direct", DIRECT_TOPOLOGY),
            ("discovery", discovery),
        ] {
            let topo = model::parse(name, yaml).unwrap_or_else(|e| panic!("{}", e.render()));
            let mut subnets = BTreeMap::new();
            for (i, seg) in topo.segments.iter().enumerate() {
                subnets.insert(
                    seg.name.clone(),
                    format!("10.{}.0.0/24", 100 + i).parse().unwrap(),
                );
            }
            let lay = layout(&topo, &subnets).unwrap();
            assert!(!lay.containers.is_empty(), "{name}");
            // our own hosts (.200 and up) never collide with the planned ones
            assert!(
                lay.containers.iter().all(|c| c.ip().octets()[3] < 200),
                "{name}"
            );
        }
    }

    #[test]
    fn a_swarm_lab_has_n_containers_in_lans_of_at_most_100() {
        for n in [100, 300] {
            let (yaml, per) = lans_lab(n);
            let t = model::parse("<t>", &yaml).unwrap();
            let (subnets, _) =
                (0..)
                    .zip(t.segments.iter())
                    .fold((BTreeMap::new(), ()), |(mut m, _), (i, s)| {
                        m.insert(s.name.clone(), format!("10.9.{i}.0/24").parse().unwrap());
                        (m, ())
                    });
            let lay = layout(&t, &subnets).unwrap();
            assert_eq!(lay.containers.len(), n, "{yaml}");
            assert_eq!(per.iter().sum::<usize>(), n + per.len() - 1, "{per:?}");
            assert!(per.iter().all(|k| *k <= 101), "{per:?}");
        }
    }

    #[test]
    fn groups_cover_every_id_once_and_only_checks_names() {
        let g = groups(&opts());
        // every group but the swarm's, which needs --engines
        let ids: Vec<&str> = GROUPS.iter().copied().filter(|g| *g != "swarm").collect();
        assert_eq!(g.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(), ids);
        let o = BenchOptions {
            only: vec!["rtt".into()],
            ..opts()
        };
        assert!(o.wants("rtt") && !o.wants("labs"));
        assert!(opts().wants("scale"));
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(65536), "64 KiB");
    }
}
