//! Judging expectations and fault conditions over the merged event timeline. No Docker here.
//!
//! A [`Check`] is evaluated against every event seen so far. Some checks are settled once they
//! hold (a discovery happened); others can still break later (a hole punch that was failing
//! succeeds, a message is lost), so their verdict is final only when the run ends. The runner
//! asks [`Judge::status`] as events arrive and [`Judge::verdicts`] at the end.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use p2plab_contract::{Event, EventLine, IpFamily, Path};

use crate::model::{Check, Expectation, Metric, Role, Topology};

/// Where a check stands on the events seen so far.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not (yet) true. `progress` says how far, for the report.
    NotYet { progress: String },
    /// True since `since`.
    Holds {
        since: DateTime<Utc>,
        measured: serde_json::Value,
    },
    /// False for good, whatever comes later.
    Broken { reason: String },
}

impl State {
    pub fn holds(&self) -> bool {
        matches!(self, State::Holds { .. })
    }
}

/// The timeline, indexed as it grows: peer ids to node names, start times.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub events: Vec<EventLine>,
    names: HashMap<String, String>,
    started: HashMap<String, DateTime<Utc>>,
}

impl Timeline {
    pub fn push(&mut self, line: EventLine) {
        if let Event::Started { peer_id, .. } = &line.event {
            self.names.insert(peer_id.to_string(), line.node.clone());
            self.started.entry(line.node.clone()).or_insert(line.ts);
        }
        self.events.push(line);
    }

    /// The node name behind a peer id, when that node has started.
    pub fn name_of(&self, peer: &impl ToString) -> Option<&str> {
        self.names.get(&peer.to_string()).map(|s| s.as_str())
    }

    /// When the node first started.
    pub fn started(&self, node: &str) -> Option<DateTime<Utc>> {
        self.started.get(node).copied()
    }

    fn is(&self, peer: &impl ToString, node: &str) -> bool {
        self.name_of(peer) == Some(node)
    }

    pub fn of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a EventLine> + 'a {
        self.events.iter().filter(move |l| l.node == node)
    }
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_milliseconds()
}

/// Per-pair message bookkeeping: what `from` sent to `to` and how it ended.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub sent: u64,
    pub acked: u64,
    pub lost: u64,
    /// Messages the receiver delivered to its application more than once (must be 0).
    pub duplicates_delivered: u64,
    /// Duplicates the receiver recognised and did not deliver again.
    pub duplicates_recognised: u64,
    pub direct: u64,
    pub relayed: u64,
    /// Acks per path and IP family of the connection they came back on (which family carried the
    /// messages on a dual-stack lab), in path then family order.
    pub carried: Vec<Carried>,
    pub first_ack: Option<DateTime<Utc>>,
    pub last_ack: Option<DateTime<Utc>>,
    /// Acks in order: (when, path).
    #[serde(skip)]
    pub acks: Vec<(DateTime<Utc>, Path, f64)>,
}

/// How many acks came back over one path and IP family.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Carried {
    pub path: Path,
    /// `None`: the connection's address named no IP (an inbound relayed one), or an older node.
    pub family: Option<IpFamily>,
    pub acks: u64,
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Some(family) => write!(
                f,
                "{} over {}: {}",
                self.path.as_str(),
                family.as_str(),
                self.acks
            ),
            None => write!(f, "{}: {}", self.path.as_str(), self.acks),
        }
    }
}

impl Delivery {
    pub fn of(t: &Timeline, from: &str, to: &str) -> Delivery {
        let mut d = Delivery::default();
        let mut sent = HashSet::new();
        let mut acked = HashSet::new();
        let mut failed = HashSet::new();
        for l in t.of(from) {
            match &l.event {
                Event::MessageSent { to: p, id, .. } if t.is(p, to) => {
                    sent.insert(*id);
                }
                Event::MessageAcked {
                    to: p,
                    id,
                    path,
                    rtt_ms,
                    family,
                    ..
                } if t.is(p, to) && acked.insert(*id) => {
                    d.acks.push((l.ts, *path, *rtt_ms));
                    match d
                        .carried
                        .iter_mut()
                        .find(|c| c.path == *path && c.family == *family)
                    {
                        Some(c) => c.acks += 1,
                        None => d.carried.push(Carried {
                            path: *path,
                            family: *family,
                            acks: 1,
                        }),
                    }
                    match path {
                        Path::Direct => d.direct += 1,
                        Path::Relayed => d.relayed += 1,
                    }
                    d.first_ack.get_or_insert(l.ts);
                    d.last_ack = Some(l.ts);
                }
                Event::MessageFailed { to: p, id, .. } if t.is(p, to) => {
                    failed.insert(*id);
                }
                _ => {}
            }
        }
        let mut delivered: HashMap<u64, u64> = HashMap::new();
        for l in t.of(to) {
            if let Event::MessageReceived {
                from: p,
                id,
                duplicate,
                ..
            } = &l.event
            {
                if t.is(p, from) {
                    if *duplicate {
                        d.duplicates_recognised += 1;
                    } else {
                        *delivered.entry(*id).or_default() += 1;
                    }
                }
            }
        }
        d.carried
            .sort_by_key(|c| (c.path == Path::Relayed, c.family));
        d.duplicates_delivered = delivered.values().map(|n| n.saturating_sub(1)).sum();
        d.sent = sent.len() as u64;
        d.acked = acked.len() as u64;
        d.lost = failed.difference(&acked).count() as u64;
        d
    }

