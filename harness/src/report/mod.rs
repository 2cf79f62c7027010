//! What a run leaves behind: the merged event log, the verdicts and figures as JSON, JUnit XML
//! for CI, a markdown summary and one self-contained HTML page. No Docker here.
//!
//! [`write`](fn@write) puts into a directory:
//! - `events.jsonl`: the merged timeline of the (last) run, in time order: every node event as
//!   the node wrote it, faults as `{"ts","node":"harness","event":"fault",...}` and other lines
//!   (routers, VPN ends) as `{"ts","node","event":"log","line"}`; with repeats also
//!   `events-<i>.jsonl` (from 1) per run.
//! - `results.json`: verdicts, pair figures, faults and times of the (last) run; with repeats
//!   also `runs` (each run), `run_ids` and `success_rate` per expectation with a Wilson 95%
//!   interval, and `ok` true only when every run passed.
//! - `junit.xml`: one testsuite per run, one testcase per expectation (failed faults and an
//!   abort are error testcases).
//! - `summary.md`: the same as tables.
//! - `index.html`: one static page (inline CSS, JS and SVG; no network), with the topology, the
//!   tables, the path each pair held over time (an SVG from `paths`), the timeline with a
//!   filter, and the data as embedded JSON.

pub mod graph;
mod html;
mod junit;
mod markdown;
mod paths;
mod results;

pub use junit::junit;
pub use markdown::{summary_md, summary_text};
pub use results::results_json;
// The formats share the helpers below, and the page names verdicts as the summary does.
use html::*;
use markdown::*;
use results::*;

use std::{
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde_json::{json, Value};

use crate::{
    engine::run::{FaultRecord, RunResult},
    judge::expect::{PairMetrics, Verdict},
    model::Role,
    plan::layout::Kind,
    report::graph::html_escape,
};

/// The pairs table's columns, as both the markdown summary and the page show them.
const PAIR_COLUMNS: [&str; 12] = [
    "pair",
    "discovered",
    "first relayed",
    "first direct",
    "relayed → direct",
    "hole punches ok/failed",
    "acked/sent",
    "acks by path and family",
    "lost",
    "duplicates",
    "RTT direct p50/p95",
    "RTT relayed p50/p95",
];

/// A pair's cells, unescaped, in [`PAIR_COLUMNS`] order.
fn pair_cells(p: &PairMetrics) -> [String; 12] {
    let d = &p.delivery;
    [
        format!("{} → {}", p.from, p.to),
        ms(p.discovered_ms),
        ms(p.first_relayed_ms),
        ms(p.first_direct_ms),
        ms(p.relayed_to_direct_ms),
        format!("{}/{}", p.hole_punch_ok, p.hole_punch_failed),
        format!("{}/{}", d.acked, d.sent),
        d.carried
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        d.lost.to_string(),
        d.duplicates_delivered.to_string(),
        rtt_pair(p.rtt_direct_p50_ms, p.rtt_direct_p95_ms),
        rtt_pair(p.rtt_relayed_p50_ms, p.rtt_relayed_p95_ms),
    ]
}

/// Rows of the HTML timeline at most (`events.jsonl` has them all).
pub const TIMELINE_CAP: usize = 5000;

/// Writes every report file of `results` (one run, or the runs of `--repeat`, in order) into
/// `dir`, creating it. Returns the paths written.
pub fn write(dir: &Path, results: &[RunResult]) -> io::Result<Vec<PathBuf>> {
    let Some(last) = results.last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no run to report",
        ));
    };
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str| -> io::Result<()> {
        let p = dir.join(name);
        fs::write(&p, text)?;
        written.push(p);
        Ok(())
    };
    if results.len() > 1 {
        for (i, r) in results.iter().enumerate() {
            put(&format!("events-{}.jsonl", i + 1), &events_jsonl(r))?;
        }
    }
    put("events.jsonl", &events_jsonl(last))?;
    let res = results_json(results);
    put(
        "results.json",
        &format!(
            "{}\n",
            serde_json::to_string_pretty(&res).map_err(io::Error::other)?
        ),
    )?;
    put("junit.xml", &junit(results)?)?;
    put("summary.md", &summary_md(results))?;
    put("index.html", &html(results, &res, TIMELINE_CAP))?;
    Ok(written)
}

// --------------------------------------------------------------------------------- helpers ---

