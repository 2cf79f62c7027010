//! The Docker backend: the one seam between p2plab and the engine (bollard, API version
//! negotiated; our engines speak 1.41).
//!
//! A [`Lab`] owns what it creates. Every network and container carries the labels
//! `org.p2plab.managed=true`, `org.p2plab.run=<run id>`, `org.p2plab.lab=<name>` and
//! `org.p2plab.created=<unix seconds>`; [`Lab::teardown`] removes them, and so does dropping a
//! lab (also while a panic unwinds), unless `P2PLAB_KEEP=1` keeps it for debugging.
//! [`remove_by_label`] finds and removes leftovers of any run.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bollard::{
    container::LogOutput,
    exec::{CreateExecOptions, StartExecResults},
    models::{
        ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
        NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
        ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    },
    Docker,
};
use futures::StreamExt;
use ipnet::Ipv4Net;
use tokio::sync::mpsc;

pub const LABEL_MANAGED: &str = "org.p2plab.managed";
pub const LABEL_RUN: &str = "org.p2plab.run";
pub const LABEL_LAB: &str = "org.p2plab.lab";
pub const LABEL_CREATED: &str = "org.p2plab.created";
pub const LABEL_NODE: &str = "org.p2plab.node";

/// Creations (and starts) in flight at once in [`Lab::create_many`] and [`Lab::start_many`]. The
/// engine does much of a start one at a time: 100 held containers started in 25.5 / 20.2 / 18.0 s
/// with 4 / 8 / 16 requests in flight (measured with the docker CLI); more would only queue.
const AT_ONCE: usize = 16;

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine ({0}); is it running, and may this user use it? Set P2PLAB_SKIP_DOCKER=1 to skip Docker tests on purpose")]
    Unreachable(String),
    #[error("docker: {context}: {source}")]
    Api {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub(super) fn api(
    context: impl Into<String>,
) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let context = context.into();
    move |source| DockerError::Api { context, source }
}

/// A connection to the engine; or to the manager of a Docker Swarm, with a connection to each of
/// the swarm's engines ([`Engine::connect_swarm`]): a lab then places its containers across them.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// The engine's name (its `docker info` name: the host name of a swarm node).
    name: String,
    /// The swarm's engines, this one first; empty for one engine.
    members: std::sync::Arc<Vec<Engine>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("members", &self.members.len())
            .finish()
    }
}

