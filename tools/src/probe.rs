//! The NAT probe: how a NAT treats a LAN host, in RFC 4787 terms, for UDP and TCP.
//!
//! Two roles of the `probe` binary:
//! - `probe reflect` runs on the lab's internet segment. It serves UDP and TCP on a main port
//!   (3478) and an alt port (3479), same port numbers for both protocols.
//! - `probe measure --reflector A --reflector B` runs on a LAN host, with two reflectors at
//!   different IP addresses, and prints one `nat_probe` JSON line per protocol.
//!
//! # Wire protocol
//! Text, one request per UDP datagram or per `\n`-terminated TCP line, at most 512 bytes, words
//! separated by spaces:
//! - `whoami` → `addr <ip:port>`: the source address the reflector observed. Over UDP the reply
//!   comes from the port the request arrived on; over TCP on the same connection.
//! - `send <token> <ip:port> main|alt` → `ok` or `err <reason>`. A token is 1 to 64 characters of
//!   `[A-Za-z0-9._-]`. UDP: the reflector sends `<token>` as one datagram from its main or alt
//!   port to `ip:port`, three times 50 ms apart (`ok` once the first one is sent). TCP: the
//!   reflector opens a new connection to `ip:port` *from* its main or alt port (bound with
//!   SO_REUSEADDR + SO_REUSEPORT next to its listener), with a 2 s connect timeout, writes
//!   `<token>\n` and closes; `ok` once the token is written.
//!
//! Malformed or oversized UDP datagrams get no reply; a malformed TCP line gets `err <reason>`
//! and a line over 512 bytes closes the connection. At most 64 TCP connections and 64 UDP
//! `send`s are served at once; a TCP connection idle for 5 s is closed. When bound, the
//! reflector prints `{"event":"reflector_ready","udp":["ip:main","ip:alt"],"tcp":[...]}`
//! (with `--port 0 --alt-port 0` the kernel picks the ports, the same for UDP and TCP).
//!
//! # Measurement
//! - mapping: from one local socket (one local port), `whoami` to reflector 1, then to
//!   reflector 2. Same observed `ip:port` → endpoint-independent, else endpoint-dependent.
//!   `nat` is false when both observed addresses equal the local one (mapping and filtering are
//!   still reported as measured).
//! - filtering: a fresh socket S (TCP: a listener plus a connection, both on one new local port
//!   L) asks reflector 1 `whoami` → M. Other sockets ask reflector 2 `send tokenA M main` and
//!   reflector 1 `send tokenB M alt`; S waits up to `--timeout-ms` for them. tokenA →
//!   endpoint-independent, else tokenB → address-dependent, else address-and-port-dependent.
//!
//! Output, one line per protocol:
//! `{"event":"nat_probe","proto":"udp","local":"10.1.0.10:40001","observed":["198.18.0.2:40001",
//! "198.18.0.2:40001"],"nat":true,"mapping":"endpoint-independent","filtering":
//! "address-and-port-dependent","hairpin":false}`.
//! - hairpin: after the filtering test, another socket of the same host (TCP: a new connection)
//!   sends a token to M, S's mapping; `true` when S gets it, through the router. `null` when
//!   nothing is translated (the host would reach its own address directly).
//!
//! When neither reflector answers over one protocol but reflector 1 answers over the other, that
//! protocol is blocked on the way out: its line has no `observed`, `nat`, `mapping` or
//! `filtering` (`{"event":"nat_probe","proto":"udp","local":"10.1.0.10:0","hairpin":null}`).
//! Silence over both is an error (exit 1): the reflectors are down or misnamed.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use p2plab_contract::probe::{Filtering, Mapping, NatProbe, Proto, ReflectorReady, Verdict};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    sync::{mpsc, Semaphore},
    task::JoinSet,
    time::{sleep, timeout, timeout_at, Instant},
};

use p2plab_node::{RunError, UsageError};

/// Largest request, reply or token datagram/line, in bytes.
pub const MAX_MESSAGE: usize = 512;
/// The reflector's default main port (its alt port is the next one).
pub const DEFAULT_PORT: u16 = p2plab_contract::probe::REFLECTOR_PORT;
const MAX_TOKEN: usize = 64;
const MAX_TCP_CONNS: usize = 64;
const MAX_UDP_SENDS: usize = 64;
const IDLE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const UDP_REPEATS: u32 = 3;
const UDP_REPEAT_GAP: Duration = Duration::from_millis(50);

/// `probe`: the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "probe",
    version,
    about = "p2plab NAT probe: RFC 4787 mapping and filtering, UDP and TCP"
)]
pub struct ProbeCli {
    #[command(subcommand)]
    pub command: ProbeCommand,
}

