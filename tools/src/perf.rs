//! The `bench` binary's measurement primitives: raw TCP baselines (ping-pong round trips and bulk
//! throughput) and the same over one libp2p stream on the peer's own transport stack (TCP with
//! noise and yamux, or QUIC; [`p2plab_node::swarm::transport`]) with nothing else on the
//! connection: the floor under the peer's messages, which add the peer's behaviours and loop.
//!
//! Three commands ([`PerfCommand`]):
//! - `serve` binds a raw TCP server (default port 5201) and a libp2p swarm (default port 5202,
//!   TCP and QUIC/UDP on the same number) and serves both until SIGTERM. When everything is bound
//!   it prints one line:
//!   `{"event":"perf_ready","peer_id":"12D3...","tcp":"0.0.0.0:5201","p2p":["/ip4/.../tcp/5202",
//!   "/ip4/.../udp/5202/quic-v1"]}`, `p2p` being the addresses libp2p reported as listening
//!   (with an unspecified IP, one per interface).
//! - `rtt --to IP:PORT|MULTIADDR/p2p/<peer id> --size S` measures ping-pong round trips and prints
//!   `{"event":"perf_result","kind":"rtt","transport":"raw-tcp"|"libp2p-tcp"|"libp2p-quic",
//!   "size":64,"samples_ms":[...]}`.
//! - `throughput --to IP:PORT|MULTIADDR/p2p/<peer id>` measures bulk transfers and prints
//!   `{"event":"perf_result","kind":"throughput","transport":"raw-tcp"|"libp2p-tcp"|"libp2p-quic",
//!   "bytes":N,"samples_mbit_s":[...],"samples_s":[...],"connect_ms":x}`.
//!
//! # Wire protocols
//! Raw TCP (both ends set TCP_NODELAY). A connection starts with one mode byte:
//! - `P`, ping-pong: repeated frames of a `u32` big-endian length L (1 ..= 1 MiB) and L bytes.
//!   Once the whole frame is read the server answers 8 bytes: the frame's index on this
//!   connection (from 0) as a `u64` big-endian. This mirrors the node's messaging (a message of
//!   S bytes answered by a small ack): the client's round trip is "write the frame, read the ack".
//! - `B`, bulk: a `u64` big-endian byte count N (at most 64 GiB), then N bytes from the client.
//!   The server reads (and discards) all of them, then answers 8 bytes, N as a `u64` big-endian,
//!   and closes. The client's time runs from its first byte written (the mode byte) to the end of
//!   the answer; every repeat is a new connection.
//!
//! libp2p, one stream each (`libp2p-stream`), without the mode byte: [`PING_PROTOCOL`] is raw
//! ping-pong on one long-lived stream; [`PERF_PROTOCOL`] is raw bulk: `u64` BE N, N bytes, the
//! client closes its write half, the server answers N as a `u64` BE and closes. The client dials
//! once; for bulk it opens a new stream on that connection for every repeat, its time running
//! from the first byte written on the stream to the end of the answer. The node's own messages
//! are measured by `bench p2p-rtt` (src/load.rs), not here.
//!
//! Server limits: at most 64 raw connections and 64 libp2p streams at once (more are dropped at
//! once); every read and write waits at most 30 s; a length or count over its limit, an unknown
//! mode byte or a short stream closes the connection (stream). The server never allocates from a
//! length it is sent: it reads into one 64 KiB buffer per connection.
//!
//! Sizes on the command line ([`parse_size`]) are bytes, optionally with a suffix: `KiB`/`MiB`/
//! `GiB` (and `K`/`M`/`G`) are powers of 1024, `kB`/`MB`/`GB` powers of 1000 (case-insensitive).

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{builder::RangedU64ValueParser, Args, Subcommand};
use futures::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, FutureExt as _, StreamExt as _,
};
use libp2p::{
    identity::Keypair,
    multiaddr::Protocol,
    swarm::{dial_opts::DialOpts, SwarmEvent},
    Multiaddr, PeerId, StreamProtocol, Swarm,
};
use serde::Serialize;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::timeout,
};

use p2plab_contract::{
    bench::{Carrier, PerfReady, RttResult, ThroughputResult},
    Transport as Stack,
};
use p2plab_node::{RunError, UsageError};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

/// The libp2p protocol of the throughput benchmark.
pub const PERF_PROTOCOL: &str = "/p2plab/perf/1.0.0";
/// The libp2p protocol of the ping-pong benchmark (raw TCP's `P` mode on one libp2p stream).
pub const PING_PROTOCOL: &str = "/p2plab/perf-ping/1.0.0";
/// The raw TCP server's default port.
pub const DEFAULT_TCP_PORT: u16 = 5201;
/// The libp2p server's default port, TCP and QUIC (UDP).
pub const DEFAULT_P2P_PORT: u16 = 5202;
/// Largest ping-pong frame (and `rtt --size`).
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest bulk transfer.
pub const MAX_BULK: u64 = 64 * 1024 * 1024 * 1024;
/// Most raw connections, and most libp2p streams, served at once.
pub const MAX_CONCURRENT: usize = 64;

const MODE_PING: u8 = b'P';
const MODE_BULK: u8 = b'B';
const CHUNK: usize = 64 * 1024;
const IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_CONNECTION: Duration = Duration::from_secs(300);
const FILL: u8 = 0xa5;

const fn perf_protocol() -> StreamProtocol {
    StreamProtocol::new(PERF_PROTOCOL)
}