impl Engine {
    /// Connects with the local defaults (`DOCKER_HOST` or the Unix socket) and negotiates the API
    /// version down to the engine's.
    pub async fn connect() -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Self::negotiate(docker, "local").await
    }

    /// Connects to the engine at `host` (`unix:///path/docker.sock` or `tcp://host:port`).
    pub async fn connect_to(host: &str) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_host(host)
            .map_err(|e| DockerError::Unreachable(format!("{host}: {e}")))?;
        Self::negotiate(docker, host).await
    }

    async fn negotiate(docker: Docker, name: &str) -> Result<Self, DockerError> {
        let unreachable = |e: String| DockerError::Unreachable(format!("{name}: {e}"));
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine {
            docker,
            name: name.to_string(),
            members: Default::default(),
        })
    }

    /// Connects to the engines of one Docker Swarm: `hosts[0]` must be a manager (networks are
    /// made there: attachable overlays), and every engine an active node of the same swarm.
    pub async fn connect_swarm(hosts: &[String]) -> Result<Self, DockerError> {
        let mut members = Vec::new();
        let mut cluster = None;
        for (i, host) in hosts.iter().enumerate() {
            let mut e = Self::connect_to(host).await?;
            let info = e
                .docker
                .info()
                .await
                .map_err(api(format!("{host}: info")))?;
            let swarm = info.swarm.unwrap_or_default();
            let active = swarm
                .local_node_state
                .is_some_and(|s| s == bollard::models::LocalNodeState::ACTIVE);
            if !active {
                return Err(DockerError::Other(format!(
                    "--engines: {host} is not an active swarm node (join it with `docker swarm join`; ci/swarm-bed.sh up builds a three-engine swarm)"
                )));
            }
            if i == 0 && swarm.control_available != Some(true) {
                return Err(DockerError::Other(format!(
                    "--engines: the first engine ({host}) must be a swarm manager: networks are created there"
                )));
            }
            // every node of one swarm knows its managers; the same set means the same swarm
            let mut managers: Vec<String> = swarm
                .remote_managers
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.node_id)
                .collect();
            managers.sort();
            match &cluster {
                None => cluster = Some(managers),
                Some(c) if *c != managers => {
                    return Err(DockerError::Other(format!(
                        "--engines: {host} is in another swarm than {}",
                        hosts[0]
                    )))
                }
                Some(_) => {}
            }
            e.name = info.name.unwrap_or_else(|| host.clone());
            members.push(e);
        }
        let mut primary = members
            .first()
            .cloned()
            .ok_or_else(|| DockerError::Other("--engines: no engine given".into()))?;
        primary.members = std::sync::Arc::new(members);
        Ok(primary)
    }

    /// The engines a lab places containers on: the swarm's, or this one alone.
    pub fn members(&self) -> Vec<Engine> {
        if self.members.is_empty() {
            vec![self.clone()]
        } else {
            self.members.to_vec()
        }
    }

    /// Whether this is a swarm of engines ([`Engine::connect_swarm`]).
    pub fn is_swarm(&self) -> bool {
        !self.members.is_empty()
    }

    /// The engine's name: its host name in a swarm, `local` otherwise.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn api(&self) -> &Docker {
        &self.docker
    }

    pub async fn image_exists(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Every IPv4 subnet of every Docker network, and the host's routes: what a lab must avoid.
    pub async fn used_subnets(&self) -> Result<Vec<Ipv4Net>, DockerError> {
        let mut nets = Vec::new();
        for e in self.members() {
            nets.extend(
                e.docker
                    .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
                    .await
                    .map_err(api(format!("{}: list networks", e.name)))?,
            );
        }
        let mut used: Vec<Ipv4Net> = nets
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_ref()?.parse().ok())
            .collect();
        if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
            used.extend(crate::plan::parse_proc_routes(&text));
        }
        Ok(used)
    }

    /// Runs `cmd` in container `id` (called `node` in errors) and collects its output.
    pub async fn exec(
        &self,
        id: &str,
        node: &str,
        cmd: &[&str],
    ) -> Result<ExecOutput, DockerError> {
        let docker = &self.docker;
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api(format!("exec in {node}")))?
            .id;
        let mut out = ExecOutput {
            code: -1,
            stdout: String::new(),
            stderr: String::new(),
        };
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&exec, None)
            .await
            .map_err(api(format!("exec in {node}")))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(api(format!("exec output in {node}")))? {
                    LogOutput::StdOut { message } => {
                        out.stdout.push_str(&String::from_utf8_lossy(&message))
                    }
                    LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    _ => {}
                }
            }
        }
        let inspect = docker
            .inspect_exec(&exec)
            .await
            .map_err(api(format!("exec in {node}")))?;
        out.code = inspect.exit_code.unwrap_or(-1);
        Ok(out)
    }

    /// Starts `cmd` in container `id` and returns once it runs; its stdout and stderr lines go to
    /// `tx` as they come (as [`LogLine`]s of `tag`), then a last line with its exit code. An
    /// `exec` fault: a tool (a flood, a probe) in a node's network namespace, beside the node.
    pub async fn exec_follow(
        &self,
        id: &str,
        tag: &str,
        cmd: &[String],
        tx: mpsc::UnboundedSender<LogLine>,
    ) -> Result<(), DockerError> {
        let docker = self.docker.clone();
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api(format!("exec in {tag}")))?
            .id;
        let started = docker
            .start_exec(&exec, None)
            .await
            .map_err(api(format!("exec in {tag}")))?;
        let tag = tag.to_string();
        tokio::spawn(async move {
            let send = |line: String| {
                tx.send(LogLine {
                    node: tag.clone(),
                    line,
                })
                .is_ok()
            };
            if let StartExecResults::Attached { mut output, .. } = started {
                let mut buf = String::new();
                while let Some(Ok(chunk)) = output.next().await {
                    if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = chunk {
                        buf.push_str(&String::from_utf8_lossy(&message));
                        while let Some(i) = buf.find('\n') {
                            let line: String = buf.drain(..=i).collect();
                            let line = line.trim_end().to_string();
                            if !line.is_empty() && !send(line) {
                                return;
                            }
                        }
                    }
                }
            }
            let code = docker
                .inspect_exec(&exec)
                .await
                .ok()
                .and_then(|i| i.exit_code);
            send(format!(
                "exec exited: {}",
                code.map_or("?".into(), |c| c.to_string())
            ));
        });
        Ok(())
    }

    /// Follows container `id`'s stdout from its start, one [`LogLine`] (named `node`) per line,
    /// into `tx`, until the container's log ends or `tx`'s receiver is gone.
    pub fn follow(&self, id: &str, node: &str, tx: mpsc::UnboundedSender<LogLine>) {
        let id = id.to_string();
        let docker = self.docker.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            let opts = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(false)
                .build();
            let mut logs = docker.logs(&id, Some(opts));
            let mut buf = String::new();
            while let Some(Ok(chunk)) = logs.next().await {
                if let LogOutput::StdOut { message } | LogOutput::Console { message } = chunk {
                    buf.push_str(&String::from_utf8_lossy(&message));
                    while let Some(i) = buf.find('\n') {
                        let line: String = buf.drain(..=i).collect();
                        let line = line.trim_end().to_string();
                        if !line.is_empty()
                            && tx
                                .send(LogLine {
                                    node: node.clone(),
                                    line,
                                })
                                .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// One network attachment of a container.
#[derive(Debug, Clone)]
pub struct Attach {
    /// The lab's name of the network (as given to [`Lab::network`]).
    pub network: String,
    pub ip: Ipv4Addr,
}

/// A container to start.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Name in the lab (the container is `p2plab-<run>-<name>`).
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The first one is attached at creation, the others before start.
    pub attach: Vec<Attach>,
    /// NET_ADMIN: routes (every lab container sets its own) and, for routers, nftables.
    pub net_admin: bool,
    pub sysctls: Vec<(String, String)>,
    /// `/dev/net/tun` (a VPN end); never `--privileged`.
    pub tun: bool,
    /// The engine it goes on: an index into [`Engine::members`] (0 on one engine).
    pub engine: usize,
}

/// The output of a command run in a container.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// A line a container wrote on stdout.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub node: String,
    pub line: String,
}

/// A running lab: networks and containers of one run.
pub struct Lab {
    engine: Engine,
    pub run_id: String,
    pub name: String,
    /// By lab name: the engine's id, the IPv4 subnet, whether it has IPv6.
    networks: HashMap<String, (String, Ipv4Net, bool)>,
    /// By lab name: the index of its engine in `engines`, and its id there.
    containers: HashMap<String, (usize, String)>,
    /// Where containers go: [`Engine::members`] (one engine, or a swarm's).
    engines: Vec<Engine>,
    torn_down: bool,
    keep: bool,
    /// Started before the lab's first object ([`super::reaper`]); `None` until then, when kept,
    /// or when it could not start (said once, on stderr).
    reaper: Option<super::reaper::Reaper>,
    reaper_tried: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A run id unique on this machine: time, pid and a counter.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:x}{:x}{}",
        now_secs() & 0xfffff,
        (std::process::id() ^ nanos) & 0xffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    pub fn new(engine: Engine, name: &str) -> Self {
        Lab {
            engines: engine.members(),
            engine,
            run_id: new_run_id(),
            name: name.to_string(),
            networks: HashMap::new(),
            containers: HashMap::new(),
            torn_down: false,
            keep: std::env::var("P2PLAB_KEEP").is_ok_and(|v| v == "1"),
            reaper: None,
            reaper_tried: false,
        }
    }

    /// Starts the reaper before this lab's first object, unless the lab is kept: from then on a
    /// harness that dies leaves nothing behind.
    async fn ensure_reaper(&mut self) {
        if self.reaper_tried || self.keep {
            return;
        }
        self.reaper_tried = true;
        if self.engine.is_swarm() {
            // The reaper mounts this host's `p2plab` binary, which another host's engine does
            // not have: a swarm lab relies on teardown (success, failure, panic, Ctrl-C) and on
            // `p2plab down --engines ... RUN`.
            return;
        }
        let mut labels = self.labels(None);
        labels.insert(LABEL_NODE.to_string(), "reaper".to_string());
        let name = self.docker_name("reaper");
        match super::reaper::start(&self.engine, &self.run_id, &name, labels).await {
            Ok(r) => self.reaper = Some(r),
            Err(e) => eprintln!(
                "p2plab: run {} has no reaper ({e}): if this process is killed, `p2plab down {}` removes the lab",
                self.run_id, self.run_id
            ),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many engines this lab places containers on (1 but on a swarm).
    pub fn engine_count(&self) -> usize {
        self.engines.len()
    }

    /// Where each container is: its engine's name. Empty on one engine.
    pub fn placement(&self) -> std::collections::BTreeMap<String, String> {
        if !self.engine.is_swarm() {
            return Default::default();
        }
        self.containers
            .iter()
            .map(|(n, (i, _))| (n.clone(), self.engines[*i].name.clone()))
            .collect()
    }

    /// The engine `node` is on (the first one for a name the lab does not know).
    fn on(&self, node: &str) -> &Engine {
        &self.engines[self.containers.get(node).map_or(0, |c| c.0)]
    }

    fn labels(&self, node: Option<&str>) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_RUN.to_string(), self.run_id.clone()),
            (LABEL_LAB.to_string(), self.name.clone()),
            (LABEL_CREATED.to_string(), now_secs().to_string()),
        ]);
        if let Some(n) = node {
            l.insert(LABEL_NODE.to_string(), n.to_string());
        }
        l
    }

    /// The Docker name of a lab object.
    pub fn docker_name(&self, name: &str) -> String {
        format!("p2plab-{}-{}", self.run_id, name)
    }

    /// The subnet of a lab network.
    pub fn subnet(&self, network: &str) -> Option<Ipv4Net> {
        self.networks.get(network).map(|n| n.1)
    }

    /// Creates a bridge network on `subnet`, with no masquerade towards the host (isolation
    /// comes from routes: no lab container has a route out). Not `--internal`: the host's
    /// isolation rules for internal networks drop a LAN host's packets to its router.
    pub async fn network(&mut self, name: &str, subnet: Ipv4Net) -> Result<(), DockerError> {
        self.network_with(name, subnet, false).await
    }

    /// [`Lab::network`], and with `ipv6` also IPv6 on the /64 derived from `subnet`
    /// ([`crate::plan::v6_net`]); its containers get the IPv6 address derived from their IPv4
    /// one. Docker 20.10 needs no daemon setting for this, and adds no IPv6 NAT (none wanted).
    pub async fn network_with(
        &mut self,
        name: &str,
        subnet: Ipv4Net,
        ipv6: bool,
    ) -> Result<(), DockerError> {
        self.ensure_reaper().await;
        let docker_name = self.docker_name(name);
        let mut config = vec![IpamConfig {
            subnet: Some(subnet.to_string()),
            ip_range: self
                .engine
                .is_swarm()
                .then(|| swarm_range(subnet).map(|r| r.to_string()))
                .transpose()?,
            ..Default::default()
        }];
        let swarm = self.engine.is_swarm();
        // On a swarm an overlay gets no IPv6 from Docker: the containers set it up themselves
        // (`contract::host::Static6` says why).
        let docker_ipv6 = ipv6 && !swarm;
        if docker_ipv6 {
            config.push(IpamConfig {
                subnet: Some(crate::plan::v6_net(subnet).to_string()),
                ..Default::default()
            });
        }
        let req = NetworkCreateRequest {
            name: docker_name.clone(),
            // On a swarm: an overlay (VXLAN) that plain containers on every engine may join with
            // their static addresses. `internal`, or Docker would give each container a second
            // interface on docker_gwbridge with a default route out (and masquerade); an
            // internal overlay has no host-side rules to break a NAT router with, unlike an
            // internal bridge.
            driver: Some(if swarm { "overlay" } else { "bridge" }.into()),
            attachable: swarm.then_some(true),
            internal: Some(swarm),
            enable_ipv6: Some(docker_ipv6),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(config),
                options: None,
            }),
            options: (!swarm).then(|| {
                HashMap::from([
                    (
                        "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                        "false".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.name".to_string(),
                        format!("p2p{}", &short_hash(&docker_name)),
                    ),
                ])
            }),
            labels: Some(self.labels(None)),
            ..Default::default()
        };
        let id = self
            .engine
            .docker
            .create_network(req)
            .await
            .map_err(api(format!("create network {name} ({subnet})")))?
            .id;
        self.networks.insert(name.to_string(), (id, subnet, ipv6));
        Ok(())
    }

    /// Creates network `name` on a free /24 of `pool`: one that overlaps no host route, Docker
    /// network or reserved range ([`crate::plan`]). When a parallel run takes the same subnet
    /// first, the engine refuses it and the next candidate is tried.
    pub async fn allocate_network(
        &mut self,
        name: &str,
        pool: Ipv4Net,
    ) -> Result<Ipv4Net, DockerError> {
        self.allocate_network_with(name, pool, false).await
    }

    /// [`Lab::allocate_network`], with IPv6 too when `ipv6` ([`Lab::network_with`]).
    pub async fn allocate_network_with(
        &mut self,
        name: &str,
        pool: Ipv4Net,
        ipv6: bool,
    ) -> Result<Ipv4Net, DockerError> {
        let seed: u64 = self
            .run_id
            .bytes()
            .map(u64::from)
            .fold(0, |h, b| h.wrapping_mul(31).wrapping_add(b));
        for attempt in 0..20u64 {
            let mut used = self.engine.used_subnets().await?;
            // this lab's own too: a swarm lists an overlay's subnet only once its manager has
            // allocated it, a moment after the overlay is created
            used.extend(self.networks.values().map(|n| n.1));
            let subnet = crate::plan::allocate(pool, 24, &used, seed.wrapping_add(attempt * 13))
                .map_err(|e| DockerError::Other(e.to_string()))?;
            match self.network_with(name, subnet, ipv6).await {
                Ok(()) => return Ok(subnet),
                Err(DockerError::Api { source, .. }) if source.to_string().contains("overlap") => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(DockerError::Other(format!(
            "no free subnet for {name} in {pool} after 20 attempts"
        )))
    }

    /// Creates and starts a container; returns when it runs.
    pub async fn start(&mut self, spec: ContainerSpec) -> Result<(), DockerError> {
        let name = spec.name.clone();
        self.create(spec).await?;
        self.start_again(&name).await
    }

    /// Creates a container and attaches it to its networks, without starting it
    /// ([`Lab::start_again`] starts it).
    pub async fn create(&mut self, spec: ContainerSpec) -> Result<(), DockerError> {
        self.ensure_reaper().await;
        let id = self.create_container(&spec).await?;
        self.containers.insert(spec.name, (spec.engine, id));
        Ok(())
    }

    /// Creates containers, not started, up to [`AT_ONCE`] requests in flight: the engine
    /// sets up a container's filesystem and network endpoints mostly in parallel, so a lab of 100
    /// is not 100 creations in a row. Nothing runs yet, so the order does not matter; starting is
    /// another matter (engine/run.rs, `bring_up`). Returns the first error once every request
    /// has finished; what was created is the lab's either way (teardown is by label).
    pub async fn create_many(&mut self, specs: Vec<ContainerSpec>) -> Result<(), DockerError> {
        if specs.is_empty() {
            return Ok(());
        }
        self.ensure_reaper().await;
        let this = &*self;
        let done: Vec<_> = futures::stream::iter(specs)
            .map(|spec| async move {
                let id = this.create_container(&spec).await?;
                Ok::<_, DockerError>((spec.name, (spec.engine, id)))
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let mut first = None;
        for r in done {
            match r {
                Ok((name, at)) => {
                    self.containers.insert(name, at);
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Starts created containers, up to [`AT_ONCE`] requests in flight. Returns the first
    /// error once every request has finished.
    pub async fn start_many(&self, nodes: &[&str]) -> Result<(), DockerError> {
        // On a swarm, one at a time: a container on an attachable overlay is attached through the
        // manager, and 16 attachments at once timed out on the three-engine bed ("attaching to
        // network failed ... context deadline exceeded", the NAT matrix's labs).
        let at_once = if self.engines.len() > 1 { 1 } else { AT_ONCE };
        let done: Vec<_> = futures::stream::iter(nodes)
            .map(|node| self.start_again(node))
            .buffer_unordered(at_once)
            .collect()
            .await;
        done.into_iter().collect()
    }

    /// Creates one container and attaches it to its networks; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let engine = self.engines.get(spec.engine).ok_or_else(|| {
            DockerError::Other(format!(
                "{}: no engine {} (the lab has {})",
                spec.name,
                spec.engine,
                self.engines.len()
            ))
        })?;
        let docker = &engine.docker;
        let docker_name = self.docker_name(&spec.name);
        let endpoint = |a: &Attach| EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(a.ip.to_string()),
                ipv6_address: self
                    .networks
                    .get(&a.network)
                    .filter(|n| n.2 && !self.engine.is_swarm())
                    .map(|n| crate::plan::v6_addr(n.1, a.ip).to_string()),
                ..Default::default()
            }),
            aliases: Some(vec![spec.name.clone()]),
            ..Default::default()
        };
        let net_id = |a: &Attach| {
            self.networks
                .get(&a.network)
                .map(|n| n.0.clone())
                .ok_or_else(|| {
                    DockerError::Other(format!("{}: unknown network {}", spec.name, a.network))
                })
        };
        let first = spec
            .attach
            .first()
            .ok_or_else(|| DockerError::Other(format!("{}: no network", spec.name)))?;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(
                spec.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    // The nodes' human logs at another level, for debugging a lab
                    // (`P2PLAB_RUST_LOG=info,libp2p_dcutr=debug`; read with `docker logs`).
                    .chain(
                        std::env::var("P2PLAB_RUST_LOG")
                            .ok()
                            .map(|v| format!("RUST_LOG={v}")),
                    )
                    .collect(),
            ),
            hostname: Some(spec.name.clone()),
            labels: Some(self.labels(Some(&spec.name))),
            stop_timeout: Some(3),
            host_config: Some(HostConfig {
                network_mode: Some(net_id(first)?),
                cap_add: spec.net_admin.then(|| vec!["NET_ADMIN".to_string()]),
                sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.iter().cloned().collect()),
                init: Some(true),
                devices: spec.tun.then(|| {
                    vec![bollard::models::DeviceMapping {
                        path_on_host: Some("/dev/net/tun".into()),
                        path_in_container: Some("/dev/net/tun".into()),
                        cgroup_permissions: Some("rwm".into()),
                    }]
                }),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(net_id(first)?, endpoint(first))])),
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&docker_name)
            .build();
        let id = docker
            .create_container(Some(opts), body)
            .await
            .map_err(api(format!("create container {}", spec.name)))?
            .id;
        for a in spec.attach.iter().skip(1) {
            let req = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(endpoint(a)),
            };
            docker
                .connect_network(&net_id(a)?, req)
                .await
                .map_err(api(format!("attach {} to {}", spec.name, a.network)))?;
        }
        Ok(id)
    }

    fn id(&self, node: &str) -> Result<&str, DockerError> {
        self.containers
            .get(node)
            .map(|c| c.1.as_str())
            .ok_or_else(|| DockerError::Other(format!("no container {node} in this lab")))
    }

    /// The memory `docker stats` shows for `node`: the cgroup's usage less its inactive file
    /// cache (`inactive_file` on cgroup v2, `total_inactive_file` on v1), in bytes.
    pub async fn memory(&self, node: &str) -> Result<u64, DockerError> {
        let opts = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.on(node).api().stats(self.id(node)?, Some(opts));
        let s = stats
            .next()
            .await
            .ok_or_else(|| DockerError::Other(format!("no stats for {node}")))?
            .map_err(api(format!("stats of {node}")))?;
        let m = s
            .memory_stats
            .ok_or_else(|| DockerError::Other(format!("no memory stats for {node}")))?;
        let usage = m.usage.unwrap_or(0);
        let cache = m
            .stats
            .as_ref()
            .and_then(|st| {
                st.get("inactive_file")
                    .or_else(|| st.get("total_inactive_file"))
                    .copied()
            })
            .unwrap_or(0);
        Ok(usage.saturating_sub(cache))
    }

    /// Runs `cmd` in `node` and collects its output.
    pub async fn exec(&self, node: &str, cmd: &[&str]) -> Result<ExecOutput, DockerError> {
        self.on(node).exec(self.id(node)?, node, cmd).await
    }

    /// Runs `cmd` in `node`'s container in the background; see [`Engine::exec_follow`].
    pub async fn exec_follow(
        &self,
        node: &str,
        cmd: &[String],
        tx: mpsc::UnboundedSender<LogLine>,
    ) -> Result<(), DockerError> {
        self.on(node)
            .exec_follow(self.id(node)?, &format!("{node} (exec)"), cmd, tx)
            .await
    }

    /// Follows `node`'s stdout from its start, one [`LogLine`] per line, into `tx`.
    pub fn follow(
        &self,
        node: &str,
        tx: mpsc::UnboundedSender<LogLine>,
    ) -> Result<(), DockerError> {
        self.on(node).follow(self.id(node)?, node, tx);
        Ok(())
    }

    /// The last `tail` lines of a node's stderr (for failure reports).
    pub async fn stderr_tail(&self, node: &str, tail: usize) -> String {
        let Ok(id) = self.id(node) else {
            return String::new();
        };
        let opts = LogsOptionsBuilder::default()
            .stdout(false)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut logs = self.on(node).docker.logs(id, Some(opts));
        let mut s = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            s.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        s
    }

    /// Sends `signal` to a node (`SIGKILL` kills it the hard way).
    pub async fn signal(&self, node: &str, signal: &str) -> Result<(), DockerError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.on(node)
            .docker
            .kill_container(self.id(node)?, Some(opts))
            .await
            .map_err(api(format!("{signal} {node}")))
    }

    /// Writes a file (mode 0600, owned by root) into `node`'s own filesystem, whether the
    /// container runs or not: `dir` (which must exist there) gets `name` with `contents`.
    pub async fn put_file(
        &self,
        node: &str,
        dir: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), DockerError> {
        let tar = tar_one_file(name, contents, now_secs())
            .map_err(|e| DockerError::Other(format!("{node}: {e}")))?;
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path(dir)
            .build();
        self.on(node)
            .docker
            .upload_to_container(self.id(node)?, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(api(format!("write {dir}/{name} in {node}")))
    }

    /// Starts a stopped (killed) or created container, with its addresses and command.
    pub async fn start_again(&self, node: &str) -> Result<(), DockerError> {
        self.on(node)
            .docker
            .start_container(
                self.id(node)?,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(api(format!("start {node}")))
    }

    /// Restarts a container (SIGTERM, then start).
    pub async fn restart(&self, node: &str) -> Result<(), DockerError> {
        let opts = bollard::query_parameters::RestartContainerOptionsBuilder::default()
            .t(3)
            .build();
        self.on(node)
            .docker
            .restart_container(self.id(node)?, Some(opts))
            .await
            .map_err(api(format!("restart {node}")))
    }

    /// Whether the node's container is running.
    pub async fn running(&self, node: &str) -> bool {
        let Ok(id) = self.id(node) else { return false };
        match self
            .on(node)
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    pub async fn pause(&self, node: &str) -> Result<(), DockerError> {
        self.on(node)
            .docker
            .pause_container(self.id(node)?)
            .await
            .map_err(api(format!("pause {node}")))
    }

    pub async fn unpause(&self, node: &str) -> Result<(), DockerError> {
        self.on(node)
            .docker
            .unpause_container(self.id(node)?)
            .await
            .map_err(api(format!("unpause {node}")))
    }

    /// Removes every container and network of this run. Idempotent.
    pub async fn teardown(&mut self) -> Result<(), DockerError> {
        self.torn_down = true;
        // The reaper goes last (remove_by_label sees to it): if this process dies halfway, the
        // reaper finishes the job. Its stdin stays attached until then, or it would start now.
        remove_by_label(&self.engine, &format!("{LABEL_RUN}={}", self.run_id)).await?;
        self.reaper = None;
        self.containers.clear();
        self.networks.clear();
        Ok(())
    }

    /// Keep this lab after the test (for `P2PLAB_KEEP=1`-style debugging); prints how to get in.
    pub fn keep(&mut self) {
        self.keep = true;
        if let Some(r) = self.reaper.take() {
            let engine = self.engine.clone();
            block_on_own_thread(async move {
                super::reaper::remove(&engine, &r.container).await;
            });
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if self.keep {
            eprintln!(
                "p2plab: keeping lab {} (run {}): `docker ps --filter label={LABEL_RUN}={}`, `docker exec -it {} sh`; remove with `docker rm -f $(docker ps -aq --filter label={LABEL_RUN}={})`",
                self.name,
                self.run_id,
                self.run_id,
                self.docker_name("<node>"),
                self.run_id
            );
            return;
        }
        remove_run_from_drop(&self.engine, &self.run_id);
    }
}

/// Removes a run's containers and networks from a `Drop`, which cannot await: on a thread of its
/// own with its own runtime, waiting for it.
pub fn remove_run_from_drop(engine: &Engine, run_id: &str) {
    let engine = engine.clone();
    let label = format!("{LABEL_RUN}={run_id}");
    block_on_own_thread(async move {
        if let Err(e) = remove_by_label(&engine, &label).await {
            eprintln!("p2plab: cleanup of {label} failed: {e}");
        }
    });
}

/// Runs `f` to its end from code that cannot await (a `Drop`, or inside a runtime's thread that
/// must not block it): on a thread of its own with its own runtime, waiting for it.
fn block_on_own_thread(f: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(f);
        }
    })
    .join();
}