fn rfc3339(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `+1.234 s` from t0.
fn offset(ts: DateTime<Utc>, t0: DateTime<Utc>) -> String {
    let ms = (ts - t0).num_milliseconds();
    let sign = if ms < 0 { "-" } else { "+" };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03} s", a / 1000, a % 1000)
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v} ms"))
}

fn rtt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.1}"))
}

fn rtt_pair(p50: Option<f64>, p95: Option<f64>) -> String {
    if p50.is_none() && p95.is_none() {
        "–".into()
    } else {
        format!("{} / {} ms", rtt(p50), rtt(p95))
    }
}

fn measured_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Object(o) if o.is_empty() => String::new(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        v => v.to_string(),
    }
}

fn route_out_text(r: &RunResult) -> String {
    format!("a route out of the lab in {}", r.route_out.join(", "))
}

fn suite_name(results: &[RunResult], i: usize) -> String {
    let name = &results[i].topology.name;
    if results.len() > 1 {
        format!("{name}#{}", i + 1)
    } else {
        name.clone()
    }
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Router => "router",
        Kind::VpnExit => "vpn_exit",
        Kind::Node(Role::Monitor) => "monitor",
        Kind::Node(Role::Listener) => "listener",
        Kind::Node(Role::Dialer) => "dialer",
    }
}

