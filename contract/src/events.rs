//! The event stream: the contract between a node and whatever reads its stdout.
//!
//! A node writes one JSON object per line on stdout and nothing else there. Every line is an
//! [`EventLine`]: `ts` (RFC 3339, UTC, milliseconds), `node` (the `--name`), `event` (the tag of
//! [`Event`]) and the fields of that event, flattened. `node/EVENTS.md` documents every event and
//! field; the harness deserialises the same types, so the contract cannot drift.
//!
//! Stability: fields are only ever added. A reader must ignore fields it does not know; an event
//! it does not know deserialises as an error it may skip (see [`EventLine::parse`]).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};

/// How a connection reaches the remote peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// A connection straight to the peer's address (possibly through NATs, never through a relay).
    Direct,
    /// A connection through a circuit relay (`/p2p-circuit` in the address).
    Relayed,
}

/// The IP family a connection runs over: the first address in its multiaddr (for a relayed
/// connection, the way to the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    /// `None` for an address with no IP in it (an inbound relayed connection's `/p2p/<peer>`).
    pub fn of(addr: &Multiaddr) -> Option<Self> {
        addr.iter().find_map(|p| match p {
            multiaddr::Protocol::Ip4(_) => Some(Self::Ipv4),
            multiaddr::Protocol::Ip6(_) => Some(Self::Ipv6),
            _ => None,
        })
    }
}

impl Path {
    /// The name on the wire (`direct`, `relayed`), in metrics labels and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }

    /// The path of a connection whose addresses are `addrs`: relayed when any of them goes through
    /// `/p2p-circuit`.
    pub fn of<'a>(addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Self {
        let relayed = addrs.into_iter().any(|a| {
            a.iter()
                .any(|p| matches!(p, multiaddr::Protocol::P2pCircuit))
        });
        if relayed {
            Path::Relayed
        } else {
            Path::Direct
        }
    }
}

/// Whether an external address became confirmed or stopped being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddrStatus {
    Confirmed,
    Expired,
}

/// What the node believes about its own reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Other peers can dial one of our addresses directly.
    Public,
    /// Nobody can dial us directly; we need a relay.
    Private,
    /// Not known (yet).
    Unknown,
}

/// Where a reachability verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReachabilitySource {
    /// An AutoNAT probe answered by another peer.
    Autonat,
    /// No verdict arrived within `--reachability-timeout`; the node assumed it is private.
    Timeout,
    /// The command line decided it (`--relay always`, `--no-direct`, `--external-addr`).
    Flag,
}

/// Outcome of a relay reservation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Accepted,
    Failed,
    /// An accepted reservation was lost (relay gone or connection closed).
    Lost,
    /// The node gave the reservation up itself: AutoNAT says it is public.
    Released,
}

/// What the LAN's UPnP gateway did for `--upnp` (mirrors libp2p-upnp's `Event`, plus the
/// gateway found and failed attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpnpStatus {
    /// A gateway answered the search and told its external IP.
    GatewayFound,
    /// A listen port is mapped: `addr` is a confirmed external address from now on.
    Mapped,
    /// Renewing a mapping failed: `addr` is no longer an external address.
    Expired,
    /// An attempt to map a listen port failed (retried with backoff unless no attempt is left).
    Failed,
    /// No gateway answered (or it would not tell its external IP): UPnP does nothing more.
    GatewayNotFound,
    /// The gateway's external IP is not routable (private, CGNAT, ...): no port is mapped.
    NonRoutableGateway,
}

/// The side that opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Counters reported by [`Event::Stopped`] (and on `/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Distinct messages this node originated.
    pub messages_sent: u64,
    /// Attempts, including retries.
    pub attempts: u64,
    /// Distinct messages this node received (duplicates not counted).
    pub messages_received: u64,
    /// Duplicate deliveries recognised by id.
    pub duplicates: u64,
    pub messages_acked: u64,
    pub messages_failed: u64,
    pub connections_established: u64,
    pub connection_failures: u64,
    pub hole_punch_ok: u64,
    pub hole_punch_failed: u64,
}