/// A tar archive (POSIX ustar) holding one regular file, mode 0600, root's, modified at `mtime`:
/// what the engine's archive endpoint takes to write a file into a container.
pub fn tar_one_file(name: &str, contents: &[u8], mtime: u64) -> Result<Vec<u8>, String> {
    if name.is_empty() || name.len() > 100 || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "`{name}` is not a plain file name of at most 100 bytes"
        ));
    }
    let mut h = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    field(&mut h, 0, name.as_bytes());
    field(&mut h, 100, b"0000600\0"); // mode
    field(&mut h, 108, b"0000000\0"); // uid
    field(&mut h, 116, b"0000000\0"); // gid
    field(&mut h, 124, format!("{:011o}\0", contents.len()).as_bytes());
    field(
        &mut h,
        136,
        format!("{:011o}\0", mtime & 0o777_7777_7777).as_bytes(),
    );
    field(&mut h, 148, b"        "); // the checksum counts its own field as spaces
    h[156] = b'0'; // a regular file
    field(&mut h, 257, b"ustar\0");
    field(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    field(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]); // two zero blocks end the archive
    Ok(out)
}

/// The addresses a swarm may take on its own in an overlay on `subnet`: each engine that joins
/// the overlay takes one for its load-balancer endpoint, from the dynamic range; left to itself
/// it takes the lowest free ones, which are the lab's (routers' uplink addresses, hosts). Its
/// range: 16 addresses, from 32 below the top of the subnet (.224 to .239 of a /24), below the
/// LAN routers' `.254`; the layout hands out `.2` upwards, so a segment reaches it only past 222
/// containers.
fn swarm_range(subnet: Ipv4Net) -> Result<Ipv4Net, DockerError> {
    if subnet.prefix_len() > 24 {
        return Err(DockerError::Other(format!(
        "{subnet}: a lab on a swarm needs segments of /24 or larger (the swarm takes addresses of its own in each)"
    )));
    }
    let top = u32::from(subnet.broadcast());
    Ipv4Net::new(Ipv4Addr::from(top - 31), 28).map_err(|e| DockerError::Other(e.to_string()))
}

