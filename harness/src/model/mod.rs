//! Topology files: the YAML a user writes, parsed strictly and validated into a [`Topology`].
//!
//! No Docker here. Every error is one [`TopologyError`] that names the file, line and column
//! and gives a hint; `topologies/README.md` documents every key.
//!
//! Parsing goes in two steps: serde-saphyr reads the YAML into the `Raw*` types of `raw` (unknown
//! keys, duplicate keys and wrong types fail there, with their location), then `validate`
//! checks what serde cannot (references, names, subnets, uplink cycles, one kind per fault or
//! expectation) and builds the model, with replicas expanded.

use std::{collections::BTreeMap, path::Path as FsPath, time::Duration};

use ipnet::Ipv4Net;
use serde_saphyr::Location;

use p2plab_contract::Path;

mod errors;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use errors::TopologyError;
pub use validate::parse_duration;

use errors::Ctx;
use raw::RawTopology;
use validate::{first_line, validate, yaml_hint};

// ------------------------------------------------------------------------------------ model ---

pub use p2plab_contract::{Role, Transport};

pub use p2plab_contract::nat::Ipv6Policy;
/// A router's NAT profile: one definition, shared with the router that renders its rules (see
/// `p2plab_contract::nat` and the README's table).
pub use p2plab_contract::nat::Profile as NatProfile;

/// Link impairments of a router's uplink interface (packets leaving the LAN).
pub use p2plab_contract::host::Impair;

/// A static port forward on a `port-forward` router.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Forward {
    /// `tcp`, `udp` or `both`.
    pub proto: String,
    pub port: u16,
    pub to: String,
    pub to_port: u16,
}

/// A network segment: public (no `nat`) or a LAN behind a router.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub nat: Option<Nat>,
    /// Which IP families its hosts have.
    pub family: Family,
    /// On a swarm: the engine its router goes on (`engine:`, from 1; see [`Node::engine`]).
    pub engine: Option<u32>,
    pub line: u64,
}

/// The IP families of a segment's hosts. A segment with IPv6 has a /64 from `fd70::/16` derived
/// from its IPv4 subnet (`plan::v6_net`); an IPv6-only one still has the IPv4 subnet Docker needs,
/// but its hosts drop their IPv4 address before anything runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    Ipv4,
    Dual,
    Ipv6,
}

impl Family {
    pub const NAMES: &'static str = "ipv4, dual or ipv6";

    pub fn v4(self) -> bool {
        self != Family::Ipv6
    }

    pub fn v6(self) -> bool {
        self != Family::Ipv4
    }

    fn parse(s: &str) -> Option<Family> {
        match s {
            "ipv4" => Some(Family::Ipv4),
            "dual" => Some(Family::Dual),
            "ipv6" => Some(Family::Ipv6),
            _ => None,
        }
    }
}

/// The router of a LAN segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Nat {
    pub profile: NatProfile,
    /// The segment the router's WAN side is on.
    pub uplink: String,
    pub forward: Vec<Forward>,
    pub impair: Impair,
    pub mapping_timeout_s: Option<u64>,
    /// LAN hosts reach each other's mappings at the router's public address.
    pub hairpin: bool,
    /// `udp-blocked` only: the only TCP ports LAN hosts reach beyond the router; empty: all.
    pub tcp_ports: Vec<u16>,
    /// What the router does to IPv6, when the LAN has it (`family: dual` or `ipv6`).
    pub ipv6: Option<Ipv6Policy>,
}

impl Segment {
    /// The router container's name.
    pub fn router_name(&self) -> Option<String> {
        self.nat.as_ref().map(|_| format!("router-{}", self.name))
    }
}

