//! The command line of the three binaries. It is part of the contract the harness relies on:
//! flags are only ever added, never renamed. `README.md` and `node/EVENTS.md` describe it.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser};
use libp2p::Multiaddr;

pub use crate::config::{
    Config, LogFormat, RelayMode, RelayServer, Role, RoleConfig, Traffic, Transport,
    MONITOR_METRICS, MONITOR_PORT,
};

/// A non-negative number of seconds (fractions allowed), for duration flags.
pub fn parse_duration_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds, got '{s}'"))?;
    if !(secs.is_finite() && secs >= 0.0) || secs > 1e9 {
        return Err(format!(
            "expected a non-negative number of seconds, got '{s}'"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_per_peer(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("expected a whole number, got '{s}'"))?;
    if n < 2 {
        return Err(format!(
            "{n} would break hole punching: DCUtR needs the relayed and the direct connection side by side (at least 2)"
        ));
    }
    Ok(n)
}

/// A message size in bytes, at most [`crate::MAX_MESSAGE_SIZE`].
pub fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("expected a number of bytes, got '{s}'"))?;
    if n > crate::MAX_MESSAGE_SIZE {
        return Err(format!(
            "{n} is larger than the largest message ({} bytes)",
            crate::MAX_MESSAGE_SIZE
        ));
    }
    Ok(n)
}

/// Flags every role takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// IP address to listen on (repeatable: `--listen-addr 0.0.0.0 --listen-addr ::`).
    #[arg(long = "listen-addr", value_name = "IP", default_value = "0.0.0.0")]
    pub listen_addrs: Vec<IpAddr>,

    /// Port to listen on, for TCP and QUIC (UDP) alike; 0 picks a free one.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Transports to listen and dial on. A PSK (`--psk-file`) restricts this to TCP.
    #[arg(long, value_enum, default_value = "both")]
    pub transport: Transport,

    /// Bootstrap node address (repeatable), with or without `/p2p/<peer id>`.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,

    /// An address others can reach this node on (repeatable). Confirmed from the first second.
    #[arg(long = "external-addr", value_name = "MULTIADDR")]
    pub external_addrs: Vec<Multiaddr>,

    /// Ed25519 identity file (protobuf encoding); created if missing.
    #[arg(long, value_name = "PATH", conflicts_with = "seed")]
    pub key_file: Option<PathBuf>,

    /// Deterministic identity from a number (for tests and labs).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Name of this node in events and logs (default: the role).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Pre-shared key file for a private network (the go-ipfs swarm.key format). TCP only.
    #[arg(long, value_name = "PATH")]
    pub psk_file: Option<PathBuf>,

    /// Most connections in total.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: u32,

    /// Most inbound connections from one IP address, pending and established (0: no limit).
    /// Generous on purpose: every peer behind one NAT counts against it (see
    /// src/swarm/ip_limit.rs).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections_per_ip: u32,

    /// Most connections to one peer (at least 2, so a hole punch can replace a relayed one).
    #[arg(long, value_name = "N", default_value = "8", value_parser = parse_per_peer)]
    pub max_connections_per_peer: u32,

    /// HTTP address for /metrics, /health and /status (`off` to disable).
    #[arg(long, value_name = "ADDR|off")]
    pub metrics_addr: Option<String>,

    /// Format of the logs on stderr (stdout carries the event stream only).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Kademlia's replication factor: how many peers a record is stored on, and how many
    /// closest peers a lookup must hear from. 20 is the libp2p and IPFS default; a lab-sized DHT
    /// can do with fewer, and every lookup then contacts (and connects to) fewer peers.
    #[arg(long, value_name = "K", default_value_t = 20, value_parser = crate::config::kad_replication_parser())]
    pub kad_replication: u16,

    /// Seconds an idle connection stays open.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_duration_secs)]
    pub idle_timeout: Duration,

    /// Emit a `resources` event (RSS, open file descriptors, connections, DHT size) this often;
    /// 0 (the default): never. Long runs use it to show a leak as a rising curve.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_duration_secs)]
    pub resources_interval: Duration,

    /// Ask the LAN's UPnP Internet Gateway Device to forward the listen ports (TCP and UDP,
    /// external port = local port) and confirm WAN_IP:port as external addresses. A private
    /// node waits for the outcome before reserving a relay slot.
    #[arg(long)]
    pub upnp: bool,

    /// With --upnp: the gateway's LAN address. Each search also goes to it directly (a unicast
    /// M-SEARCH, UPnP Device Architecture 1.1 section 1.3.3) besides SSDP's multicast group, and
    /// the first answer wins: for networks that drop multicast (a Docker swarm's overlay does).
    #[arg(long, value_name = "IP", requires = "upnp")]
    pub upnp_gateway: Option<std::net::Ipv4Addr>,
}

