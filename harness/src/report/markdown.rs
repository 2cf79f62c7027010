//! `summary.md`, and the terminal's verdict block.

use super::*;

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