fn short_hash(s: &str) -> String {
    // FNV-1a: a stable short id for bridge names (at most 15 characters in Linux).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// One lab run found on the engine by its labels.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub run_id: String,
    pub lab: String,
    /// Unix seconds.
    pub created: u64,
    pub containers: usize,
    pub running: usize,
    pub networks: usize,
}

/// The run a labelled container or network belongs to (its lab named by the first object that
/// names one); `None` for an object without a run label.
fn run_of<'a>(
    runs: &'a mut std::collections::BTreeMap<String, RunInfo>,
    labels: &HashMap<String, String>,
) -> Option<&'a mut RunInfo> {
    let run = labels.get(LABEL_RUN)?;
    let e = runs.entry(run.clone()).or_insert_with(|| RunInfo {
        run_id: run.clone(),
        ..Default::default()
    });
    if e.lab.is_empty() {
        e.lab = labels.get(LABEL_LAB).cloned().unwrap_or_default();
    }
    Some(e)
}

/// Every container, running or not, carrying `label` (`key` or `key=value`).
pub(super) async fn containers_with(
    engine: &Engine,
    label: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    engine
        .docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api(format!("list containers ({label})")))
}

/// Every p2plab run with containers or networks on the engine.
pub async fn list_runs(engine: &Engine) -> Result<Vec<RunInfo>, DockerError> {
    let docker = &engine.docker;
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_MANAGED}=true")])]);
    let mut runs: std::collections::BTreeMap<String, RunInfo> = std::collections::BTreeMap::new();
    let containers = containers_with(engine, &format!("{LABEL_MANAGED}=true")).await?;
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        let Some(e) = run_of(&mut runs, &labels) else {
            continue;
        };
        e.created = labels
            .get(LABEL_CREATED)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            .max(e.created);
        e.containers += 1;
        if c.state
            .as_ref()
            .is_some_and(|s| format!("{s:?}").to_lowercase().contains("running"))
        {
            e.running += 1;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("list networks"))?;
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        if let Some(e) = run_of(&mut runs, &labels) {
            e.networks += 1;
        }
    }
    Ok(runs.into_values().collect())
}

