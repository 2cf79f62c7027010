//! The path each pair took over a run, as a picture: one row per pair, coloured by whether the
//! sender held a direct connection, only a relayed one, or none, with its hole punches and the
//! run's faults marked. The report's `index.html` shows it above the timeline table, so "relayed,
//! hole punch, direct, the NAT flushed, relayed again" reads at a glance instead of row by row.
//!
//! Beside it, each pair's round trips over the same time axis ([`rtt_svg`]): one dot per acked
//! message, coloured by the path the ack came over, so a fault's effect on latency shows where the
//! fault is.
//!
//! [`segments`] and [`rtt_points`] are the decisions (events in, intervals or points out;
//! unit-tested); [`svg`] and [`rtt_svg`] only draw.

use std::{collections::HashMap, fmt::Write as _};

use chrono::{DateTime, Utc};
use p2plab_contract::{Event, Path};

use crate::{engine::run::FaultRecord, judge::expect::Timeline, report::graph::html_escape};

/// What a sender held to its peer during an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// At least one direct connection.
    Direct,
    /// Relayed connections only.
    Relayed,
    /// No connection.
    None,
}

/// One interval of a pair's row, in ms from the picture's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub from_ms: i64,
    pub to_ms: i64,
    pub held: Held,
}

/// A hole punch the sender reported, in ms from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punch {
    pub at_ms: i64,
    pub ok: bool,
}