/// Flags of the roles that join a namespace (listener and dialer).
#[derive(Debug, Clone, Args)]
pub struct Peer {
    /// The namespace to join.
    #[arg(long, value_name = "NAME", default_value = "p2plab")]
    pub namespace: String,

    /// When to reserve a relay slot.
    #[arg(long, value_enum, default_value = "auto")]
    pub relay: RelayMode,

    /// Listen on no direct address at all: the node can only be reached through a relay.
    /// For labs and tests that model an unreachable peer without a NAT.
    #[arg(long)]
    pub no_direct: bool,

    /// Remember the ids of delivered messages in this file (created if missing), so that a
    /// restarted node still recognises a message it delivered before as a duplicate: exactly
    /// once across restarts, not only within one process.
    #[arg(long, value_name = "PATH")]
    pub inbox_file: Option<PathBuf>,

    /// Seconds to wait for an AutoNAT verdict before assuming the node is private.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_duration_secs)]
    pub reachability_timeout: Duration,

    /// Seconds between re-announcements in the namespace: half the 600 s lifetime of the records
    /// (IPFS republishes at half its record lifetime too). A node also announces at every (re)join
    /// and whenever its addresses change, so the interval only renews records; at 30 s it was
    /// most of a thousand idle listeners' DHT traffic (docs/benchmark-findings.md).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_duration_secs)]
    pub announce_interval: Duration,
}

/// `monitor`: the bootstrap node.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "monitor",
    version,
    about = "p2plab bootstrap node: Kademlia server, circuit relay v2, AutoNAT server, health and metrics"
)]
pub struct MonitorCli {
    #[command(flatten)]
    pub common: Common,

    /// Most relay reservations held at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub relay_max_reservations: usize,

    /// Most relayed circuits open at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub relay_max_circuits: usize,

    /// Seconds one relayed circuit may last (libp2p's default, 120, would cut lab messaging).
    #[arg(long, value_name = "SECS", default_value = "3600", value_parser = parse_duration_secs)]
    pub relay_max_circuit_duration: Duration,

    /// Bytes one relayed circuit may carry (libp2p's default, 128 KiB, would cut lab messaging).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub relay_max_circuit_bytes: u64,
}

/// `listener`: joins a namespace and answers messages.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "listener",
    version,
    about = "p2plab listener: joins a namespace through the DHT and acknowledges messages"
)]
pub struct ListenerCli {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub peer: Peer,
}

/// `dialer`: discovers the namespace and sends messages to every listener in it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dialer",
    version,
    about = "p2plab dialer: discovers every listener of a namespace and sends it acked messages"
)]
pub struct DialerCli {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub peer: Peer,

    /// Messages to send to each listener (0 = forever).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,

    /// Milliseconds between two messages to the same listener.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval: u64,

    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size)]
    pub size: usize,

    /// Seconds a message is retried before it is reported failed.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_duration_secs)]
    pub deadline: Duration,

    /// Seconds one attempt waits for its ack.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_duration_secs)]
    pub ack_timeout: Duration,
}

impl From<MonitorCli> for Config {
    fn from(c: MonitorCli) -> Self {
        let mut common = c.common;
        common.port.get_or_insert(MONITOR_PORT);
        common
            .metrics_addr
            .get_or_insert_with(|| MONITOR_METRICS.to_string());
        Config {
            common,
            role: RoleConfig::Monitor(RelayServer {
                max_reservations: c.relay_max_reservations,
                max_circuits: c.relay_max_circuits,
                max_circuit_duration: c.relay_max_circuit_duration,
                max_circuit_bytes: c.relay_max_circuit_bytes,
            }),
        }
    }
}

