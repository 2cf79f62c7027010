//! The contract between p2plab's processes: what a peer, a tool and the harness must agree on,
//! and nothing else. Both sides compile these types, so the contract cannot drift; this crate
//! is small on purpose (no libp2p swarm, no Docker client), so a reader of events does not build
//! a peer to read them.
//!
//! # Layout
//! - [`events`]: the JSON lines a node writes on stdout ([`EventLine`], [`Event`], [`Path`]).
//! - [`Role`] and [`Transport`]: what a node is and what it speaks, as the command lines and the
//!   topology files name them.
//! - [`ports`]: the ports a lab relies on.
//! - [`nat`]: a lab router's NAT profile (mapping, filtering, what it does to hole punching),
//!   its port forwards, and the names of its nftables state.
//! - [`router`]: a router container's typed `P2PLAB_*` environment (written by the harness,
//!   read back by the router) and its `router_ready` line.
//! - [`host`]: the typed `P2PLAB_*` environment of the other containers: a host's way into the
//!   lab, a router's link impairments, a VPN's two ends.
//! - [`probe`]: the NAT probe's lines and the verdict it must measure behind each profile.
//! - [`bench`]: the lines the benchmark tools print and `p2plab bench` reads back.
//! - [`procfs`]: the `/proc` figures the benchmarks read (resident memory, CPU time), from the
//!   process itself or from inside a container.

pub mod bench;
pub mod events;
pub mod host;
pub mod nat;
pub mod ports;
pub mod probe;
pub mod procfs;
pub mod router;

pub use events::{Event, EventLine, IpFamily, Path, Totals};
pub use libp2p_identity::PeerId;
pub use multiaddr::{self, Multiaddr};

/// Reads one output line as `T` (a node's or a tool's line, tagged by its `event`); `None` for a
/// line of another kind.
pub fn parse_line<T: serde::de::DeserializeOwned>(line: &str) -> Option<T> {
    serde_json::from_str(line).ok()
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The bootstrap node: Kademlia server, relay, AutoNAT server.
    Monitor,
    /// A member of a namespace that announces itself and answers messages.
    Listener,
    /// A member of a namespace that finds the listeners and sends them messages.
    Dialer,
}

impl Role {
    /// The name of the role and of its binary.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Listener => "listener",
            Role::Dialer => "dialer",
        }
    }
}

/// Which transports a node listens and dials on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Quic,
    Both,
    /// libp2p's in-process memory transport (`/memory/<port>`; noise and yamux as over TCP): many
    /// nodes in one process without sockets (`bench swarm`). Listens on `/memory/<--port>`. Not
    /// for labs: a topology cannot name it.
    Memory,
}

impl Transport {
    pub fn tcp(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Both)
    }
    pub fn quic(self) -> bool {
        matches!(self, Transport::Quic | Transport::Both)
    }
    pub fn memory(self) -> bool {
        self == Transport::Memory
    }
    /// The value of `--transport`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Both => "both",
            Transport::Memory => "memory",
        }
    }
}