/// `from`'s connections to `to` over the run, as intervals from `origin` up to `end`, and its hole
/// punches toward `to`. Intervals with no connection are included (before the first one too).
pub fn segments(
    t: &Timeline,
    from: &str,
    to: &str,
    origin: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (Vec<Segment>, Vec<Punch>) {
    let ms = |ts: DateTime<Utc>| (ts - origin).num_milliseconds();
    let mut open: HashMap<Path, u32> = HashMap::new();
    let held = |open: &HashMap<Path, u32>| {
        if open.get(&Path::Direct).copied().unwrap_or(0) > 0 {
            Held::Direct
        } else if open.get(&Path::Relayed).copied().unwrap_or(0) > 0 {
            Held::Relayed
        } else {
            Held::None
        }
    };
    let mut out = Vec::new();
    let mut punches = Vec::new();
    let mut since = 0;
    let mut now = Held::None;
    let mut lines: Vec<_> = t.of(from).collect();
    lines.sort_by_key(|l| l.ts);
    for l in lines {
        match &l.event {
            Event::Connected { peer, path, .. } if t.name_of(peer) == Some(to) => {
                *open.entry(*path).or_insert(0) += 1
            }
            Event::Disconnected { peer, path, .. } if t.name_of(peer) == Some(to) => {
                let n = open.entry(*path).or_insert(0);
                *n = n.saturating_sub(1);
            }
            Event::HolePunch { peer, ok, .. } if t.name_of(peer) == Some(to) => {
                punches.push(Punch {
                    at_ms: ms(l.ts),
                    ok: *ok,
                });
                continue;
            }
            // A stopped sender holds nothing, whatever close events it did not get to write.
            Event::Stopped { .. } => open.clear(),
            _ => continue,
        }
        let next = held(&open);
        if next != now {
            let at = ms(l.ts).max(since);
            if at > since {
                out.push(Segment {
                    from_ms: since,
                    to_ms: at,
                    held: now,
                });
            }
            since = at;
            now = next;
        }
    }
    let end = ms(end).max(since);
    if end > since {
        out.push(Segment {
            from_ms: since,
            to_ms: end,
            held: now,
        });
    }
    (out, punches)
}

const LABEL_W: f64 = 150.0;
const PLOT_W: f64 = 720.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 8.0;

/// A tick step (ms) that puts 4 to 10 ticks on `span_ms`.
fn tick_step(span_ms: i64) -> i64 {
    let mut step = 100;
    for s in [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000,
        600_000,
    ] {
        step = s;
        if span_ms / s <= 10 {
            break;
        }
    }
    step
}

/// The time axis of both pictures: a line at `y` under the plot, a tick with its seconds every
/// [`tick_step`].
fn time_axis(s: &mut String, span: i64, y: f64) {
    let x = |ms: i64| LABEL_W + PLOT_W * (ms.clamp(0, span) as f64) / span as f64;
    let _ = writeln!(
        s,
        r##"<line x1="{LABEL_W}" y1="{y}" x2="{}" y2="{y}" stroke="#555"/>"##,
        LABEL_W + PLOT_W
    );
    let step = tick_step(span);
    let mut tick = 0;
    while tick <= span {
        let tx = x(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{y}" x2="{tx:.1}" y2="{}" stroke="#555"/><text x="{tx:.1}" y="{}" text-anchor="middle">{} s</text>"##,
            y + 4.0,
            y + 16.0,
            tick as f64 / 1e3
        );
        tick += step;
    }
}

/// The picture: a row per pair (`from → to`), from `origin` (ms 0) to `end`, faults as dashed
/// lines. Inline SVG, no script; hovering a segment or a mark names it.
pub fn svg(
    t: &Timeline,
    pairs: &[(String, String)],
    faults: &[FaultRecord],
    origin: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let span = (end - origin).num_milliseconds().max(1);
    let x = |ms: i64| LABEL_W + PLOT_W * (ms.clamp(0, span) as f64) / span as f64;
    let height = TOP + ROW_H * pairs.len() as f64 + 40.0;
    let width = LABEL_W + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg class="paths" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    for (i, (from, to)) in pairs.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} → {}</text>"#,
            LABEL_W - 8.0,
            y + 15.0,
            html_escape(from),
            html_escape(to)
        );
        let (segs, punches) = segments(t, from, to, origin, end);
        for g in segs {
            let (fill, what) = match g.held {
                Held::Direct => ("#2e7d32", "direct"),
                Held::Relayed => ("#ef8c00", "relayed only"),
                Held::None => ("#e0e0e0", "no connection"),
            };
            let (x0, x1) = (x(g.from_ms), x(g.to_ms));
            let _ = writeln!(
                s,
                r#"<rect class="lane" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{what}: {:.1}–{:.1} s</title></rect>"#,
                y + 3.0,
                (x1 - x0).max(0.5),
                ROW_H - 6.0,
                g.from_ms as f64 / 1e3,
                g.to_ms as f64 / 1e3
            );
        }
        for p in punches {
            let (mark, colour, what) = if p.ok {
                ("▲", "#000", "hole punch")
            } else {
                ("✕", "#c62828", "hole punch failed")
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{colour}" font-size="10">{mark}<title>{what} at {:.1} s</title></text>"#,
                x(p.at_ms),
                y + ROW_H - 2.0,
                p.at_ms as f64 / 1e3
            );
        }
    }
    let axis_y = TOP + ROW_H * pairs.len() as f64 + 4.0;
    time_axis(&mut s, span, axis_y);
    for f in faults {
        let fx = x((f.at - origin).num_milliseconds());
        let _ = writeln!(
            s,
            r##"<line class="fault" x1="{fx:.1}" y1="{TOP}" x2="{fx:.1}" y2="{axis_y}" stroke="#c62828" stroke-dasharray="4 3"><title>line {}: {}{}</title></line>"##,
            f.line,
            html_escape(&f.action),
            if f.ok { "" } else { " (failed)" }
        );
    }
    let ly = axis_y + 32.0;
    let mut lx = LABEL_W;
    for (fill, what) in [
        ("#2e7d32", "direct"),
        ("#ef8c00", "relayed only"),
        ("#e0e0e0", "no connection"),
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="10" fill="{fill}"/><text x="{}" y="{ly}">{what}</text>"#,
            ly - 9.0,
            lx + 16.0
        );
        lx += 120.0;
    }
    let _ = writeln!(
        s,
        r##"<text x="{lx}" y="{ly}">▲ hole punch · ✕ failed · <tspan fill="#c62828">┆ fault</tspan></text>"##
    );
    s.push_str("</svg>\n");
    s
}