/// The two roles.
#[derive(Debug, Clone, Subcommand)]
pub enum ProbeCommand {
    /// Answer `whoami` and `send` requests (run on the internet segment).
    Reflect(ReflectArgs),
    /// Measure the NAT in front of this host against two reflectors.
    Measure(MeasureArgs),
}

/// `probe reflect` flags.
#[derive(Debug, Clone, Args)]
pub struct ReflectArgs {
    /// IP address to listen on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub listen: IpAddr,
    /// Main port, UDP and TCP (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Alternate port, UDP and TCP (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT + 1)]
    pub alt_port: u16,
}

/// Which protocols `probe measure` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    Udp,
    Tcp,
    Both,
}

/// `probe measure` flags.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// A reflector, `IP[:PORT]` (port 3478 by default). Exactly two, at different IP addresses.
    #[arg(long = "reflector", value_name = "IP[:PORT]", required = true, value_parser = parse_reflector)]
    pub reflectors: Vec<SocketAddr>,
    /// Protocols to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub proto: ProtoArg,
    /// Milliseconds to wait for a reply or for the filtering tokens.
    #[arg(long, value_name = "MS", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    /// Local IP address to measure from (default: the one the route to the first reflector uses).
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
}

fn parse_reflector(s: &str) -> Result<SocketAddr, String> {
    let addr = s
        .parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        })
        .map_err(|_| format!("expected IP[:PORT], got '{s}'"))?;
    if addr.port() == 0 {
        return Err(format!("port 0 in '{s}'"));
    }
    Ok(addr)
}

/// What `probe measure` will do, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub reflectors: [SocketAddr; 2],
    pub local_ip: IpAddr,
    pub protos: Vec<Proto>,
    pub timeout: Duration,
}

impl MeasureArgs {
    /// Validates the flags (usage errors, exit 2) and finds the local IP (runtime error, exit 1).
    pub fn plan(&self) -> Result<Plan, RunError> {
        let list = || {
            self.reflectors
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let usage = |flag, value: String, reason: &str| UsageError {
            flag,
            value,
            reason: reason.into(),
        };
        let [r1, r2] = <[SocketAddr; 2]>::try_from(self.reflectors.clone())
            .map_err(|_| usage("--reflector", list(), "expected exactly two reflectors"))?;
        if r1.ip() == r2.ip() {
            return Err(usage(
                "--reflector",
                list(),
                "the two reflectors must have different IP addresses",
            )
            .into());
        }
        if r1.is_ipv4() != r2.is_ipv4() {
            return Err(usage(
                "--reflector",
                list(),
                "the two reflectors must be of the same IP family",
            )
            .into());
        }
        let local_ip = match self.bind {
            Some(ip) if ip.is_ipv4() != r1.is_ipv4() => {
                return Err(
                    usage("--bind", ip.to_string(), "not of the reflectors' IP family").into(),
                )
            }
            Some(ip) => ip,
            None => route_source(r1)
                .map_err(|e| RunError::Runtime(format!("no route to reflector {r1}: {e}")))?,
        };
        let protos = match self.proto {
            ProtoArg::Udp => vec![Proto::Udp],
            ProtoArg::Tcp => vec![Proto::Tcp],
            ProtoArg::Both => vec![Proto::Udp, Proto::Tcp],
        };
        let timeout = Duration::from_millis(self.timeout_ms);
        Ok(Plan {
            reflectors: [r1, r2],
            local_ip,
            protos,
            timeout,
        })
    }
}

/// The source IP the kernel picks for `to`.
fn route_source(to: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// Classifies from the local address, the two observed mappings of it, and which unsolicited
/// tokens came in: from the other reflector's IP, and from the same IP but the other port.
pub fn classify(
    local: SocketAddr,
    observed1: SocketAddr,
    observed2: SocketAddr,
    got_from_other_ip: bool,
    got_from_other_port: bool,
) -> Verdict {
    let mapping = if observed1 == observed2 {
        Mapping::EndpointIndependent
    } else {
        Mapping::EndpointDependent
    };
    let filtering = if got_from_other_ip {
        Filtering::EndpointIndependent
    } else if got_from_other_port {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Verdict {
        nat: observed1 != local || observed2 != local,
        mapping,
        filtering,
    }
}

/// Which reflector port a `send` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Main = 0,
    Alt = 1,
}

/// A request to the reflector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Whoami,
    Send {
        token: String,
        to: SocketAddr,
        from: Port,
    },
}

/// Parses one request line (without its `\n`).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_ascii_whitespace().take(5).collect();
    match words.as_slice() {
        ["whoami"] => Ok(Request::Whoami),
        ["send", token, to, from] => {
            let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if token.len() > MAX_TOKEN || !token.chars().all(ok) {
                return Err("bad token".into());
            }
            let to = to.parse().map_err(|_| "bad address".to_string())?;
            let from = match *from {
                "main" => Port::Main,
                "alt" => Port::Alt,
                _ => return Err("expected main or alt".into()),
            };
            Ok(Request::Send {
                token: token.to_string(),
                to,
                from,
            })
        }
        _ => Err("unknown request".into()),
    }
}

