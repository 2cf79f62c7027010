//! `summary.md`, and the terminal's verdict block.

use super::*;
use p2plab_contract::Event;

/// A markdown table cell: no line breaks, `|` escaped, no raw HTML.
pub(super) fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

pub(super) fn mark(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✘"
    }
}

pub(super) fn verdict_word(r: &RunResult) -> &'static str {
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
    let Some(r) = results.last() else {
        return String::new();
    };
    let mut s = String::new();
    let all_ok = results.iter().all(|r| r.ok);
    let head = if results.len() > 1 {
        format!(
            "{} of {} runs passed",
            results.iter().filter(|r| r.ok).count(),
            results.len()
        )
    } else {
        verdict_word(r).to_string()
    };
    let _ = writeln!(
        s,
        "# p2plab: {} — {} {head}\n",
        md(&r.topology.name),
        mark(all_ok)
    );
    if let Some(d) = &r.topology.description {
        let _ = writeln!(s, "{}\n", md(d));
    }
    if results.len() > 1 {
        let _ = writeln!(
            s,
            "The tables below are of the last run ({} of {}).\n",
            results.len(),
            results.len()
        );
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
    if !r.placement.is_empty() {
        // a swarm run: which engine held each container
        let mut by: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (c, e) in &r.placement {
            by.entry(e.as_str()).or_default().push(c.as_str());
        }
        let _ = writeln!(s, "## Placement\n\n| engine | containers |\n|---|---|");
        for (e, cs) in by {
            let _ = writeln!(s, "| {} | {} |", md(e), md(&cs.join(", ")));
        }
        let _ = writeln!(s);
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
            "| {} |\n|{}",
            PAIR_COLUMNS.join(" | "),
            "---|".repeat(PAIR_COLUMNS.len())
        );
        for p in &r.metrics {
            let cells: Vec<String> = pair_cells(p).iter().map(|c| md(c)).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        s.push('\n');
    }
    if !r.faults.is_empty() {
        let _ = writeln!(
            s,
            "## Faults\n\n| t | at | action | line | result |\n|---|---|---|---|---|"
        );
        for f in &r.faults {
            let res = if f.ok {
                "✔ applied".to_string()
            } else {
                format!("✘ {}", md(&f.error))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {res} |",
                offset(f.at, r.t0),
                rfc3339(f.at),
                md(&f.action),
                f.line
            );
        }
        s.push('\n');
    }
    resources_md(&mut s, r);
    if results.len() > 1 {
        let _ = writeln!(s, "## Success rates ({} runs)\n\n| expectation | held | runs | rate | 95% CI (Wilson) |\n|---|---|---|---|---|", results.len());
        for (name, held, runs) in rates(results) {
            let (lo, hi) = wilson(held, runs);
            let _ = writeln!(
                s,
                "| {} | {held} | {runs} | {:.1}% | {:.1}% – {:.1}% |",
                md(&name),
                100.0 * held as f64 / runs as f64,
                100.0 * lo,
                100.0 * hi
            );
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

/// Rows of the resources curve per node: at most this many, evenly spaced, first and last
/// included (every sample is in `events.jsonl`).
const CURVE_ROWS: usize = 13;

/// `## Resources`: each node's `resources` samples over the run (`resources:` in the topology).
fn resources_md(s: &mut String, r: &RunResult) {
    let mut nodes: Vec<&str> = Vec::new();
    for l in &r.timeline.events {
        if matches!(l.event, Event::Resources { .. }) && !nodes.contains(&l.node.as_str()) {
            nodes.push(&l.node);
        }
    }
    if nodes.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Resources\n\nEach node's own samples (`resources` events; a restart starts a new process, marked ↻).\n"
    );
    for node in nodes {
        let mut rows: Vec<(DateTime<Utc>, bool, [u64; 5])> = Vec::new();
        let mut restarted = false;
        let mut first_process = true;
        for l in r.timeline.of(node) {
            match &l.event {
                Event::Started { .. } => {
                    restarted = !first_process;
                    first_process = false;
                }
                e => {
                    if let Some(v) = values(e) {
                        rows.push((l.ts, restarted, v));
                        restarted = false;
                    }
                }
            }
        }
        let pick: Vec<usize> = if rows.len() <= CURVE_ROWS {
            (0..rows.len()).collect()
        } else {
            (0..CURVE_ROWS)
                .map(|i| i * (rows.len() - 1) / (CURVE_ROWS - 1))
                .collect()
        };
        let rss: Vec<u64> = rows.iter().map(|x| x.2[0]).collect();
        let _ = writeln!(
            s,
            "### {}\n\n{} samples; RSS {}–{} KiB.\n\n| t | RSS KiB | fds | connections | routing table | DHT records |\n|---|---|---|---|---|---|",
            md(node),
            rows.len(),
            rss.iter().min().unwrap_or(&0),
            rss.iter().max().unwrap_or(&0)
        );
        for i in pick {
            let (ts, re, v) = rows[i];
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} | {} |",
                offset(ts, r.t0),
                if re { " ↻" } else { "" },
                v[0],
                v[1],
                v[2],
                v[3],
                v[4]
            );
        }
        s.push('\n');
    }
}

fn values(e: &Event) -> Option<[u64; 5]> {
    match e {
        Event::Resources {
            rss_kb,
            fds,
            connections,
            routing_table,
            kad_records,
        } => Some([*rss_kb, *fds, *connections, *routing_table, *kad_records]),
        _ => None,
    }
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
