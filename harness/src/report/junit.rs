//! `junit.xml`: one testsuite per run, one testcase per expectation.

use super::*;

/// The stderr tails of the nodes an expectation names (every node when it names none).
pub(super) fn stderr_for(r: &RunResult, i: usize, v: &Verdict) -> String {
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
        suite.set_time(Duration::from_millis(
            r.bringup_ms + r.run_ms + r.teardown_ms,
        ));
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
