//! `index.html`: one self-contained page (inline CSS, JS and SVG; no network).

use super::*;

pub(super) const CSS: &str = r#"
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

pub(super) const JS: &str = r#"
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
pub(super) fn script_json(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "\\u003c!--")
}

pub(super) fn badge(r: &RunResult) -> String {
    let w = verdict_word(r);
    format!(
        r#"<span class="badge {}">{w}</span>"#,
        w.to_ascii_lowercase()
    )
}

pub(super) fn html(results: &[RunResult], data: &Value, cap: usize) -> String {
    let Some(r) = results.last() else {
        return String::new();
    };
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
        let _ = writeln!(
            s,
            "<p><b>{passed} of {} runs passed.</b> The tables show the last run.</p>",
            results.len()
        );
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
        let _ = writeln!(
            s,
            "<p class=\"note\">Isolation broken: {}</p>",
            e(&route_out_text(r))
        );
    }
    s.push_str("</header>\n");

    let _ = writeln!(
        s,
        "<section><h2>Topology</h2><div class=\"graph\">{}</div></section>",
        graph::svg(&r.topology, Some(&r.layout))
    );

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
        let _ = writeln!(
            s,
            "<section><h2>Success rates ({} runs)</h2>",
            results.len()
        );
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
        let head: Vec<String> = PAIR_COLUMNS
            .iter()
            .map(|c| format!("<th>{}</th>", e(c)))
            .collect();
        let _ = writeln!(
            s,
            "<table id=\"pairs\"><thead><tr>{}</tr></thead><tbody>",
            head.concat()
        );
        for p in &r.metrics {
            let bad = p.delivery.lost > 0 || p.delivery.duplicates_delivered > 0;
            let cells: Vec<String> = pair_cells(p)
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("<td>{}</td>", e(c))
                    } else {
                        format!("<td class=\"num\">{}</td>", e(c))
                    }
                })
                .collect();
            let _ = writeln!(
                s,
                "<tr{}>{}</tr>",
                if bad { " class=\"fail\"" } else { "" },
                cells.concat()
            );
        }
        s.push_str("</tbody></table></section>\n");

        // the same pairs as a picture: which path each held, over time
        let pairs: Vec<(String, String)> = r
            .metrics
            .iter()
            .map(|p| (p.from.clone(), p.to.clone()))
            .collect();
        let end = r
            .timeline
            .events
            .iter()
            .map(|l| l.ts)
            .chain(r.faults.iter().map(|f| f.at))
            .max()
            .unwrap_or(r.t0);
        let _ = writeln!(
            s,
            "<section><h2>Paths over time</h2><p class=\"meta\">What each sender held to its peer, from t0 ({}): a direct connection, relayed ones only, or none; hole punches and faults marked.</p><div class=\"graph\">{}</div></section>",
            e(&rfc3339(r.t0)),
            crate::report::paths::svg(&r.timeline, &pairs, &r.faults, r.t0, end.max(r.t0))
        );
        let _ = writeln!(
            s,
            "<section><h2>Round trips over time</h2><p class=\"meta\">Each acked message of each pair: when its ack came and its round trip (log scale), green over a direct connection, orange over the relay; faults marked.</p><div class=\"graph\">{}</div></section>",
            crate::report::paths::rtt_svg(&r.timeline, &pairs, &r.faults, r.t0, end.max(r.t0))
        );
    }

    // faults
    if !r.faults.is_empty() {
        s.push_str("<section><h2>Faults</h2><table id=\"faults\"><thead><tr><th>t</th><th>action</th><th>line</th><th>result</th></tr></thead><tbody>\n");
        for f in &r.faults {
            let res = if f.ok {
                "applied".to_string()
            } else {
                format!("failed: {}", f.error)
            };
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
            let _ = writeln!(
                s,
                "<details><summary>{}</summary><pre>{}</pre></details>",
                e(node),
                e(tail)
            );
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
    s.push_str(
        "<div class=\"filters\"><select id=\"f-node\"><option value=\"\">all nodes</option>",
    );
    for n in &nodes {
        let _ = write!(s, "<option>{}</option>", e(n));
    }
    s.push_str("</select><select id=\"f-kind\"><option value=\"\">all events</option>");
    for k in &kinds {
        let _ = write!(s, "<option>{}</option>", e(k));
    }
    s.push_str("</select><input id=\"f-text\" type=\"search\" placeholder=\"filter text, e.g. relayed bob\"> <span id=\"f-count\" class=\"meta\"></span></div>\n");
    if entries.len() > cap {
        let _ = writeln!(
            s,
            "<p class=\"note\">Showing the first {cap} of {} lines; events.jsonl has them all.</p>",
            entries.len()
        );
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
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"p2plab-data\">{}</script>",
        script_json(data)
    );
    let _ = writeln!(s, "<script>{JS}</script>\n</body></html>");
    s
}