const fn ping_protocol() -> StreamProtocol {
    StreamProtocol::new(PING_PROTOCOL)
}

// ---------------------------------------------------------------------------------------------
// Command line

/// The `bench` commands of this module.
#[derive(Debug, Clone, Subcommand)]
pub enum PerfCommand {
    /// Serve raw TCP (ping-pong and bulk) and the libp2p perf protocol (TCP and QUIC) until SIGTERM.
    Serve(ServeArgs),
    /// Ping-pong round trips against a `serve`: raw TCP, or one libp2p stream over TCP or QUIC.
    Rtt(RttArgs),
    /// Bulk throughput of one stream: raw TCP, or one libp2p stream over TCP or QUIC.
    Throughput(ThroughputArgs),
}

/// `serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// IP address to listen on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,
    /// Raw TCP port (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_TCP_PORT)]
    pub tcp_port: u16,
    /// libp2p port, TCP and QUIC/UDP (0 picks free ones, not necessarily the same).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_P2P_PORT)]
    pub p2p_port: u16,
    /// Deterministic identity from a number (the node's `--seed` derivation); default random.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// `rtt` flags.
#[derive(Debug, Clone, Args)]
pub struct RttArgs {
    /// `IP:PORT` (raw TCP) or a multiaddr ending in `/p2p/<peer id>` (one libp2p stream over
    /// `/tcp/` or `/quic-v1`, the node's transport stack, nothing else on the connection).
    #[arg(long, value_name = "IP:PORT|MULTIADDR")]
    pub to: Target,
    /// Bytes per ping (1 to 1 MiB; suffixes like 4KiB accepted).
    #[arg(long, value_name = "BYTES", value_parser = parse_frame_size)]
    pub size: usize,
    /// Round trips reported.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub count: usize,
    /// Round trips done first and not reported.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(0..=10_000_000))]
    pub warmup: usize,
    /// Pause between two pings, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub interval_ms: u64,
}

/// `throughput` flags.
#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// `IP:PORT` (raw TCP) or a multiaddr ending in `/p2p/<peer id>` (libp2p over `/tcp/` or
    /// `/quic-v1`).
    #[arg(long, value_name = "IP:PORT|MULTIADDR")]
    pub to: Target,
    /// Bytes per transfer (suffixes like 64MiB accepted).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub bytes: usize,
    /// Transfers (one connection each for raw TCP, one stream each for libp2p).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub repeats: usize,
}

/// Parses a byte count: a positive integer, optionally followed by a unit (`B`; `KiB`, `MiB`,
/// `GiB` or `K`, `M`, `G` for powers of 1024; `kB`, `MB`, `GB` for powers of 1000;
/// case-insensitive). At most 64 GiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "expected a byte count like 65536 or 64KiB, got '{s}'"
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use B, KiB, MiB, GiB, kB, MB or GB)"
            ))
        }
    };
    let too_large = || format!("'{s}' is too large (at most 64 GiB)");
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(too_large)?;
    if n == 0 {
        return Err(format!("'{s}' is zero bytes (at least 1)"));
    }
    if n > MAX_BULK {
        return Err(too_large());
    }
    usize::try_from(n).map_err(|_| too_large())
}

/// [`parse_size`] limited to one ping-pong frame (1 MiB).
fn parse_frame_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n > MAX_FRAME {
        return Err(format!(
            "'{s}' is too large for one ping (at most 1 MiB = {MAX_FRAME} bytes)"
        ));
    }
    Ok(n)
}

/// Where `rtt` and `throughput` go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A raw TCP server.
    Raw(SocketAddr),
    /// A libp2p server: a multiaddr over `/tcp/` or `/quic-v1`, ending in `/p2p/<peer id>`.
    Libp2p(Multiaddr),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target::Raw(addr));
        }
        let addr: Multiaddr = s.parse().map_err(|e| {
            format!("expected IP:PORT or a multiaddr ending in /p2p/<peer id>, got '{s}': {e}")
        })?;
        libp2p_target(&addr)?;
        Ok(Target::Libp2p(addr))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Raw(a) => a.fmt(f),
            Target::Libp2p(a) => a.fmt(f),
        }
    }
}

/// The peer, the address to dial (without `/p2p/`) and the transport of a libp2p target.
fn libp2p_target(addr: &Multiaddr) -> Result<(PeerId, Multiaddr, Carrier), String> {
    let mut dial = addr.clone();
    let Some(Protocol::P2p(peer)) = dial.pop() else {
        return Err(format!("'{addr}' does not end in /p2p/<peer id>"));
    };
    let quic = dial.iter().any(|p| matches!(p, Protocol::QuicV1));
    let tcp = dial.iter().any(|p| matches!(p, Protocol::Tcp(_)));
    let transport = match (tcp, quic) {
        (_, true) => Carrier::Libp2pQuic,
        (true, false) => Carrier::Libp2pTcp,
        (false, false) => return Err(format!("'{addr}' is neither /tcp/ nor /quic-v1")),
    };
    Ok((peer, dial, transport))
}

// ---------------------------------------------------------------------------------------------
// Results

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// Entry point

