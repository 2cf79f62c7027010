//! The lines the benchmark tools print (`bench serve|rtt|throughput|swarm|p2p-rtt`, `delayline`)
//! and `p2plab bench` reads back: one type per line, written by the tool and parsed by the
//! harness, so a renamed field fails to compile instead of reading as zero.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{Multiaddr, PeerId};

/// `bench serve`'s ready line: its peer id, raw TCP address and libp2p listen addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "perf_ready")]
pub struct PerfReady {
    pub peer_id: PeerId,
    /// The raw TCP listener's address.
    pub tcp: SocketAddr,
    /// The libp2p listen addresses (without `/p2p/`).
    pub p2p: Vec<Multiaddr>,
}

/// The `kind` of a `perf_result` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Rtt,
    Throughput,
}

/// What carried the bytes of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Carrier {
    /// A plain TCP connection: the baseline.
    RawTcp,
    /// One bare libp2p stream over TCP (noise, yamux).
    Libp2pTcp,
    /// One bare libp2p stream over QUIC.
    Libp2pQuic,
    /// The node's own messages on a direct connection (`bench p2p-rtt`).
    Libp2pDirect,
    /// The node's own messages through a relay (`bench p2p-rtt`).
    Libp2pRelayed,
}

/// `{"event":"perf_result","kind":"rtt",...}`: round trips of one message size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "perf_result")]
pub struct RttResult {
    pub kind: Kind,
    pub transport: Carrier,
    /// Bytes per ping.
    pub size: usize,
    /// One round trip per ping, in milliseconds (warm-up excluded).
    pub samples_ms: Vec<f64>,
    /// The node's messages only: acks (after the warm-up) that came over the other path, not in
    /// `samples_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_path: Option<u64>,
}

impl RttResult {
    pub fn new(transport: Carrier, size: usize, samples_ms: Vec<f64>) -> Self {
        RttResult {
            kind: Kind::Rtt,
            transport,
            size,
            samples_ms,
            other_path: None,
        }
    }
}

/// `{"event":"perf_result","kind":"throughput",...}`: bulk transfers of one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "perf_result")]
pub struct ThroughputResult {
    pub kind: Kind,
    pub transport: Carrier,
    /// Bytes per transfer.
    pub bytes: u64,
    /// One per transfer, megabits per second.
    pub samples_mbit_s: Vec<f64>,
    /// One per transfer, seconds.
    pub samples_s: Vec<f64>,
    /// Time to the first connection, in milliseconds: the TCP connect for raw TCP, the dial up to
    /// the established connection (handshakes included) for libp2p.
    pub connect_ms: f64,
}

impl ThroughputResult {
    pub fn new(transport: Carrier, bytes: u64, samples_s: Vec<f64>, connect_ms: f64) -> Self {
        let samples_mbit_s = samples_s.iter().map(|&s| mbit_per_s(bytes, s)).collect();
        ThroughputResult {
            kind: Kind::Throughput,
            transport,
            bytes,
            samples_mbit_s,
            samples_s,
            connect_ms,
        }
    }
}

/// Megabits (10^6 bits) per second; 0 when `secs` is not a positive number.
pub fn mbit_per_s(bytes: u64, secs: f64) -> f64 {
    if secs.is_finite() && secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    }
}

/// `bench swarm --hold`'s line once its listeners are up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "swarm_ready")]
pub struct SwarmReady {
    /// Listeners started.
    pub nodes: usize,
    /// Of them, bootstrapped.
    pub bootstrapped: usize,
    /// This process's resident memory, KiB.
    pub rss_kb: u64,
    pub wall_ms: u64,
}

/// What `bench swarm` prints at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "swarm_result")]
pub struct SwarmResult {
    pub nodes: usize,
    pub listeners: usize,
    pub dialers: usize,
    pub namespaces: usize,
    pub bootstrapped: usize,
    pub announced: usize,
    pub dialers_complete: usize,
    /// Per listener: from its `started` to its first `announced`.
    pub announce_ms: Vec<f64>,
    /// Per dialer that found its whole namespace: from its `started` to the last `discovered`.
    pub discovery_ms: Vec<f64>,
    /// This process's resident memory with every node up, and before the first node started.
    pub rss_kb: u64,
    pub rss_kb_before: u64,
    pub wall_ms: u64,
    /// CPU time (user + system) this process used from before the first node started to the end.
    pub cpu_ms: u64,
    /// Connections open at the end, per node (the in-process monitor not counted).
    pub connections_per_node: f64,
    /// The nodes' `error` events, counted by context and the first words of their message.
    pub errors: BTreeMap<String, u64>,
    /// Connections established over the run, counted at both ends (a connection between two
    /// nodes of this process counts twice): with `connections_per_node`, how much they churn.
    pub connections_opened: u64,
    /// Connections closed, by cause (both ends), and failed dials and accepts by the first
    /// words of their error.
    pub closed: BTreeMap<String, u64>,
    /// Each dialer that did not find its whole namespace: how many of its listeners it found.
    pub incomplete: BTreeMap<String, usize>,
}

/// `delayline`'s line once its queue is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "delayline_ready")]
pub struct DelaylineReady {
    pub queue: u16,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub max_queue: u32,
    /// Whether packets may leave out of order (jitter > 0).
    pub reorder: bool,
    pub pid: u32,
}

/// `delayline`'s last line, on SIGTERM or SIGINT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "delayline_exit")]
pub struct DelaylineExit {
    pub signal: String,
    pub delayed: u64,
    pub dropped_full: u64,
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mbit_per_s_is_megabits() {
        assert_eq!(mbit_per_s(1_000_000, 1.0), 8.0);
        assert_eq!(mbit_per_s(125_000_000, 2.0), 500.0);
        assert_eq!(mbit_per_s(64 << 20, 0.5), 1073.741824);
        assert_eq!(mbit_per_s(1, 0.0), 0.0);
        assert_eq!(mbit_per_s(1, -1.0), 0.0);
        assert_eq!(mbit_per_s(1, f64::NAN), 0.0);
    }

    #[test]
    fn result_lines_keep_their_shape() {
        let r = RttResult::new(Carrier::RawTcp, 64, vec![0.5]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"event":"perf_result","kind":"rtt","transport":"raw-tcp","size":64,"samples_ms":[0.5]}"#
        );
        let mut d = RttResult::new(Carrier::Libp2pDirect, 64, vec![1.0]);
        d.other_path = Some(0);
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            text.ends_with(
                r#""transport":"libp2p-direct","size":64,"samples_ms":[1.0],"other_path":0}"#
            ),
            "{text}"
        );
        assert_eq!(crate::parse_line::<RttResult>(&text), Some(d));
        let t = ThroughputResult::new(Carrier::Libp2pQuic, 1_000_000, vec![1.0], 2.5);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"event":"perf_result","kind":"throughput","transport":"libp2p-quic","bytes":1000000,"samples_mbit_s":[8.0],"samples_s":[1.0],"connect_ms":2.5}"#
        );
        // a line of another kind is not taken for this one
        assert_eq!(
            crate::parse_line::<SwarmReady>(r#"{"event":"swarm_result","nodes":1}"#),
            None
        );
        let s = SwarmResult {
            nodes: 3,
            ..Default::default()
        };
        assert_eq!(
            crate::parse_line::<SwarmResult>(&serde_json::to_string(&s).unwrap()),
            Some(s)
        );
    }
}
