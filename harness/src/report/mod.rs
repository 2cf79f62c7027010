//! What a run leaves behind: the merged event log, the verdicts and figures as JSON, JUnit XML
//! for CI, a markdown summary and one self-contained HTML page. No Docker here.
//!
//! [`write`] puts into a directory:
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
mod paths;

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
    judge::expect::{PairMetrics, Verdict},
    report::graph::html_escape,
    plan::layout::Kind,
    engine::run::{FaultRecord, RunResult},
    model::Role,
};

/// Rows of the HTML timeline at most (`events.jsonl` has them all).
pub const TIMELINE_CAP: usize = 5000;

/// Writes every report file of `results` (one run, or the runs of `--repeat`, in order) into
/// `dir`, creating it. Returns the paths written.
pub fn write(dir: &Path, results: &[RunResult]) -> io::Result<Vec<PathBuf>> {
    let Some(last) = results.last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no run to report"));
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
    put("results.json", &format!("{}\n", serde_json::to_string_pretty(&res).map_err(io::Error::other)?))?;
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
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
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
        Value::String(s) => r.timeline.name_of(&s.as_str()).map_or_else(|| s.clone(), |n| n.to_string()),
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
    let mut out: Vec<Entry> = Vec::with_capacity(r.timeline.events.len() + r.faults.len() + r.other.len());
    for l in &r.timeline.events {
        let summary = match serde_json::to_value(&l.event) {
            Ok(Value::Object(obj)) => obj
                .iter()
                .filter(|(k, _)| k.as_str() != "event")
                // a node's own id stays an id; the ids of others read as names
                .map(|(k, v)| if k == "peer_id" { format!("{k}={}", value_text_raw(v)) } else { format!("{k}={}", value_text(r, v)) })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        out.push(Entry { ts: l.ts, node: l.node.clone(), kind: l.event.name().to_string(), json: l.to_json(), summary: truncate(&summary, 300) });
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
        let summary = if f.ok { format!("{} (line {})", f.action, f.line) } else { format!("{} (line {}) FAILED: {}", f.action, f.line, f.error) };
        out.push(Entry { ts: f.at, node: "harness".into(), kind: "fault".into(), json: ordered_json(&fields), summary: truncate(&summary, 300) });
    }
    for (ts, node, line) in &r.other {
        let fields = [("ts", json!(rfc3339(*ts))), ("node", json!(node)), ("event", json!("log")), ("line", json!(line))];
        out.push(Entry { ts: *ts, node: node.clone(), kind: "log".into(), json: ordered_json(&fields), summary: truncate(line, 300) });
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

// ---------------------------------------------------------------------------- results.json ---

fn verdict_json(v: &Verdict) -> Value {
    json!({
        "name": v.name, "line": v.line, "held": v.held, "after_ms": v.after_ms,
        "within_ms": v.within_ms, "measured": v.measured, "detail": v.detail,
    })
}

fn pair_json(p: &PairMetrics) -> Value {
    let d = &p.delivery;
    json!({
        "from": p.from, "to": p.to,
        "discovered_ms": p.discovered_ms, "first_relayed_ms": p.first_relayed_ms,
        "first_direct_ms": p.first_direct_ms, "relayed_to_direct_ms": p.relayed_to_direct_ms,
        "hole_punch_ok": p.hole_punch_ok, "hole_punch_failed": p.hole_punch_failed,
        "delivery": {
            "sent": d.sent, "acked": d.acked, "lost": d.lost, "duplicates": d.duplicates_delivered,
            "duplicates_recognised": d.duplicates_recognised, "direct": d.direct, "relayed": d.relayed,
            "first_ack": d.first_ack.map(rfc3339), "last_ack": d.last_ack.map(rfc3339),
        },
        "rtt_ms": {
            "direct_p50": p.rtt_direct_p50_ms, "direct_p95": p.rtt_direct_p95_ms,
            "relayed_p50": p.rtt_relayed_p50_ms, "relayed_p95": p.rtt_relayed_p95_ms,
        },
    })
}

fn fault_json(f: &FaultRecord) -> Value {
    json!({ "at": rfc3339(f.at), "t_ms": f.t_ms, "action": f.action, "line": f.line, "ok": f.ok, "error": f.error })
}

fn run_json(r: &RunResult) -> Value {
    let containers: Vec<Value> = r
        .layout
        .containers
        .iter()
        .map(|c| {
            let addrs: Vec<Value> = c.attach.iter().map(|(s, ip)| json!({ "segment": s, "ip": ip.to_string() })).collect();
            json!({ "name": c.name, "kind": kind_str(c.kind), "addrs": addrs })
        })
        .collect();
    json!({
        "name": r.topology.name,
        "description": r.topology.description,
        "run_id": r.run_id,
        "ok": r.ok,
        "started_at": rfc3339(r.started_at),
        "t0": rfc3339(r.t0),
        "bringup_ms": r.bringup_ms,
        "run_ms": r.run_ms,
        "teardown_ms": r.teardown_ms,
        "expectations": r.verdicts.iter().map(verdict_json).collect::<Vec<_>>(),
        "pairs": r.metrics.iter().map(pair_json).collect::<Vec<_>>(),
        "faults": r.faults.iter().map(fault_json).collect::<Vec<_>>(),
        "aborted": r.aborted,
        "events": r.timeline.events.len(),
        "containers": containers,
        "stderr": r.stderr,
        "route_out": r.route_out,
    })
}

/// Per expectation name, in file order: (name, held, runs).
fn rates(results: &[RunResult]) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for r in results {
        for v in &r.verdicts {
            match out.iter_mut().find(|e| e.0 == v.name) {
                Some(e) => {
                    e.1 += u64::from(v.held);
                    e.2 += 1;
                }
                None => out.push((v.name.clone(), u64::from(v.held), 1)),
            }
        }
    }
    out
}

/// The `results.json` value of one run, or of the runs of `--repeat`.
pub fn results_json(results: &[RunResult]) -> Value {
    let Some(last) = results.last() else { return Value::Null };
    let mut top = run_json(last);
    if results.len() > 1 {
        top["ok"] = Value::Bool(results.iter().all(|r| r.ok));
        top["run_ids"] = json!(results.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>());
        top["runs"] = Value::Array(results.iter().map(run_json).collect());
        let mut sr = serde_json::Map::new();
        for (name, held, runs) in rates(results) {
            let (lo, hi) = wilson(held, runs);
            sr.insert(name, json!({ "held": held, "runs": runs, "rate": round4(held as f64 / runs as f64), "ci95": [round4(lo), round4(hi)] }));
        }
        top["success_rate"] = Value::Object(sr);
    }
    top
}

// ------------------------------------------------------------------------------- junit.xml ---

/// The stderr tails of the nodes an expectation names (every node when it names none).
fn stderr_for(r: &RunResult, i: usize, v: &Verdict) -> String {
    let nodes: Vec<String> = r
        .topology
        .expect
        .get(i)
        .filter(|e| e.name == v.name)
        .or_else(|| r.topology.expect.iter().find(|e| e.name == v.name))
        .map(|e| e.check.nodes().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut s = String::new();
    for (node, tail) in &r.stderr {
        if (nodes.is_empty() || nodes.contains(node)) && !tail.trim().is_empty() {
            let _ = writeln!(s, "--- {node} stderr ---\n{}", tail.trim_end());
        }
    }
    s
}

/// The `junit.xml` text: one testsuite per run.
pub fn junit(results: &[RunResult]) -> io::Result<String> {
    let mut report = Report::new("p2plab");
    for (i, r) in results.iter().enumerate() {
        let name = &r.topology.name;
        let mut suite = TestSuite::new(suite_name(results, i));
        suite.set_timestamp(r.started_at);
        suite.set_time(Duration::from_millis(r.bringup_ms + r.run_ms + r.teardown_ms));
        suite.add_property(Property::new("run_id", r.run_id.as_str()));
        suite.add_property(Property::new("ok", r.ok.to_string()));
        for (k, v) in r.verdicts.iter().enumerate() {
            let status = if v.held {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(v.detail.as_str());
                s.set_type("expectation");
                let mut desc = format!("{} (line {}): {}", v.name, v.line, v.detail);
                if let Some(w) = v.within_ms {
                    let _ = write!(desc, "\nwithin {w} ms");
                }
                let m = measured_text(&v.measured);
                if !m.is_empty() {
                    let _ = write!(desc, "\nmeasured: {m}");
                }
                s.set_description(desc);
                s
            };
            let mut tc = TestCase::new(v.name.as_str(), status);
            tc.set_classname(name.as_str());
            if let Some(a) = v.after_ms.filter(|a| *a >= 0) {
                tc.set_time(Duration::from_millis(a as u64));
            }
            if !v.held {
                let err = stderr_for(r, k, v);
                if !err.is_empty() {
                    tc.set_system_err(err);
                }
            }
            suite.add_test_case(tc);
        }
        for f in r.faults.iter().filter(|f| !f.ok) {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(f.error.as_str());
            s.set_type("fault");
            let mut tc = TestCase::new(format!("fault: {} (line {})", f.action, f.line), s);
            tc.set_classname(name.as_str());
            suite.add_test_case(tc);
        }
        if !r.route_out.is_empty() {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(route_out_text(r));
            s.set_type("isolation");
            let mut tc = TestCase::new("isolation", s);
            tc.set_classname(name.as_str());
            suite.add_test_case(tc);
        }
        if let Some(a) = &r.aborted {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(a.as_str());
            s.set_type("aborted");
            let mut tc = TestCase::new("run", s);
            tc.set_classname(name.as_str());
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(io::Error::other)
}

// ------------------------------------------------------------------------------ summary.md ---

/// A markdown table cell: no line breaks, `|` escaped, no raw HTML.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✘"
    }
}

fn verdict_word(r: &RunResult) -> &'static str {
    if r.aborted.is_some() {
        "ABORTED"
    } else if r.ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The `summary.md` text.
pub fn summary_md(results: &[RunResult]) -> String {
    let Some(r) = results.last() else { return String::new() };
    let mut s = String::new();
    let all_ok = results.iter().all(|r| r.ok);
    let head = if results.len() > 1 {
        format!("{} of {} runs passed", results.iter().filter(|r| r.ok).count(), results.len())
    } else {
        verdict_word(r).to_string()
    };
    let _ = writeln!(s, "# p2plab: {} — {} {head}\n", md(&r.topology.name), mark(all_ok));
    if let Some(d) = &r.topology.description {
        let _ = writeln!(s, "{}\n", md(d));
    }
    if results.len() > 1 {
        let _ = writeln!(s, "The tables below are of the last run ({} of {}).\n", results.len(), results.len());
    }
    let _ = writeln!(
        s,
        "Run `{}` started {}: bring-up {} ms, run {} ms, teardown {} ms.\n",
        md(&r.run_id),
        rfc3339(r.started_at),
        r.bringup_ms,
        r.run_ms,
        r.teardown_ms
    );
    if let Some(a) = &r.aborted {
        let _ = writeln!(s, "**Aborted:** {}\n", md(a));
    }
    if !r.route_out.is_empty() {
        let _ = writeln!(s, "**Isolation broken:** {}\n", md(&route_out_text(r)));
    }
    let _ = writeln!(s, "## Expectations\n");
    if r.verdicts.is_empty() {
        let _ = writeln!(s, "None.\n");
    } else {
        let _ = writeln!(s, "| | expectation | line | after | within | measured | detail |\n|---|---|---|---|---|---|---|");
        for v in &r.verdicts {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                mark(v.held),
                md(&v.name),
                v.line,
                ms(v.after_ms),
                ms(v.within_ms.map(|w| w as i64)),
                md(&measured_text(&v.measured)),
                md(&v.detail)
            );
        }
        s.push('\n');
    }
    if !r.metrics.is_empty() {
        let _ = writeln!(s, "## Pairs\n");
        let _ = writeln!(s, "Times from the later of the two nodes' start.\n");
        let _ = writeln!(
            s,
            "| pair | discovered | first relayed | first direct | relayed → direct | hole punches ok/failed | acked/sent | lost | duplicates | RTT direct p50/p95 | RTT relayed p50/p95 |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for p in &r.metrics {
            let d = &p.delivery;
            let _ = writeln!(
                s,
                "| {} → {} | {} | {} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {} |",
                md(&p.from),
                md(&p.to),
                ms(p.discovered_ms),
                ms(p.first_relayed_ms),
                ms(p.first_direct_ms),
                ms(p.relayed_to_direct_ms),
                p.hole_punch_ok,
                p.hole_punch_failed,
                d.acked,
                d.sent,
                d.lost,
                d.duplicates_delivered,
                rtt_pair(p.rtt_direct_p50_ms, p.rtt_direct_p95_ms),
                rtt_pair(p.rtt_relayed_p50_ms, p.rtt_relayed_p95_ms)
            );
        }
        s.push('\n');
    }
    if !r.faults.is_empty() {
        let _ = writeln!(s, "## Faults\n\n| t | at | action | line | result |\n|---|---|---|---|---|");
        for f in &r.faults {
            let res = if f.ok { "✔ applied".to_string() } else { format!("✘ {}", md(&f.error)) };
            let _ = writeln!(s, "| {} | {} | {} | {} | {res} |", offset(f.at, r.t0), rfc3339(f.at), md(&f.action), f.line);
        }
        s.push('\n');
    }
    if results.len() > 1 {
        let _ = writeln!(s, "## Success rates ({} runs)\n\n| expectation | held | runs | rate | 95% CI (Wilson) |\n|---|---|---|---|---|", results.len());
        for (name, held, runs) in rates(results) {
            let (lo, hi) = wilson(held, runs);
            let _ = writeln!(s, "| {} | {held} | {runs} | {:.1}% | {:.1}% – {:.1}% |", md(&name), 100.0 * held as f64 / runs as f64, 100.0 * lo, 100.0 * hi);
        }
        let _ = writeln!(s, "\n## Runs\n\n| # | run | result | expectations held | bring-up | run | teardown |\n|---|---|---|---|---|---|---|");
        for (i, x) in results.iter().enumerate() {
            let held = x.verdicts.iter().filter(|v| v.held).count();
            let _ = writeln!(
                s,
                "| {} | `{}` | {} {} | {held}/{} | {} ms | {} ms | {} ms |",
                i + 1,
                md(&x.run_id),
                mark(x.ok),
                verdict_word(x),
                x.verdicts.len(),
                x.bringup_ms,
                x.run_ms,
                x.teardown_ms
            );
        }
        s.push('\n');
    }
    s
}

/// A short verdict block for the terminal: one line per expectation, then the result.
pub fn summary_text(r: &RunResult) -> String {
    let mut s = String::new();
    for v in &r.verdicts {
        if v.held {
            match v.after_ms {
                Some(a) => {
                    let _ = writeln!(s, "✔ {} (after {a} ms)", v.name);
                }
                None => {
                    let _ = writeln!(s, "✔ {}", v.name);
                }
            }
        } else {
            let _ = writeln!(s, "✘ {}: {}", v.name, v.detail);
        }
    }
    for f in r.faults.iter().filter(|f| !f.ok) {
        let _ = writeln!(s, "✘ fault {} (line {}): {}", f.action, f.line, f.error);
    }
    if !r.route_out.is_empty() {
        let _ = writeln!(s, "✘ isolation: {}", route_out_text(r));
    }
    let held = r.verdicts.iter().filter(|v| v.held).count();
    let mut last = format!(
        "{} {}: {held}/{} expectations held (run {}; bring-up {} ms, run {} ms, teardown {} ms)",
        verdict_word(r),
        r.topology.name,
        r.verdicts.len(),
        r.run_id,
        r.bringup_ms,
        r.run_ms,
        r.teardown_ms
    );
    if let Some(a) = &r.aborted {
        let _ = write!(last, ": {a}");
    }
    s.push_str(&last);
    s.push('\n');
    s
}

// ------------------------------------------------------------------------------ index.html ---

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1em 2em;max-width:1400px;color:#222;background:#fff}
h1{font-size:1.5em;margin:.3em 0}h2{font-size:1.15em;margin:1.4em 0 .5em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.88em;margin:.3em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
tr.pass td{background:#eef9ee}tr.fail td{background:#fdecec}
.badge{display:inline-block;padding:.1em .6em;border-radius:.3em;color:#fff;font-size:.8em;vertical-align:middle}
.badge.pass{background:#2e8b3d}.badge.fail{background:#c0392b}.badge.aborted{background:#b9770e}
.meta{color:#555}.graph{overflow:auto;border:1px solid #eee;padding:.5em}
#timeline td:nth-child(1){white-space:nowrap;text-align:right;font-variant-numeric:tabular-nums}
#timeline td:nth-child(4){font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
tr.k-fault td{background:#fff4d6}tr.k-error td,tr.k-connection_error td{background:#fdecec}tr.k-log td{color:#666}
.filters{margin:.4em 0}.filters input{width:22em}.filters select,.filters input{padding:.2em;margin-right:.5em}
pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:.85em}.note{color:#a15c00}
"#;

const JS: &str = r#"
(function(){
  var data=null;try{data=JSON.parse(document.getElementById('p2plab-data').textContent);}catch(e){}
  window.p2plab=data;
  var text=document.getElementById('f-text'),node=document.getElementById('f-node'),kind=document.getElementById('f-kind');
  var count=document.getElementById('f-count'),rows=document.querySelectorAll('#timeline tbody tr');
  function apply(){
    var terms=text.value.toLowerCase().split(/\s+/).filter(function(t){return t.length>0;});
    var n=node.value,k=kind.value,shown=0;
    for(var i=0;i<rows.length;i++){
      var r=rows[i],ok=(!n||r.getAttribute('data-node')===n)&&(!k||r.getAttribute('data-kind')===k);
      if(ok&&terms.length){var hay=r.textContent.toLowerCase();ok=terms.every(function(t){return hay.indexOf(t)>=0;});}
      r.style.display=ok?'':'none';if(ok)shown++;
    }
    count.textContent=shown+' of '+rows.length+' rows';
  }
  text.addEventListener('input',apply);node.addEventListener('change',apply);kind.addEventListener('change',apply);apply();
})();
"#;

/// JSON for a `<script type="application/json">`: nothing in it can close the tag or open a
/// comment.
fn script_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into()).replace("</", "<\\/").replace("<!--", "\\u003c!--")
}

fn badge(r: &RunResult) -> String {
    let w = verdict_word(r);
    format!(r#"<span class="badge {}">{w}</span>"#, w.to_ascii_lowercase())
}

fn html(results: &[RunResult], data: &Value, cap: usize) -> String {
    let Some(r) = results.last() else { return String::new() };
    let e = html_escape;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>p2plab: {} — {}</title>
<style>{CSS}</style></head><body>
"#,
        e(&r.topology.name),
        verdict_word(r)
    );
    let _ = writeln!(s, "<header><h1>{} {}</h1>", e(&r.topology.name), badge(r));
    if let Some(d) = &r.topology.description {
        let _ = writeln!(s, "<p>{}</p>", e(d));
    }
    if results.len() > 1 {
        let passed = results.iter().filter(|x| x.ok).count();
        let _ = writeln!(s, "<p><b>{passed} of {} runs passed.</b> The tables show the last run.</p>", results.len());
    }
    let _ = writeln!(
        s,
        "<p class=\"meta\">run <code>{}</code> · started {} · bring-up {} ms · run {} ms · teardown {} ms · {} events</p>",
        e(&r.run_id),
        e(&rfc3339(r.started_at)),
        r.bringup_ms,
        r.run_ms,
        r.teardown_ms,
        r.timeline.events.len()
    );
    if let Some(a) = &r.aborted {
        let _ = writeln!(s, "<p class=\"note\">Aborted: {}</p>", e(a));
    }
    if !r.route_out.is_empty() {
        let _ = writeln!(s, "<p class=\"note\">Isolation broken: {}</p>", e(&route_out_text(r)));
    }
    s.push_str("</header>\n");

    let _ = writeln!(s, "<section><h2>Topology</h2><div class=\"graph\">{}</div></section>", graph::svg(&r.topology, Some(&r.layout)));

    // expectations
    s.push_str("<section><h2>Expectations</h2>\n");
    if r.verdicts.is_empty() {
        s.push_str("<p>None.</p>\n");
    } else {
        s.push_str("<table id=\"expectations\"><thead><tr><th></th><th>expectation</th><th>line</th><th>after</th><th>within</th><th>measured</th><th>detail</th></tr></thead><tbody>\n");
        for v in &r.verdicts {
            let _ = writeln!(
                s,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                if v.held { "pass" } else { "fail" },
                mark(v.held),
                e(&v.name),
                v.line,
                e(&ms(v.after_ms)),
                e(&ms(v.within_ms.map(|w| w as i64))),
                e(&measured_text(&v.measured)),
                e(&v.detail)
            );
        }
        s.push_str("</tbody></table>\n");
    }
    s.push_str("</section>\n");

    // success rates
    if results.len() > 1 {
        let _ = writeln!(s, "<section><h2>Success rates ({} runs)</h2>", results.len());
        s.push_str("<table><thead><tr><th>expectation</th><th>held</th><th>runs</th><th>rate</th><th>95% CI (Wilson)</th></tr></thead><tbody>\n");
        for (name, held, runs) in rates(results) {
            let (lo, hi) = wilson(held, runs);
            let _ = writeln!(
                s,
                "<tr class=\"{}\"><td>{}</td><td class=\"num\">{held}</td><td class=\"num\">{runs}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{:.1}% – {:.1}%</td></tr>",
                if held == runs { "pass" } else { "fail" },
                e(&name),
                100.0 * held as f64 / runs as f64,
                100.0 * lo,
                100.0 * hi
            );
        }
        s.push_str("</tbody></table>\n<table><thead><tr><th>#</th><th>run</th><th>result</th><th>held</th><th>bring-up</th><th>run</th><th>teardown</th></tr></thead><tbody>\n");
        for (i, x) in results.iter().enumerate() {
            let _ = writeln!(
                s,
                "<tr class=\"{}\"><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{} ms</td><td class=\"num\">{} ms</td><td class=\"num\">{} ms</td></tr>",
                if x.ok { "pass" } else { "fail" },
                i + 1,
                e(&x.run_id),
                verdict_word(x),
                x.verdicts.iter().filter(|v| v.held).count(),
                x.verdicts.len(),
                x.bringup_ms,
                x.run_ms,
                x.teardown_ms
            );
        }
        s.push_str("</tbody></table></section>\n");
    }

    // pairs
    if !r.metrics.is_empty() {
        s.push_str("<section><h2>Pairs</h2><p class=\"meta\">Times from the later of the two nodes' start.</p>\n");
        s.push_str("<table id=\"pairs\"><thead><tr><th>pair</th><th>discovered</th><th>first relayed</th><th>first direct</th><th>relayed → direct</th><th>hole punches ok/failed</th><th>acked/sent</th><th>lost</th><th>duplicates</th><th>RTT direct p50/p95</th><th>RTT relayed p50/p95</th></tr></thead><tbody>\n");
        for p in &r.metrics {
            let d = &p.delivery;
            let bad = d.lost > 0 || d.duplicates_delivered > 0;
            let _ = writeln!(
                s,
                "<tr{}><td>{} → {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                if bad { " class=\"fail\"" } else { "" },
                e(&p.from),
                e(&p.to),
                e(&ms(p.discovered_ms)),
                e(&ms(p.first_relayed_ms)),
                e(&ms(p.first_direct_ms)),
                e(&ms(p.relayed_to_direct_ms)),
                p.hole_punch_ok,
                p.hole_punch_failed,
                d.acked,
                d.sent,
                d.lost,
                d.duplicates_delivered,
                e(&rtt_pair(p.rtt_direct_p50_ms, p.rtt_direct_p95_ms)),
                e(&rtt_pair(p.rtt_relayed_p50_ms, p.rtt_relayed_p95_ms))
            );
        }
        s.push_str("</tbody></table></section>\n");

        // the same pairs as a picture: which path each held, over time
        let pairs: Vec<(String, String)> = r.metrics.iter().map(|p| (p.from.clone(), p.to.clone())).collect();
        let end = r.timeline.events.iter().map(|l| l.ts).chain(r.faults.iter().map(|f| f.at)).max().unwrap_or(r.t0);
        let _ = writeln!(
            s,
            "<section><h2>Paths over time</h2><p class=\"meta\">What each sender held to its peer, from t0 ({}): a direct connection, relayed ones only, or none; hole punches and faults marked.</p><div class=\"graph\">{}</div></section>",
            e(&rfc3339(r.t0)),
            crate::report::paths::svg(&r.timeline, &pairs, &r.faults, r.t0, end.max(r.t0))
        );
    }

    // faults
    if !r.faults.is_empty() {
        s.push_str("<section><h2>Faults</h2><table id=\"faults\"><thead><tr><th>t</th><th>action</th><th>line</th><th>result</th></tr></thead><tbody>\n");
        for f in &r.faults {
            let res = if f.ok { "applied".to_string() } else { format!("failed: {}", f.error) };
            let _ = writeln!(
                s,
                "<tr class=\"{}\"><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                if f.ok { "pass" } else { "fail" },
                e(&offset(f.at, r.t0)),
                e(&f.action),
                f.line,
                e(&res)
            );
        }
        s.push_str("</tbody></table></section>\n");
    }

    // stderr tails
    if r.stderr.values().any(|t| !t.trim().is_empty()) {
        s.push_str("<section><h2>Last stderr lines</h2>\n");
        for (node, tail) in r.stderr.iter().filter(|(_, t)| !t.trim().is_empty()) {
            let _ = writeln!(s, "<details><summary>{}</summary><pre>{}</pre></details>", e(node), e(tail));
        }
        s.push_str("</section>\n");
    }

    // timeline
    let entries = merged(r);
    let mut nodes: Vec<&str> = entries.iter().map(|x| x.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut kinds: Vec<&str> = entries.iter().map(|x| x.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let _ = writeln!(s, "<section><h2>Timeline</h2><p class=\"meta\">Times from t0 ({}), when every node had started.</p>", e(&rfc3339(r.t0)));
    s.push_str("<div class=\"filters\"><select id=\"f-node\"><option value=\"\">all nodes</option>");
    for n in &nodes {
        let _ = write!(s, "<option>{}</option>", e(n));
    }
    s.push_str("</select><select id=\"f-kind\"><option value=\"\">all events</option>");
    for k in &kinds {
        let _ = write!(s, "<option>{}</option>", e(k));
    }
    s.push_str("</select><input id=\"f-text\" type=\"search\" placeholder=\"filter text, e.g. relayed bob\"> <span id=\"f-count\" class=\"meta\"></span></div>\n");
    if entries.len() > cap {
        let _ = writeln!(s, "<p class=\"note\">Showing the first {cap} of {} lines; events.jsonl has them all.</p>", entries.len());
    }
    s.push_str("<table id=\"timeline\"><thead><tr><th>t</th><th>node</th><th>event</th><th>fields</th></tr></thead><tbody>\n");
    for x in entries.iter().take(cap) {
        let _ = writeln!(
            s,
            "<tr class=\"k-{}\" data-node=\"{}\" data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&x.kind),
            e(&x.node),
            e(&x.kind),
            e(&offset(x.ts, r.t0)),
            e(&x.node),
            e(&x.kind),
            e(&x.summary)
        );
    }
    s.push_str("</tbody></table></section>\n");
    let _ = writeln!(s, "<script type=\"application/json\" id=\"p2plab-data\">{}</script>", script_json(data));
    let _ = writeln!(s, "<script>{JS}</script>\n</body></html>");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{
        judge::expect::{pair_metrics, Judge, Timeline},
        plan::layout::layout,
        model::parse,
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
            let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&Utc);
            let mut b = B { t0, t: Timeline::default(), ids: BTreeMap::new() };
            for n in ["boot", "alice", "bob"] {
                let id = p2plab_contract::PeerId::random().to_string();
                b.ids.insert(n, id.clone());
                b.ev(0, n, &format!(r#"{{"event":"started","peer_id":"{id}","role":"x","version":"0"}}"#));
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
        let subnets = [("internet", "198.18.0.0/24"), ("lan-a", "10.1.0.0/24"), ("lan-b", "10.2.0.0/24")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect();
        let lay = layout(&topo, &subnets).unwrap();
        let mut b = B::new();
        let (alice, bob) = (b.id("alice"), b.id("bob"));
        b.ev(800, "bob", &format!(r#"{{"event":"discovered","peer":"{alice}","namespace":"p2plab","addrs":[]}}"#));
        b.ev(1_000, "bob", &format!(r#"{{"event":"connected","peer":"{alice}","path":"relayed","remote_addr":"/ip4/1.2.3.4/tcp/1/p2p-circuit","direction":"outbound","connections":1}}"#));
        b.ev(1_500, "bob", &format!(r#"{{"event":"hole_punch","peer":"{alice}","ok":false,"error":"no route"}}"#));
        for id in 1..=acked {
            let ms = 2_000 + id as i64 * 100;
            b.ev(ms, "bob", &format!(r#"{{"event":"message_sent","to":"{alice}","id":{id},"size":64,"attempt":1}}"#));
            b.ev(ms + 40, "alice", &format!(r#"{{"event":"message_received","from":"{bob}","id":{id},"size":64,"path":"relayed","duplicate":false}}"#));
            b.ev(ms + 80, "bob", &format!(r#"{{"event":"message_acked","to":"{alice}","id":{id},"rtt_ms":{}.5,"path":"relayed","attempts":1}}"#, 70 + id));
        }
        b.ev(2_500, "bob", &format!(r#"{{"event":"error","context":"test","message":"{}"}}"#, EVIL.replace('"', "\\\"")));
        let end = b.t0 + CD::seconds(20);
        let verdicts = Judge::new(&topo).verdicts(&b.t, b.t0, end);
        let metrics = pair_metrics(&topo, &b.t);
        let faults = vec![
            FaultRecord { at: b.t0 + CD::milliseconds(2_000), t_ms: 2_000, action: "kill boot".into(), line: 8, ok: true, error: String::new() },
            FaultRecord { at: b.t0 + CD::milliseconds(3_000), t_ms: 3_000, action: "start boot".into(), line: 8, ok: false, error: format!("boom {EVIL}") },
        ];
        let other = vec![(b.t0 - CD::milliseconds(500), "router-lan-a".to_string(), "router_ready nat=home".to_string())];
        let mut stderr = BTreeMap::new();
        stderr.insert("alice".to_string(), format!("WARN alice: hole punch failed\n{EVIL}\n"));
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
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["events.jsonl", "results.json", "junit.xml", "summary.md", "index.html"]);
        for f in &files {
            assert!(f.is_file(), "{}", f.display());
        }

        // results.json
        let res: Value = serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(res["name"], "rep");
        assert_eq!(res["run_id"], "r3");
        assert_eq!(res["ok"], false);
        let ex = res["expectations"].as_array().unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0]["held"], true);
        assert_eq!(ex[0]["after_ms"], 800);
        assert_eq!(ex[0]["within_ms"], 10_000);
        assert_eq!(ex[1]["held"], false);
        assert!(ex[1]["detail"].as_str().unwrap().contains("not"), "{}", ex[1]);
        let p = &res["pairs"][0];
        assert_eq!((p["from"].as_str(), p["to"].as_str()), (Some("bob"), Some("alice")));
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
        assert_eq!(j.matches("<testcase ").count(), 4, "3 expectations and the failed fault: {j}");
        assert_eq!(j.matches("<failure").count(), 1, "{j}");
        assert!(j.contains("classname=\"rep\""), "{j}");
        assert!(j.contains("WARN alice: hole punch failed"), "alice's stderr on the failed check: {j}");
        assert!(!j.contains("boot was killed"), "boot is not named by the failed check: {j}");
        assert!(!j.contains("<script>"), "escaped in XML: {j}");
        assert!(j.contains("<error"), "{j}");

        // summary.md
        let m = fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(m.starts_with("# p2plab: rep — ✘ FAIL"), "{m}");
        assert!(m.contains("| ✔ | discovered bob → alice | 10 | 800 ms | 10000 ms |"), "{m}");
        assert!(m.contains("| ✘ | direct bob ↔ alice |"), "{m}");
        assert!(m.contains("| bob → alice | 800 ms | 1000 ms | – | – | 0/1 | 3/3 | 0 | 0 | – | 72.5 / 73.5 ms |"), "{m}");
        assert!(m.contains("| +2.000 s |"), "{m}");
        assert!(m.contains("✘ boom &lt;/script&gt;"), "no raw HTML in markdown: {m}");

        // index.html
        let h = fs::read_to_string(dir.join("index.html")).unwrap();
        assert!(!h.contains("http://") && !h.contains("https://"), "no network");
        assert!(!h.contains("<link") && !h.contains(" src="), "nothing external");
        assert!(h.contains("<svg class=\"topo\""));
        assert!(h.contains("<svg class=\"paths\"") && h.contains("<h2>Paths over time</h2>"), "the pairs' paths pictured");
        assert!(h.contains("<script type=\"application/json\" id=\"p2plab-data\">"));
        assert!(h.contains("<table id=\"expectations\">") && h.contains("<table id=\"pairs\">") && h.contains("<table id=\"timeline\">"));
        assert!(h.contains("<tr class=\"fail\"><td>✘</td><td>direct bob ↔ alice</td>"), "{h}");
        // the injection stays text: two real </script> (the data, the code), everything else escaped
        assert_eq!(h.matches("</script>").count(), 2, "{h}");
        assert!(h.contains("&lt;/script&gt;&lt;script&gt;alert(1)"), "escaped in the timeline");
        assert!(h.contains(r"<\/script><script>alert(1)<\/script>"), "escaped in the JSON");
        let start = h.find("id=\"p2plab-data\">").unwrap() + "id=\"p2plab-data\">".len();
        let end = start + h[start..].find("</script>").unwrap();
        assert!(!h[..start].contains("<script>alert") && !h[end..].contains("<script>alert"), "nothing outside the data");
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
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), r.timeline.events.len() + r.faults.len() + r.other.len());
        let ts: Vec<&str> = lines.iter().map(|l| l["ts"].as_str().unwrap()).collect();
        let mut sorted = ts.clone();
        sorted.sort();
        assert_eq!(ts, sorted);
        assert_eq!(lines[0]["event"], "log");
        assert_eq!(lines[0]["node"], "router-lan-a");
        assert_eq!(lines[0]["line"], "router_ready nat=home");
        for l in text.lines() {
            assert!(l.starts_with("{\"ts\":\""), "ts first, as the nodes write: {l}");
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
        assert_eq!(fs::read_to_string(dir.join("events.jsonl")).unwrap(), fs::read_to_string(dir.join("events-3.jsonl")).unwrap());
        let res: Value = serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(res["runs"].as_array().unwrap().len(), 3);
        assert_eq!(res["run_ids"], json!(["r3", "r3", "r2"]));
        assert_eq!(res["run_id"], "r2", "the top level is the last run");
        let sr = &res["success_rate"];
        let d = &sr["discovered bob → alice"];
        assert_eq!((d["held"].as_u64(), d["runs"].as_u64(), d["rate"].as_f64()), (Some(3), Some(3), Some(1.0)));
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
        assert!(m.contains("| delivered bob → alice: 3 (lost ≤ 0, duplicates ≤ 0) | 2 | 3 | 66.7% |"), "{m}");
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
        assert!(lines[3].starts_with("✘ fault start boot (line 8): boom"), "{s}");
        assert!(lines[4].starts_with("FAIL rep: 2/3 expectations held (run r3;"), "{s}");
        assert_eq!(lines.len(), 5);
        let mut ok = run(3);
        ok.verdicts.retain(|v| v.held);
        ok.faults.retain(|f| f.ok);
        ok.ok = true;
        assert!(summary_text(&ok).lines().last().unwrap().starts_with("PASS rep: 2/2"));
        ok.route_out = vec!["alice".into()];
        ok.ok = false;
        let s = summary_text(&ok);
        assert!(s.contains("✘ isolation: a route out of the lab in alice\nFAIL rep"), "{s}");
        let j = junit(std::slice::from_ref(&ok)).unwrap();
        assert!(j.contains("<testcase name=\"isolation\""), "{j}");
        assert_eq!(results_json(std::slice::from_ref(&ok))["route_out"], json!(["alice"]));
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
