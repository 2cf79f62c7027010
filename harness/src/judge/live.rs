//! The live view of a lab (`p2plab up`, `p2plab run -v`): what each node is doing and what each
//! pair holds, folded from the events as they arrive, with node names instead of peer ids. No
//! I/O: [`Live::handle`] and [`Live::fault`] take what happened, [`Live::board`] draws the whole
//! picture as text for a terminal to redraw in place, and [`Live::line`] says one event in one
//! plain line for logs and pipes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use p2plab_contract::{Event, EventLine, Path, PeerId};

use crate::engine::run::FaultRecord;

/// What a node is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeState {
    role: String,
    running: bool,
    bootstrapped: bool,
    /// `public`, `private` or `unknown`, once the node has said.
    reachability: String,
    /// `accepted on boot`, `failed on boot`, ...
    reservation: String,
    /// Peers it holds a connection to.
    connected: BTreeSet<String>,
    errors: u64,
}

/// What a sender holds to a peer, and how its messages fare.
#[derive(Debug, Clone, Default, PartialEq)]
struct PairState {
    direct: u32,
    relayed: u32,
    sent: u64,
    acked: u64,
    failed: u64,
    last_rtt: Option<(f64, Path)>,
    punches_ok: u32,
    punches_failed: u32,
}

/// The lab as its events tell it so far.
#[derive(Debug, Clone, Default)]
pub struct Live {
    lab: String,
    names: HashMap<PeerId, String>,
    nodes: BTreeMap<String, NodeState>,
    pairs: BTreeMap<(String, String), PairState>,
    faults: Vec<String>,
    events: u64,
    t0: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// Faults kept on the board (the newest).
const FAULTS_SHOWN: usize = 6;

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Live {
    pub fn new(lab: &str) -> Self {
        Self {
            lab: lab.to_string(),
            ..Self::default()
        }
    }

    /// A peer id as the name of its node, or its first characters while unknown.
    pub fn name(&self, peer: &PeerId) -> String {
        self.names.get(peer).cloned().unwrap_or_else(|| {
            let s = peer.to_string();
            format!("{}…", s.get(..12).unwrap_or(&s))
        })
    }

    fn pair(&mut self, from: &str, to: &PeerId) -> &mut PairState {
        let to = self.name(to);
        self.pairs.entry((from.to_string(), to)).or_default()
    }

    fn is_monitor(&self, peer: &PeerId) -> bool {
        self.names
            .get(peer)
            .and_then(|n| self.nodes.get(n))
            .is_some_and(|n| n.role == "monitor")
    }

    pub fn handle(&mut self, l: &EventLine) {
        self.events += 1;
        self.t0.get_or_insert(l.ts);
        self.last = Some(self.last.map_or(l.ts, |t| t.max(l.ts)));
        let from = l.node.as_str();
        match &l.event {
            Event::Started { peer_id, role, .. } => {
                self.names.insert(*peer_id, from.to_string());
                let n = self.nodes.entry(from.to_string()).or_default();
                *n = NodeState {
                    role: role.clone(),
                    running: true,
                    ..NodeState::default()
                };
            }
            Event::Stopped { .. } => {
                let n = self.nodes.entry(from.to_string()).or_default();
                n.running = false;
                n.connected.clear();
                for ((f, _), p) in self.pairs.iter_mut() {
                    if f == from {
                        p.direct = 0;
                        p.relayed = 0;
                    }
                }
            }
            Event::Bootstrapped { .. } => {
                self.nodes.entry(from.to_string()).or_default().bootstrapped = true
            }
            Event::Reachability { status, .. } => {
                self.nodes.entry(from.to_string()).or_default().reachability = word(status)
            }
            Event::Reservation { relay, status, .. } => {
                let text = format!("{} on {}", word(status), self.name(relay));
                self.nodes.entry(from.to_string()).or_default().reservation = text;
            }
            Event::Connected { peer, path, .. } => {
                let name = self.name(peer);
                self.nodes
                    .entry(from.to_string())
                    .or_default()
                    .connected
                    .insert(name);
                // pairs are between peers: a monitor's connections show as its peers, not as pairs
                let from_monitor = self.nodes.get(from).is_some_and(|n| n.role == "monitor");
                if !from_monitor && !self.is_monitor(peer) {
                    let p = self.pair(from, peer);
                    match path {
                        Path::Direct => p.direct += 1,
                        Path::Relayed => p.relayed += 1,
                    }
                }
            }
            Event::Disconnected {
                peer,
                path,
                connections,
                ..
            } => {
                if *connections == 0 {
                    let name = self.name(peer);
                    self.nodes
                        .entry(from.to_string())
                        .or_default()
                        .connected
                        .remove(&name);
                }
                if let Some(p) = self.pairs.get_mut(&(from.to_string(), self.name(peer))) {
                    match path {
                        Path::Direct => p.direct = p.direct.saturating_sub(1),
                        Path::Relayed => p.relayed = p.relayed.saturating_sub(1),
                    }
                }
            }
            Event::HolePunch { peer, ok, .. } => {
                let p = self.pair(from, peer);
                if *ok {
                    p.punches_ok += 1;
                } else {
                    p.punches_failed += 1;
                }
            }
            Event::MessageSent { to, attempt: 1, .. } => self.pair(from, to).sent += 1,
            Event::MessageAcked {
                to, rtt_ms, path, ..
            } => {
                let p = self.pair(from, to);
                p.acked += 1;
                p.last_rtt = Some((*rtt_ms, *path));
            }
            Event::MessageFailed { to, .. } => self.pair(from, to).failed += 1,
            Event::Error { .. } | Event::ConnectionError { .. } => {
                self.nodes.entry(from.to_string()).or_default().errors += 1
            }
            _ => {}
        }
    }

    pub fn fault(&mut self, f: &FaultRecord) {
        let result = if f.ok {
            String::new()
        } else {
            format!(" FAILED: {}", f.error)
        };
        self.faults.push(format!(
            "+{:.1}s {}{result}",
            f.t_ms as f64 / 1000.0,
            f.action
        ));
    }

    /// The whole picture, one line per row, columns aligned.
    pub fn board(&self) -> String {
        let secs = match (self.t0, self.last) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        let mut out = format!("{} · +{secs:.1}s · {} events\n", self.lab, self.events);
        let mut rows = vec![[
            "node",
            "role",
            "state",
            "reachability",
            "relay",
            "connected to",
        ]
        .map(String::from)
        .to_vec()];
        for (name, n) in &self.nodes {
            let mut state = vec![if n.running { "up" } else { "stopped" }.to_string()];
            if n.bootstrapped {
                state.push("bootstrapped".into());
            }
            if n.errors > 0 {
                state.push(format!("{} errors", n.errors));
            }
            let peers: Vec<&str> = n.connected.iter().map(String::as_str).collect();
            rows.push(vec![
                name.clone(),
                n.role.clone(),
                state.join(", "),
                or_dash(&n.reachability),
                or_dash(&n.reservation),
                or_dash(&peers.join(" ")),
            ]);
        }
        out.push_str(&table(&rows));
        if !self.pairs.is_empty() {
            let mut rows = vec![[
                "pair",
                "path",
                "last rtt",
                "acked/sent",
                "lost",
                "hole punches",
            ]
            .map(String::from)
            .to_vec()];
            for ((from, to), p) in &self.pairs {
                let path = if p.direct > 0 {
                    "direct"
                } else if p.relayed > 0 {
                    "relayed"
                } else {
                    "none"
                };
                let rtt = p.last_rtt.map_or("-".to_string(), |(ms, path)| {
                    format!(
                        "{ms:.1} ms {}",
                        if path == Path::Direct {
                            "direct"
                        } else {
                            "relayed"
                        }
                    )
                });
                let punches = match (p.punches_ok, p.punches_failed) {
                    (0, 0) => "-".to_string(),
                    (ok, failed) => format!("{ok} ok, {failed} failed"),
                };
                rows.push(vec![
                    format!("{from} → {to}"),
                    path.into(),
                    rtt,
                    format!("{}/{}", p.acked, p.sent),
                    p.failed.to_string(),
                    punches,
                ]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
        }
        if !self.faults.is_empty() {
            out.push_str("\nfaults\n");
            for f in self
                .faults
                .iter()
                .skip(self.faults.len().saturating_sub(FAULTS_SHOWN))
            {
                out.push_str(&format!("  {f}\n"));
            }
        }
        out
    }

    /// One event as one plain line: `+1.2s bob connected alice (relayed)`. Call after
    /// [`Live::handle`] so that the node names are known.
    pub fn line(&self, l: &EventLine) -> String {
        let t = self
            .t0
            .map(|t0| format!("+{:.1}s ", (l.ts - t0).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_default();
        let path = |p: &Path| {
            if *p == Path::Direct {
                "direct"
            } else {
                "relayed"
            }
        };
        let what = match &l.event {
            Event::Connected { peer, path: p, .. } => {
                format!("connected {} ({})", self.name(peer), path(p))
            }
            Event::Disconnected { peer, path: p, .. } => {
                format!("disconnected {} ({})", self.name(peer), path(p))
            }
            Event::Discovered { peer, .. } => format!("discovered {}", self.name(peer)),
            Event::HolePunch { peer, ok, .. } => format!(
                "hole punch {} {}",
                self.name(peer),
                if *ok { "ok" } else { "failed" }
            ),
            Event::MessageAcked {
                to,
                id,
                rtt_ms,
                path: p,
                ..
            } => format!("ack {id} from {} {} {rtt_ms:.1} ms", self.name(to), path(p)),
            Event::MessageFailed { to, id, reason, .. } => {
                format!("FAILED {id} to {}: {reason}", self.name(to))
            }
            Event::Reservation { relay, status, .. } => {
                format!("reservation {} on {}", word(status), self.name(relay))
            }
            Event::Reachability { status, .. } => format!("reachability {}", word(status)),
            Event::Bootstrapped { peer, .. } => format!("bootstrapped via {}", self.name(peer)),
            Event::MessageSent {
                to, id, attempt, ..
            } => format!("sent {id} to {} (attempt {attempt})", self.name(to)),
            Event::MessageReceived {
                from, id, path: p, ..
            } => format!("received {id} from {} ({})", self.name(from), path(p)),
            other => self.fields(other),
        };
        format!("{t}{} {what}", l.node)
    }

    /// Any other event as `kind key=value ...`, peer ids as node names.
    fn fields(&self, e: &Event) -> String {
        let v = serde_json::to_value(e).unwrap_or_default();
        let Some(obj) = v.as_object() else {
            return v.to_string();
        };
        let mut out = obj
            .get("event")
            .and_then(|k| k.as_str())
            .unwrap_or("event")
            .to_string();
        for (k, v) in obj.iter().filter(|(k, v)| *k != "event" && !v.is_null()) {
            let text = match v.as_str() {
                Some(s) => match s.parse::<PeerId>() {
                    Ok(p) if self.names.contains_key(&p) => self.name(&p),
                    _ => s.to_string(),
                },
                None => v.to_string(),
            };
            out.push_str(&format!(" {k}={text}"));
        }
        out
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Rows as aligned columns, two spaces apart, indented by two.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::Duration;

    fn at(t0: DateTime<Utc>, ms: i64, node: &str, event: serde_json::Value) -> EventLine {
        EventLine {
            ts: t0 + Duration::milliseconds(ms),
            node: node.into(),
            event: serde_json::from_value(event).unwrap(),
        }
    }

    #[test]
    fn the_board_names_nodes_and_pairs() {
        let t0 = Utc::now();
        let (boot, alice, bob) = (PeerId::random(), PeerId::random(), PeerId::random());
        let started = |id: PeerId, role: &str| serde_json::json!({"event": "started", "peer_id": id.to_string(), "role": role, "version": "0"});
        let conn = |id: PeerId, path: &str, n: u32| serde_json::json!({"event": "connected", "peer": id.to_string(), "path": path, "remote_addr": "/ip4/10.0.0.1/tcp/1", "direction": "outbound", "connections": n});
        let disc = |id: PeerId, path: &str, n: u32| serde_json::json!({"event": "disconnected", "peer": id.to_string(), "path": path, "remote_addr": "/ip4/10.0.0.1/tcp/1", "connections": n});
        let mut live = Live::new("home-nat");
        for l in [
            at(t0, 0, "boot", started(boot, "monitor")),
            at(t0, 10, "alice", started(alice, "listener")),
            at(t0, 20, "bob", started(bob, "dialer")),
            at(t0, 30, "bob", conn(boot, "direct", 1)),
            at(
                t0,
                40,
                "bob",
                serde_json::json!({"event": "bootstrapped", "peer": boot.to_string(), "routing_table": 1}),
            ),
            at(
                t0,
                50,
                "alice",
                serde_json::json!({"event": "reachability", "status": "private", "source": "timeout"}),
            ),
            at(
                t0,
                60,
                "alice",
                serde_json::json!({"event": "reservation", "relay": boot.to_string(), "status": "accepted", "renewal": false}),
            ),
            at(t0, 70, "bob", conn(alice, "relayed", 2)),
            at(
                t0,
                80,
                "bob",
                serde_json::json!({"event": "message_sent", "to": alice.to_string(), "id": 1, "size": 64, "attempt": 1}),
            ),
            at(
                t0,
                90,
                "bob",
                serde_json::json!({"event": "hole_punch", "peer": alice.to_string(), "ok": true}),
            ),
            at(t0, 95, "bob", conn(alice, "direct", 3)),
            at(t0, 99, "bob", disc(alice, "relayed", 2)),
            at(
                t0,
                1500,
                "bob",
                serde_json::json!({"event": "message_acked", "to": alice.to_string(), "id": 1, "rtt_ms": 2.4, "path": "direct", "attempts": 1}),
            ),
        ] {
            live.handle(&l);
        }
        let board = live.board();
        assert!(
            board.starts_with("home-nat · +1.5s · 13 events\n"),
            "{board}"
        );
        let row = |name: &str| {
            board
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(row("alice"), "alice listener up private accepted on boot -");
        assert_eq!(row("bob "), "bob dialer up, bootstrapped - - alice boot");
        assert_eq!(
            row("bob →"),
            "bob → alice direct 2.4 ms direct 1/1 0 1 ok, 0 failed"
        );
        assert!(
            !board.contains("→ boot"),
            "no pair with the monitor: {board}"
        );
        live.handle(&at(t0, 1550, "boot", conn(alice, "direct", 1)));
        assert!(
            !live.board().contains("boot →"),
            "no pair from the monitor: {}",
            live.board()
        );
        // the plain line names peers
        let l = at(
            t0,
            1600,
            "bob",
            serde_json::json!({"event": "message_failed", "to": alice.to_string(), "id": 2, "reason": "timeout", "attempts": 3}),
        );
        live.handle(&l);
        assert_eq!(live.line(&l), "+1.6s bob FAILED 2 to alice: timeout");
        let other = at(
            t0,
            1660,
            "bob",
            serde_json::json!({"event": "bootstrap_changed", "addr": "/ip4/10.0.0.1/tcp/1", "old": boot.to_string(), "new": alice.to_string()}),
        );
        assert_eq!(
            live.line(&other),
            "+1.7s bob bootstrap_changed addr=/ip4/10.0.0.1/tcp/1 new=alice old=boot"
        );
        assert!(row_of(&live.board(), "bob →").contains(" 1 "));
        // a stopped sender holds nothing
        let stopped = Event::Stopped {
            reason: "SIGTERM".into(),
            uptime_ms: 1,
            totals: Default::default(),
        };
        live.handle(&EventLine {
            ts: t0 + Duration::milliseconds(1700),
            node: "bob".into(),
            event: stopped,
        });
        assert!(row_of(&live.board(), "bob →").contains("none"));
    }

    fn row_of(board: &str, start: &str) -> String {
        board
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn faults_are_listed_newest_last() {
        let mut live = Live::new("x");
        for i in 0..8 {
            live.fault(&FaultRecord {
                at: Utc::now(),
                t_ms: i * 1000,
                action: format!("kill n{i}"),
                line: 1,
                ok: i != 7,
                error: if i == 7 { "gone".into() } else { String::new() },
            });
        }
        let b = live.board();
        assert!(
            !b.contains("kill n1\n")
                && b.contains("  +2.0s kill n2\n")
                && b.contains("  +7.0s kill n7 FAILED: gone\n"),
            "{b}"
        );
    }
}
