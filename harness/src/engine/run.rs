//! Running a topology for real: networks and containers through the Docker seam ([`Lab`]),
//! readiness from the containers' own lines, one merged timeline, faults on time, expectations
//! judged, and teardown whatever happens (success, failure, error, Ctrl-C: the caller passes
//! `shutdown` as a future; a panic tears down through [`Lab`]'s `Drop`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    future::Future,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::Serialize;
use tokio::sync::mpsc;

use p2plab_contract::EventLine;

use crate::{
    engine::docker::{Attach, ContainerSpec, DockerError, Engine, Lab, LogLine},
    judge::expect::{evaluate, pair_metrics, Judge, PairMetrics, Timeline, Verdict},
    judge::schedule::{Due, Schedule},
    model::{Action, HealScope, Impair, Target, Topology, NEW_IDENTITY_SUFFIX},
    plan,
    plan::layout::{layout, Kind, Layout, Planned, Ready},
};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub image: String,
    /// Keep the lab after the run (`P2PLAB_KEEP=1`): printed how to get into it.
    pub keep: bool,
    /// Keep the lab only when an expectation failed (`P2PLAB_KEEP=1` does this by default).
    pub keep_on_failure: bool,
    /// Stop as soon as every expectation is settled (else run until the timeout or `shutdown`).
    pub stop_when_settled: bool,
    /// Read every container's memory (as `docker stats` shows it) before the teardown.
    pub sample_memory: bool,
}

impl Options {
    pub fn new(image: String) -> Self {
        let keep_env = std::env::var("P2PLAB_KEEP").is_ok_and(|v| v == "1");
        Options {
            image,
            keep: false,
            keep_on_failure: keep_env,
            stop_when_settled: true,
            sample_memory: false,
        }
    }
}

/// What the runner reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A bring-up or teardown step.
    Step(String),
    /// A container is up (`n` of `total`).
    Up {
        name: String,
        n: usize,
        total: usize,
    },
    Event(EventLine),
    Fault(FaultRecord),
    Verdict(Verdict),
}

/// A fault as it was applied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultRecord {
    pub at: DateTime<Utc>,
    /// ms since every node started.
    pub t_ms: i64,
    pub action: String,
    pub line: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub topology: Topology,
    pub run_id: String,
    pub layout: Layout,
    pub ok: bool,
    pub verdicts: Vec<Verdict>,
    pub metrics: Vec<PairMetrics>,
    pub faults: Vec<FaultRecord>,
    pub timeline: Timeline,
    /// Lines that were not node events (routers, VPN ends), and harness notes.
    pub other: Vec<(DateTime<Utc>, String, String)>,
    pub started_at: DateTime<Utc>,
    /// When every node had started (the origin of `at` and `within`).
    pub t0: DateTime<Utc>,
    pub bringup_ms: u64,
    pub run_ms: u64,
    pub teardown_ms: u64,
    /// Why the run ended early, if it did (Ctrl-C).
    pub aborted: Option<String>,
    /// The last stderr lines of every node, when something failed.
    pub stderr: BTreeMap<String, String>,
    /// Containers that had a route out of the lab at the end (must be none; checked in every
    /// running container with `ip route get` to an outside address, which sends no packet).
    pub route_out: Vec<String>,
    /// Memory per container in bytes (as `docker stats` shows it), with [`Options::sample_memory`].
    pub memory: BTreeMap<String, u64>,
    /// The engine each container ran on, by name (a swarm: `--engines`); empty on one engine.
    pub placement: BTreeMap<String, String>,
}