/// One acked message of a pair: when the ack came (ms from the origin), its round trip, its path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttPoint {
    pub at_ms: i64,
    pub rtt_ms: f64,
    pub path: Path,
}

/// `from`'s acked messages to `to`, in time order.
pub fn rtt_points(t: &Timeline, from: &str, to: &str, origin: DateTime<Utc>) -> Vec<RttPoint> {
    let mut out: Vec<RttPoint> = t
        .of(from)
        .filter_map(|l| match &l.event {
            Event::MessageAcked {
                to: peer,
                rtt_ms,
                path,
                ..
            } if t.name_of(peer) == Some(to) && rtt_ms.is_finite() => Some(RttPoint {
                at_ms: (l.ts - origin).num_milliseconds(),
                rtt_ms: rtt_ms.max(0.0),
                path: *path,
            }),
            _ => None,
        })
        .collect();
    out.sort_by_key(|p| p.at_ms);
    out
}

/// A log-scale axis from below the smallest to above the largest round trip: powers of ten
/// (0.1, 1, 10, 100 ms ...), at least one decade.
fn decades(points: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in points.filter(|v| *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (-1, 1);
    }
    let lo = lo.log10().floor() as i32;
    let hi = (hi.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

const RTT_H: f64 = 70.0;
const RTT_GAP: f64 = 26.0;

/// The round trips of each pair as a small plot over the same time axis as [`svg`]: x the time
/// of the ack, y the round trip (log scale, shared by every pair), a dot per message coloured by
/// its path (direct, relayed), faults as dashed lines.
pub fn rtt_svg(
    t: &Timeline,
    pairs: &[(String, String)],
    faults: &[FaultRecord],
    origin: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let span = (end - origin).num_milliseconds().max(1);
    let x = |ms: i64| LABEL_W + PLOT_W * (ms.clamp(0, span) as f64) / span as f64;
    let points: Vec<Vec<RttPoint>> = pairs
        .iter()
        .map(|(f, to)| rtt_points(t, f, to, origin))
        .collect();
    let (lo, hi) = decades(points.iter().flatten().map(|p| p.rtt_ms));
    let y_of = |top: f64, rtt: f64| {
        let v = rtt.max(10f64.powi(lo)).log10();
        top + RTT_H - RTT_H * (v - f64::from(lo)) / f64::from(hi - lo)
    };
    let height = TOP + (RTT_H + RTT_GAP) * pairs.len() as f64 + 40.0;
    let width = LABEL_W + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg class="rtt" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    for (i, ((from, to), pts)) in pairs.iter().zip(&points).enumerate() {
        let top = TOP + (RTT_H + RTT_GAP) * i as f64;
        let _ = writeln!(
            s,
            r#"<g class="rtt-pair" data-from="{}" data-to="{}">"#,
            html_escape(from),
            html_escape(to)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{} → {}</text>"#,
            LABEL_W - 62.0,
            top + RTT_H / 2.0,
            html_escape(from),
            html_escape(to)
        );
        for d in lo..=hi {
            let gy = y_of(top, 10f64.powi(d));
            let label = if d < 0 {
                format!("{}", 10f64.powi(d))
            } else {
                format!("{}", 10i64.pow(d as u32))
            };
            let _ = writeln!(
                s,
                r##"<line x1="{LABEL_W}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#666">{label} ms</text>"##,
                LABEL_W + PLOT_W,
                LABEL_W - 4.0,
                gy + 4.0
            );
        }
        if pts.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#888">no acked message</text>"##,
                LABEL_W + 8.0,
                top + RTT_H / 2.0
            );
        }
        for p in pts {
            let fill = if p.path == Path::Direct {
                "#2e7d32"
            } else {
                "#ef8c00"
            };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{fill}"><title>{:.3} ms, {} at {:.1} s</title></circle>"#,
                x(p.at_ms),
                y_of(top, p.rtt_ms),
                p.rtt_ms,
                if p.path == Path::Direct {
                    "direct"
                } else {
                    "relayed"
                },
                p.at_ms as f64 / 1e3
            );
        }
        for f in faults {
            let fx = x((f.at - origin).num_milliseconds());
            let _ = writeln!(
                s,
                r##"<line class="fault" x1="{fx:.1}" y1="{top:.1}" x2="{fx:.1}" y2="{:.1}" stroke="#c62828" stroke-dasharray="4 3"><title>line {}: {}</title></line>"##,
                top + RTT_H,
                f.line,
                html_escape(&f.action)
            );
        }
        s.push_str("</g>\n");
    }
    let axis_y = TOP + (RTT_H + RTT_GAP) * pairs.len() as f64 - RTT_GAP + 6.0;
    time_axis(&mut s, span, axis_y);
    let ly = axis_y + 32.0;
    let _ = writeln!(
        s,
        r##"<circle cx="{}" cy="{}" r="4" fill="#2e7d32"/><text x="{}" y="{ly}">direct</text><circle cx="{}" cy="{}" r="4" fill="#ef8c00"/><text x="{}" y="{ly}">relayed</text><text x="{}" y="{ly}" fill="#c62828">┆ fault</text>"##,
        LABEL_W + 5.0,
        ly - 4.0,
        LABEL_W + 14.0,
        LABEL_W + 85.0,
        ly - 4.0,
        LABEL_W + 94.0,
        LABEL_W + 170.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use p2plab_contract::{EventLine, PeerId};

    fn at(t0: DateTime<Utc>, ms: i64, node: &str, event: Event) -> EventLine {
        EventLine {
            ts: t0 + Duration::milliseconds(ms),
            node: node.into(),
            event,
        }
    }

    fn started(id: PeerId) -> Event {
        serde_json::from_value(serde_json::json!({"event": "started", "peer_id": id.to_string(), "role": "listener", "version": "0"})).unwrap()
    }

    fn conn(peer: PeerId, path: Path, up: bool) -> Event {
        let tag = if up { "connected" } else { "disconnected" };
        let path = if path == Path::Direct {
            "direct"
        } else {
            "relayed"
        };
        serde_json::from_value(serde_json::json!({
            "event": tag, "peer": peer.to_string(), "path": path, "remote_addr": "/ip4/10.0.0.1/tcp/1",
            "direction": "outbound", "connections": 1
        }))
        .unwrap()
    }

    fn punch(peer: PeerId, ok: bool) -> Event {
        serde_json::from_value(
            serde_json::json!({"event": "hole_punch", "peer": peer.to_string(), "ok": ok}),
        )
        .unwrap()
    }

    /// Relayed, a hole punch, direct (the relayed one closes), the direct one dies, relayed again.
    #[test]
    fn a_pair_goes_relayed_direct_and_back() {
        let t0 = Utc::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut t = Timeline::default();
        for l in [
            at(t0, 0, "alice", started(a)),
            at(t0, 100, "bob", started(b)),
            at(t0, 1_000, "bob", conn(a, Path::Relayed, true)),
            at(t0, 1_010, "bob", punch(a, true)),
            at(t0, 1_010, "bob", conn(a, Path::Direct, true)),
            at(t0, 1_020, "bob", conn(a, Path::Relayed, false)),
            at(t0, 5_000, "bob", conn(a, Path::Direct, false)),
            at(t0, 6_000, "bob", conn(a, Path::Relayed, true)),
        ] {
            t.push(l);
        }
        let (segs, punches) = segments(&t, "bob", "alice", t0, t0 + Duration::milliseconds(8_000));
        let held: Vec<_> = segs.iter().map(|s| (s.from_ms, s.to_ms, s.held)).collect();
        assert_eq!(
            held,
            vec![
                (0, 1_000, Held::None),
                (1_000, 1_010, Held::Relayed),
                (1_010, 5_000, Held::Direct),
                (5_000, 6_000, Held::None),
                (6_000, 8_000, Held::Relayed),
            ]
        );
        assert_eq!(
            punches,
            vec![Punch {
                at_ms: 1_010,
                ok: true
            }]
        );
        let pic = svg(
            &t,
            &[("bob".into(), "alice".into())],
            &[],
            t0,
            t0 + Duration::milliseconds(8_000),
        );
        assert_eq!(
            pic.matches("<rect").count(),
            5 + 3,
            "five segments and the legend"
        );
        assert!(pic.contains("direct: 1.0–5.0 s"), "{pic}");
        assert!(pic.contains("bob → alice"));
    }

    #[test]
    fn connections_to_others_and_unknown_peers_do_not_count() {
        let t0 = Utc::now();
        let (a, c) = (PeerId::random(), PeerId::random());
        let mut t = Timeline::default();
        t.push(at(t0, 0, "alice", started(a)));
        t.push(at(t0, 10, "bob", conn(c, Path::Direct, true)));
        let (segs, _) = segments(&t, "bob", "alice", t0, t0 + Duration::milliseconds(100));
        assert_eq!(
            segs,
            vec![Segment {
                from_ms: 0,
                to_ms: 100,
                held: Held::None
            }]
        );
    }

    #[test]
    fn ticks_stay_readable() {
        assert_eq!(tick_step(900), 100);
        assert_eq!(tick_step(10_000), 1_000);
        assert_eq!(tick_step(95_000), 10_000);
        assert_eq!(tick_step(3_600_000), 600_000);
    }

    fn acked(to: PeerId, rtt_ms: f64, path: Path) -> Event {
        Event::MessageAcked {
            to,
            id: 1,
            rtt_ms,
            path,
            family: None,
            attempts: 1,
        }
    }

    #[test]
    fn round_trips_are_the_pairs_acks_with_their_paths() {
        let t0 = Utc::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut t = Timeline::default();
        for (n, id) in [("a", a), ("b", b), ("c", c)] {
            t.push(at(t0, 0, n, started(id)));
        }
        t.push(at(t0, 900, "a", acked(b, 80.0, Path::Relayed)));
        t.push(at(t0, 500, "a", acked(b, 120.0, Path::Relayed)));
        t.push(at(t0, 1500, "a", acked(b, 0.4, Path::Direct)));
        t.push(at(t0, 1600, "a", acked(c, 1.0, Path::Direct)));
        t.push(at(t0, 1700, "b", acked(a, 1.0, Path::Direct)));
        t.push(at(t0, 1800, "a", acked(b, f64::NAN, Path::Direct)));
        let p = rtt_points(&t, "a", "b", t0);
        let got: Vec<(i64, f64, Path)> = p.iter().map(|p| (p.at_ms, p.rtt_ms, p.path)).collect();
        assert_eq!(
            got,
            vec![
                (500, 120.0, Path::Relayed),
                (900, 80.0, Path::Relayed),
                (1500, 0.4, Path::Direct)
            ]
        );
        assert_eq!(decades(p.iter().map(|p| p.rtt_ms)), (-1, 3));
        assert_eq!(decades([5.0].into_iter()), (0, 1));
        assert_eq!(decades(std::iter::empty()), (-1, 1));
        let svg = rtt_svg(
            &t,
            &[("a".into(), "b".into()), ("a".into(), "c".into())],
            &[],
            t0,
            t0 + Duration::seconds(2),
        );
        assert_eq!(
            svg.matches("<circle").count(),
            4 + 2,
            "three acks to b, one to c, two legend dots"
        );
        assert_eq!(svg.matches(r#"<g class="rtt-pair""#).count(), 2);
        assert!(svg.contains("0.4 ms") || svg.contains("0.400 ms"), "{svg}");
    }
}