/// A reflector's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Addr(SocketAddr),
    Ok,
    Err(String),
}

pub(crate) fn parse_reply(line: &str) -> Option<Reply> {
    let line = line.trim();
    match line.split_once(' ').unwrap_or((line, "")) {
        ("addr", a) => a.parse().ok().map(Reply::Addr),
        ("ok", "") => Some(Reply::Ok),
        ("err", why) => Some(Reply::Err(why.to_string())),
        _ => None,
    }
}

/// Reads one line of at most [`MAX_MESSAGE`] bytes; `None` at end of stream.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if (&mut *r)
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?
        == 0
    {
        return Ok(None);
    }
    if buf.len() > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    let s = String::from_utf8(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?;
    Ok(Some(s.trim().to_string()))
}

/// A TCP socket bound to `bind`, with SO_REUSEADDR and (`reuse_port`) SO_REUSEPORT.
fn tcp_socket(bind: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let s = if bind.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    #[cfg(unix)]
    s.set_reuseport(reuse_port)?;
    #[cfg(not(unix))]
    let _ = reuse_port;
    s.bind(bind)?;
    Ok(s)
}

async fn tcp_connect(bind: SocketAddr, to: SocketAddr, t: Duration) -> io::Result<TcpStream> {
    let sock = tcp_socket(bind, true)?;
    timeout(t, sock.connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

// ---------------------------------------------------------------------------------------------
// Reflector

struct Shared {
    udp: [Arc<UdpSocket>; 2],
    tcp: [SocketAddr; 2],
    udp_sends: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
}

/// A bound reflector; [`Reflector::run`] serves it.
pub struct Reflector {
    shared: Arc<Shared>,
    listeners: [TcpListener; 2],
}

impl Reflector {
    /// Binds UDP and TCP on both ports (must be called inside a tokio runtime).
    pub fn bind(args: &ReflectArgs) -> Result<Self, RunError> {
        if args.port != 0 && args.port == args.alt_port {
            let reason = "must differ from --port".into();
            return Err(UsageError {
                flag: "--alt-port",
                value: args.alt_port.to_string(),
                reason,
            }
            .into());
        }
        let (u1, l1) = bind_pair(args.listen, args.port, "--port")?;
        let (u2, l2) = bind_pair(args.listen, args.alt_port, "--alt-port")?;
        let addr = |l: &TcpListener| l.local_addr().map_err(|e| RunError::Runtime(e.to_string()));
        let tcp = [addr(&l1)?, addr(&l2)?];
        let shared = Shared {
            udp: [Arc::new(u1), Arc::new(u2)],
            tcp,
            udp_sends: Arc::new(Semaphore::new(MAX_UDP_SENDS)),
            tcp_conns: Arc::new(Semaphore::new(MAX_TCP_CONNS)),
        };
        Ok(Reflector {
            shared: Arc::new(shared),
            listeners: [l1, l2],
        })
    }

    /// The `reflector_ready` line.
    pub fn ready_line(&self) -> String {
        let udp = self
            .shared
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect();
        let ready = ReflectorReady {
            udp,
            tcp: self.shared.tcp.to_vec(),
        };
        serde_json::to_string(&ready).unwrap_or_default()
    }

    /// Serves forever.
    pub async fn run(self) -> Result<(), RunError> {
        let mut tasks = JoinSet::new();
        for port in [Port::Main, Port::Alt] {
            tasks.spawn(serve_udp(self.shared.clone(), port));
        }
        for listener in self.listeners {
            tasks.spawn(accept_tcp(listener, self.shared.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| RunError::Runtime(format!("reflector task failed: {e}")))?;
        }
        Ok(())
    }
}

/// UDP and TCP on the same port number; with port 0, retries until both get the same one.
fn bind_pair(
    ip: IpAddr,
    port: u16,
    flag: &'static str,
) -> Result<(UdpSocket, TcpListener), RunError> {
    let fail = |e: io::Error| RunError::flag(flag, port.to_string(), e);
    let mut last = None;
    for _ in 0..if port == 0 { 32 } else { 1 } {
        let udp = std::net::UdpSocket::bind((ip, port)).map_err(fail)?;
        let addr = udp.local_addr().map_err(fail)?;
        match tcp_socket(addr, true).and_then(|s| s.listen(128)) {
            Ok(listener) => {
                udp.set_nonblocking(true).map_err(fail)?;
                return Ok((UdpSocket::from_std(udp).map_err(fail)?, listener));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| io::Error::other("no port"))))
}

async fn serve_udp(shared: Arc<Shared>, port: Port) {
    let sock = shared.udp[port as usize].clone();
    let mut buf = [0u8; MAX_MESSAGE + 1];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => {
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(text) = buf
            .get(..n)
            .filter(|_| n <= MAX_MESSAGE)
            .and_then(|b| std::str::from_utf8(b).ok())
        else {
            continue;
        };
        let reply = match parse_request(text.trim()) {
            Ok(Request::Whoami) => format!("addr {peer}"),
            Ok(Request::Send { token, to, from }) => {
                match udp_send_token(&shared, token, to, from).await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("err {e}"),
                }
            }
            Err(_) => continue,
        };
        let _ = sock.send_to(reply.as_bytes(), peer).await;
    }
}

async fn udp_send_token(
    shared: &Shared,
    token: String,
    to: SocketAddr,
    from: Port,
) -> Result<(), String> {
    let permit = shared
        .udp_sends
        .clone()
        .try_acquire_owned()
        .map_err(|_| "busy".to_string())?;
    let sock = shared.udp[from as usize].clone();
    sock.send_to(token.as_bytes(), to)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        for _ in 1..UDP_REPEATS {
            sleep(UDP_REPEAT_GAP).await;
            let _ = sock.send_to(token.as_bytes(), to).await;
        }
        drop(permit);
    });
    Ok(())
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Over the cap the connection is dropped at once.
                if let Ok(permit) = shared.tcp_conns.clone().try_acquire_owned() {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_tcp(stream, peer, &shared).await;
                        drop(permit);
                    });
                }
            }
            Err(_) => sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn serve_tcp(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let mut stream = BufReader::new(stream);
    loop {
        let line = match timeout(IDLE, read_line(&mut stream)).await {
            Ok(Ok(Some(line))) => line,
            _ => return,
        };
        let reply = match parse_request(&line) {
            Ok(Request::Whoami) => format!("addr {peer}"),
            Ok(Request::Send { token, to, from }) => {
                match tcp_send_token(shared.tcp[from as usize], to, &token).await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("err {}", e.replace(['\r', '\n'], " ")),
                }
            }
            Err(e) => format!("err {e}"),
        };
        let reply = format!("{reply}\n");
        if !matches!(
            timeout(IDLE, stream.get_mut().write_all(reply.as_bytes())).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

async fn tcp_send_token(from: SocketAddr, to: SocketAddr, token: &str) -> Result<(), String> {
    let mut s = tcp_connect(from, to, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let write = async {
        s.write_all(format!("{token}\n").as_bytes()).await?;
        s.shutdown().await
    };
    timeout(CONNECT_TIMEOUT, write)
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| format!("write: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// Measures one protocol. Errors (exit 1) when a reflector does not answer `whoami`.
pub async fn measure(proto: Proto, plan: &Plan) -> Result<NatProbe, RunError> {
    let measured = match proto {
        Proto::Udp => measure_udp(plan).await?,
        Proto::Tcp => measure_tcp(plan).await?,
    };
    Ok(match measured {
        // Silence over one protocol is a block only when the reflectors answer over the other;
        // else they are down or misnamed, an error.
        Measured::Blocked { local, why } => {
            let other = if proto == Proto::Udp {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            if answers(other, plan).await.is_err() {
                return Err(why);
            }
            NatProbe {
                proto,
                local,
                observed: None,
                verdict: None,
                hairpin: None,
            }
        }
        Measured::Seen {
            local,
            observed,
            got_a,
            got_b,
            hairpin,
        } => {
            let verdict = classify(local, observed[0], observed[1], got_a, got_b);
            // without translation a host reaching its own address proves nothing
            let hairpin = verdict.nat.then_some(hairpin);
            NatProbe {
                proto,
                local,
                observed: Some(observed),
                verdict: Some(verdict),
                hairpin,
            }
        }
    })
}

/// What one protocol's measurement saw.
enum Measured {
    /// Neither reflector answered `whoami`: the protocol does not leave the LAN (if they answer
    /// over the other protocol); `why`: the first reflector's error.
    Blocked { local: SocketAddr, why: RunError },
    /// The two observed mappings of one local endpoint, which unsolicited tokens came in, and
    /// whether this host reached its own mapping (hairpin).
    Seen {
        local: SocketAddr,
        observed: [SocketAddr; 2],
        got_a: bool,
        got_b: bool,
        hairpin: bool,
    },
}

/// Both answers; `Err(Ok(why))` when neither reflector answered, `Err(Err(e))` when only one did.
fn both<T>(r: [Result<T, RunError>; 2]) -> Result<[T; 2], Result<RunError, RunError>> {
    match r {
        [Ok(a), Ok(b)] => Ok([a, b]),
        [Err(why), Err(_)] => Err(Ok(why)),
        [Err(e), _] | [_, Err(e)] => Err(Err(e)),
    }
}

/// Whether reflector 1 answers `whoami` over `proto`.
async fn answers(proto: Proto, plan: &Plan) -> Result<SocketAddr, RunError> {
    let ([r1, _], ip, t) = (plan.reflectors, plan.local_ip, plan.timeout);
    match proto {
        Proto::Udp => udp_whoami(&udp_bind(ip).await?, r1, t).await,
        Proto::Tcp => {
            let c = tcp_connect(SocketAddr::new(ip, 0), r1, t)
                .await
                .map_err(|e| unreachable("tcp", r1, e))?;
            tcp_whoami(&mut BufReader::new(c), r1, t).await
        }
    }
}

fn unreachable(proto: &str, r: SocketAddr, e: impl std::fmt::Display) -> RunError {
    RunError::Runtime(format!("reflector {r} unreachable over {proto}: {e}"))
}

fn local_err(e: io::Error) -> RunError {
    RunError::Runtime(format!("local socket: {e}"))
}

fn tokens() -> (String, String) {
    (
        format!("tok-{:016x}", rand::random::<u64>()),
        format!("tok-{:016x}", rand::random::<u64>()),
    )
}

fn send_line(token: &str, to: SocketAddr, from: &str) -> String {
    format!("send {token} {to} {from}")
}

fn ack(reply: Result<Reply, String>) -> Result<(), String> {
    match reply? {
        Reply::Ok => Ok(()),
        Reply::Err(e) => Err(e),
        Reply::Addr(_) => Err("unexpected reply".into()),
    }
}

/// Waits for the tokens until `t` passes, tokenA arrives, or no token can come any more (both
/// control requests answered, each with an error or with its token in).
async fn wait_tokens(
    rx: &mut mpsc::Receiver<String>,
    control: impl std::future::Future<Output = (Result<(), String>, Result<(), String>)>,
    (a, b): (&str, &str),
    t: Duration,
) -> (bool, bool) {
    let deadline = Instant::now() + t;
    let mut control = std::pin::pin!(control);
    let mut acks: Option<(Result<(), String>, Result<(), String>)> = None;
    let (mut open, mut got_a, mut got_b) = (true, false, false);
    loop {
        match &acks {
            _ if got_a => break,
            Some((ra, rb)) if ra.is_err() && (rb.is_err() || got_b) => break,
            _ => {}
        }
        tokio::select! {
            token = rx.recv(), if open => match token {
                Some(token) => {
                    got_a |= token == a;
                    got_b |= token == b;
                }
                None => open = false,
            },
            replies = &mut control, if acks.is_none() => acks = Some(replies),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    (got_a, got_b)
}

/// Whether `token` comes in within `t` (other tokens are skipped).
async fn wait_token(rx: &mut mpsc::Receiver<String>, token: &str, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    loop {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(got)) if got == token => return true,
            Ok(Some(_)) => {}
            _ => return false,
        }
    }
}

async fn udp_bind(ip: IpAddr) -> Result<UdpSocket, RunError> {
    UdpSocket::bind((ip, 0)).await.map_err(local_err)
}

/// Sends `line` to `to` up to three times within `t`; the first parseable reply from `to`.
async fn udp_request(
    sock: &UdpSocket,
    to: SocketAddr,
    line: &str,
    t: Duration,
) -> Result<Reply, String> {
    let mut buf = [0u8; MAX_MESSAGE + 1];
    for _ in 0..3 {
        sock.send_to(line.as_bytes(), to)
            .await
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + (t / 3).max(Duration::from_millis(1));
        while let Ok(got) = timeout_at(until, sock.recv_from(&mut buf)).await {
            let Ok((n, from)) = got else { break };
            let text = buf
                .get(..n)
                .filter(|_| n <= MAX_MESSAGE && from == to)
                .and_then(|b| std::str::from_utf8(b).ok());
            if let Some(reply) = text.and_then(parse_reply) {
                return Ok(reply);
            }
        }
    }
    Err(format!("no reply within {} ms", t.as_millis()))
}

async fn udp_whoami(sock: &UdpSocket, r: SocketAddr, t: Duration) -> Result<SocketAddr, RunError> {
    match udp_request(sock, r, "whoami", t).await {
        Ok(Reply::Addr(a)) => Ok(a),
        Ok(other) => Err(unreachable("udp", r, format!("unexpected reply {other:?}"))),
        Err(e) => Err(unreachable("udp", r, e)),
    }
}

async fn measure_udp(plan: &Plan) -> Result<Measured, RunError> {
    let ([r1, r2], ip, t) = (plan.reflectors, plan.local_ip, plan.timeout);
    let u = udp_bind(ip).await?;
    let local = u.local_addr().map_err(local_err)?;
    let observed = match both([udp_whoami(&u, r1, t).await, udp_whoami(&u, r2, t).await]) {
        Ok(o) => o,
        Err(Ok(why)) => return Ok(Measured::Blocked { local, why }),
        Err(Err(e)) => return Err(e),
    };

    let s = Arc::new(udp_bind(ip).await?);
    let m = udp_whoami(&s, r1, t).await?;
    let (a, b) = tokens();
    let (tx, mut rx) = mpsc::channel(32);
    let sock = s.clone();
    let collector = tokio::spawn(async move {
        let mut buf = [0u8; MAX_MESSAGE + 1];
        while let Ok((n, _)) = sock.recv_from(&mut buf).await {
            let Some(text) = buf
                .get(..n)
                .filter(|_| n <= MAX_MESSAGE)
                .and_then(|b| std::str::from_utf8(b).ok())
            else {
                continue;
            };
            if tx.send(text.trim().to_string()).await.is_err() {
                return;
            }
        }
    });
    // Separate control sockets: S never talks to reflector 2.
    let (t1, t2) = (udp_bind(ip).await?, udp_bind(ip).await?);
    let control = async {
        let ask_a = send_line(&a, m, "main");
        let ask_b = send_line(&b, m, "alt");
        let (ra, rb) = tokio::join!(
            udp_request(&t1, r2, &ask_a, t),
            udp_request(&t2, r1, &ask_b, t)
        );
        (ack(ra), ack(rb))
    };
    let (got_a, got_b) = wait_tokens(&mut rx, control, (&a, &b), t).await;
    // Hairpin: datagrams from another socket of this host to S's mapping.
    let (h, _) = tokens();
    let hs = udp_bind(ip).await?;
    let send = async {
        for _ in 0..UDP_REPEATS {
            let _ = hs.send_to(h.as_bytes(), m).await;
            sleep(UDP_REPEAT_GAP).await;
        }
    };
    let (_, hairpin) = tokio::join!(send, wait_token(&mut rx, &h, t));
    collector.abort();
    Ok(Measured::Seen {
        local,
        observed,
        got_a,
        got_b,
        hairpin,
    })
}

async fn tcp_whoami(
    stream: &mut BufReader<TcpStream>,
    r: SocketAddr,
    t: Duration,
) -> Result<SocketAddr, RunError> {
    match tcp_ask(stream, "whoami", t).await {
        Ok(Reply::Addr(a)) => Ok(a),
        Ok(other) => Err(unreachable("tcp", r, format!("unexpected reply {other:?}"))),
        Err(e) => Err(unreachable("tcp", r, e)),
    }
}

async fn tcp_ask(
    stream: &mut BufReader<TcpStream>,
    line: &str,
    t: Duration,
) -> Result<Reply, String> {
    let exchange = async {
        stream
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let reply = read_line(stream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("connection closed")?;
        parse_reply(&reply).ok_or_else(|| "malformed reply".to_string())
    };
    timeout(t, exchange)
        .await
        .map_err(|_| format!("no reply within {} ms", t.as_millis()))?
}

/// One request on a fresh connection from an ephemeral port.
async fn tcp_request(ip: IpAddr, to: SocketAddr, line: &str, t: Duration) -> Result<(), String> {
    let stream = tcp_connect(SocketAddr::new(ip, 0), to, t)
        .await
        .map_err(|e| e.to_string())?;
    ack(tcp_ask(&mut BufReader::new(stream), line, t).await)
}

async fn measure_tcp(plan: &Plan) -> Result<Measured, RunError> {
    let ([r1, r2], ip, t) = (plan.reflectors, plan.local_ip, plan.timeout);
    let connect = |bind, r| async move {
        tcp_connect(bind, r, t)
            .await
            .map(BufReader::new)
            .map_err(|e| unreachable("tcp", r, e))
    };
    // Mapping: two connections from the same local port (SO_REUSEPORT lets them coexist).
    let any = SocketAddr::new(ip, 0);
    let mut c1 = match connect(any, r1).await {
        Ok(c) => c,
        // blocked when reflector 2 cannot be reached either
        Err(why) => {
            return if connect(any, r2).await.is_err() {
                Ok(Measured::Blocked { local: any, why })
            } else {
                Err(why)
            }
        }
    };
    let local = c1.get_ref().local_addr().map_err(local_err)?;
    let mut c2 = connect(local, r2).await?;
    let observed = [
        tcp_whoami(&mut c1, r1, t).await?,
        tcp_whoami(&mut c2, r2, t).await?,
    ];
    drop((c1, c2));

    // Filtering: a listener and an outgoing connection on one fresh port L.
    let listener = tcp_socket(SocketAddr::new(ip, 0), true)
        .and_then(|s| s.listen(16))
        .map_err(local_err)?;
    let l = listener.local_addr().map_err(local_err)?;
    let mut keep = connect(l, r1).await?;
    let m = tcp_whoami(&mut keep, r1, t).await?;
    let (a, b) = tokens();
    let (tx, mut rx) = mpsc::channel(32);
    let collector = tokio::spawn(async move {
        let mut readers = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            readers.spawn(async move {
                if let Ok(Ok(Some(token))) =
                    timeout(CONNECT_TIMEOUT, read_line(&mut BufReader::new(stream))).await
                {
                    let _ = tx.send(token).await;
                }
            });
            while readers.try_join_next().is_some() {}
        }
    });
    // The reflector may spend its whole connect timeout on a dropped SYN.
    let ask_t = t.max(CONNECT_TIMEOUT + Duration::from_secs(1));
    let control = async {
        let ask_a = send_line(&a, m, "main");
        let ask_b = send_line(&b, m, "alt");
        tokio::join!(
            tcp_request(ip, r2, &ask_a, ask_t),
            tcp_request(ip, r1, &ask_b, ask_t)
        )
    };
    let (got_a, got_b) = wait_tokens(&mut rx, control, (&a, &b), t).await;
    // Hairpin: a new connection from this host to its own mapping.
    let (h, _) = tokens();
    let send = async {
        if let Ok(mut c) = tcp_connect(SocketAddr::new(ip, 0), m, t).await {
            let _ = timeout(t, c.write_all(format!("{h}\n").as_bytes())).await;
        }
    };
    let (_, hairpin) = tokio::join!(send, wait_token(&mut rx, &h, t));
    collector.abort();
    drop(keep);
    Ok(Measured::Seen {
        local,
        observed,
        got_a,
        got_b,
        hairpin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classify_profiles() {
        let local = sa("10.1.0.10:40001");
        let ext = sa("198.18.0.2:40001");
        // open: EIM + EIF
        let v = classify(local, ext, ext, true, true);
        assert_eq!(
            v,
            Verdict {
                nat: true,
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::EndpointIndependent
            }
        );
        // home: EIM + APDF
        let v = classify(local, ext, ext, false, false);
        assert_eq!(
            (v.nat, v.mapping, v.filtering),
            (
                true,
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent
            )
        );
        // strict: EDM + APDF (different port, or different IP)
        let v = classify(local, ext, sa("198.18.0.2:51234"), false, false);
        assert_eq!(
            (v.mapping, v.filtering),
            (
                Mapping::EndpointDependent,
                Filtering::AddressAndPortDependent
            )
        );
        assert_eq!(
            classify(local, ext, sa("198.18.0.3:40001"), false, false).mapping,
            Mapping::EndpointDependent
        );
        // address-dependent filtering
        assert_eq!(
            classify(local, ext, ext, false, true).filtering,
            Filtering::AddressDependent
        );
        // token A alone still means endpoint-independent
        assert_eq!(
            classify(local, ext, ext, true, false).filtering,
            Filtering::EndpointIndependent
        );
    }

    #[test]
    fn classify_no_nat() {
        let local = sa("198.18.0.5:4000");
        let v = classify(local, local, local, true, true);
        assert_eq!(
            v,
            Verdict {
                nat: false,
                mapping: Mapping::EndpointIndependent,
                filtering: Filtering::EndpointIndependent
            }
        );
        // A firewall without translation.
        assert_eq!(
            classify(local, local, local, false, false).filtering,
            Filtering::AddressAndPortDependent
        );
        // One observed address differs: translated.
        assert!(classify(local, local, sa("198.18.0.5:4001"), false, false).nat);
    }

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request("whoami"), Ok(Request::Whoami));
        assert_eq!(
            parse_request("send tok-1 10.0.0.1:5 alt"),
            Ok(Request::Send {
                token: "tok-1".into(),
                to: sa("10.0.0.1:5"),
                from: Port::Alt
            })
        );
        assert_eq!(
            parse_request("send t [::1]:7 main").map(|r| matches!(
                r,
                Request::Send {
                    from: Port::Main,
                    ..
                }
            )),
            Ok(true)
        );
        for bad in [
            "",
            "whoami now",
            "WHOAMI",
            "send",
            "send t 10.0.0.1:5",
            "send t 10.0.0.1 main",
            "send t 10.0.0.1:5 other",
            "send t\u{e9} 10.0.0.1:5 main",
            "send a/b 10.0.0.1:5 main",
            "send t 10.0.0.1:5 main extra",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        assert!(parse_request(&format!("send {} 10.0.0.1:5 main", "x".repeat(65))).is_err());
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_reply("addr 1.2.3.4:5\n"),
            Some(Reply::Addr(sa("1.2.3.4:5")))
        );
        assert_eq!(parse_reply("ok"), Some(Reply::Ok));
        assert_eq!(
            parse_reply("err connect: refused"),
            Some(Reply::Err("connect: refused".into()))
        );
        for bad in ["", "addr nope", "okay", "ok then", "tok-123"] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn measure_flags_are_checked() {
        let plan = |args: &[&str]| {
            let cli = ProbeCli::try_parse_from([&["probe", "measure"], args].concat())
                .map_err(|e| e.to_string())?;
            let ProbeCommand::Measure(m) = cli.command else {
                panic!("not measure")
            };
            m.plan().map_err(|e| e.to_string())
        };
        let p = plan(&[
            "--reflector",
            "127.0.0.2",
            "--reflector",
            "127.0.0.3:9",
            "--proto",
            "tcp",
        ])
        .unwrap();
        assert_eq!(p.reflectors, [sa("127.0.0.2:3478"), sa("127.0.0.3:9")]);
        assert_eq!(
            (p.local_ip, p.protos),
            ("127.0.0.1".parse().unwrap(), vec![Proto::Tcp])
        );
        for (args, flag) in [
            (&["--reflector", "127.0.0.2"][..], "--reflector"),
            (
                &["--reflector", "127.0.0.2:1", "--reflector", "127.0.0.2:2"],
                "--reflector",
            ),
            (
                &["--reflector", "127.0.0.2", "--reflector", "::1"],
                "--reflector",
            ),
            (
                &[
                    "--reflector",
                    "127.0.0.2",
                    "--reflector",
                    "127.0.0.3",
                    "--reflector",
                    "127.0.0.4",
                ],
                "--reflector",
            ),
            (&["--reflector", "127.0.0.999"], "--reflector"),
            (
                &[
                    "--reflector",
                    "127.0.0.2",
                    "--reflector",
                    "127.0.0.3",
                    "--bind",
                    "::1",
                ],
                "--bind",
            ),
            (
                &[
                    "--reflector",
                    "127.0.0.2",
                    "--reflector",
                    "127.0.0.3",
                    "--timeout-ms",
                    "0",
                ],
                "--timeout-ms",
            ),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[tokio::test]
    async fn reflector_ignores_garbage_and_keeps_serving() {
        let args = ReflectArgs {
            listen: "127.0.0.1".parse().unwrap(),
            port: 0,
            alt_port: 0,
        };
        let r = Reflector::bind(&args).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&r.ready_line()).unwrap();
        assert_eq!(ready["udp"], ready["tcp"]);
        let main = r.shared.tcp[0];
        let server = tokio::spawn(r.run());

        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for junk in [
            &b"\xff\xfe"[..],
            b"",
            b"send x",
            &[b'a'; 600],
            b"send t 127.0.0.1:1 sideways",
        ] {
            c.send_to(junk, main).await.unwrap();
        }
        let t = Duration::from_secs(2);
        assert_eq!(
            udp_whoami(&c, main, t).await.unwrap(),
            c.local_addr().unwrap()
        );

        let mut s = BufReader::new(TcpStream::connect(main).await.unwrap());
        assert!(matches!(
            tcp_ask(&mut s, "hello", t).await,
            Ok(Reply::Err(_))
        ));
        assert_eq!(
            tcp_whoami(&mut s, main, t).await.unwrap(),
            s.get_ref().local_addr().unwrap()
        );
        // An over-long line closes the connection; new ones are still served.
        assert!(tcp_ask(&mut s, &"a".repeat(600), t).await.is_err());
        let mut s = BufReader::new(TcpStream::connect(main).await.unwrap());
        assert!(tcp_whoami(&mut s, main, t).await.is_ok());
        server.abort();
    }
}