/// Why a lab could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("segment `{segment}`: subnet {subnet} overlaps {used} (a host route, another Docker network or a reserved range); leave `subnet` out to have one allocated")]
    SubnetTaken {
        segment: String,
        subnet: Ipv4Net,
        used: Ipv4Net,
    },
    #[error("{0}")]
    Layout(#[from] crate::plan::layout::LayoutError),
    #[error("{name} was not ready within {secs} s ({why})\n--- {name} stderr ---\n{stderr}")]
    NotReady {
        name: String,
        secs: u64,
        why: String,
        stderr: String,
    },
    #[error(transparent)]
    Engine(#[from] crate::plan::layout::EngineOutOfRange),
    #[error("interrupted during bring-up")]
    Interrupted,
}

const READY_WITHIN: Duration = Duration::from_secs(45);

pub(crate) fn spec(p: &Planned, image: &str) -> ContainerSpec {
    ContainerSpec {
        name: p.name.clone(),
        image: image.to_string(),
        cmd: p.cmd.clone(),
        env: p.env.clone(),
        attach: p
            .attach
            .iter()
            .map(|(n, ip)| Attach {
                network: n.clone(),
                ip: *ip,
            })
            .collect(),
        net_admin: p.net_admin,
        sysctls: p.sysctls.clone(),
        tun: p.tun,
        engine: 0,
    }
}

struct State {
    timeline: Timeline,
    other: Vec<(DateTime<Utc>, String, String)>,
    seen: HashSet<(String, String)>,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl State {
    fn take(&mut self, l: LogLine) {
        // a restarted container's log is followed again from its start: drop lines seen before
        if !self.seen.insert((l.node.clone(), l.line.clone())) {
            return;
        }
        match EventLine::parse(&l.line) {
            Ok(ev) => {
                if let Some(p) = &self.progress {
                    let _ = p.send(Progress::Event(ev.clone()));
                }
                self.timeline.push(ev);
            }
            Err(_) => self.other.push((Utc::now(), l.node, l.line)),
        }
    }

    fn step(&self, s: impl Into<String>) {
        if let Some(p) = &self.progress {
            let _ = p.send(Progress::Step(s.into()));
        }
    }

    /// Container `name` is ready, the `n`th of `total`.
    fn report_up(&self, name: &str, n: usize, total: usize) {
        if let Some(p) = &self.progress {
            let _ = p.send(Progress::Up {
                name: name.to_string(),
                n,
                total,
            });
        }
    }
}

/// Runs the topology: bring-up, faults, judgement, teardown.
pub async fn run(
    engine: Engine,
    topo: &Topology,
    opts: Options,
    progress: Option<mpsc::UnboundedSender<Progress>>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunResult, RunError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut lab = Lab::new(engine.clone(), &topo.name);
    if opts.keep {
        lab.keep();
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
    let mut st = State {
        timeline: Timeline::default(),
        other: Vec::new(),
        seen: HashSet::new(),
        progress,
    };
    tokio::pin!(shutdown);

    // ---- bring-up
    let bring = bring_up(&mut lab, topo, &opts, &tx, &mut rx, &mut st, &mut shutdown).await;
    let lay = match bring {
        Ok(l) => l,
        Err(e) => {
            st.step("teardown after a failed bring-up");
            if !opts.keep && !opts.keep_on_failure {
                lab.teardown().await.ok();
            } else {
                lab.keep();
            }
            return Err(e);
        }
    };
    let bringup_ms = clock.elapsed().as_millis() as u64;
    let t0 = Utc::now();
    let run_clock = Instant::now();
    st.step(format!(
        "lab up in {bringup_ms} ms; running (timeout {} s)",
        topo.timeout.as_secs()
    ));

    // ---- faults and judgement
    let mut judge = Judge::new(topo);
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut schedule = Schedule::new(&topo.faults, run_clock);
    let deadline = run_clock + topo.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut aborted = None;
    loop {
        tokio::select! {
            Some(l) = rx.recv() => {
                st.take(l);
                while let Ok(l) = rx.try_recv() { st.take(l); }
            }
            _ = tick.tick() => {}
            _ = &mut shutdown => { aborted = Some("interrupted (Ctrl-C)".to_string()); break; }
        }
        let now = Instant::now();
        for Due { action, line } in schedule.due(now, |check| evaluate(check, &st.timeline).holds())
        {
            let rec = apply(&lab, topo, &lay, &action, line, t0, &tx).await;
            st.step(format!(
                "fault: {}{}",
                rec.action,
                if rec.ok {
                    String::new()
                } else {
                    format!(" FAILED: {}", rec.error)
                }
            ));
            if let Some(p) = &st.progress {
                let _ = p.send(Progress::Fault(rec.clone()));
            }
            faults.push(rec);
        }
        let settled = judge.update(&st.timeline, t0, Utc::now());
        let faults_done = schedule.is_empty();
        if opts.stop_when_settled && faults_done {
            let dialers = crate::judge::expect::dialers_done(topo, &st.timeline);
            if settled || (judge.all_hold_now(&st.timeline) && dialers) {
                break;
            }
            // a failed expectation will not come back: stop once nothing else can change
            if judge.any_failed() && dialers && judge.all_hold_now(&st.timeline) {
                break;
            }
        }
        if now >= deadline {
            st.step("timeout reached");
            break;
        }
    }
    // drain what already arrived
    while let Ok(l) = rx.try_recv() {
        st.take(l);
    }
    let end = Utc::now();
    let run_ms = run_clock.elapsed().as_millis() as u64;
    let verdicts = judge.verdicts(&st.timeline, t0, end);
    for v in &verdicts {
        if let Some(p) = &st.progress {
            let _ = p.send(Progress::Verdict(v.clone()));
        }
    }
    let route_out = if aborted.is_none() {
        routes_out(&lab, &lay).await
    } else {
        Vec::new()
    };
    if !route_out.is_empty() {
        st.step(format!(
            "ISOLATION BROKEN: a route out of the lab in {}",
            route_out.join(", ")
        ));
    }
    let ok = aborted.is_none()
        && verdicts.iter().all(|v| v.held)
        && faults.iter().all(|f| f.ok)
        && route_out.is_empty();
    let mut stderr = BTreeMap::new();
    if !ok {
        for c in &lay.containers {
            stderr.insert(c.name.clone(), lab.stderr_tail(&c.name, 20).await);
        }
    }
    let metrics = pair_metrics(topo, &st.timeline);
    let mut memory = BTreeMap::new();
    if opts.sample_memory {
        let reads = lay
            .containers
            .iter()
            .map(|c| async { (c.name.clone(), lab.memory(&c.name).await) });
        for (name, m) in futures::future::join_all(reads).await {
            if let Ok(m) = m {
                memory.insert(name, m);
            }
        }
    }

    // ---- teardown
    let placement = lab.placement();
    let td = Instant::now();
    if opts.keep || (!ok && opts.keep_on_failure) {
        lab.keep();
        st.step(format!("keeping the lab: run {}", lab.run_id));
    } else {
        st.step("teardown");
        lab.teardown().await?;
    }
    let teardown_ms = td.elapsed().as_millis() as u64;
    Ok(RunResult {
        topology: topo.clone(),
        run_id: lab.run_id.clone(),
        layout: lay,
        ok,
        verdicts,
        metrics,
        faults,
        timeline: st.timeline,
        other: st.other,
        started_at,
        t0,
        bringup_ms,
        run_ms,
        teardown_ms,
        aborted,
        stderr,
        route_out,
        memory,
        placement,
    })
}

/// The ARP entries a layout may need: containers per segment, squared.
pub fn arp_needed(lay: &Layout) -> usize {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &lay.containers {
        for (seg, _) in &c.attach {
            *per.entry(seg.as_str()).or_default() += 1;
        }
    }
    plan::arp_entries(per.into_values())
}

/// Addresses outside the lab that no lab container may have a route to: the internet over IPv4
/// and IPv6, and the host's own IPv6 network (`fd00::/64` on these machines). Tests that build
/// their own labs check the same list.
pub const OUTSIDE: [&str; 3] = ["1.1.1.1", "2606:4700:4700::1111", "fd00::1"];

/// The running containers that have a route to an address outside the lab ([`OUTSIDE`]).
async fn routes_out(lab: &Lab, lay: &Layout) -> Vec<String> {
    let checks = lay.containers.iter().map(|c| async move {
        let mut found = Vec::new();
        for dest in OUTSIDE {
            match lab.exec(&c.name, &["ip", "route", "get", dest]).await {
                // exit 0: the kernel found a route; a killed container cannot be asked (Err)
                Ok(o) if o.code == 0 => found.push(format!("{} ({})", c.name, o.stdout.trim())),
                _ => {}
            }
        }
        found
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn bring_up(
    lab: &mut Lab,
    topo: &Topology,
    opts: &Options,
    tx: &mpsc::UnboundedSender<LogLine>,
    rx: &mut mpsc::UnboundedReceiver<LogLine>,
    st: &mut State,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Layout, RunError> {
    plan::layout::check_engines(topo, lab.engine_count())?;
    st.step(format!("run {}: networks", lab.run_id));
    let used = lab.engine().used_subnets().await?;
    let mut subnets = BTreeMap::new();
    for seg in &topo.segments {
        let net = match seg.subnet {
            Some(net) => {
                if let Err(u) = plan::check(&net, &used) {
                    return Err(RunError::SubnetTaken {
                        segment: seg.name.clone(),
                        subnet: net,
                        used: u,
                    });
                }
                lab.network_with(&seg.name, net, seg.family.v6()).await?;
                net
            }
            None => {
                lab.allocate_network_with(&seg.name, topo.pool_of(seg), seg.family.v6())
                    .await?
            }
        };
        subnets.insert(seg.name.clone(), net);
    }
    let lay = layout(topo, &subnets)?;
    let place = plan::layout::placement(topo, &lay, lab.engine_count());
    // On a swarm the containers set up their IPv6 themselves (`contract::host::Static6`).
    let static6 = if lab.engine().is_swarm() {
        plan::layout::static6(topo, &lay)
    } else {
        BTreeMap::new()
    };
    let spec = |p: &Planned, image: &str| {
        let mut s = ContainerSpec {
            engine: place.get(&p.name).copied().unwrap_or(0),
            ..spec(p, image)
        };
        if let Some(ifaces) = static6.get(&p.name) {
            s.env.extend(p2plab_contract::host::static6_env(ifaces));
            s.net_admin = true;
            // Docker disables IPv6 in a container none of whose networks has it
            s.sysctls
                .push(("net.ipv6.conf.all.disable_ipv6".into(), "0".into()));
        }
        s
    };
    let total = lay.containers.iter().filter(|p| p.start_with_lab).count();
    if let Some(w) = plan::arp_limit().and_then(|limit| plan::arp_warning(arp_needed(&lay), limit))
    {
        st.step(format!("WARNING: {w}"));
    }
    let mut up = 0;
    // infrastructure first (routers in uplink order, VPN exits), then monitors, then the peers
    let waves: [&dyn Fn(&Planned) -> bool; 3] = [
        &|p: &Planned| matches!(p.kind, Kind::Router | Kind::VpnExit),
        &|p: &Planned| p.kind == Kind::Node(crate::model::Role::Monitor),
        &|p: &Planned| matches!(p.kind, Kind::Node(r) if r != crate::model::Role::Monitor),
    ];
    // Nodes started with the lab are held (the image's entrypoint, `P2PLAB_HOLD`) until the
    // harness lets them go.
    let held = |p: &Planned| p.start_with_lab && matches!(p.kind, Kind::Node(_));
    for wave in waves {
        let members: Vec<&Planned> = lay.containers.iter().filter(|p| wave(p)).collect();
        // The whole wave is created first, several at once: nothing runs yet, so the order does
        // not matter.
        let specs = members
            .iter()
            .map(|p| {
                let mut s = spec(p, &opts.image);
                if held(p) {
                    s.env.push((HOLD_ENV.to_string(), "1".to_string()));
                }
                s
            })
            .collect();
        lab.create_many(specs).await?;
        for p in members.iter().filter(|p| !p.start_with_lab) {
            // `start: false`: it has its addresses now, and a `start` fault starts it
            st.step(format!(
                "{}: created, not started (a fault starts it)",
                p.name
            ));
        }
        let (mut routers, rest): (Vec<&Planned>, Vec<&Planned>) = members
            .into_iter()
            .filter(|p| p.start_with_lab)
            .partition(|p| p.kind == Kind::Router);
        // Routers by levels: a stacked router starts once the router of its uplink segment is
        // ready; routers whose uplinks are ready start together, and are waited for together.
        let lan_of = |p: &Planned| p.attach.get(1).map(|a| a.0.clone());
        let routed: BTreeSet<String> = routers.iter().filter_map(|p| lan_of(p)).collect();
        let mut ready_lans = BTreeSet::new();
        while !routers.is_empty() {
            let (mut level, mut later): (Vec<&Planned>, Vec<&Planned>) =
                routers.into_iter().partition(|p| {
                    p.attach
                        .first()
                        .is_none_or(|(up, _)| !routed.contains(up) || ready_lans.contains(up))
                });
            if level.is_empty() {
                // a loop of uplinks cannot pass validation; never wait on one forever
                level.push(later.remove(0));
            }
            let names: Vec<&str> = level.iter().map(|p| p.name.as_str()).collect();
            lab.start_many(&names).await?;
            for p in &level {
                lab.follow(&p.name, tx.clone())?;
            }
            for p in &level {
                wait_until(lab, &p.name, &p.ready, rx, st, shutdown).await?;
                up += 1;
                st.report_up(&p.name, up, total);
                ready_lans.extend(lan_of(p));
            }
            routers = later;
        }
        // The nodes' containers start several at once and wait, held; then the nodes go one by
        // one, in order: each once the node before it has started, or RELEASE_GAP after that one
        // was let go, whichever comes first. Their containers started all at once with nothing
        // held (tried), 43 of the NAT matrix came up in a burst that held a public listener's
        // AutoNAT verdict back, and its strict-NAT dialer sent every message over the relay
        // before going direct: the engine's work is parallel, the peers' starts are not. Letting
        // each node go as soon as its own container was up, while later ones still started, was
        // slower (100 containers: 44 s against 30 s): the first nodes' joins slowed the engine.
        let names: Vec<&str> = rest.iter().map(|p| p.name.as_str()).collect();
        lab.start_many(&names).await?;
        for p in &rest {
            lab.follow(&p.name, tx.clone())?;
        }
        for p in rest.iter().filter(|p| held(p)) {
            wait_until(lab, &p.name, &Ready::Line(HOLD_LINE), rx, st, shutdown).await?;
            lab.signal(&p.name, HOLD_SIGNAL).await?;
            wait_for(&p.name, &p.ready, RELEASE_GAP, rx, st, shutdown).await?;
        }
        for p in &rest {
            wait_until(lab, &p.name, &p.ready, rx, st, shutdown).await?;
            up += 1;
            st.report_up(&p.name, up, total);
        }
    }
    Ok(lay)
}

/// Whether `name` became `ready` within `within`, reading the lab's lines meanwhile.
async fn wait_for(
    name: &str,
    ready: &Ready,
    within: Duration,
    rx: &mut mpsc::UnboundedReceiver<LogLine>,
    st: &mut State,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, RunError> {
    let deadline = tokio::time::Instant::now() + within;
    let is_ready = |st: &State| match ready {
        Ready::Started => st.timeline.started(name).is_some(),
        Ready::Line(needle) => st
            .other
            .iter()
            .any(|(_, n, l)| n == name && l.contains(needle)),
    };
    loop {
        if is_ready(st) {
            return Ok(true);
        }
        tokio::select! {
            l = rx.recv() => match l {
                Some(l) => st.take(l),
                None => return Ok(false),
            },
            _ = tokio::time::sleep_until(deadline) => return Ok(false),
            _ = shutdown.as_mut() => return Err(RunError::Interrupted),
        }
    }
}

/// The longest a held node waits for the one let go before it to start (engine/run.rs,
/// `bring_up`). On an idle machine a node starts 30-50 ms after it is let go; under the load of
/// the hundred before it, up to 0.8 s (a flat lab of 100, measured): waiting that out made the
/// nodes' start, not the engine, most of a large lab's bring-up (100 containers in 50 s; with a
/// 100 ms cap, 29-31 s). They still start in order and spaced, never in one burst.
const RELEASE_GAP: Duration = Duration::from_millis(50);

/// The image's entrypoint holds a node's command while this variable is 1 (docker/entrypoint.sh).
const HOLD_ENV: &str = "P2PLAB_HOLD";
/// What a held container prints once it waits for [`HOLD_SIGNAL`].
const HOLD_LINE: &str = "p2plab-hold: waiting for SIGUSR1";
/// Lets a held container's command run.
const HOLD_SIGNAL: &str = "SIGUSR1";

/// Waits until `name` is `ready`, reading the lab's lines meanwhile; an error after
/// [`READY_WITHIN`].
async fn wait_until(
    lab: &Lab,
    name: &str,
    ready: &Ready,
    rx: &mut mpsc::UnboundedReceiver<LogLine>,
    st: &mut State,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), RunError> {
    if wait_for(name, ready, READY_WITHIN, rx, st, shutdown).await? {
        return Ok(());
    }
    let why = if lab.running(name).await {
        "running, but said nothing".to_string()
    } else {
        "exited".to_string()
    };
    Err(RunError::NotReady {
        name: name.to_string(),
        secs: READY_WITHIN.as_secs(),
        why,
        stderr: lab.stderr_tail(name, 20).await,
    })
}

/// A router forgets every mapping, as a reboot would: its mapping maps (named by the contract,
/// the same names its ruleset was rendered with) and its conntrack table. Maps a profile lacks
/// (strict, routed) are skipped.
fn flush_nat_cmd() -> String {
    use p2plab_contract::nat::{Proto, TABLE};
    let maps: Vec<&str> = Proto::BOTH.into_iter().flat_map(Proto::maps).collect();
    format!("for m in {}; do nft flush map ip {TABLE} $m 2>/dev/null; done; conntrack -F >/dev/null 2>&1; true", maps.join(" "))
}

/// nft table the faults use, in routers and nodes alike.
const FAULT_TABLE: &str = "p2plab_fault";

async fn sh(lab: &Lab, node: &str, script: &str) -> Result<(), String> {
    match lab.exec(node, &["sh", "-c", script]).await {
        Ok(o) if o.code == 0 => Ok(()),
        Ok(o) => Err(format!("exit {}: {}", o.code, o.stderr.trim())),
        Err(e) => Err(e.to_string()),
    }
}

fn drop_all_forwarding() -> String {
    format!(
        "nft add table inet {FAULT_TABLE} && nft 'add chain inet {FAULT_TABLE} cut {{ type filter hook forward priority -300; policy drop; }}'"
    )
}

fn isolate_node() -> String {
    format!(
        "nft add table inet {FAULT_TABLE} && nft 'add chain inet {FAULT_TABLE} in {{ type filter hook input priority -300; policy drop; }}' && nft add rule inet {FAULT_TABLE} in iif lo accept && nft 'add chain inet {FAULT_TABLE} out {{ type filter hook output priority -300; policy drop; }}' && nft add rule inet {FAULT_TABLE} out oif lo accept"
    )
}

fn block_addrs(addrs: &[std::net::Ipv4Addr]) -> String {
    let set: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let set = set.join(", ");
    format!(
        "nft add table inet {FAULT_TABLE} && nft 'add chain inet {FAULT_TABLE} in {{ type filter hook input priority -300; }}' && nft 'add chain inet {FAULT_TABLE} out {{ type filter hook output priority -300; }}' && nft 'add rule inet {FAULT_TABLE} in ip saddr {{ {set} }} drop' && nft 'add rule inet {FAULT_TABLE} out ip daddr {{ {set} }} drop'"
    )
}

fn heal() -> String {
    format!("nft delete table inet {FAULT_TABLE} 2>/dev/null; true")
}

fn impair_cmd(wan_ip: std::net::Ipv4Addr, i: &Impair) -> String {
    let args = i.to_args().join(" ");
    format!("wan=$(ip -o -4 addr show | awk '$4 ~ /^{wan_ip}\\// {{print $2}}'); [ -n \"$wan\" ] && p2plab-impair \"$wan\" {args}")
}

/// Starts (or restarts) a node and follows its log again. With `new_identity`, its key file goes
/// first: the harness leaves `<key file>.new-identity` next to it (the engine writes files into
/// stopped containers too), and the image's entrypoint removes both before the node starts, so
/// the node makes a new key: a new identity at the same address.
async fn bring_back(
    lab: &Lab,
    lay: &Layout,
    node: &str,
    new_identity: bool,
    restart: bool,
    tx: &mpsc::UnboundedSender<LogLine>,
) -> Result<(), String> {
    if new_identity {
        let key = lay
            .get(node)
            .and_then(|p| p.key_file.clone())
            .ok_or_else(|| format!("{node} has no key file"))?;
        if !restart && lab.running(node).await {
            return Err(format!(
                "{node} is running: `start` brings back a stopped node (`restart` a running one)"
            ));
        }
        let (dir, file) = key
            .rsplit_once('/')
            .ok_or_else(|| format!("{node}: key file {key} has no directory"))?;
        lab.put_file(node, dir, &format!("{file}{NEW_IDENTITY_SUFFIX}"), b"")
            .await
            .map_err(|e| e.to_string())?;
    }
    let r = if restart {
        lab.restart(node).await
    } else {
        lab.start_again(node).await
    };
    r.map_err(|e| e.to_string())?;
    lab.follow(node, tx.clone()).map_err(|e| e.to_string())
}

async fn apply(
    lab: &Lab,
    topo: &Topology,
    lay: &Layout,
    action: &Action,
    line: u64,
    t0: DateTime<Utc>,
    tx: &mpsc::UnboundedSender<LogLine>,
) -> FaultRecord {
    let at = Utc::now();
    let router = |seg: &str| {
        topo.segment(seg)
            .and_then(|s| s.router_name())
            .unwrap_or_default()
    };
    let res: Result<(), String> = match action {
        Action::Kill(n) => lab.signal(n, "SIGKILL").await.map_err(|e| e.to_string()),
        Action::Stop(n) => lab.signal(n, "SIGTERM").await.map_err(|e| e.to_string()),
        Action::Start { node, new_identity } => {
            bring_back(lab, lay, node, *new_identity, false, tx).await
        }
        Action::Restart { node, new_identity } => {
            bring_back(lab, lay, node, *new_identity, true, tx).await
        }
        Action::Pause(n) => lab.pause(n).await.map_err(|e| e.to_string()),
        Action::Unpause(n) => lab.unpause(n).await.map_err(|e| e.to_string()),
        Action::Partition(Target::Segment(s)) => sh(lab, &router(s), &drop_all_forwarding()).await,
        Action::Partition(Target::Node(n)) => sh(lab, n, &isolate_node()).await,
        Action::PartitionGroups(groups) => {
            let mut r = Ok(());
            for n in groups.iter().flatten().collect::<HashSet<_>>() {
                // every node that shares no group with n
                let others: Vec<std::net::Ipv4Addr> = groups
                    .iter()
                    .flatten()
                    .filter(|o| !groups.iter().any(|g| g.contains(n) && g.contains(o)))
                    .flat_map(|o| lay.visible_addrs(topo, o))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                if let Err(e) = sh(lab, n, &block_addrs(&others)).await {
                    r = Err(format!("{n}: {e}"));
                }
            }
            r
        }
        Action::Heal(HealScope::All) => {
            let mut r = Ok(());
            for c in &lay.containers {
                if let Err(e) = sh(lab, &c.name, &heal()).await {
                    r = Err(format!("{}: {e}", c.name));
                }
            }
            r
        }
        Action::Heal(HealScope::One(Target::Segment(s))) => sh(lab, &router(s), &heal()).await,
        Action::Heal(HealScope::One(Target::Node(n))) => sh(lab, n, &heal()).await,
        Action::FlushNat(seg) => sh(lab, &router(seg), &flush_nat_cmd()).await,
        Action::Exec { node, cmd } => {
            // `{addr:NAME}`: NAME's own address, as the layout gave it
            let cmd: Vec<String> = cmd
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    for c in &lay.containers {
                        a = a.replace(&format!("{{addr:{}}}", c.name), &c.ip().to_string());
                    }
                    a
                })
                .collect();
            lab.exec_follow(node, &cmd, tx.clone())
                .await
                .map_err(|e| e.to_string())
        }
        Action::Impair { segment, impair } => {
            let r = router(segment);
            match lay.get(&r) {
                Some(p) => sh(lab, &r, &impair_cmd(p.ip(), impair)).await,
                None => Err(format!("no router {r}")),
            }
        }
    };
    FaultRecord {
        at,
        t_ms: (at - t0).num_milliseconds(),
        action: action.label(),
        line,
        ok: res.is_ok(),
        error: res.err().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hold is one fact in two languages: the image's entrypoint must speak the harness's.
    #[test]
    fn the_entrypoint_holds_as_the_harness_expects() {
        let sh = include_str!("../../../docker/entrypoint.sh");
        assert!(sh.contains(&format!("${{{HOLD_ENV}:-}}")), "{HOLD_ENV}");
        assert!(sh.contains(&format!("echo \"{HOLD_LINE}\"")), "{HOLD_LINE}");
        let signal = HOLD_SIGNAL.trim_start_matches("SIG");
        assert!(
            sh.contains(&format!("trap 'released=1' {signal}")),
            "{signal}"
        );
    }
}