/// One event. Serialised with the tag `event` in snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First line of every run.
    Started {
        peer_id: PeerId,
        role: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        version: String,
    },
    /// A listener is up on `addr`.
    Listening { addr: Multiaddr },
    /// The HTTP server (`/metrics`, `/health`, `/status`) is up on `addr` (IP:PORT).
    HttpListening { addr: std::net::SocketAddr },
    /// An address others can reach us on became confirmed, or expired.
    ExternalAddr { addr: Multiaddr, status: AddrStatus },
    /// A dial to a bootstrap address failed or its connection closed; the next try is scheduled.
    BootstrapRetry {
        addr: Multiaddr,
        error: String,
        retry_in_ms: u64,
    },
    /// The bootstrap node at `addr` (given without `/p2p/`) answers with a new identity: `old` is
    /// forgotten, `new` is used from now on.
    BootstrapChanged {
        addr: Multiaddr,
        old: PeerId,
        new: PeerId,
    },
    /// The node joined the DHT through `peer` (first successful Kademlia bootstrap; again after
    /// every rejoin).
    Bootstrapped { peer: PeerId, routing_table: usize },
    /// Reachability verdict.
    Reachability {
        status: Reachability,
        source: ReachabilitySource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<Multiaddr>,
    },
    /// A relay reservation was accepted, failed or lost.
    Reservation {
        relay: PeerId,
        status: ReservationStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<Multiaddr>,
        #[serde(default)]
        renewal: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The node announced itself in `namespace` with these reachable addresses.
    Announced {
        namespace: String,
        addrs: Vec<Multiaddr>,
    },
    /// A peer of `namespace` was found through the DHT (again when its addresses change).
    Discovered {
        peer: PeerId,
        namespace: String,
        addrs: Vec<Multiaddr>,
    },
    /// A connection to `peer` was established.
    Connected {
        peer: PeerId,
        path: Path,
        remote_addr: Multiaddr,
        direction: Direction,
        /// Connections to this peer now open, this one included.
        connections: u32,
    },
    /// A connection to `peer` closed.
    Disconnected {
        peer: PeerId,
        path: Path,
        remote_addr: Multiaddr,
        /// Connections to this peer still open.
        connections: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// A connection attempt failed (dial error, handshake error, wrong PSK, limit reached).
    ConnectionError {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerId>,
        direction: Direction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote_addr: Option<Multiaddr>,
        error: String,
    },
    /// A DCUtR hole punch finished. `ms` counts from the relayed connection to the result.
    HolePunch {
        peer: PeerId,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },
    /// A message attempt left this node.
    MessageSent {
        to: PeerId,
        id: u64,
        size: usize,
        attempt: u32,
    },
    /// A message arrived. A duplicate is acked again but never counted twice.
    MessageReceived {
        from: PeerId,
        id: u64,
        size: usize,
        path: Path,
        /// The IP family of the connection it arrived on, when the address names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family: Option<IpFamily>,
        duplicate: bool,
    },
    /// The receiver acknowledged a message.
    MessageAcked {
        to: PeerId,
        id: u64,
        rtt_ms: f64,
        path: Path,
        /// The IP family of the connection the ack came back on, when the address names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family: Option<IpFamily>,
        attempts: u32,
    },
    /// A message was given up: its deadline passed without an ack.
    MessageFailed {
        to: PeerId,
        id: u64,
        reason: String,
        attempts: u32,
    },
    /// `--upnp`: the gateway search, a port mapping, or their failure.
    Upnp {
        status: UpnpStatus,
        /// `mapped`, `expired`: the external address (`WAN_IP` and the mapped port).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<Multiaddr>,
        /// `mapped`, `expired`, `failed`: the listen address concerned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local_addr: Option<Multiaddr>,
        /// `gateway_found`, `non_routable_gateway`: the gateway's control address (IP:PORT).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<std::net::SocketAddr>,
        /// `gateway_found`, `non_routable_gateway`: what the gateway calls its external IP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_ip: Option<std::net::IpAddr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// `failed`: which attempt at this mapping failed (from 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// `failed`: when the next attempt comes; left out when none will.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// What the process holds, every `--resources-interval` (off by default): a slow leak shows
    /// as a curve that keeps rising (the soak's `flat` expectations judge it).
    Resources {
        /// Resident set size, KiB.
        rss_kb: u64,
        /// Open file descriptors (sockets included).
        fds: u64,
        /// Open connections.
        connections: u64,
        /// Peers in the Kademlia routing table.
        routing_table: u64,
        /// Records and provider records in the Kademlia store.
        kad_records: u64,
    },
    /// Something went wrong that did not stop the node.
    Error { context: String, message: String },
    /// Last line: the node stopped (signal or fatal error), with its totals.
    Stopped {
        reason: String,
        uptime_ms: u64,
        totals: Totals,
    },
}

impl Event {
    /// The tag this event carries in the `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Listening { .. } => "listening",
            Event::HttpListening { .. } => "http_listening",
            Event::ExternalAddr { .. } => "external_addr",
            Event::BootstrapRetry { .. } => "bootstrap_retry",
            Event::BootstrapChanged { .. } => "bootstrap_changed",
            Event::Bootstrapped { .. } => "bootstrapped",
            Event::Reachability { .. } => "reachability",
            Event::Reservation { .. } => "reservation",
            Event::Announced { .. } => "announced",
            Event::Discovered { .. } => "discovered",
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::ConnectionError { .. } => "connection_error",
            Event::HolePunch { .. } => "hole_punch",
            Event::MessageSent { .. } => "message_sent",
            Event::MessageReceived { .. } => "message_received",
            Event::MessageAcked { .. } => "message_acked",
            Event::MessageFailed { .. } => "message_failed",
            Event::Upnp { .. } => "upnp",
            Event::Resources { .. } => "resources",
            Event::Error { .. } => "error",
            Event::Stopped { .. } => "stopped",
        }
    }
}

