//! The `p2plab` command line, as a user runs it: exit codes and messages for bad input (no
//! Docker), a real run with its report, and Ctrl-C during `p2plab up` tearing the lab down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use p2plab::{engine::docker, testing::engine_or_skip};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p2plab"))
}

fn topologies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("p2plab-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn validate_accepts_the_shipped_topologies() {
    let files: Vec<PathBuf> = std::fs::read_dir(topologies())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    let out = bin().arg("validate").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        files.len()
    );
}

#[test]
fn a_bad_topology_is_one_message_with_file_line_and_column_and_exit_2() {
    let dir = tmp("bad");
    let f = dir.join("bad.yaml");
    std::fs::write(&f, "name: bad\nsegments: { internet: {} }\nnodes:\n  boot: { role: monitor, segment: internt }\n").unwrap();
    let out = bin().arg("validate").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:4:35: segment: no segment named `internt`",
            f.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: known: internet"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // a file that is not there, and one that is not YAML at all
    let out = bin()
        .arg("run")
        .arg(dir.join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml:0:0: cannot read the file"));
    std::fs::write(&f, [0xff_u8, 0xfe, 0x00, b'{']).unwrap();
    let out = bin().arg("validate").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // a bad flag names the flag and its value
    let out = bin()
        .args(["run", "x.yaml", "--repeat", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repeat"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let f = topologies().join("home-nat.yaml");
    let out = bin().args(["graph"]).arg(&f).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lan-a")
            || String::from_utf8_lossy(&out.stdout).contains("lan_a")
    );
    let out = bin()
        .args(["graph", "--format", "dot"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("digraph"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_writes_the_report_and_exits_0_when_every_expectation_held() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(_engine) = engine_or_skip("cli_run").await else {
        return;
    };
    p2plab::testing::image().await;
    let dir = tmp("report");
    let out = bin()
        .arg("run")
        .arg(topologies().join("seed-local.yaml"))
        .arg("--report")
        .arg(&dir)
        .env("P2PLAB_CARGO_PROFILE", "dev")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "events.jsonl",
        "results.json",
        "junit.xml",
        "summary.md",
        "index.html",
    ] {
        let p = dir.join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{} missing or empty",
            p.display()
        );
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["ok"], serde_json::Value::Bool(true), "{results}");
    std::fs::remove_dir_all(dir).ok();
}

/// `p2plab up home-nat.yaml`, once its first pair has discovered each other: the child and its
/// run id.
fn up_until_discovered() -> (std::process::Child, String) {
    let mut child = bin()
        .arg("up")
        .arg(topologies().join("home-nat.yaml"))
        .env("P2PLAB_CARGO_PROFILE", "dev")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for the lab to be up and an event to flow, reading stderr (plain lines: not a tty)
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut run_id = None;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the lab did not come up:\n{}",
            seen.join("\n")
        );
        let Ok(l) = rx.recv_timeout(left) else {
            panic!("p2plab up ended early:\n{}", seen.join("\n"))
        };
        if let Some(rest) = l.strip_prefix("p2plab: run ") {
            run_id = rest.split(':').next().map(str::to_string);
        }
        let up = l.contains("discovered");
        seen.push(l);
        if up {
            break;
        }
    }
    (child, run_id.expect("a run id line"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_up_tears_the_lab_down() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("cli_up").await else {
        return;
    };
    p2plab::testing::image().await;
    let (mut child, run_id) = up_until_discovered();
    let before = docker::list_runs(&engine).await.unwrap();
    assert!(
        before.iter().any(|r| r.run_id == run_id && r.running > 0),
        "the run's containers are not listed"
    );
    // Ctrl-C
    let pid = child.id() as i32;
    assert_eq!(unsafe_free_kill("INT", pid), 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "p2plab up did not exit within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let after = docker::list_runs(&engine).await.unwrap();
    assert!(
        !after.iter().any(|r| r.run_id == run_id),
        "leftovers of run {run_id}: {after:?}"
    );
}

/// What CI does to a job at its time limit and the OOM killer does to a process: the harness gets
/// no chance to clean up. Its reaper removes the lab.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_harness_leaves_nothing_within_30_s() {
    let _machine = p2plab::testing::whole_machine().await;
    let Some(engine) = engine_or_skip("cli_sigkill").await else {
        return;
    };
    p2plab::testing::image().await;
    let (mut child, run_id) = up_until_discovered();
    let before = docker::list_runs(&engine).await.unwrap();
    let run = before
        .iter()
        .find(|r| r.run_id == run_id)
        .expect("the run is listed");
    // home-nat: 5 containers and the reaper, 3 networks
    assert!(
        run.running >= 6 && run.networks >= 3,
        "not the whole lab: {run:?}"
    );
    assert_eq!(unsafe_free_kill("KILL", child.id() as i32), 0);
    child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let left = docker::list_runs(&engine).await.unwrap();
        let Some(r) = left.iter().find(|r| r.run_id == run_id) else {
            break;
        };
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "30 s after SIGKILL the lab is still there: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "run {run_id}: gone {} ms after SIGKILL",
        killed.elapsed().as_millis()
    );
}

/// A signal through the `kill` command (the workspace denies unsafe code).
fn unsafe_free_kill(signal: &str, pid: i32) -> i32 {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}
