//! Bad input gets one clear line naming the flag and value, and exit 2 (usage) or 1 (runtime).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LISTENER: &str = env!("CARGO_BIN_EXE_listener");
const MONITOR: &str = env!("CARGO_BIN_EXE_monitor");
const DIALER: &str = env!("CARGO_BIN_EXE_dialer");

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, _, err) = run(LISTENER, &["--frobnicate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn malformed_multiaddr_names_flag_and_value() {
    let (code, _, err) = run(DIALER, &["--bootstrap", "/ip4/999.1.1.1/tcp/1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--bootstrap") && err.contains("/ip4/999.1.1.1/tcp/1"),
        "{err}"
    );
}

#[test]
fn bad_metrics_addr_is_a_usage_error() {
    let (code, _, err) = run(MONITOR, &["--port", "0", "--metrics-addr", "localhost"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--metrics-addr") && err.contains("localhost"),
        "{err}"
    );
}

#[test]
fn quic_with_psk_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("swarm.key");
    std::fs::write(
        &psk,
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let (code, _, err) = run(
        LISTENER,
        &["--psk-file", psk.to_str().unwrap(), "--transport", "quic"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--transport"), "{err}");
}

#[test]
fn unreadable_key_file_is_a_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a key.
    let (code, _, err) = run(LISTENER, &["--key-file", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--key-file"), "{err}");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key").unwrap();
    let (code, _, err) = run(LISTENER, &["--key-file", garbage.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--key-file") && err.contains("garbage.key"),
        "{err}"
    );
}

#[test]
fn key_file_is_created_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let k = key.to_str().unwrap();
    let id = |_: ()| {
        // `--port` in use forces a quick exit after `started`, which carries the peer id.
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blocker.local_addr().unwrap().port().to_string();
        let (code, out, err) = run(
            LISTENER,
            &[
                "--key-file",
                k,
                "--listen-addr",
                "127.0.0.1",
                "--port",
                &port,
                "--transport",
                "tcp",
            ],
        );
        assert_eq!(code, 1, "{err}");
        let line = out.lines().next().expect("started line");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["peer_id"].as_str().unwrap().to_string()
    };
    let first = id(());
    assert!(key.exists());
    assert_eq!(first, id(()));
}

#[test]
fn port_in_use_names_the_address() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port().to_string();
    let (code, out, err) = run(
        MONITOR,
        &[
            "--listen-addr",
            "127.0.0.1",
            "--port",
            &port,
            "--transport",
            "tcp",
            "--metrics-addr",
            "off",
        ],
    );
    assert_eq!(code, 1, "{err}");
    // The stream still ends with `stopped`, carrying the reason.
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a line")).unwrap();
    assert_eq!(last["event"], "stopped", "{out}");
    assert!(last["reason"].as_str().unwrap().contains(&port), "{out}");
    assert!(err.contains("--port") && err.contains(&port), "{err}");
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn bad_psk_file_is_a_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("swarm.key");
    std::fs::write(&psk, "not a swarm key").unwrap();
    let (code, _, err) = run(LISTENER, &["--psk-file", psk.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--psk-file"), "{err}");
    let (code, _, err) = run(LISTENER, &["--psk-file", "/nonexistent/swarm.key"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/swarm.key"), "{err}");
}