/// One line of the stream: timestamp, node name and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    #[serde(with = "ts_millis")]
    pub ts: DateTime<Utc>,
    pub node: String,
    #[serde(flatten)]
    pub event: Event,
}

impl EventLine {
    /// `event` of `node`, stamped now, in milliseconds as on the wire (so a line read back equals
    /// the line written).
    pub fn now(node: impl Into<String>, event: Event) -> Self {
        EventLine {
            ts: Utc::now().trunc_subsecs(3),
            node: node.into(),
            event,
        }
    }

    /// Parses one stdout line. Errors name what was wrong; a reader may skip such lines.
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The line as written on stdout (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"event":"error","context":"serialise","message":"{e}"}}"#)
        })
    }
}

mod ts_millis {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips_with_flattened_tag() {
        let peer = PeerId::random();
        let line = EventLine::now(
            "bob",
            Event::MessageAcked {
                to: peer,
                id: 7,
                rtt_ms: 1.5,
                path: Path::Relayed,
                family: Some(IpFamily::Ipv6),
                attempts: 2,
            },
        );
        let json = line.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["event"], "message_acked");
        assert_eq!(v["node"], "bob");
        assert_eq!(v["path"], "relayed");
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["to"], peer.to_string());
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(),
            "{ts}"
        );
        assert_eq!(EventLine::parse(&json).unwrap(), line);
    }

    #[test]
    fn name_matches_serialised_tag() {
        let e = Event::Stopped {
            reason: "signal".into(),
            uptime_ms: 1,
            totals: Totals::default(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], e.name());
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_events_rejected() {
        let ok = r#"{"ts":"2026-01-01T00:00:00.000Z","node":"a","event":"listening","addr":"/ip4/1.2.3.4/tcp/1","future":1}"#;
        assert!(EventLine::parse(ok).is_ok());
        let unknown = r#"{"ts":"2026-01-01T00:00:00.000Z","node":"a","event":"nope"}"#;
        assert!(EventLine::parse(unknown).is_err());
    }

    #[test]
    fn upnp_event_leaves_out_what_it_does_not_know() {
        let e = Event::Upnp {
            status: UpnpStatus::Mapped,
            addr: Some("/ip4/198.18.0.2/tcp/4001".parse().unwrap()),
            local_addr: Some("/ip4/10.0.0.10/tcp/4001".parse().unwrap()),
            gateway: None,
            external_ip: None,
            error: None,
            attempt: None,
            retry_in_ms: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "upnp");
        assert_eq!(v["status"], "mapped");
        assert_eq!(v["addr"], "/ip4/198.18.0.2/tcp/4001");
        assert!(
            v.get("gateway").is_none() && v.get("error").is_none(),
            "{v}"
        );
        let line = r#"{"ts":"2026-01-01T00:00:00.000Z","node":"a","event":"upnp","status":"non_routable_gateway","gateway":"10.1.0.254:5000","external_ip":"100.64.0.2"}"#;
        let parsed = EventLine::parse(line).unwrap();
        assert!(matches!(
            parsed.event,
            Event::Upnp {
                status: UpnpStatus::NonRoutableGateway,
                ..
            }
        ));
    }

    #[test]
    fn path_is_named_as_serialised() {
        for p in [Path::Direct, Path::Relayed] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn path_of_circuit_address_is_relayed() {
        let direct: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let relayed: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        assert_eq!(Path::of([&direct]), Path::Direct);
        assert_eq!(Path::of([&direct, &relayed]), Path::Relayed);
    }
}