/// Containers removed at once in a teardown.
const REMOVE_AT_ONCE: usize = 6;

/// Forces every endpoint the engine still lists off network `id` (best effort: a container
/// already gone is not an error).
async fn disconnect_all(docker: &Docker, id: &str) {
    let Ok(net) = docker
        .inspect_network(id, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
    else {
        return;
    };
    for container in net.containers.unwrap_or_default().into_keys() {
        let req = NetworkDisconnectRequest {
            container,
            force: Some(true),
        };
        if let Err(e) = docker.disconnect_network(id, req).await {
            tracing::debug!(network = id, error = %e, "force-disconnect during teardown");
        }
    }
}

/// Removes every container, then every network, carrying `label` (`key=value`). On a swarm:
/// the containers on every engine, then the networks (overlays) on the manager.
pub async fn remove_by_label(engine: &Engine, label: &str) -> Result<(), DockerError> {
    if engine.is_swarm() {
        let others = engine.members().into_iter().skip(1);
        // (no reaper on a swarm: only the nodes, routers and exits)
        let removals = others.map(|e| async move {
            remove_containers(&e, label, None, false).await?;
            remove_containers(&e, label, None, true).await
        });
        for r in futures::future::join_all(removals).await {
            r?;
        }
    }
    remove_by_label_except(engine, label, None).await
}

/// Splits `containers` (each with the networks it is on) into batches to remove at once, in
/// order: at most [`REMOVE_AT_ONCE`] a batch, and no two of a batch on one network.
///
/// Why: Docker 20.10 now and then kept a removed container's endpoint on a network (seen in
/// teardowns of the NAT matrix and of port-forward labs), which then could not be removed until
/// dockerd restarted. Removals that leave one network at the same moment race in the engine's
/// endpoint bookkeeping; one at a time per network they do not.
fn disjoint_batches(containers: Vec<(String, Vec<String>)>) -> Vec<Vec<String>> {
    let mut batches: Vec<(Vec<String>, std::collections::HashSet<String>)> = Vec::new();
    for (id, nets) in containers {
        let fits = batches.iter_mut().find(|(ids, used)| {
            ids.len() < REMOVE_AT_ONCE && nets.iter().all(|n| !used.contains(n))
        });
        match fits {
            Some((ids, used)) => {
                ids.push(id);
                used.extend(nets);
            }
            None => batches.push((vec![id], nets.into_iter().collect())),
        }
    }
    batches.into_iter().map(|(ids, _)| ids).collect()
}

/// [`remove_by_label`] on one engine, leaving the container named `except` (the reaper that
/// calls it).
pub async fn remove_by_label_except(
    engine: &Engine,
    label: &str,
    except: Option<&str>,
) -> Result<(), DockerError> {
    // The run's reaper (if it is not `except`) goes last, after the networks too: a harness
    // killed at any moment of its teardown then still has its reaper, which removes the rest.
    // (Reapers before the networks left a lab's networks behind with nobody to remove them: a
    // clean-clone CI run's aborted-runs, SIGKILL during teardown, 2026-12-07.) A reaper is on no
    // network (`network_mode: none`), so no network waits for it.
    remove_containers(engine, label, except, false).await?;
    remove_networks(engine, label).await?;
    remove_containers(engine, label, except, true).await
}

/// The containers part of [`remove_by_label_except`]: the reapers (`reapers`) or the others.
async fn remove_containers(
    engine: &Engine,
    label: &str,
    except: Option<&str>,
    reapers: bool,
) -> Result<(), DockerError> {
    let docker = &engine.docker;
    let containers = containers_with(engine, label).await?;
    let containers = containers
        .into_iter()
        .filter(|c| {
            let names = c.names.as_deref().unwrap_or_default();
            !except.is_some_and(|x| names.iter().any(|n| n.trim_start_matches('/') == x))
        })
        .filter_map(|c| {
            let reaper = c
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(super::reaper::LABEL_REAPS));
            let nets = c
                .network_settings
                .and_then(|n| n.networks)
                .map(|n| n.into_keys().collect())
                .unwrap_or_default();
            Some((c.id?, nets, reaper))
        })
        .collect::<Vec<_>>();
    // Reapers last, on their own: a harness killed halfway through a teardown leaves its reaper,
    // which then removes the rest (removing it first left labs behind: 7 of 50 aborted runs
    // killed during teardown).
    let chosen = containers
        .into_iter()
        .filter(|(_, _, reaper)| *reaper == reapers)
        .map(|(id, nets, _)| (id, nets))
        .collect::<Vec<_>>();
    for batch in disjoint_batches(chosen) {
        let removals = batch.iter().map(|id| async move {
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match docker.remove_container(id, Some(opts)).await {
                Ok(()) => Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                // a reaper that exits removes itself (AutoRemove)
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    ref message,
                }) if message.contains("already in progress") => Ok(()),
                Err(e) => Err(e),
            }
        });
        for r in futures::future::join_all(removals).await {
            r.map_err(api("remove container"))?;
        }
    }
    Ok(())
}