/// Runs one command: `serve` until Ctrl-C/SIGTERM; the others print one `perf_result` line.
pub async fn run(cmd: PerfCommand) -> Result<(), RunError> {
    match cmd {
        PerfCommand::Serve(args) => {
            let server = start_server(&args).await?;
            println!("{}", server.ready_line());
            server.serve(p2plab_node::shutdown_signal()).await
        }
        PerfCommand::Rtt(a) => {
            let interval = Duration::from_millis(a.interval_ms);
            print_line(&rtt(&a.to, a.size, a.count, a.warmup, interval).await?)
        }
        PerfCommand::Throughput(a) => {
            let result = throughput(&a.to, a.bytes as u64, a.repeats).await?;
            print_line(&result)
        }
    }
}

fn print_line(value: &impl Serialize) -> Result<(), RunError> {
    let line = serde_json::to_string(value)
        .map_err(|e| RunError::Runtime(format!("cannot encode the result: {e}")))?;
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// libp2p swarm

/// The ed25519 identity of `--seed` (the node's derivation, so the same seed gives the same peer
/// id), else a fresh one.
pub fn identity_from_seed(seed: Option<u64>) -> Result<Keypair, RunError> {
    match seed {
        Some(seed) => p2plab_node::swarm::identity_from_seed(seed)
            .map_err(|e| RunError::flag("--seed", seed.to_string(), e)),
        None => Ok(Keypair::generate_ed25519()),
    }
}

/// A swarm with only the stream behaviour, over the peer's own transport stack
/// ([`p2plab_node::swarm::transport`]: TCP with nodelay, noise and yamux; QUIC), so that what is
/// measured is what the peer runs.
fn build_swarm(key: Keypair) -> Result<Swarm<libp2p_stream::Behaviour>, RunError> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            p2plab_node::swarm::transport(key, Stack::Both, None)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| RunError::Runtime(format!("transport: {e}")))?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| RunError::Runtime(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
        .build())
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// What a server has received, for tests and logs.
#[derive(Debug, Default)]
pub struct ServerStats {
    raw_bulk_bytes: AtomicU64,
    p2p_bulk_bytes: AtomicU64,
    pings: AtomicU64,
}

impl ServerStats {
    /// Bytes of completed raw bulk transfers.
    pub fn raw_bulk_bytes(&self) -> u64 {
        self.raw_bulk_bytes.load(Ordering::Relaxed)
    }
    /// Bytes of completed libp2p bulk transfers.
    pub fn p2p_bulk_bytes(&self) -> u64 {
        self.p2p_bulk_bytes.load(Ordering::Relaxed)
    }

    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

/// A bound server ([`start_server`]); [`Server::serve`] serves it.
pub struct Server {
    /// The raw TCP listener's address.
    pub tcp: SocketAddr,
    /// The libp2p listen addresses (without `/p2p/`).
    pub p2p: Vec<Multiaddr>,
    pub peer_id: PeerId,
    listener: TcpListener,
    swarm: Swarm<libp2p_stream::Behaviour>,
    incoming: libp2p_stream::IncomingStreams,
    incoming_pings: libp2p_stream::IncomingStreams,
    stats: Arc<ServerStats>,
}

/// Binds the raw TCP listener and the libp2p listeners (TCP and QUIC), and waits until libp2p
/// reports both listening. Must be called inside a tokio runtime.
pub async fn start_server(args: &ServeArgs) -> Result<Server, RunError> {
    let ip = args.listen_addr;
    let listener = TcpListener::bind((ip, args.tcp_port))
        .await
        .map_err(|e| RunError::flag("--tcp-port", args.tcp_port.to_string(), e))?;
    let tcp = listener
        .local_addr()
        .map_err(|e| RunError::Runtime(format!("raw tcp listener: {e}")))?;

    let key = identity_from_seed(args.seed)?;
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(key)?;
    let mut control = swarm.behaviour().new_control();
    let incoming = control
        .accept(perf_protocol())
        .map_err(|e| RunError::Runtime(format!("{PERF_PROTOCOL}: {e}")))?;
    let incoming_pings = control
        .accept(ping_protocol())
        .map_err(|e| RunError::Runtime(format!("{PING_PROTOCOL}: {e}")))?;

    let port = args.p2p_port;
    let base = Multiaddr::from(ip);
    let tcp_addr = base.clone().with(Protocol::Tcp(port));
    let quic_addr = base.with(Protocol::Udp(port)).with(Protocol::QuicV1);
    let mut pending = Vec::new();
    for addr in [tcp_addr, quic_addr] {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| RunError::flag("--p2p-port", port.to_string(), format!("{addr}: {e}")))?;
        pending.push(id);
    }

    let mut p2p = Vec::new();
    let wait = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    pending.retain(|id| *id != listener_id);
                    p2p.push(address);
                    if pending.is_empty() {
                        return Ok(());
                    }
                }
                SwarmEvent::ListenerClosed {
                    addresses, reason, ..
                } => {
                    let why = reason
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "closed".into());
                    return Err(format!("listener {addresses:?}: {why}"));
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(format!("listener: {error}"))
                }
                _ => {}
            }
        }
    };
    timeout(LISTEN_TIMEOUT, wait)
        .await
        .map_err(|_| {
            RunError::flag(
                "--p2p-port",
                port.to_string(),
                "libp2p did not report its listen addresses",
            )
        })?
        .map_err(|e| RunError::flag("--p2p-port", port.to_string(), e))?;
    // Other interfaces' addresses already known (listening on an unspecified IP).
    while let Some(Some(event)) = swarm.next().now_or_never() {
        if let SwarmEvent::NewListenAddr { address, .. } = event {
            p2p.push(address);
        }
    }

    Ok(Server {
        tcp,
        p2p,
        peer_id,
        listener,
        swarm,
        incoming,
        incoming_pings,
        stats: Arc::default(),
    })
}