impl From<ListenerCli> for Config {
    fn from(c: ListenerCli) -> Self {
        Config {
            common: c.common,
            role: RoleConfig::Listener(c.peer),
        }
    }
}

impl From<DialerCli> for Config {
    fn from(c: DialerCli) -> Self {
        let traffic = Traffic {
            count: c.count,
            interval: Duration::from_millis(c.interval.max(1)),
            size: c.size,
            deadline: c.deadline,
            ack_timeout: c.ack_timeout,
        };
        Config {
            common: c.common,
            role: RoleConfig::Dialer(c.peer, traffic),
        }
    }
}

/// The values of a clap struct when no flag is given, from its own attributes: each default is
/// written once, in the `#[arg]` that documents it.
pub(crate) fn defaults<T: clap::FromArgMatches, C: clap::CommandFactory>() -> T {
    match C::command()
        .no_binary_name(true)
        .try_get_matches_from(Vec::<String>::new())
        .and_then(|m| T::from_arg_matches(&m))
    {
        Ok(t) => t,
        // Only a required flag could make this fail, and these commands have none.
        Err(e) => panic!("flag defaults do not parse: {e}"),
    }
}

impl Default for Common {
    fn default() -> Self {
        defaults::<Common, ListenerCli>()
    }
}

impl Default for Peer {
    fn default() -> Self {
        defaults::<Peer, ListenerCli>()
    }
}

impl Default for Traffic {
    fn default() -> Self {
        match defaults::<DialerCli, DialerCli>().into() {
            Config {
                role: RoleConfig::Dialer(_, t),
                ..
            } => t,
            _ => unreachable!("a dialer's command line makes a dialer"),
        }
    }
}

impl Default for RelayServer {
    fn default() -> Self {
        match defaults::<MonitorCli, MonitorCli>().into() {
            Config {
                role: RoleConfig::Monitor(r),
                ..
            } => r,
            _ => unreachable!("a monitor's command line makes a monitor"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_commands_parse() {
        let m =
            MonitorCli::try_parse_from(["monitor", "--listen-addr", "0.0.0.0", "--port", "51820"])
                .unwrap();
        let cfg = Config::from(m);
        assert_eq!(cfg.common.port, Some(51820));
        assert_eq!(
            cfg.metrics_addr().unwrap(),
            Some("0.0.0.0:9090".parse().unwrap())
        );
        let l = ListenerCli::try_parse_from([
            "listener",
            "--bootstrap",
            "/ip4/198.18.0.10/tcp/51820",
            "--namespace",
            "my-app",
        ])
        .unwrap();
        assert_eq!(l.peer.namespace, "my-app");
        assert_eq!(Config::from(l).metrics_addr().unwrap(), None);
    }

    #[test]
    fn monitor_defaults_do_not_override_flags() {
        let m = MonitorCli::try_parse_from(["monitor", "--port", "0", "--metrics-addr", "off"])
            .unwrap();
        let cfg = Config::from(m);
        assert_eq!(cfg.common.port, Some(0));
        assert_eq!(cfg.metrics_addr().unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e =
            ListenerCli::try_parse_from(["listener", "--bootstrap", "not-an-addr"]).unwrap_err();
        assert!(e.to_string().contains("--bootstrap"), "{e}");
        let e = ListenerCli::try_parse_from(["listener", "--max-connections-per-peer", "1"])
            .unwrap_err();
        assert!(e.to_string().contains("hole punching"), "{e}");
        let e = DialerCli::try_parse_from(["dialer", "--size", "99999999999"]).unwrap_err();
        assert!(e.to_string().contains("--size"), "{e}");
        let e = ListenerCli::try_parse_from(["listener", "--seed", "1", "--key-file", "k"])
            .unwrap_err();
        assert!(e.to_string().contains("--key-file"), "{e}");
    }
}