/// The networks part of [`remove_by_label_except`].
async fn remove_networks(engine: &Engine, label: &str) -> Result<(), DockerError> {
    let docker = &engine.docker;
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("list networks"))?;
    for n in networks.iter().filter_map(|n| n.id.clone()) {
        // The engine (20.10) may still hold a removed container's endpoint for a while and refuse
        // with 403 "has active endpoints" (seen after removing the 43 containers of the NAT
        // matrix on a loaded machine): force the endpoints it still lists off the network, and
        // try again with backoff, for up to 30 s.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            match docker.remove_network(&n).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => break,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 403, ref message })
                    if message.contains("active endpoints") && tokio::time::Instant::now() + wait < deadline =>
                {
                    disconnect_all(docker, &n).await;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                // A swarm's overlay: the attachment of a container just removed on another
                // engine is released a moment later ("in use by task").
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 400, ref message })
                    if message.contains("in use by task") && tokio::time::Instant::now() + wait < deadline =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 403, message }) if message.contains("active endpoints") => {
                    return Err(DockerError::Other(format!(
                        "docker: remove network {n}: {message} (after 30 s of retries and forced disconnects: the engine holds an \
                         endpoint that no container has; restarting dockerd clears it, then `p2plab down --all`)"
                    )))
                }
                Err(e) => return Err(api("remove network")(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn containers_removed_at_once_never_share_a_network() {
        let c = |id: &str, nets: &[&str]| {
            (
                id.to_string(),
                nets.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
        };
        // routers on the internet, hosts behind them, a reaper on no network
        let mut all = vec![c("r1", &["inet", "lan1"]), c("r2", &["inet", "lan2"])];
        all.extend((0..8).map(|i| (format!("h{i}"), vec![format!("lan{}", i % 2 + 1)])));
        all.push(c("reaper", &[]));
        let n = all.len();
        let nets: HashMap<String, Vec<String>> = all.iter().cloned().collect();
        let batches = disjoint_batches(all);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), n);
        for b in &batches {
            assert!(b.len() <= REMOVE_AT_ONCE);
            let mut seen = std::collections::HashSet::new();
            for id in b {
                for net in &nets[id] {
                    assert!(seen.insert(net.clone()), "{net} twice in {b:?}");
                }
            }
        }
        // the two LANs and the reaper go in parallel: not one container a batch
        assert!(batches.len() < n);
    }

    #[test]
    fn a_swarm_keeps_its_own_addresses_away_from_the_labs() {
        let r = swarm_range("10.1.2.0/24".parse().unwrap()).unwrap();
        assert_eq!(r.to_string(), "10.1.2.224/28");
        // above every address the layout hands out (.2 up, at most 222 of them) and below the
        // LAN router's .254
        assert!(u32::from(r.network()) > u32::from(std::net::Ipv4Addr::new(10, 1, 2, 223)));
        assert!(u32::from(r.broadcast()) < u32::from(std::net::Ipv4Addr::new(10, 1, 2, 254)));
        assert_eq!(
            swarm_range("10.4.0.0/16".parse().unwrap())
                .unwrap()
                .to_string(),
            "10.4.255.224/28"
        );
        assert!(swarm_range("10.1.2.0/25".parse().unwrap()).is_err());
    }

    #[test]
    fn tar_one_file_is_read_by_tar() {
        let dir = std::env::temp_dir().join(format!("p2plab-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.tar");
        let body = b"hello\n".repeat(100);
        std::fs::write(
            &f,
            tar_one_file("node.key.new-identity", &body, 1_700_000_000).unwrap(),
        )
        .unwrap();
        let list = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let l = String::from_utf8_lossy(&list.stdout);
        assert!(l.starts_with("-rw-------"), "{l}");
        assert!(
            l.contains(" 600 ") && l.trim_end().ends_with("node.key.new-identity"),
            "{l}"
        );
        let x = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(x.stdout, body);
        std::fs::remove_dir_all(dir).ok();
        // an empty file, and names that are not plain
        assert_eq!(tar_one_file("x", b"", 0).unwrap().len(), 512 + 1024);
        assert!(tar_one_file("a/b", b"", 0).is_err());
        assert!(tar_one_file("", b"", 0).is_err());
    }
}