impl Server {
    /// The `perf_ready` line.
    pub fn ready_line(&self) -> String {
        let ready = PerfReady {
            peer_id: self.peer_id,
            tcp: self.tcp,
            p2p: self.p2p.clone(),
        };
        serde_json::to_string(&ready).unwrap_or_default()
    }

    /// The server's counters (shared with the running server).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` resolves. Connections and streams in progress are dropped then.
    pub async fn serve(self, shutdown: impl Future<Output = String>) -> Result<(), RunError> {
        let Server {
            listener,
            mut swarm,
            mut incoming,
            mut incoming_pings,
            stats,
            ..
        } = self;
        let mut raw = JoinSet::new();
        raw.spawn(accept_raw(listener, stats.clone()));
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let mut streams = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                why = &mut shutdown => {
                    tracing::info!(signal = %why, "perf server stopping");
                    return Ok(());
                }
                Some((peer, stream)) = incoming.next() => {
                    // Over the cap the stream is dropped (reset) at once.
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let stats = stats.clone();
                            streams.spawn(async move {
                                let mut stream = stream;
                                let mut buf = vec![0u8; CHUNK];
                                match serve_bulk(&mut stream, &mut buf).await {
                                    Ok(n) => {
                                        stats.p2p_bulk_bytes.fetch_add(n, Ordering::Relaxed);
                                    }
                                    Err(e) => tracing::debug!(%peer, error = %e, "perf stream failed"),
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => tracing::debug!(%peer, "perf stream refused: too many"),
                    }
                }
                Some((peer, mut stream)) = incoming_pings.next() => {
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let stats = stats.clone();
                            streams.spawn(async move {
                                let mut buf = vec![0u8; CHUNK];
                                if let Err(e) = serve_pings(&mut stream, &mut buf, &stats).await {
                                    tracing::debug!(%peer, error = %e, "ping stream failed");
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => tracing::debug!(%peer, "ping stream refused: too many"),
                    }
                }
                Some(_) = streams.join_next(), if !streams.is_empty() => {}
                Some(done) = raw.join_next() => {
                    // The accept loop never ends on its own.
                    return Err(RunError::Runtime(format!("raw tcp server stopped: {done:?}")));
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                        tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "perf connection");
                    }
                    SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                        tracing::warn!(?addresses, ?reason, "libp2p listener closed");
                    }
                    SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "libp2p listener error"),
                    SwarmEvent::IncomingConnectionError { error, .. } => {
                        tracing::debug!(%error, "incoming libp2p connection failed");
                    }
                    _ => {}
                },
            }
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no progress for {}s", IDLE.as_secs()),
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

async fn accept_raw(listener: TcpListener, stats: Arc<ServerStats>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the cap the connection is dropped at once.
                    if let Ok(permit) = permits.clone().try_acquire_owned() {
                        let stats = stats.clone();
                        conns.spawn(async move {
                            if let Err(e) = serve_raw(stream, &stats).await {
                                tracing::debug!(%peer, error = %e, "raw perf connection failed");
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "raw accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Reads exactly `buf.len()` bytes, each read waiting at most [`IDLE`].
async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8], what: &str) -> io::Result<()> {
    timeout(IDLE, s.read_exact(buf))
        .await
        .map_err(|_| timed_out(what))?
}

/// Writes and flushes `buf`, waiting at most [`IDLE`].
async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, buf: &[u8], what: &str) -> io::Result<()> {
    timeout(IDLE, async {
        s.write_all(buf).await?;
        s.flush().await
    })
    .await
    .map_err(|_| timed_out(what))?
}

/// Reads and discards `n` bytes into `buf`.
async fn discard<S: AsyncRead + Unpin>(s: &mut S, n: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let Some(chunk) = buf.get_mut(..want) else {
            return Err(io::Error::other("buffer"));
        };
        let got = timeout(IDLE, s.read(chunk))
            .await
            .map_err(|_| timed_out("payload"))??;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{left} bytes missing"),
            ));
        }
        left -= got as u64;
    }
    Ok(())
}

async fn serve_raw(s: TcpStream, stats: &ServerStats) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut s = s.compat();
    let mut mode = [0u8; 1];
    read_exact(&mut s, &mut mode, "mode byte").await?;
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        MODE_PING => serve_pings(&mut s, &mut buf, stats).await,
        MODE_BULK => {
            let n = serve_bulk(&mut s, &mut buf).await?;
            stats.raw_bulk_bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        other => Err(invalid(format!("unknown mode byte {other:#04x}"))),
    }
}

/// Ping-pong, server side, on a raw connection after its mode byte or on a libp2p ping stream:
/// answers every frame with its index until the client closes.
async fn serve_pings<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut [u8],
    stats: &ServerStats,
) -> io::Result<()> {
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        match read_exact(s, &mut len, "frame length").await {
            // The client is done.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        };
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(invalid(format!(
                "frame length {len} outside 1..={MAX_FRAME}"
            )));
        }
        discard(s, len as u64, buf).await?;
        write_all(s, &index.to_be_bytes(), "ack").await?;
        stats.pings.fetch_add(1, Ordering::Relaxed);
        index += 1;
    }
}