/// One node (replicas already expanded: `peer` × 3 is `peer-1`, `peer-2`, `peer-3`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    pub name: String,
    /// The name in the file (differs from `name` for replicas).
    pub declared: String,
    pub role: Role,
    pub segment: String,
    pub namespace: String,
    pub transport: Transport,
    /// Dialer: messages to send (0 = forever).
    pub count: Option<u64>,
    pub interval_ms: Option<u64>,
    pub size: Option<u64>,
    pub deadline_s: Option<u64>,
    pub relay: Option<String>,
    pub vpn: bool,
    pub upnp: bool,
    pub seed: Option<u64>,
    pub args: Vec<String>,
    /// Started with the lab (`start: true`, the default), or only by a `start` fault.
    pub start_with_lab: bool,
    /// On a swarm (`--engines`), the engine it goes on (`engine:`, from 1, in the order of
    /// `--engines`) instead of where the spread puts it; ignored on one engine.
    pub engine: Option<u32>,
    pub line: u64,
}

/// Where a monitor keeps its key in its container (`--key-file`): on the container's own
/// filesystem, so that it survives stop, start and restart, as an operator's key file does.
pub const KEY_FILE: &str = "/var/lib/p2plab/node.key";
/// Where a listener or dialer remembers the ids of the messages it delivered (`--inbox-file`),
/// beside the key file: a `restart` fault keeps it, so the restarted node still recognises a
/// message it delivered before (none delivered twice across a restart).
pub const INBOX_FILE: &str = "/var/lib/p2plab/inbox";
/// A file named like the key file plus this, next to it, asks the image's entrypoint to remove
/// both before the node starts (`new_identity: true` on a `start` or `restart` fault).
pub const NEW_IDENTITY_SUFFIX: &str = ".new-identity";

impl Node {
    /// The node's `--key-file`, if the harness gives it one: monitors without a `seed` (and
    /// without `--seed` or `--key-file` of their own in `args`). Listeners and dialers have none:
    /// unless they have a seed, every start gives them a new identity.
    pub fn key_file(&self) -> Option<&'static str> {
        let own = self.args.iter().any(|a| {
            ["--seed", "--key-file"]
                .iter()
                .any(|f| a == f || a.strip_prefix(f).is_some_and(|r| r.starts_with('=')))
        });
        (self.role == Role::Monitor && self.seed.is_none() && !own).then_some(KEY_FILE)
    }

    /// The node's `--inbox-file`: listeners and dialers (unless `args` name one).
    pub fn inbox_file(&self) -> Option<&'static str> {
        let own = self
            .args
            .iter()
            .any(|a| a == "--inbox-file" || a.starts_with("--inbox-file="));
        (self.role != Role::Monitor && !own).then_some(INBOX_FILE)
    }
}

/// A condition over the merged event timeline: what expectations assert and what faults wait for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// The node emitted `started`.
    Started { node: String },
    /// `by` found `peer` through the DHT.
    Discovered { by: String, peer: String },
    /// The node holds an accepted relay reservation.
    Reservation { node: String },
    /// A connection with this path between the two (either side reports it).
    Connected { a: String, b: String, path: Path },
    /// DCUtR between the two failed at least once and never succeeded, and no direct
    /// connection between them ever existed.
    HolePunchFails { a: String, b: String },
    /// `from`'s messages to `to`: at least `count` acked, at most `lost` given up, at most
    /// `duplicates` delivered twice to the application.
    Delivered {
        from: String,
        to: String,
        count: u64,
        lost: u64,
        duplicates: u64,
    },
    /// Every ack from `to` to `from` took `path`.
    PathAll {
        from: String,
        to: String,
        path: Path,
    },
    /// Acks from `to` to `from` ended on `path`: the last ack took it, and so did every ack
    /// after the first one that took it.
    PathLast {
        from: String,
        to: String,
        path: Path,
    },
    /// Between `min` and `max` events of `kind` (on `node`, or anywhere) whose fields include
    /// `fields`.
    Event {
        node: Option<String>,
        kind: String,
        fields: BTreeMap<String, serde_json::Value>,
        min: u64,
        max: Option<u64>,
    },
    /// The node's `metric` (from its `resources` events, in its current process) grew by at most
    /// `growth_pct` percent: the median of its last samples against the median of its first
    /// samples once the process has run for `after`.
    Flat {
        node: String,
        metric: Metric,
        after: Duration,
        growth_pct: f64,
    },
}

