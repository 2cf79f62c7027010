//! `results.json`: verdicts, pair figures, faults and times, and success rates over repeats.

use super::*;

pub(super) fn verdict_json(v: &Verdict) -> Value {
    json!({
        "name": v.name, "line": v.line, "held": v.held, "after_ms": v.after_ms,
        "within_ms": v.within_ms, "measured": v.measured, "detail": v.detail,
    })
}

pub(super) fn pair_json(p: &PairMetrics) -> Value {
    let d = &p.delivery;
    json!({
        "from": p.from, "to": p.to,
        "discovered_ms": p.discovered_ms, "first_relayed_ms": p.first_relayed_ms,
        "first_direct_ms": p.first_direct_ms, "relayed_to_direct_ms": p.relayed_to_direct_ms,
        "hole_punch_ok": p.hole_punch_ok, "hole_punch_failed": p.hole_punch_failed,
        "delivery": {
            "sent": d.sent, "acked": d.acked, "lost": d.lost, "duplicates": d.duplicates_delivered,
            "duplicates_recognised": d.duplicates_recognised, "direct": d.direct, "relayed": d.relayed,
            "carried": d.carried,
            "first_ack": d.first_ack.map(rfc3339), "last_ack": d.last_ack.map(rfc3339),
        },
        "rtt_ms": {
            "direct_p50": p.rtt_direct_p50_ms, "direct_p95": p.rtt_direct_p95_ms,
            "relayed_p50": p.rtt_relayed_p50_ms, "relayed_p95": p.rtt_relayed_p95_ms,
        },
    })
}

pub(super) fn fault_json(f: &FaultRecord) -> Value {
    json!({ "at": rfc3339(f.at), "t_ms": f.t_ms, "action": f.action, "line": f.line, "ok": f.ok, "error": f.error })
}

pub(super) fn run_json(r: &RunResult) -> Value {
    let containers: Vec<Value> = r
        .layout
        .containers
        .iter()
        .map(|c| {
            let addrs: Vec<Value> = c
                .attach
                .iter()
                .map(|(s, ip)| json!({ "segment": s, "ip": ip.to_string() }))
                .collect();
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
        "placement": r.placement,
    })
}

/// Per expectation name, in file order: (name, held, runs).
pub(super) fn rates(results: &[RunResult]) -> Vec<(String, u64, u64)> {
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
    let Some(last) = results.last() else {
        return Value::Null;
    };
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