/// One bulk transfer, server side (raw after the mode byte, or a libp2p perf stream): returns the
/// bytes received once it has answered their count and closed.
async fn serve_bulk<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut count = [0u8; 8];
    read_exact(s, &mut count, "byte count").await?;
    let n = u64::from_be_bytes(count);
    if n > MAX_BULK {
        return Err(invalid(format!("byte count {n} over {MAX_BULK}")));
    }
    discard(s, n, buf).await?;
    write_all(s, &n.to_be_bytes(), "answer").await?;
    let _ = timeout(IDLE, s.close()).await;
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Clients

fn io_err(what: impl fmt::Display) -> impl Fn(io::Error) -> RunError {
    move |e| RunError::Runtime(format!("{what}: {e}"))
}

fn elapsed_err(what: impl fmt::Display) -> impl Fn(tokio::time::error::Elapsed) -> RunError {
    move |_| RunError::Runtime(format!("{what}: timed out"))
}

/// A raw TCP connection (TCP_NODELAY) as a futures-io stream, for the helpers both ends share.
async fn connect_raw(to: SocketAddr) -> Result<tokio_util::compat::Compat<TcpStream>, RunError> {
    let s = timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(elapsed_err(format!("connect to {to}")))?
        .map_err(io_err(format!("connect to {to}")))?;
    s.set_nodelay(true).map_err(io_err("TCP_NODELAY"))?;
    Ok(s.compat())
}

/// `value` of `flag` must be 1 to `max` (`unit`); `u64::MAX`: at least 1.
fn in_range(flag: &'static str, value: u64, max: u64, unit: &str) -> Result<(), RunError> {
    if (1..=max).contains(&value) {
        return Ok(());
    }
    let reason = if max == u64::MAX {
        "must be at least 1".to_string()
    } else {
        format!("must be 1 to {max} {unit}")
    };
    Err(UsageError {
        flag,
        value: value.to_string(),
        reason,
    }
    .into())
}

/// Ping-pong: `warmup` then `count` round trips of `size`-byte frames, `interval` apart, on one
/// raw TCP connection or one libp2p stream; returns the `count` round trips in milliseconds.
pub async fn rtt(
    to: &Target,
    size: usize,
    count: usize,
    warmup: usize,
    interval: Duration,
) -> Result<RttResult, RunError> {
    in_range("--size", size as u64, MAX_FRAME as u64, "bytes")?;
    in_range("--count", count as u64, u64::MAX, "")?;
    let what = format!("ping-pong with {to}");
    let (transport, samples) = match to {
        Target::Raw(addr) => {
            let mut s = connect_raw(*addr).await?;
            write_all(&mut s, &[MODE_PING], "mode byte")
                .await
                .map_err(io_err(&what))?;
            (
                Carrier::RawTcp,
                ping_pong(&mut s, &what, size, count, warmup, interval).await?,
            )
        }
        Target::Libp2p(addr) => {
            let client = Libp2pClient::connect(addr).await?;
            let mut stream = client.open(ping_protocol(), &what).await?;
            let samples = ping_pong(&mut stream, &what, size, count, warmup, interval).await?;
            (client.transport, samples)
        }
    };
    Ok(RttResult::new(transport, size, samples))
}

async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    what: &str,
    size: usize,
    count: usize,
    warmup: usize,
    interval: Duration,
) -> Result<Vec<f64>, RunError> {
    let mut frame = vec![FILL; 4 + size];
    frame[..4].copy_from_slice(&(size as u32).to_be_bytes());
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup.saturating_add(count) {
        if i > 0 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let t0 = Instant::now();
        write_all(s, &frame, "frame").await.map_err(io_err(what))?;
        let mut ack = [0u8; 8];
        read_exact(s, &mut ack, "ack").await.map_err(io_err(what))?;
        let rtt = t0.elapsed();
        let got = u64::from_be_bytes(ack);
        if got != i as u64 {
            return Err(RunError::Runtime(format!(
                "{what}: ack {got} for frame {i}"
            )));
        }
        if i >= warmup {
            samples.push(ms(rtt));
        }
    }
    let _ = timeout(IDLE, s.close()).await;
    Ok(samples)
}

/// Bulk throughput: `repeats` transfers of `bytes` to `to` (one raw TCP connection each, or one
/// libp2p stream each on one connection).
pub async fn throughput(
    to: &Target,
    bytes: u64,
    repeats: usize,
) -> Result<ThroughputResult, RunError> {
    in_range("--bytes", bytes, MAX_BULK, "bytes")?;
    in_range("--repeats", repeats as u64, u64::MAX, "")?;
    match to {
        Target::Raw(addr) => throughput_raw(*addr, bytes, repeats).await,
        Target::Libp2p(addr) => throughput_libp2p(addr, bytes, repeats).await,
    }
}

async fn throughput_raw(
    to: SocketAddr,
    bytes: u64,
    repeats: usize,
) -> Result<ThroughputResult, RunError> {
    let chunk = vec![FILL; CHUNK];
    let what = format!("bulk transfer to {to}");
    let mut connect_ms = None;
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t_connect = Instant::now();
        let mut s = connect_raw(to).await?;
        connect_ms.get_or_insert(ms(t_connect.elapsed()));
        let mut header = [0u8; 9];
        header[0] = MODE_BULK;
        header[1..].copy_from_slice(&bytes.to_be_bytes());
        let t0 = Instant::now();
        write_all(&mut s, &header, "header")
            .await
            .map_err(io_err(&what))?;
        let mut left = bytes;
        while left > 0 {
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            write_all(&mut s, &chunk[..n], "payload")
                .await
                .map_err(io_err(&what))?;
            left -= n as u64;
        }
        let mut answer = [0u8; 8];
        read_exact(&mut s, &mut answer, "answer")
            .await
            .map_err(io_err(&what))?;
        let secs = t0.elapsed().as_secs_f64();
        check_answer(&what, answer, bytes)?;
        samples.push(secs);
    }
    Ok(ThroughputResult::new(
        Carrier::RawTcp,
        bytes,
        samples,
        connect_ms.unwrap_or(0.0),
    ))
}