/// A figure of a node's `resources` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    RssKb,
    Fds,
    Connections,
    RoutingTable,
    KadRecords,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::RssKb,
        Metric::Fds,
        Metric::Connections,
        Metric::RoutingTable,
        Metric::KadRecords,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::RssKb => "rss_kb",
            Metric::Fds => "fds",
            Metric::Connections => "connections",
            Metric::RoutingTable => "routing_table",
            Metric::KadRecords => "kad_records",
        }
    }

    /// The figure in a `resources` event; `None` for any other event.
    pub fn of(self, e: &p2plab_contract::Event) -> Option<u64> {
        match e {
            p2plab_contract::Event::Resources {
                rss_kb,
                fds,
                connections,
                routing_table,
                kad_records,
            } => Some(match self {
                Metric::RssKb => *rss_kb,
                Metric::Fds => *fds,
                Metric::Connections => *connections,
                Metric::RoutingTable => *routing_table,
                Metric::KadRecords => *kad_records,
            }),
            _ => None,
        }
    }
}

impl Check {
    /// The nodes the check is about.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Check::Started { node } | Check::Reservation { node } | Check::Flat { node, .. } => {
                vec![node]
            }
            Check::Discovered { by, peer } => vec![by, peer],
            Check::Connected { a, b, .. } | Check::HolePunchFails { a, b } => vec![a, b],
            Check::Delivered { from, to, .. }
            | Check::PathAll { from, to, .. }
            | Check::PathLast { from, to, .. } => {
                vec![from, to]
            }
            Check::Event { node, .. } => node.iter().map(|s| s.as_str()).collect(),
        }
    }

    /// A short human label, e.g. `direct bob → alice`.
    pub fn label(&self) -> String {
        match self {
            Check::Started { node } => format!("started {node}"),
            Check::Discovered { by, peer } => format!("discovered {by} → {peer}"),
            Check::Reservation { node } => format!("reservation {node}"),
            Check::Connected { a, b, path } => format!("{} {a} ↔ {b}", path.as_str()),
            Check::HolePunchFails { a, b } => format!("hole punch fails {a} ↔ {b}"),
            Check::Delivered {
                from,
                to,
                count,
                lost,
                duplicates,
            } => {
                format!(
                    "delivered {from} → {to}: {count} (lost ≤ {lost}, duplicates ≤ {duplicates})"
                )
            }
            Check::PathAll { from, to, path } => {
                format!("path {from} → {to}: all {}", path.as_str())
            }
            Check::PathLast { from, to, path } => {
                format!("path {from} → {to}: last {}", path.as_str())
            }
            Check::Event {
                node,
                kind,
                fields,
                min,
                max,
            } => {
                let mut s = format!("event {kind}");
                if let Some(n) = node {
                    s.push_str(&format!(" on {n}"));
                }
                if !fields.is_empty() {
                    let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    s.push_str(&format!(" where {}", f.join(",")));
                }
                match max {
                    Some(m) => s.push_str(&format!(" ({min}..={m})")),
                    None => s.push_str(&format!(" (≥ {min})")),
                }
                s
            }
            Check::Flat {
                node,
                metric,
                after,
                growth_pct,
            } => format!(
                "flat {} on {node}: growth ≤ {growth_pct}% after {}s",
                metric.as_str(),
                after.as_secs()
            ),
        }
    }
}

/// One expectation of the file (one per replica combination).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Expectation {
    pub name: String,
    pub check: Check,
    /// Deadline counted from the moment every node the check names has started.
    pub within: Option<Duration>,
    pub line: u64,
}

/// When a fault fires.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// This long after every node started.
    At(Duration),
    /// `delay` after the check first holds.
    After { check: Check, delay: Duration },
}