/// The Wilson score interval of `successes` out of `n` at 95% (z = 1.96): `(lo, hi)`; `(0, 1)`
/// when `n` is 0.
pub fn wilson(successes: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

// --------------------------------------------------------------------------- the timeline ---

/// One line of the merged timeline.
#[derive(Debug, Clone)]
struct Entry {
    ts: DateTime<Utc>,
    node: String,
    kind: String,
    /// The `events.jsonl` line.
    json: String,
    /// Key fields, for people (peer ids shown as node names).
    summary: String,
}

fn value_text(r: &RunResult, v: &Value) -> String {
    match v {
        Value::String(s) => r
            .timeline
            .name_of(&s.as_str())
            .map_or_else(|| s.clone(), |n| n.to_string()),
        Value::Array(a) => {
            let mut parts: Vec<String> = a.iter().take(3).map(|x| value_text(r, x)).collect();
            if a.len() > 3 {
                parts.push(format!("… {} more", a.len() - 3));
            }
            format!("[{}]", parts.join(", "))
        }
        v => v.to_string(),
    }
}

fn value_text_raw(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// A JSON object with its keys in this order (`ts`, `node`, `event` first, as the nodes write).
fn ordered_json(fields: &[(&str, Value)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&Value::String((*k).to_string()).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

/// Node events, faults and other lines of one run, in time order (ties keep arrival order).
fn merged(r: &RunResult) -> Vec<Entry> {
    let mut out: Vec<Entry> =
        Vec::with_capacity(r.timeline.events.len() + r.faults.len() + r.other.len());
    for l in &r.timeline.events {
        let summary = match serde_json::to_value(&l.event) {
            Ok(Value::Object(obj)) => obj
                .iter()
                .filter(|(k, _)| k.as_str() != "event")
                // a node's own id stays an id; the ids of others read as names
                .map(|(k, v)| {
                    if k == "peer_id" {
                        format!("{k}={}", value_text_raw(v))
                    } else {
                        format!("{k}={}", value_text(r, v))
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        out.push(Entry {
            ts: l.ts,
            node: l.node.clone(),
            kind: l.event.name().to_string(),
            json: l.to_json(),
            summary: truncate(&summary, 300),
        });
    }
    for f in &r.faults {
        let mut fields = vec![
            ("ts", json!(rfc3339(f.at))),
            ("node", json!("harness")),
            ("event", json!("fault")),
            ("action", json!(f.action)),
            ("ok", json!(f.ok)),
            ("t_ms", json!(f.t_ms)),
            ("line", json!(f.line)),
        ];
        if !f.error.is_empty() {
            fields.push(("error", json!(f.error)));
        }
        let summary = if f.ok {
            format!("{} (line {})", f.action, f.line)
        } else {
            format!("{} (line {}) FAILED: {}", f.action, f.line, f.error)
        };
        out.push(Entry {
            ts: f.at,
            node: "harness".into(),
            kind: "fault".into(),
            json: ordered_json(&fields),
            summary: truncate(&summary, 300),
        });
    }
    for (ts, node, line) in &r.other {
        let fields = [
            ("ts", json!(rfc3339(*ts))),
            ("node", json!(node)),
            ("event", json!("log")),
            ("line", json!(line)),
        ];
        out.push(Entry {
            ts: *ts,
            node: node.clone(),
            kind: "log".into(),
            json: ordered_json(&fields),
            summary: truncate(line, 300),
        });
    }
    // stable: events of one container keep their order
    out.sort_by_key(|e| e.ts);
    out
}

/// The `events.jsonl` text of one run.
pub fn events_jsonl(r: &RunResult) -> String {
    let mut s = String::new();
    for e in merged(r) {
        s.push_str(&e.json);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{
        judge::expect::{pair_metrics, Judge, Timeline},
        model::parse,
        plan::layout::layout,
    };
    use chrono::Duration as CD;
    use p2plab_contract::EventLine;
    use std::collections::BTreeMap;

    const TOPO: &str = r#"
name: rep
segments: { internet: {}, lan-a: { nat: home }, lan-b: { nat: strict } }
nodes:
  boot:  { role: monitor,  segment: internet }
  alice: { role: listener, segment: lan-a }
  bob:   { role: dialer,   segment: lan-b, count: 3 }
faults: [ { at: 2s, kill: boot } ]
expect:
  - { discovered: [bob, alice], within: 10s }
  - { direct: [bob, alice], within: 15s }
  - { delivered: { from: bob, to: alice, count: 3, lost: 0 } }
"#;

    const EVIL: &str = "</script><script>alert(1)</script>";

    struct B {
        t0: DateTime<Utc>,
        t: Timeline,
        ids: BTreeMap<&'static str, String>,
    }

    impl B {
        fn new() -> Self {
            let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc);
            let mut b = B {
                t0,
                t: Timeline::default(),
                ids: BTreeMap::new(),
            };
            for n in ["boot", "alice", "bob"] {
                let id = p2plab_contract::PeerId::random().to_string();
                b.ids.insert(n, id.clone());
                b.ev(
                    0,
                    n,
                    &format!(r#"{{"event":"started","peer_id":"{id}","role":"x","version":"0"}}"#),
                );
            }
            b
        }
        fn ev(&mut self, ms: i64, node: &str, json: &str) {
            let mut v: Value = serde_json::from_str(json).unwrap();
            v["ts"] = Value::String(rfc3339(self.t0 + CD::milliseconds(ms)));
            v["node"] = Value::String(node.into());
            self.t.push(EventLine::parse(&v.to_string()).unwrap());
        }
        fn id(&self, n: &str) -> String {
            self.ids[n].clone()
        }
    }

    /// A run where discovery and delivery hold and `direct` fails (strict NAT).
    fn run(acked: u64) -> RunResult {
        let topo = parse("t.yaml", TOPO).unwrap();
        let subnets = [
            ("internet", "198.18.0.0/24"),
            ("lan-a", "10.1.0.0/24"),
            ("lan-b", "10.2.0.0/24"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
        let lay = layout(&topo, &subnets).unwrap();
        let mut b = B::new();
        let (alice, bob) = (b.id("alice"), b.id("bob"));
        b.ev(
            800,
            "bob",
            &format!(
                r#"{{"event":"discovered","peer":"{alice}","namespace":"p2plab","addrs":[]}}"#
            ),
        );
        b.ev(1_000, "bob", &format!(r#"{{"event":"connected","peer":"{alice}","path":"relayed","remote_addr":"/ip4/1.2.3.4/tcp/1/p2p-circuit","direction":"outbound","connections":1}}"#));
        b.ev(
            1_500,
            "bob",
            &format!(r#"{{"event":"hole_punch","peer":"{alice}","ok":false,"error":"no route"}}"#),
        );
        for id in 1..=acked {
            let ms = 2_000 + id as i64 * 100;
            b.ev(
                ms,
                "bob",
                &format!(
                    r#"{{"event":"message_sent","to":"{alice}","id":{id},"size":64,"attempt":1}}"#
                ),
            );
            b.ev(ms + 40, "alice", &format!(r#"{{"event":"message_received","from":"{bob}","id":{id},"size":64,"path":"relayed","duplicate":false}}"#));
            b.ev(ms + 80, "bob", &format!(r#"{{"event":"message_acked","to":"{alice}","id":{id},"rtt_ms":{}.5,"path":"relayed","attempts":1}}"#, 70 + id));
        }
        b.ev(
            2_500,
            "bob",
            &format!(
                r#"{{"event":"error","context":"test","message":"{}"}}"#,
                EVIL.replace('"', "\\\"")
            ),
        );
        let end = b.t0 + CD::seconds(20);
        let verdicts = Judge::new(&topo).verdicts(&b.t, b.t0, end);
        let metrics = pair_metrics(&topo, &b.t);
        let faults = vec![
            FaultRecord {
                at: b.t0 + CD::milliseconds(2_000),
                t_ms: 2_000,
                action: "kill boot".into(),
                line: 8,
                ok: true,
                error: String::new(),
            },
            FaultRecord {
                at: b.t0 + CD::milliseconds(3_000),
                t_ms: 3_000,
                action: "start boot".into(),
                line: 8,
                ok: false,
                error: format!("boom {EVIL}"),
            },
        ];
        let other = vec![(
            b.t0 - CD::milliseconds(500),
            "router-lan-a".to_string(),
            "router_ready nat=home".to_string(),
        )];
        let mut stderr = BTreeMap::new();
        stderr.insert(
            "alice".to_string(),
            format!("WARN alice: hole punch failed\n{EVIL}\n"),
        );
        stderr.insert("boot".to_string(), "boot was killed\n".to_string());
        let ok = verdicts.iter().all(|v| v.held) && faults.iter().all(|f| f.ok);
        RunResult {
            topology: topo,
            run_id: format!("r{acked}"),
            layout: lay,
            ok,
            verdicts,
            metrics,
            faults,
            timeline: b.t,
            other,
            started_at: b.t0 - CD::seconds(5),
            t0: b.t0,
            bringup_ms: 5_000,
            run_ms: 20_000,
            teardown_ms: 700,
            aborted: None,
            stderr,
            route_out: Vec::new(),
            memory: BTreeMap::new(),
            placement: BTreeMap::new(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("p2plab-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn wilson_interval() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-3;
        let (lo, hi) = wilson(10, 10);
        assert!(close(lo, 0.722) && close(hi, 1.0), "{lo} {hi}");
        let (lo, hi) = wilson(0, 10);
        assert!(close(lo, 0.0) && close(hi, 0.278), "{lo} {hi}");
        let (lo, hi) = wilson(5, 10);
        assert!(close(lo, 0.237) && close(hi, 0.763), "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, hi) = wilson(1, 1);
        assert!(lo > 0.2 && lo < 0.21 && close(hi, 1.0), "{lo}");
    }

    #[test]
    fn the_hand_made_run_judges_as_expected() {
        let r = run(3);
        let held: Vec<bool> = r.verdicts.iter().map(|v| v.held).collect();
        assert_eq!(held, vec![true, false, true], "{:?}", r.verdicts);
        assert!(!r.ok);
    }

    #[test]
    fn writes_every_file() {
        let dir = tmp("one");
        let r = run(3);
        let files = write(&dir, std::slice::from_ref(&r)).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "events.jsonl",
                "results.json",
                "junit.xml",
                "summary.md",
                "index.html"
            ]
        );
        for f in &files {
            assert!(f.is_file(), "{}", f.display());
        }

        // results.json
        let res: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(res["name"], "rep");
        assert_eq!(res["run_id"], "r3");
        assert_eq!(res["ok"], false);
        let ex = res["expectations"].as_array().unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0]["held"], true);
        assert_eq!(ex[0]["after_ms"], 800);
        assert_eq!(ex[0]["within_ms"], 10_000);
        assert_eq!(ex[1]["held"], false);
        assert!(
            ex[1]["detail"].as_str().unwrap().contains("not"),
            "{}",
            ex[1]
        );
        let p = &res["pairs"][0];
        assert_eq!(
            (p["from"].as_str(), p["to"].as_str()),
            (Some("bob"), Some("alice"))
        );
        assert_eq!(p["delivery"]["acked"], 3);
        assert_eq!(p["delivery"]["relayed"], 3);
        assert_eq!(p["delivery"]["duplicates"], 0);
        assert_eq!(p["hole_punch_failed"], 1);
        assert_eq!(p["discovered_ms"], 800);
        assert_eq!(p["rtt_ms"]["relayed_p50"], 72.5);
        assert!(p["rtt_ms"]["direct_p50"].is_null());
        assert_eq!(res["faults"].as_array().unwrap().len(), 2);
        assert_eq!(res["faults"][1]["ok"], false);
        assert!(res["aborted"].is_null());
        assert!(res.get("runs").is_none() && res.get("success_rate").is_none());
        assert_eq!(res["containers"].as_array().unwrap().len(), 5);

        // junit.xml
        let j = fs::read_to_string(dir.join("junit.xml")).unwrap();
        assert!(j.contains("<testsuite name=\"rep\""), "{j}");
        assert_eq!(
            j.matches("<testcase ").count(),
            4,
            "3 expectations and the failed fault: {j}"
        );
        assert_eq!(j.matches("<failure").count(), 1, "{j}");
        assert!(j.contains("classname=\"rep\""), "{j}");
        assert!(
            j.contains("WARN alice: hole punch failed"),
            "alice's stderr on the failed check: {j}"
        );
        assert!(
            !j.contains("boot was killed"),
            "boot is not named by the failed check: {j}"
        );
        assert!(!j.contains("<script>"), "escaped in XML: {j}");
        assert!(j.contains("<error"), "{j}");

        // summary.md
        let m = fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(m.starts_with("# p2plab: rep — ✘ FAIL"), "{m}");
        assert!(
            m.contains("| ✔ | discovered bob → alice | 10 | 800 ms | 10000 ms |"),
            "{m}"
        );
        assert!(m.contains("| ✘ | direct bob ↔ alice |"), "{m}");
        assert!(m.contains("| bob → alice | 800 ms | 1000 ms | – | – | 0/1 | 3/3 | relayed: 3 | 0 | 0 | – | 72.5 / 73.5 ms |"), "{m}");
        assert!(m.contains("| +2.000 s |"), "{m}");
        assert!(
            m.contains("✘ boom &lt;/script&gt;"),
            "no raw HTML in markdown: {m}"
        );

        // index.html
        let h = fs::read_to_string(dir.join("index.html")).unwrap();
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no network"
        );
        assert!(
            !h.contains("<link") && !h.contains(" src="),
            "nothing external"
        );
        assert!(h.contains("<svg class=\"topo\""));
        assert!(
            h.contains("<svg class=\"paths\"") && h.contains("<h2>Paths over time</h2>"),
            "the pairs' paths pictured"
        );
        assert!(h.contains("<script type=\"application/json\" id=\"p2plab-data\">"));
        assert!(
            h.contains("<table id=\"expectations\">")
                && h.contains("<table id=\"pairs\">")
                && h.contains("<table id=\"timeline\">")
        );
        assert!(
            h.contains("<tr class=\"fail\"><td>✘</td><td>direct bob ↔ alice</td>"),
            "{h}"
        );
        // the injection stays text: two real </script> (the data, the code), everything else escaped
        assert_eq!(h.matches("</script>").count(), 2, "{h}");
        assert!(
            h.contains("&lt;/script&gt;&lt;script&gt;alert(1)"),
            "escaped in the timeline"
        );
        assert!(
            h.contains(r"<\/script><script>alert(1)<\/script>"),
            "escaped in the JSON"
        );
        let start = h.find("id=\"p2plab-data\">").unwrap() + "id=\"p2plab-data\">".len();
        let end = start + h[start..].find("</script>").unwrap();
        assert!(
            !h[..start].contains("<script>alert") && !h[end..].contains("<script>alert"),
            "nothing outside the data"
        );
        // the embedded JSON is results.json
        let embedded: Value = serde_json::from_str(&h[start..end]).unwrap();
        assert_eq!(embedded, res);
        // the timeline shows node names, not peer ids
        assert!(h.contains("peer=alice"), "{h}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn events_are_merged_in_time_order() {
        let r = run(2);
        let text = events_jsonl(&r);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            r.timeline.events.len() + r.faults.len() + r.other.len()
        );
        let ts: Vec<&str> = lines.iter().map(|l| l["ts"].as_str().unwrap()).collect();
        let mut sorted = ts.clone();
        sorted.sort();
        assert_eq!(ts, sorted);
        assert_eq!(lines[0]["event"], "log");
        assert_eq!(lines[0]["node"], "router-lan-a");
        assert_eq!(lines[0]["line"], "router_ready nat=home");
        for l in text.lines() {
            assert!(
                l.starts_with("{\"ts\":\""),
                "ts first, as the nodes write: {l}"
            );
        }
        let f: Vec<&Value> = lines.iter().filter(|l| l["event"] == "fault").collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0]["node"], "harness");
        assert_eq!(f[0]["action"], "kill boot");
        assert_eq!(f[0]["ok"], true);
        assert!(f[0].get("error").is_none());
        assert_eq!(f[1]["ok"], false);
        assert!(f[1]["error"].as_str().unwrap().starts_with("boom"));
        // node lines are the nodes' own, and read back as such
        let n = text.lines().filter(|l| EventLine::parse(l).is_ok()).count();
        assert_eq!(n, r.timeline.events.len());
    }

    #[test]
    fn repeats_write_per_run_logs_and_success_rates() {
        let dir = tmp("repeat");
        let runs = vec![run(3), run(3), run(2)];
        let files = write(&dir, &runs).unwrap();
        for i in 1..=3 {
            assert!(files.contains(&dir.join(format!("events-{i}.jsonl"))));
        }
        assert_eq!(
            fs::read_to_string(dir.join("events.jsonl")).unwrap(),
            fs::read_to_string(dir.join("events-3.jsonl")).unwrap()
        );
        let res: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(res["runs"].as_array().unwrap().len(), 3);
        assert_eq!(res["run_ids"], json!(["r3", "r3", "r2"]));
        assert_eq!(res["run_id"], "r2", "the top level is the last run");
        let sr = &res["success_rate"];
        let d = &sr["discovered bob → alice"];
        assert_eq!(
            (d["held"].as_u64(), d["runs"].as_u64(), d["rate"].as_f64()),
            (Some(3), Some(3), Some(1.0))
        );
        let dl = &sr["delivered bob → alice: 3 (lost ≤ 0, duplicates ≤ 0)"];
        assert_eq!(dl["held"], 2, "{sr}");
        let ci = dl["ci95"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() < 0.667 && ci[1].as_f64().unwrap() > 0.667);
        assert_eq!(sr["direct bob ↔ alice"]["held"], 0);
        let j = fs::read_to_string(dir.join("junit.xml")).unwrap();
        for i in 1..=3 {
            assert!(j.contains(&format!("<testsuite name=\"rep#{i}\"")), "{j}");
        }
        let m = fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(m.contains("0 of 3 runs passed"), "{m}");
        assert!(m.contains("## Success rates (3 runs)"), "{m}");
        assert!(
            m.contains("| delivered bob → alice: 3 (lost ≤ 0, duplicates ≤ 0) | 2 | 3 | 66.7% |"),
            "{m}"
        );
        let h = fs::read_to_string(dir.join("index.html")).unwrap();
        assert!(h.contains("Success rates (3 runs)"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn summary_text_has_a_line_per_expectation() {
        let r = run(3);
        let s = summary_text(&r);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "✔ discovered bob → alice (after 800 ms)");
        assert!(lines[1].starts_with("✘ direct bob ↔ alice: "), "{s}");
        assert!(lines[2].starts_with("✔ delivered bob → alice"), "{s}");
        assert!(
            lines[3].starts_with("✘ fault start boot (line 8): boom"),
            "{s}"
        );
        assert!(
            lines[4].starts_with("FAIL rep: 2/3 expectations held (run r3;"),
            "{s}"
        );
        assert_eq!(lines.len(), 5);
        let mut ok = run(3);
        ok.verdicts.retain(|v| v.held);
        ok.faults.retain(|f| f.ok);
        ok.ok = true;
        assert!(summary_text(&ok)
            .lines()
            .last()
            .unwrap()
            .starts_with("PASS rep: 2/2"));
        ok.route_out = vec!["alice".into()];
        ok.ok = false;
        let s = summary_text(&ok);
        assert!(
            s.contains("✘ isolation: a route out of the lab in alice\nFAIL rep"),
            "{s}"
        );
        let j = junit(std::slice::from_ref(&ok)).unwrap();
        assert!(j.contains("<testcase name=\"isolation\""), "{j}");
        assert_eq!(
            results_json(std::slice::from_ref(&ok))["route_out"],
            json!(["alice"])
        );
    }

    #[test]
    fn a_long_timeline_is_capped_with_a_note() {
        let r = run(3);
        let res = results_json(std::slice::from_ref(&r));
        let h = html(std::slice::from_ref(&r), &res, 4);
        let body = &h[h.find("<table id=\"timeline\">").unwrap()..];
        assert_eq!(body.matches("<tr class=\"k-").count(), 4);
        assert!(h.contains("Showing the first 4 of"), "{h}");
        let full = html(std::slice::from_ref(&r), &res, TIMELINE_CAP);
        assert!(!full.contains("Showing the first"));
    }

    #[test]
    fn script_json_cannot_close_its_tag() {
        let v = json!({ "a": "</script><!-- x" });
        let s = script_json(&v);
        assert!(!s.contains("</") && !s.contains("<!--"), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn writing_nothing_is_an_error() {
        assert!(write(&tmp("none"), &[]).is_err());
    }
}
