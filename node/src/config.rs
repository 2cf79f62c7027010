//! What a node is told to be: [`Config`], a role ([`RoleConfig`]: monitor, listener or dialer, each
//! with what only it needs) and the settings every role shares ([`Common`]).
//!
//! The binaries build it from their command line (`cli`); in-process users (tests, `bench`) build
//! it directly, starting from the same defaults:
//!
//! ```
//! use p2plab_node::{Config, config::RelayMode};
//! let cfg = Config::dialer("my-app")
//!     .bootstrap("/ip4/198.18.0.10/tcp/51820".parse().unwrap())
//!     .port(0)
//!     .seed(7)
//!     .relay(RelayMode::Never)
//!     .count(10);
//! assert_eq!(cfg.role(), p2plab_node::Role::Dialer);
//! ```

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use clap::ValueEnum;
use libp2p::Multiaddr;

/// The range of `--kad-replication` (Kademlia's K): the node's flag, `bench swarm`'s and the
/// builder all bound it here.
pub const KAD_REPLICATION: std::ops::RangeInclusive<u16> = 1..=64;

/// The value parser of a `--kad-replication` flag: a number in [`KAD_REPLICATION`].
pub fn kad_replication_parser() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16)
        .range(i64::from(*KAD_REPLICATION.start())..=i64::from(*KAD_REPLICATION.end()))
}

pub use crate::cli::{Common, Peer};

pub use p2plab_contract::{
    ports::{MONITOR_METRICS, MONITOR_PORT},
    Role, Transport,
};

/// When a node reserves a slot on a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RelayMode {
    /// When AutoNAT says the node is private, or no verdict came within the reachability timeout.
    Auto,
    /// As soon as a relay is connected, whatever the reachability.
    Always,
    /// Never.
    Never,
}

/// Format of the human logs on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What a dialer sends.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub count: u64,
    pub interval: Duration,
    pub size: usize,
    pub deadline: Duration,
    pub ack_timeout: Duration,
}

/// Relay server limits.
#[derive(Debug, Clone)]
pub struct RelayServer {
    pub max_reservations: usize,
    pub max_circuits: usize,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
}

/// What only one role needs.
#[derive(Debug, Clone)]
pub enum RoleConfig {
    /// The bootstrap node: a relay server with these limits.
    Monitor(RelayServer),
    /// Joins a namespace and acknowledges messages.
    Listener(Peer),
    /// Joins a namespace and sends messages to every listener of it.
    Dialer(Peer, Traffic),
}

/// Everything a node needs: what the binaries hand to [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    pub role: RoleConfig,
}

impl Config {
    /// A monitor with the monitor's defaults (port 51820, metrics on 0.0.0.0:9090).
    pub fn monitor() -> Self {
        let common = Common {
            port: Some(MONITOR_PORT),
            metrics_addr: Some(MONITOR_METRICS.to_string()),
            ..Common::default()
        };
        Config {
            common,
            role: RoleConfig::Monitor(RelayServer::default()),
        }
    }

    /// A listener in `namespace`, with the defaults of its command line.
    pub fn listener(namespace: impl Into<String>) -> Self {
        let peer = Peer {
            namespace: namespace.into(),
            ..Peer::default()
        };
        Config {
            common: Common::default(),
            role: RoleConfig::Listener(peer),
        }
    }

    /// A dialer in `namespace`, with the defaults of its command line.
    pub fn dialer(namespace: impl Into<String>) -> Self {
        let peer = Peer {
            namespace: namespace.into(),
            ..Peer::default()
        };
        Config {
            common: Common::default(),
            role: RoleConfig::Dialer(peer, Traffic::default()),
        }
    }

    pub fn role(&self) -> Role {
        match self.role {
            RoleConfig::Monitor(_) => Role::Monitor,
            RoleConfig::Listener(_) => Role::Listener,
            RoleConfig::Dialer(..) => Role::Dialer,
        }
    }

    /// Namespace settings (listener and dialer).
    pub fn peer(&self) -> Option<&Peer> {
        match &self.role {
            RoleConfig::Listener(p) | RoleConfig::Dialer(p, _) => Some(p),
            RoleConfig::Monitor(_) => None,
        }
    }

    fn peer_mut(&mut self) -> Option<&mut Peer> {
        match &mut self.role {
            RoleConfig::Listener(p) | RoleConfig::Dialer(p, _) => Some(p),
            RoleConfig::Monitor(_) => None,
        }
    }

    /// What a dialer sends.
    pub fn traffic(&self) -> Option<&Traffic> {
        match &self.role {
            RoleConfig::Dialer(_, t) => Some(t),
            _ => None,
        }
    }

    fn traffic_mut(&mut self) -> Option<&mut Traffic> {
        match &mut self.role {
            RoleConfig::Dialer(_, t) => Some(t),
            _ => None,
        }
    }