/// What a partition cuts off, resolved when the file is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A LAN segment: its router stops forwarding between the LAN and its uplink.
    Segment(String),
    /// A node: it stops talking to every peer.
    Node(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Segment(n) | Target::Node(n) => n,
        }
    }
}

/// What a heal undoes: every partition, or the one of a segment or a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealScope {
    All,
    One(Target),
}

impl HealScope {
    /// `all`, or the segment's or node's name (as the topology file writes it).
    pub fn name(&self) -> &str {
        match self {
            HealScope::All => "all",
            HealScope::One(t) => t.name(),
        }
    }
}

// In results.json a target is the name the file gave.
impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl serde::Serialize for HealScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "target")]
pub enum Action {
    /// SIGKILL the node's container.
    Kill(String),
    /// SIGTERM: the node stops cleanly.
    Stop(String),
    /// Start a killed, stopped or not yet started node (same addresses and command). A monitor
    /// keeps its identity (its key file) unless `new_identity` removes the key first.
    Start {
        node: String,
        new_identity: bool,
    },
    /// Restart the container (SIGTERM, then start), as `Start` for the identity.
    Restart {
        node: String,
        new_identity: bool,
    },
    Pause(String),
    Unpause(String),
    /// Cut a LAN segment off its uplink (on its router) or a node off every peer.
    Partition(Target),
    /// Groups that reach only their own members; a node in two groups is Jepsen's bridge.
    PartitionGroups(Vec<Vec<String>>),
    /// Undo a partition: a segment's, a node's, or all of them.
    Heal(HealScope),
    /// Forget every NAT mapping and connection-tracking entry of the segment's router.
    FlushNat(String),
    /// Set new impairments on the segment's router.
    Impair {
        segment: String,
        impair: Impair,
    },
    /// Run a command in the node's container, beside the node (same network namespace, same
    /// address), in the background: a tool of the image such as `bench flood`.
    Exec {
        node: String,
        cmd: Vec<String>,
    },
}

impl Action {
    pub fn label(&self) -> String {
        match self {
            Action::Kill(n) => format!("kill {n}"),
            Action::Stop(n) => format!("stop {n}"),
            Action::Start { node, new_identity } => format!(
                "start {node}{}",
                if *new_identity {
                    " with a new identity"
                } else {
                    ""
                }
            ),
            Action::Restart { node, new_identity } => format!(
                "restart {node}{}",
                if *new_identity {
                    " with a new identity"
                } else {
                    ""
                }
            ),
            Action::Pause(n) => format!("pause {n}"),
            Action::Unpause(n) => format!("unpause {n}"),
            Action::Partition(t) => format!("partition {}", t.name()),
            Action::PartitionGroups(g) => {
                let g: Vec<String> = g.iter().map(|g| format!("[{}]", g.join(","))).collect();
                format!("partition {}", g.join(" | "))
            }
            Action::Heal(h) => format!("heal {}", h.name()),
            Action::FlushNat(n) => format!("flush nat {n}"),
            Action::Exec { node, cmd } => format!("exec on {node}: {}", cmd.join(" ")),
            Action::Impair { segment, .. } => format!("impair {segment}"),
        }
    }