    /// RTT percentile (0..=100) of acks over `path`, in ms.
    pub fn rtt(&self, path: Path, pct: f64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .acks
            .iter()
            .filter(|a| a.1 == path)
            .map(|a| a.2)
            .collect();
        percentile(&mut v, pct)
    }
}

/// Nearest-rank percentile; sorts `v`.
pub fn percentile(v: &mut [f64], pct: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

fn connected_at(t: &Timeline, a: &str, b: &str, path: Path) -> Option<DateTime<Utc>> {
    t.events
        .iter()
        .find(|l| match &l.event {
            Event::Connected { peer, path: p, .. } if *p == path => {
                (l.node == a && t.is(peer, b)) || (l.node == b && t.is(peer, a))
            }
            _ => false,
        })
        .map(|l| l.ts)
}

fn hole_punches(t: &Timeline, a: &str, b: &str) -> (u64, u64, Option<DateTime<Utc>>) {
    let (mut ok, mut failed, mut first_fail) = (0, 0, None);
    for l in &t.events {
        if let Event::HolePunch { peer, ok: o, .. } = &l.event {
            if (l.node == a && t.is(peer, b)) || (l.node == b && t.is(peer, a)) {
                if *o {
                    ok += 1;
                } else {
                    failed += 1;
                    first_fail.get_or_insert(l.ts);
                }
            }
        }
    }
    (ok, failed, first_fail)
}

fn event_matches(l: &EventLine, kind: &str, fields: &BTreeMap<String, serde_json::Value>) -> bool {
    if l.event.name() != kind {
        return false;
    }
    if fields.is_empty() {
        return true;
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::to_value(&l.event) else {
        return false;
    };
    fields
        .iter()
        .all(|(k, want)| obj.get(k).is_some_and(|have| field_matches(have, want)))
}

/// A `where` value matches a field when equal, or, for a string `">=N"`, `"<=N"`, `">N"` or
/// `"<N"`, when the field is a number in that range.
pub fn field_matches(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    if have == want {
        return true;
    }
    let (Some(w), Some(h)) = (want.as_str(), have.as_f64()) else {
        return false;
    };
    let w = w.trim();
    let (op, num) = if let Some(n) = w.strip_prefix(">=") {
        (">=", n)
    } else if let Some(n) = w.strip_prefix("<=") {
        ("<=", n)
    } else if let Some(n) = w.strip_prefix('>') {
        (">", n)
    } else if let Some(n) = w.strip_prefix('<') {
        ("<", n)
    } else {
        return false;
    };
    let Ok(n) = num.trim().parse::<f64>() else {
        return false;
    };
    match op {
        ">=" => h >= n,
        "<=" => h <= n,
        ">" => h > n,
        _ => h < n,
    }
}

/// Evaluates one check on the timeline as it is now.
pub fn evaluate(check: &Check, t: &Timeline) -> State {
    let not_yet = |p: &str| State::NotYet {
        progress: p.to_string(),
    };
    match check {
        Check::Started { node } => match t.started(node) {
            Some(ts) => State::Holds {
                since: ts,
                measured: serde_json::json!({}),
            },
            None => not_yet("not started"),
        },
        Check::Discovered { by, peer } => {
            let hit = t
                .of(by)
                .find(|l| matches!(&l.event, Event::Discovered { peer: p, .. } if t.is(p, peer)));
            match hit {
                Some(l) => State::Holds {
                    since: l.ts,
                    measured: serde_json::json!({}),
                },
                None => not_yet("not discovered"),
            }
        }
        Check::Reservation { node } => {
            let hit = t.of(node).find(|l| {
                matches!(
                    &l.event,
                    Event::Reservation {
                        status: p2plab_contract::events::ReservationStatus::Accepted,
                        ..
                    }
                )
            });
            match hit {
                Some(l) => State::Holds {
                    since: l.ts,
                    measured: serde_json::json!({}),
                },
                None => not_yet("no accepted reservation"),
            }
        }
        Check::Connected { a, b, path } => match connected_at(t, a, b, *path) {
            Some(ts) => State::Holds {
                since: ts,
                measured: serde_json::json!({}),
            },
            None => not_yet("no such connection"),
        },
        Check::HolePunchFails { a, b } => {
            let (ok, failed, first_fail) = hole_punches(t, a, b);
            if ok > 0 {
                return State::Broken {
                    reason: format!("a hole punch succeeded ({ok} of {})", ok + failed),
                };
            }
            if let Some(ts) = connected_at(t, a, b, Path::Direct) {
                let _ = ts;
                return State::Broken {
                    reason: "a direct connection exists".into(),
                };
            }
            match first_fail {
                Some(ts) => State::Holds {
                    since: ts,
                    measured: serde_json::json!({ "attempts": failed }),
                },
                None => not_yet("no hole punch attempt yet"),
            }
        }
        Check::Delivered {
            from,
            to,
            count,
            lost,
            duplicates,
        } => {
            let d = Delivery::of(t, from, to);
            let measured = serde_json::json!({
                "sent": d.sent, "acked": d.acked, "lost": d.lost,
                "duplicates_delivered": d.duplicates_delivered, "direct": d.direct, "relayed": d.relayed,
            });
            if d.lost > *lost {
                return State::Broken {
                    reason: format!("{} lost (at most {lost} allowed)", d.lost),
                };
            }
            if d.duplicates_delivered > *duplicates {
                return State::Broken {
                    reason: format!(
                        "{} delivered twice (at most {duplicates} allowed)",
                        d.duplicates_delivered
                    ),
                };
            }
            if d.acked >= *count {
                // the count-th ack is when it came true
                let since = d
                    .acks
                    .get(*count as usize - 1)
                    .map(|a| a.0)
                    .or(d.last_ack)
                    .unwrap_or_else(Utc::now);
                State::Holds { since, measured }
            } else {
                State::NotYet {
                    progress: format!("{} of {count} acked, {} lost", d.acked, d.lost),
                }
            }
        }
        Check::PathAll { from, to, path } => {
            let d = Delivery::of(t, from, to);
            if let Some(bad) = d.acks.iter().find(|a| a.1 != *path) {
                return State::Broken {
                    reason: format!(
                        "an ack took the {} path at {}",
                        bad.1.as_str(),
                        bad.0.format("%H:%M:%S%.3f")
                    ),
                };
            }
            match d.first_ack {
                Some(ts) => State::Holds {
                    since: ts,
                    measured: serde_json::json!({ "acks": d.acked }),
                },
                None => not_yet("no ack yet"),
            }
        }
        Check::PathLast { from, to, path } => {
            // The acks ended on `path`: from some ack on, every one took it. A detour and back
            // (a direct path that died, the relay, a new hole punch) ends on it too.
            let d = Delivery::of(t, from, to);
            let switch = d
                .acks
                .iter()
                .rposition(|a| a.1 != *path)
                .map_or(0, |i| i + 1);
            match d.acks.get(switch) {
                Some(a) => State::Holds {
                    since: a.0,
                    measured: serde_json::json!({ "acks": d.acked, "before_switch": switch }),
                },
                // may still switch back for good; not settled until the end
                None => not_yet(&format!(
                    "the acks are not on the {} path ({} acks)",
                    path.as_str(),
                    d.acked
                )),
            }
        }
        Check::Event {
            node,
            kind,
            fields,
            min,
            max,
        } => {
            let hits: Vec<&EventLine> = t
                .events
                .iter()
                .filter(|l| node.as_deref().is_none_or(|n| l.node == n))
                .filter(|l| event_matches(l, kind, fields))
                .collect();
            let n = hits.len() as u64;
            if max.is_some_and(|m| n > m) {
                return State::Broken {
                    reason: format!("{n} matching events (at most {} allowed)", max.unwrap_or(0)),
                };
            }
            if n >= *min {
                let since = if *min == 0 {
                    node.as_deref()
                        .and_then(|n| t.started(n))
                        .unwrap_or_else(|| t.events.first().map(|l| l.ts).unwrap_or_else(Utc::now))
                } else {
                    hits[*min as usize - 1].ts
                };
                State::Holds {
                    since,
                    measured: serde_json::json!({ "count": n }),
                }
            } else {
                not_yet(&format!("{n} of {min} events"))
            }
        }
        Check::Flat {
            node,
            metric,
            after,
            growth_pct,
        } => flat(t, node, *metric, *after, *growth_pct),
    }
}

/// Samples compared at each end of a [`Check::Flat`] (their medians, so that one busy moment
/// does not decide).
const FLAT_WINDOW: usize = 5;

/// [`Check::Flat`]: the node's samples of its current process from `after` on; the median of the
/// last [`FLAT_WINDOW`] against the median of the first.
fn flat(
    t: &Timeline,
    node: &str,
    metric: Metric,
    after: std::time::Duration,
    growth_pct: f64,
) -> State {
    let not_yet = |p: &str| State::NotYet {
        progress: p.to_string(),
    };
    let mut start = None;
    let mut samples: Vec<(DateTime<Utc>, u64)> = Vec::new();
    for l in t.of(node) {
        if matches!(l.event, Event::Started { .. }) {
            start = Some(l.ts);
            samples.clear();
        } else if let (Some(s), Some(v)) = (start, metric.of(&l.event)) {
            if (l.ts - s).to_std().is_ok_and(|d| d >= after) {
                samples.push((l.ts, v));
            }
        }
    }
    if samples.len() < 2 * FLAT_WINDOW {
        return not_yet(&format!(
            "{} samples of {} after {}s of this process (need {})",
            samples.len(),
            metric.as_str(),
            after.as_secs(),
            2 * FLAT_WINDOW
        ));
    }
    let median = |w: &[(DateTime<Utc>, u64)]| {
        let mut v: Vec<u64> = w.iter().map(|s| s.1).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let first = median(&samples[..FLAT_WINDOW]);
    let last = median(&samples[samples.len() - FLAT_WINDOW..]);
    let growth = if first == 0 {
        if last == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (last as f64 / first as f64 - 1.0) * 100.0
    };
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let measured = serde_json::json!({
        "metric": metric.as_str(),
        "first": first,
        "last": last,
        "max": max,
        "growth_pct": (growth * 10.0).round() / 10.0,
        "samples": samples.len(),
    });
    if growth <= growth_pct {
        State::Holds {
            since: samples[samples.len() - 1].0,
            measured,
        }
    } else {
        // a later fall can still bring it back under: not settled before the end
        not_yet(&format!(
            "{} grew {:.1}% ({first} → {last}; at most {growth_pct}%)",
            metric.as_str(),
            growth
        ))
    }
}

/// Whether a check that holds now stays true whatever happens later.
pub fn settles_when_held(check: &Check) -> bool {
    match check {
        Check::Started { .. }
        | Check::Discovered { .. }
        | Check::Reservation { .. }
        | Check::Connected { .. } => true,
        Check::Event { max, .. } => max.is_none(),
        // a later loss or duplicate can still break it
        Check::Delivered { .. }
        | Check::HolePunchFails { .. }
        | Check::PathAll { .. }
        | Check::PathLast { .. }
        | Check::Flat { .. } => false,
    }
}

/// The final word on one expectation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub name: String,
    pub line: u64,
    pub held: bool,
    /// ms from the reference (every node the check names started) to when it held.
    pub after_ms: Option<i64>,
    pub within_ms: Option<u64>,
    pub measured: serde_json::Value,
    /// Why it failed, or how far it got.
    pub detail: String,
}

/// When the nodes a check names had all started (the origin of `within`).
pub fn reference(check: &Check, t: &Timeline, t0: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let nodes = check.nodes();
    if nodes.is_empty() {
        return Some(t0);
    }
    let mut latest = None;
    for n in nodes {
        let s = t.started(n)?;
        latest = Some(latest.map_or(s, |l: DateTime<Utc>| l.max(s)));
    }
    latest
}

/// Judges expectations as the timeline grows.
#[derive(Debug, Clone)]
pub struct Judge {
    pub expect: Vec<Expectation>,
    /// Settled verdicts (held for good, or failed for good), by index.
    settled: HashMap<usize, Verdict>,
}

impl Judge {
    pub fn new(topo: &Topology) -> Self {
        Judge {
            expect: topo.expect.clone(),
            settled: HashMap::new(),
        }
    }

    fn verdict(
        &self,
        e: &Expectation,
        t: &Timeline,
        t0: DateTime<Utc>,
        now: DateTime<Utc>,
        end: bool,
    ) -> Option<Verdict> {
        let within_ms = e.within.map(|w| w.as_millis() as u64);
        let reference = reference(&e.check, t, t0);
        let mk = |held: bool,
                  after_ms: Option<i64>,
                  measured: serde_json::Value,
                  detail: String| Verdict {
            name: e.name.clone(),
            line: e.line,
            held,
            after_ms,
            within_ms,
            measured,
            detail,
        };
        let late = |r: Option<DateTime<Utc>>, at: DateTime<Utc>| -> bool {
            match (within_ms, r) {
                (Some(w), Some(r)) => ms_between(r, at) > w as i64,
                _ => false,
            }
        };
        match evaluate(&e.check, t) {
            State::Broken { reason } => Some(mk(false, None, serde_json::Value::Null, reason)),
            State::Holds { since, measured } => {
                let after = reference.map(|r| ms_between(r, since).max(0));
                if late(reference, since) {
                    return Some(mk(
                        false,
                        after,
                        measured,
                        format!(
                            "held only after {} ms (within {} ms)",
                            after.unwrap_or(0),
                            within_ms.unwrap_or(0)
                        ),
                    ));
                }
                if settles_when_held(&e.check) || end {
                    Some(mk(true, after, measured, "held".into()))
                } else {
                    None
                }
            }
            State::NotYet { progress } => {
                if late(reference, now) {
                    Some(mk(
                        false,
                        None,
                        serde_json::Value::Null,
                        format!("not within {} ms: {progress}", within_ms.unwrap_or(0)),
                    ))
                } else if end {
                    let why = if reference.is_none() {
                        format!("{progress} (a node it names never started)")
                    } else {
                        format!("not by the end of the run: {progress}")
                    };
                    Some(mk(false, None, serde_json::Value::Null, why))
                } else {
                    None
                }
            }
        }
    }

    /// Re-evaluates what is not settled. Returns true when every expectation is settled.
    pub fn update(&mut self, t: &Timeline, t0: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        for (i, e) in self.expect.iter().enumerate() {
            if self.settled.contains_key(&i) {
                continue;
            }
            if let Some(v) = self.verdict(e, t, t0, now, false) {
                self.settled.insert(i, v);
            }
        }
        self.settled.len() == self.expect.len()
    }

    /// Whether every unsettled expectation holds right now (the run may end once the dialers
    /// are done).
    pub fn all_hold_now(&self, t: &Timeline) -> bool {
        self.expect
            .iter()
            .enumerate()
            .all(|(i, e)| match self.settled.get(&i) {
                Some(_) => true,
                None => evaluate(&e.check, t).holds(),
            })
    }

    /// Some expectation has failed for good.
    pub fn any_failed(&self) -> bool {
        self.settled.values().any(|v| !v.held)
    }

    /// The final verdicts, in file order.
    pub fn verdicts(&self, t: &Timeline, t0: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Verdict> {
        self.expect
            .iter()
            .enumerate()
            .map(|(i, e)| match self.settled.get(&i) {
                Some(v) => v.clone(),
                None => self
                    .verdict(e, t, t0, now, true)
                    .unwrap_or_else(|| Verdict {
                        name: e.name.clone(),
                        line: e.line,
                        held: false,
                        after_ms: None,
                        within_ms: None,
                        measured: serde_json::Value::Null,
                        detail: "undecided".into(),
                    }),
            })
            .collect()
    }
}

/// Whether every dialer with a `count` has had each message acked or given up.
pub fn dialers_done(topo: &Topology, t: &Timeline) -> bool {
    topo.nodes
        .iter()
        .filter(|n| n.role == Role::Dialer)
        .all(|n| {
            let Some(count) = n.count.filter(|c| *c > 0) else {
                return true;
            };
            let mut ended = HashSet::new();
            for l in t.of(&n.name) {
                match &l.event {
                    Event::MessageAcked { id, .. } | Event::MessageFailed { id, .. } => {
                        ended.insert(*id);
                    }
                    _ => {}
                }
            }
            // a dialer sends `count` messages to each listener it found; at least `count` ended
            ended.len() as u64 >= count * listeners_in(topo, &n.namespace).max(1)
        })
}

fn listeners_in(topo: &Topology, ns: &str) -> u64 {
    topo.nodes
        .iter()
        .filter(|n| n.role == Role::Listener && n.namespace == ns)
        .count() as u64
}

/// The figures of one dialer → listener pair, for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairMetrics {
    pub from: String,
    pub to: String,
    pub discovered_ms: Option<i64>,
    pub first_relayed_ms: Option<i64>,
    pub first_direct_ms: Option<i64>,
    /// From the first relayed connection to the first direct one.
    pub relayed_to_direct_ms: Option<i64>,
    pub hole_punch_ok: u64,
    pub hole_punch_failed: u64,
    pub delivery: Delivery,
    pub rtt_direct_p50_ms: Option<f64>,
    pub rtt_direct_p95_ms: Option<f64>,
    pub rtt_relayed_p50_ms: Option<f64>,
    pub rtt_relayed_p95_ms: Option<f64>,
}

/// Figures for every dialer/listener pair in the same namespace; times from the later start.
pub fn pair_metrics(topo: &Topology, t: &Timeline) -> Vec<PairMetrics> {
    let mut out = Vec::new();
    for d in topo.nodes.iter().filter(|n| n.role == Role::Dialer) {
        for l in topo
            .nodes
            .iter()
            .filter(|n| n.role == Role::Listener && n.namespace == d.namespace)
        {
            let reference = match (t.started(&d.name), t.started(&l.name)) {
                (Some(a), Some(b)) => a.max(b),
                _ => continue,
            };
            let rel = |ts: Option<DateTime<Utc>>| ts.map(|ts| ms_between(reference, ts));
            let discovered = t
                .of(&d.name)
                .find(|x| matches!(&x.event, Event::Discovered { peer, .. } if t.is(peer, &l.name)))
                .map(|x| x.ts);
            let relayed = connected_at(t, &d.name, &l.name, Path::Relayed);
            let direct = connected_at(t, &d.name, &l.name, Path::Direct);
            let (ok, failed, _) = hole_punches(t, &d.name, &l.name);
            let delivery = Delivery::of(t, &d.name, &l.name);
            out.push(PairMetrics {
                from: d.name.clone(),
                to: l.name.clone(),
                discovered_ms: rel(discovered),
                first_relayed_ms: rel(relayed),
                first_direct_ms: rel(direct),
                relayed_to_direct_ms: match (relayed, direct) {
                    (Some(r), Some(d)) if d >= r => Some(ms_between(r, d)),
                    _ => None,
                },
                hole_punch_ok: ok,
                hole_punch_failed: failed,
                rtt_direct_p50_ms: delivery.rtt(Path::Direct, 50.0),
                rtt_direct_p95_ms: delivery.rtt(Path::Direct, 95.0),
                rtt_relayed_p50_ms: delivery.rtt(Path::Relayed, 50.0),
                rtt_relayed_p95_ms: delivery.rtt(Path::Relayed, 95.0),
                delivery,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::parse;
    use chrono::Duration as CD;

    struct Ids {
        t0: DateTime<Utc>,
        t: Timeline,
        ids: HashMap<&'static str, String>,
    }

    impl Ids {
        fn new() -> Self {
            let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc);
            let mut s = Ids {
                t0,
                t: Timeline::default(),
                ids: HashMap::new(),
            };
            for n in ["boot", "alice", "bob"] {
                let id = p2plab_contract::PeerId::random().to_string();
                s.ids.insert(n, id.clone());
                s.ev(
                    0,
                    n,
                    &format!(r#"{{"event":"started","peer_id":"{id}","role":"x","version":"0"}}"#),
                );
            }
            s
        }
        fn ev(&mut self, ms: i64, node: &str, json: &str) {
            let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
            v["ts"] = serde_json::Value::String((self.t0 + CD::milliseconds(ms)).to_rfc3339());
            v["node"] = serde_json::Value::String(node.into());
            let line = EventLine::parse(&v.to_string()).unwrap();
            self.t.push(line);
        }
        fn id(&self, n: &str) -> &str {
            &self.ids[n]
        }
        fn connected(&mut self, ms: i64, node: &str, peer: &str, path: &str) {
            let id = self.id(peer).to_string();
            let addr = if path == "relayed" {
                "/ip4/1.2.3.4/tcp/1/p2p-circuit"
            } else {
                "/ip4/1.2.3.4/tcp/1"
            };
            self.ev(ms, node, &format!(r#"{{"event":"connected","peer":"{id}","path":"{path}","remote_addr":"{addr}","direction":"outbound","connections":1}}"#));
        }
        fn ack(&mut self, ms: i64, id: u64, path: &str) {
            let to = self.id("alice").to_string();
            self.ev(
                ms,
                "bob",
                &format!(
                    r#"{{"event":"message_sent","to":"{to}","id":{id},"size":64,"attempt":1}}"#
                ),
            );
            self.ev(ms, "bob", &format!(r#"{{"event":"message_acked","to":"{to}","id":{id},"rtt_ms":{},"path":"{path}","attempts":1}}"#, id as f64));
            let from = self.id("bob").to_string();
            self.ev(ms, "alice", &format!(r#"{{"event":"message_received","from":"{from}","id":{id},"size":64,"path":"{path}","duplicate":false}}"#));
        }
    }

    const TOPO: &str = r#"
name: t
segments: { internet: {}, lan-a: { nat: home }, lan-b: { nat: home } }
nodes:
  boot:  { role: monitor,  segment: internet }
  alice: { role: listener, segment: lan-a }
  bob:   { role: dialer,   segment: lan-b, count: 3 }
expect:
  - { direct: [bob, alice], within: 15s }
  - { delivered: { from: bob, to: alice, count: 3, lost: 0 } }
  - { path: { from: bob, to: alice, last: direct } }
  - { hole_punch_fails: [bob, alice] }
"#;

    #[test]
    fn flat_compares_the_medians_of_both_ends_of_the_current_process() {
        let topo = parse(
            "t.yaml",
            "name: t\nresources: 10s\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\n  alice: { role: listener, segment: internet }\n  bob: { role: dialer, segment: internet }\nexpect:\n  - { flat: { node: alice, metric: rss_kb, after: 60s, growth: 10% } }\n",
        )
        .unwrap();
        let check = &topo.expect[0].check;
        let mut s = Ids::new();
        let res = |rss: u64| {
            format!(
                r#"{{"event":"resources","rss_kb":{rss},"fds":20,"connections":3,"routing_table":2,"kad_records":1}}"#
            )
        };
        // the first minute does not count: 50 MB there is the start-up
        s.ev(10_000, "alice", &res(50_000));
        for i in 0..10 {
            s.ev(
                60_000 + i * 10_000,
                "alice",
                &res(10_000 + (i as u64 % 2) * 200),
            );
        }
        match evaluate(check, &s.t) {
            State::Holds { measured, .. } => {
                assert_eq!(measured["first"], 10_000);
                assert_eq!(measured["growth_pct"], 2.0);
            }
            other => panic!("{other:?}"),
        }
        // a leak: +1 MB a sample
        for i in 0..5 {
            s.ev(
                200_000 + i * 10_000,
                "alice",
                &res(12_000 + i as u64 * 1_000),
            );
        }
        match evaluate(check, &s.t) {
            State::NotYet { progress } => assert!(progress.contains("grew"), "{progress}"),
            other => panic!("{other:?}"),
        }
        // a restart starts over: too few samples of the new process
        let id = s.id("alice").to_string();
        s.ev(
            300_000,
            "alice",
            &format!(r#"{{"event":"started","peer_id":"{id}","role":"x","version":"0"}}"#),
        );
        s.ev(400_000, "alice", &res(9_000));
        match evaluate(check, &s.t) {
            State::NotYet { progress } => assert!(progress.starts_with("1 samples"), "{progress}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn direct_within_and_late() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        let mut j = Judge::new(&topo);
        s.connected(3_000, "bob", "alice", "relayed");
        assert!(!j.update(&s.t, s.t0, s.t0 + CD::seconds(5)));
        s.connected(9_000, "alice", "bob", "direct");
        j.update(&s.t, s.t0, s.t0 + CD::seconds(10));
        let v = j.verdicts(&s.t, s.t0, s.t0 + CD::seconds(10));
        assert!(v[0].held, "{v:?}");
        assert_eq!(v[0].after_ms, Some(9_000));

        // the same, too late
        let mut s = Ids::new();
        let mut j = Judge::new(&topo);
        s.connected(16_000, "bob", "alice", "direct");
        j.update(&s.t, s.t0, s.t0 + CD::seconds(17));
        let v = j.verdicts(&s.t, s.t0, s.t0 + CD::seconds(17));
        assert!(!v[0].held);
        assert!(v[0].detail.contains("16000"), "{}", v[0].detail);
    }

    #[test]
    fn nothing_happens_then_deadline_fails() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let s = Ids::new();
        let mut j = Judge::new(&topo);
        j.update(&s.t, s.t0, s.t0 + CD::seconds(16));
        assert!(j.any_failed());
    }

    #[test]
    fn path_last_is_where_the_acks_ended_a_detour_and_back_included() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        s.ack(1_000, 1, "direct");
        s.ack(2_000, 2, "relayed"); // the direct path died: the relay
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(3));
        assert!(!v[2].held, "{v:?}");
        s.ack(3_000, 3, "direct"); // punched again
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(4));
        assert!(v[2].held, "{v:?}");
        assert_eq!(v[2].after_ms, Some(3_000));
        assert_eq!(v[2].measured["before_switch"], 2);
    }

    #[test]
    fn delivery_counts_losses_and_paths() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        s.ack(1_000, 1, "relayed");
        s.ack(2_000, 2, "direct");
        s.ack(3_000, 3, "direct");
        let d = Delivery::of(&s.t, "bob", "alice");
        assert_eq!(
            (
                d.sent,
                d.acked,
                d.lost,
                d.direct,
                d.relayed,
                d.duplicates_delivered
            ),
            (3, 3, 0, 2, 1, 0)
        );
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(5));
        assert!(v[1].held, "{v:?}");
        assert!(v[2].held, "{v:?}");
        assert!(dialers_done(&topo, &s.t));
        // a duplicate delivered to the application breaks it
        let from = s.id("bob").to_string();
        s.ev(4_000, "alice", &format!(r#"{{"event":"message_received","from":"{from}","id":3,"size":64,"path":"direct","duplicate":false}}"#));
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(5));
        assert!(!v[1].held);
        assert!(v[1].detail.contains("delivered twice"));
    }

    #[test]
    fn a_lost_message_fails_delivery() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        s.ack(1_000, 1, "relayed");
        let to = s.id("alice").to_string();
        s.ev(2_000, "bob", &format!(r#"{{"event":"message_failed","to":"{to}","id":2,"reason":"deadline","attempts":9}}"#));
        let mut j = Judge::new(&topo);
        j.update(&s.t, s.t0, s.t0 + CD::seconds(3));
        assert!(j.any_failed());
    }

    #[test]
    fn hole_punch_failure_is_asserted_not_assumed() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(5));
        assert!(!v[3].held, "no attempt at all must not pass");
        let alice = s.id("alice").to_string();
        s.ev(
            4_000,
            "bob",
            &format!(r#"{{"event":"hole_punch","peer":"{alice}","ok":false,"error":"x"}}"#),
        );
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(5));
        assert!(v[3].held);
        s.ev(
            5_000,
            "bob",
            &format!(r#"{{"event":"hole_punch","peer":"{alice}","ok":true}}"#),
        );
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(6));
        assert!(!v[3].held);
    }

    #[test]
    fn pair_metrics_measure_the_switch() {
        let topo = parse("t.yaml", TOPO).unwrap();
        let mut s = Ids::new();
        let alice = s.id("alice").to_string();
        s.ev(
            500,
            "bob",
            &format!(
                r#"{{"event":"discovered","peer":"{alice}","namespace":"p2plab","addrs":[]}}"#
            ),
        );
        s.connected(1_000, "bob", "alice", "relayed");
        s.connected(4_000, "bob", "alice", "direct");
        s.ack(1_500, 1, "relayed");
        s.ack(4_500, 2, "direct");
        let m = pair_metrics(&topo, &s.t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].discovered_ms, Some(500));
        assert_eq!(m[0].relayed_to_direct_ms, Some(3_000));
        assert_eq!(m[0].rtt_direct_p50_ms, Some(2.0));
    }

    #[test]
    fn generic_event_predicate() {
        let topo = parse("t.yaml", "name: t\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internet }\nexpect:\n  - { event: { node: boot, kind: started, where: { role: x } } }\n  - { event: { kind: error, max: 0 } }\n").unwrap();
        let mut s = Ids::new();
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(1));
        assert!(v[0].held && v[1].held, "{v:?}");
        s.ev(
            100,
            "boot",
            r#"{"event":"error","context":"c","message":"m"}"#,
        );
        let v = Judge::new(&topo).verdicts(&s.t, s.t0, s.t0 + CD::seconds(1));
        assert!(!v[1].held);
    }

    #[test]
    fn where_compares_numbers() {
        use serde_json::json;
        assert!(field_matches(&json!(120.5), &json!(">=100")));
        assert!(!field_matches(&json!(99), &json!(">=100")));
        assert!(field_matches(&json!(3), &json!("<5")));
        assert!(field_matches(&json!("direct"), &json!("direct")));
        assert!(!field_matches(&json!("direct"), &json!(">=1")));
        assert!(!field_matches(&json!(5), &json!(">=x")));
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(
            percentile(&mut (1..=100).map(f64::from).collect::<Vec<_>>(), 95.0),
            Some(95.0)
        );
    }
}