    /// A monitor's relay limits.
    pub fn relay_server(&self) -> Option<&RelayServer> {
        match &self.role {
            RoleConfig::Monitor(r) => Some(r),
            _ => None,
        }
    }

    /// The name in events: `--name`, else the role.
    pub fn name(&self) -> String {
        self.common
            .name
            .clone()
            .unwrap_or_else(|| self.role().as_str().to_string())
    }

    /// The metrics address, if enabled. Errors name the flag and value.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, crate::UsageError> {
        match self.common.metrics_addr.as_deref() {
            None | Some("off") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| crate::UsageError {
                flag: "--metrics-addr",
                value: s.to_string(),
                reason: "expected IP:PORT or 'off'".into(),
            }),
        }
    }

    // ------------------------------------------------------------ builder

    /// `--bootstrap` (adds one).
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.common.bootstrap.push(addr);
        self
    }

    /// `--listen-addr` (replaces the default; call again to add).
    pub fn listen_addr(mut self, ip: IpAddr) -> Self {
        if self.common.listen_addrs == Common::default().listen_addrs {
            self.common.listen_addrs.clear();
        }
        self.common.listen_addrs.push(ip);
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.common.port = Some(port);
        self
    }

    pub fn transport(mut self, t: Transport) -> Self {
        self.common.transport = t;
        self
    }

    /// `--external-addr` (adds one).
    pub fn external_addr(mut self, addr: Multiaddr) -> Self {
        self.common.external_addrs.push(addr);
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.common.seed = Some(seed);
        self
    }

    /// `--name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.common.name = Some(name.into());
        self
    }

    /// `--metrics-addr`; `None` is `off`.
    pub fn metrics(mut self, addr: Option<SocketAddr>) -> Self {
        self.common.metrics_addr = Some(addr.map_or_else(|| "off".to_string(), |a| a.to_string()));
        self
    }

    pub fn max_connections(mut self, n: u32) -> Self {
        self.common.max_connections = n;
        self
    }

    /// `--max-connections-per-ip` (0: no limit).
    pub fn max_connections_per_ip(mut self, n: u32) -> Self {
        self.common.max_connections_per_ip = n;
        self
    }

    /// `--kad-replication`.
    pub fn kad_replication(mut self, k: u16) -> Self {
        self.common.kad_replication = k.clamp(*KAD_REPLICATION.start(), *KAD_REPLICATION.end());
        self
    }

    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.common.idle_timeout = d;
        self
    }

    /// `--relay` (listener and dialer; ignored for a monitor).
    pub fn relay(mut self, mode: RelayMode) -> Self {
        if let Some(p) = self.peer_mut() {
            p.relay = mode;
        }
        self
    }

    /// `--no-direct` (listener and dialer).
    pub fn no_direct(mut self) -> Self {
        if let Some(p) = self.peer_mut() {
            p.no_direct = true;
        }
        self
    }

    /// `--announce-interval` (listener and dialer).
    pub fn announce_interval(mut self, d: Duration) -> Self {
        if let Some(p) = self.peer_mut() {
            p.announce_interval = d;
        }
        self
    }

    /// `--count` (dialer).
    pub fn count(mut self, n: u64) -> Self {
        if let Some(t) = self.traffic_mut() {
            t.count = n;
        }
        self
    }

    /// `--interval` (dialer).
    pub fn interval(mut self, d: Duration) -> Self {
        if let Some(t) = self.traffic_mut() {
            t.interval = d.max(Duration::from_millis(1));
        }
        self
    }

    /// `--size` (dialer).
    pub fn size(mut self, bytes: usize) -> Self {
        if let Some(t) = self.traffic_mut() {
            t.size = bytes.min(crate::MAX_MESSAGE_SIZE);
        }
        self
    }

    /// `--deadline` (dialer).
    pub fn deadline(mut self, d: Duration) -> Self {
        if let Some(t) = self.traffic_mut() {
            t.deadline = d;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{DialerCli, ListenerCli, MonitorCli};
    use clap::Parser;

    #[test]
    fn built_configs_equal_parsed_ones() {
        let parsed: Config = DialerCli::try_parse_from([
            "dialer",
            "--namespace",
            "x",
            "--count",
            "3",
            "--seed",
            "4",
        ])
        .unwrap()
        .into();
        let built = Config::dialer("x").count(3).seed(4);
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        let parsed: Config = ListenerCli::try_parse_from(["listener", "--namespace", "y"])
            .unwrap()
            .into();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", Config::listener("y"))
        );
        let parsed: Config = MonitorCli::try_parse_from(["monitor"]).unwrap().into();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::monitor()));
    }

    #[test]
    fn role_specific_settings_stay_with_their_role() {
        let m = Config::monitor().count(5).relay(RelayMode::Never);
        assert!(m.traffic().is_none() && m.peer().is_none());
        assert_eq!(m.role(), Role::Monitor);
        let l = Config::listener("n").listen_addr("127.0.0.1".parse().unwrap());
        assert_eq!(
            l.common.listen_addrs,
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }
}