fn check_answer(what: &str, answer: [u8; 8], bytes: u64) -> Result<(), RunError> {
    let got = u64::from_be_bytes(answer);
    if got != bytes {
        return Err(RunError::Runtime(format!(
            "{what}: the server acknowledged {got} of {bytes} bytes"
        )));
    }
    Ok(())
}

/// A client swarm with one connection to a `serve`, driven in the background until dropped.
struct Libp2pClient {
    peer: PeerId,
    control: libp2p_stream::Control,
    transport: Carrier,
    connect_ms: f64,
    _driver: AbortOnDrop,
}

impl Libp2pClient {
    async fn connect(addr: &Multiaddr) -> Result<Self, RunError> {
        let (peer, dial_addr, transport) =
            libp2p_target(addr).map_err(|e| RunError::flag("--to", addr.to_string(), e))?;
        let mut swarm = build_swarm(Keypair::generate_ed25519())?;
        let control = swarm.behaviour().new_control();
        let t_connect = Instant::now();
        swarm
            .dial(DialOpts::peer_id(peer).addresses(vec![dial_addr]).build())
            .map_err(|e| RunError::Runtime(format!("dial {addr}: {e}")))?;
        let established = async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                        return Ok(())
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(error.to_string())
                    }
                    _ => {}
                }
            }
        };
        timeout(CONNECT_TIMEOUT, established)
            .await
            .map_err(|_| RunError::Runtime(format!("dial {addr}: timed out")))?
            .map_err(|e| RunError::Runtime(format!("dial {addr}: {e}")))?;
        let connect_ms = ms(t_connect.elapsed());
        let driver = AbortOnDrop(tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        }));
        Ok(Libp2pClient {
            peer,
            control,
            transport,
            connect_ms,
            _driver: driver,
        })
    }

    async fn open(&self, protocol: StreamProtocol, what: &str) -> Result<libp2p::Stream, RunError> {
        timeout(
            CONNECT_TIMEOUT,
            self.control.clone().open_stream(self.peer, protocol),
        )
        .await
        .map_err(elapsed_err(what))?
        .map_err(|e| RunError::Runtime(format!("{what}: {e}")))
    }
}