    /// What undoes this action after `for:`, if anything does.
    pub fn undo(&self) -> Option<Action> {
        match self {
            Action::Kill(n) | Action::Stop(n) => Some(Action::Start {
                node: n.clone(),
                new_identity: false,
            }),
            Action::Pause(n) => Some(Action::Unpause(n.clone())),
            Action::Partition(t) => Some(Action::Heal(HealScope::One(t.clone()))),
            Action::PartitionGroups(_) => Some(Action::Heal(HealScope::All)),
            Action::Impair { segment, .. } => Some(Action::Impair {
                segment: segment.clone(),
                impair: Impair::default(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fault {
    pub trigger: Trigger,
    pub action: Action,
    /// Undo after this long (`for:`).
    pub duration: Option<Duration>,
    pub line: u64,
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Topology {
    pub name: String,
    pub description: Option<String>,
    pub timeout: Duration,
    /// Every node's `--resources-interval` (`resources:`), when the file sets one.
    pub resources: Option<Duration>,
    pub segments: Vec<Segment>,
    pub nodes: Vec<Node>,
    pub faults: Vec<Fault>,
    pub expect: Vec<Expectation>,
    /// Declared node name → its instances (itself, or its replicas).
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Topology {
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Segments in an order where every router's uplink comes before it.
    pub fn segments_uplink_first(&self) -> Vec<&Segment> {
        let mut out: Vec<&Segment> = Vec::new();
        let mut left: Vec<&Segment> = self.segments.iter().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|s| {
                let ready = match &s.nat {
                    None => true,
                    Some(n) => out.iter().any(|o| o.name == n.uplink),
                };
                if ready {
                    out.push(s);
                }
                !ready
            });
            if left.len() == before {
                // a cycle; validation refuses those, so this is unreachable for a valid model
                out.append(&mut left);
            }
        }
        out
    }

    /// The pool a segment's subnet is allocated from when the file gives none: the lab's
    /// internet for public segments, the shared (CGNAT) space for a segment that is another
    /// LAN's uplink, 10/8 for LANs.
    pub fn pool_of(&self, segment: &Segment) -> ipnet::Ipv4Net {
        if segment.nat.is_none() {
            crate::plan::internet_pool()
        } else if self.is_uplink_of_nat(&segment.name) {
            crate::plan::shared_pool()
        } else {
            crate::plan::lan_pool()
        }
    }

    /// Whether the segment is used as another router's uplink (a carrier network).
    pub fn is_uplink_of_nat(&self, segment: &str) -> bool {
        self.segments
            .iter()
            .any(|s| s.nat.as_ref().is_some_and(|n| n.uplink == segment))
    }

    /// The one walk of the uplink chain: `segment`, then the segment its router's WAN is on, and
    /// so on up to a public segment (the last one). Validation refuses cycles; the walk stops at
    /// one anyway, and at a name that is not a segment.
    pub fn uplinks(&self, segment: &str) -> Vec<&Segment> {
        let mut out: Vec<&Segment> = Vec::new();
        let mut cur = self.segment(segment);
        while let Some(s) = cur {
            if out.iter().any(|o| o.name == s.name) {
                break;
            }
            out.push(s);
            cur = s.nat.as_ref().and_then(|n| self.segment(&n.uplink));
        }
        out
    }

    /// The public segment a segment's traffic finally reaches.
    pub fn public_of(&self, segment: &str) -> Option<&Segment> {
        self.uplinks(segment)
            .last()
            .copied()
            .filter(|s| s.nat.is_none())
    }

    /// The chain of NAT profiles between a segment and the public internet, innermost first.
    pub fn nat_chain(&self, segment: &str) -> Vec<NatProfile> {
        self.uplinks(segment)
            .iter()
            .filter_map(|s| s.nat.as_ref().map(|n| n.profile))
            .collect()
    }

    /// The routers between a segment and the public internet, innermost first.
    pub fn routers_up_from(&self, segment: &str) -> Vec<String> {
        self.uplinks(segment)
            .iter()
            .filter_map(|s| s.router_name())
            .collect()
    }
}

// -------------------------------------------------------------------------------- loading ---

/// Reads and validates a topology file.
pub fn load(path: &FsPath) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
        hint: None,
        source_text: String::new(),
    })?;
    parse(&file, &text)
}

/// Parses and validates a topology given as text (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    let cx = Ctx { file, text };
    let opts = serde_saphyr::options! { with_snippet: false };
    let raw: RawTopology = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
        let loc = e.location().unwrap_or(Location::UNKNOWN);
        let msg = first_line(&e.to_string());
        let h = yaml_hint(&msg);
        cx.err(loc, msg, h)
    })?;
    validate(&cx, raw)
}