async fn throughput_libp2p(
    addr: &Multiaddr,
    bytes: u64,
    repeats: usize,
) -> Result<ThroughputResult, RunError> {
    let client = Libp2pClient::connect(addr).await?;
    let chunk = vec![FILL; CHUNK];
    let mut samples = Vec::with_capacity(repeats);
    for i in 0..repeats {
        let what = format!("stream {i} to {addr}");
        let mut stream = client.open(perf_protocol(), &what).await?;
        let transfer = async {
            let t0 = Instant::now();
            timeout(IDLE, stream.write_all(&bytes.to_be_bytes()))
                .await
                .map_err(|_| timed_out("header"))??;
            let mut left = bytes;
            while left > 0 {
                let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let part = chunk.get(..n).unwrap_or_default();
                timeout(IDLE, stream.write_all(part))
                    .await
                    .map_err(|_| timed_out("payload"))??;
                left -= n as u64;
            }
            timeout(IDLE, async {
                stream.flush().await?;
                stream.close().await
            })
            .await
            .map_err(|_| timed_out("close"))??;
            let mut answer = [0u8; 8];
            timeout(IDLE, stream.read_exact(&mut answer))
                .await
                .map_err(|_| timed_out("answer"))??;
            Ok::<_, io::Error>((t0.elapsed().as_secs_f64(), answer))
        };
        let (secs, answer) = transfer.await.map_err(io_err(&what))?;
        check_answer(&what, answer, bytes)?;
        samples.push(secs);
    }
    Ok(ThroughputResult::new(
        client.transport,
        bytes,
        samples,
        client.connect_ms,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use p2plab_contract::bench::Kind;

    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const DEADLINE: Duration = Duration::from_secs(60);

    fn local_args() -> ServeArgs {
        ServeArgs {
            listen_addr: [127, 0, 0, 1].into(),
            tcp_port: 0,
            p2p_port: 0,
            seed: Some(7),
        }
    }

    /// A server on 127.0.0.1 (ports picked by the kernel), served in the background.
    async fn spawn_server() -> (
        SocketAddr,
        Vec<Multiaddr>,
        PeerId,
        Arc<ServerStats>,
        AbortOnDrop,
    ) {
        let server = timeout(DEADLINE, start_server(&local_args()))
            .await
            .unwrap()
            .unwrap();
        let (tcp, p2p, peer, stats) = (
            server.tcp,
            server.p2p.clone(),
            server.peer_id,
            server.stats(),
        );
        let task = tokio::spawn(async move {
            let _ = server.serve(std::future::pending()).await;
        });
        (tcp, p2p, peer, stats, AbortOnDrop(task))
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size(" 1 ").unwrap(), 1);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("64kib").unwrap(), 65536);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("10kB").unwrap(), 10_000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size("64GiB").unwrap() as u64, MAX_BULK);
        for bad in ["", "KiB", "-1", "1.5MiB", "12 parsecs", "0x10", "1KiBB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("0").unwrap_err().contains("zero"));
        assert!(parse_size("0KiB").unwrap_err().contains("zero"));
        assert!(parse_size("65GiB").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("18446744073709551615GiB")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(parse_frame_size("1MiB").unwrap(), MAX_FRAME);
        assert!(parse_frame_size("1025KiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "10.0.0.1:5201".parse::<Target>().unwrap(),
            Target::Raw("10.0.0.1:5201".parse().unwrap())
        );
        let peer = PeerId::random();
        let tcp = format!("/ip4/10.0.0.1/tcp/5202/p2p/{peer}");
        let t = tcp.parse::<Target>().unwrap();
        assert_eq!(t.to_string(), tcp);
        let Target::Libp2p(a) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(libp2p_target(a).unwrap().2, Carrier::Libp2pTcp);
        let quic = format!("/ip4/10.0.0.1/udp/5202/quic-v1/p2p/{peer}");
        let Target::Libp2p(a) = quic.parse::<Target>().unwrap() else {
            panic!()
        };
        let (p, dial, transport) = libp2p_target(&a).unwrap();
        assert_eq!((p, transport), (peer, Carrier::Libp2pQuic));
        assert_eq!(dial.to_string(), "/ip4/10.0.0.1/udp/5202/quic-v1");
        assert!("/ip4/10.0.0.1/tcp/5202"
            .parse::<Target>()
            .unwrap_err()
            .contains("/p2p/"));
        assert!(format!("/ip4/10.0.0.1/udp/5202/p2p/{peer}")
            .parse::<Target>()
            .is_err());
        assert!("nonsense".parse::<Target>().is_err());
    }

    #[test]
    fn seed_identity_is_deterministic() {
        let a = identity_from_seed(Some(3)).unwrap().public().to_peer_id();
        let b = identity_from_seed(Some(3)).unwrap().public().to_peer_id();
        let c = identity_from_seed(Some(4)).unwrap().public().to_peer_id();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn commands_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: PerfCommand,
        }
        let PerfCommand::Rtt(a) =
            Cli::try_parse_from(["b", "rtt", "--to", "1.2.3.4:5201", "--size", "4KiB"])
                .unwrap()
                .cmd
        else {
            panic!()
        };
        assert_eq!(
            (a.size, a.count, a.warmup, a.interval_ms),
            (4096, 200, 10, 10)
        );
        assert!(
            Cli::try_parse_from(["b", "rtt", "--to", "1.2.3.4:5201", "--size", "2MiB"]).is_err()
        );
        assert!(Cli::try_parse_from(["b", "rtt", "--to", "1.2.3.4:5201", "--size", "0"]).is_err());
        assert!(Cli::try_parse_from([
            "b",
            "rtt",
            "--to",
            "1.2.3.4:5201",
            "--size",
            "1",
            "--count",
            "0"
        ])
        .is_err());
        let PerfCommand::Throughput(a) =
            Cli::try_parse_from(["b", "throughput", "--to", "1.2.3.4:5201"])
                .unwrap()
                .cmd
        else {
            panic!()
        };
        assert_eq!((a.bytes, a.repeats), (64 << 20, 5));
        let PerfCommand::Serve(a) = Cli::try_parse_from(["b", "serve"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!(
            (a.listen_addr, a.tcp_port, a.p2p_port, a.seed),
            ([0, 0, 0, 0].into(), 5201, 5202, None)
        );
    }

    /// Writes `bytes` on a fresh raw connection and expects the server to close it (EOF or reset)
    /// without answering.
    async fn expect_closed(to: SocketAddr, bytes: &[u8]) {
        let mut s = TcpStream::connect(to).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 8];
        match timeout(DEADLINE, s.read(&mut buf)).await.unwrap() {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("server answered {n} bytes to {bytes:?}"),
        }
    }

    #[tokio::test]
    async fn server_refuses_oversized_frames_and_unknown_modes() {
        let (tcp, _, _, stats, _server) = spawn_server().await;
        // 1 MiB + 1: closed without reading (or allocating) the body.
        let mut over = vec![MODE_PING];
        over.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        expect_closed(tcp, &over).await;
        let mut huge = vec![MODE_PING];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        expect_closed(tcp, &huge).await;
        let mut zero = vec![MODE_PING];
        zero.extend_from_slice(&0u32.to_be_bytes());
        expect_closed(tcp, &zero).await;
        let mut bulk = vec![MODE_BULK];
        bulk.extend_from_slice(&(MAX_BULK + 1).to_be_bytes());
        expect_closed(tcp, &bulk).await;
        expect_closed(tcp, b"X").await;
        assert_eq!(stats.pings(), 0);

        // A frame of exactly 1 MiB is answered.
        let mut s = TcpStream::connect(tcp).await.unwrap();
        let mut frame = vec![MODE_PING];
        frame.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
        frame.resize(frame.len() + MAX_FRAME, 1);
        timeout(DEADLINE, s.write_all(&frame))
            .await
            .unwrap()
            .unwrap();
        let mut ack = [0u8; 8];
        timeout(DEADLINE, s.read_exact(&mut ack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u64::from_be_bytes(ack), 0);
        // A short bulk transfer (the client gives up) is not counted.
        let mut short = vec![MODE_BULK];
        short.extend_from_slice(&100u64.to_be_bytes());
        short.extend_from_slice(&[1; 10]);
        expect_closed_after_eof(tcp, &short).await;
        assert_eq!(stats.raw_bulk_bytes(), 0);
    }

    async fn expect_closed_after_eof(to: SocketAddr, bytes: &[u8]) {
        let mut s = TcpStream::connect(to).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = [0u8; 8];
        match timeout(DEADLINE, s.read(&mut buf)).await.unwrap() {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("server answered {n} bytes"),
        }
    }

    #[tokio::test]
    async fn raw_rtt_on_loopback() {
        let (tcp, _, _, stats, _server) = spawn_server().await;
        let r = timeout(
            DEADLINE,
            rtt(&Target::Raw(tcp), 4096, 20, 3, Duration::from_millis(1)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.kind, r.transport, r.size, r.samples_ms.len()),
            (Kind::Rtt, Carrier::RawTcp, 4096, 20)
        );
        assert!(
            r.samples_ms.iter().all(|&s| s > 0.0 && s.is_finite()),
            "{r:?}"
        );
        assert_eq!(stats.pings(), 23);
        assert!(rtt(&Target::Raw(tcp), MAX_FRAME + 1, 1, 0, Duration::ZERO)
            .await
            .is_err());
    }

    /// The server's first libp2p address over TCP (`quic` false) or QUIC, with its peer id.
    fn p2p_target(p2p: &[Multiaddr], peer: PeerId, quic: bool) -> Target {
        let addr = p2p
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .unwrap_or_else(|| {
                panic!(
                    "no {} address in {p2p:?}",
                    if quic { "quic" } else { "tcp" }
                )
            })
            .clone()
            .with(Protocol::P2p(peer));
        addr.to_string().parse().unwrap()
    }

    #[tokio::test]
    async fn libp2p_rtt_on_loopback() {
        let (_, p2p, peer, stats, _server) = spawn_server().await;
        for (quic, want, pings) in [
            (false, Carrier::Libp2pTcp, 13),
            (true, Carrier::Libp2pQuic, 26),
        ] {
            let target = p2p_target(&p2p, peer, quic);
            let r = timeout(DEADLINE, rtt(&target, 64, 10, 3, Duration::from_millis(1)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((r.transport, r.size, r.samples_ms.len()), (want, 64, 10));
            assert!(
                r.samples_ms.iter().all(|&s| s > 0.0 && s.is_finite()),
                "{r:?}"
            );
            assert_eq!(stats.pings(), pings);
        }
    }

    #[tokio::test]
    async fn raw_throughput_on_loopback() {
        let (tcp, _, _, stats, _server) = spawn_server().await;
        let n = 8u64 << 20;
        let r = timeout(DEADLINE, throughput(&Target::Raw(tcp), n, 3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.kind, r.transport, r.bytes),
            (Kind::Throughput, Carrier::RawTcp, n)
        );
        assert_eq!(r.samples_s.len(), 3);
        assert_eq!(r.samples_mbit_s.len(), 3);
        assert!(
            r.samples_s
                .iter()
                .chain(&r.samples_mbit_s)
                .all(|&s| s > 0.0 && s.is_finite()),
            "{r:?}"
        );
        assert!(r.connect_ms > 0.0);
        assert_eq!(stats.raw_bulk_bytes(), 3 * n);
    }

    async fn libp2p_throughput(quic: bool) {
        let (_, p2p, peer, stats, _server) = spawn_server().await;
        let target = p2p_target(&p2p, peer, quic);
        let n = 2u64 << 20;
        let r = timeout(DEADLINE, throughput(&target, n, 3))
            .await
            .unwrap()
            .unwrap();
        let want = if quic {
            Carrier::Libp2pQuic
        } else {
            Carrier::Libp2pTcp
        };
        assert_eq!((r.transport, r.bytes), (want, n));
        assert_eq!(r.samples_s.len(), 3);
        assert!(
            r.samples_s
                .iter()
                .chain(&r.samples_mbit_s)
                .all(|&s| s > 0.0 && s.is_finite()),
            "{r:?}"
        );
        assert!(r.connect_ms > 0.0);
        assert_eq!(stats.p2p_bulk_bytes(), 3 * n);
    }

    #[tokio::test]
    async fn libp2p_throughput_over_tcp() {
        libp2p_throughput(false).await;
    }

    #[tokio::test]
    async fn libp2p_throughput_over_quic() {
        libp2p_throughput(true).await;
    }

    #[tokio::test]
    async fn ready_line_names_everything() {
        let server = timeout(DEADLINE, start_server(&local_args()))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&server.ready_line()).unwrap();
        assert_eq!(v["event"], "perf_ready");
        assert_eq!(
            v["peer_id"],
            identity_from_seed(Some(7))
                .unwrap()
                .public()
                .to_peer_id()
                .to_string()
        );
        assert_eq!(v["tcp"], server.tcp.to_string());
        let p2p: Vec<&str> = v["p2p"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            p2p.iter().any(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
            "{p2p:?}"
        );
        assert!(
            p2p.iter()
                .any(|a| a.starts_with("/ip4/127.0.0.1/udp/") && a.ends_with("/quic-v1")),
            "{p2p:?}"
        );
        assert!(server
            .ready_line()
            .starts_with(r#"{"event":"perf_ready","peer_id":"#));
    }
}
