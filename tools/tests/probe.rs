//! The NAT probe over loopback, real processes: two reflectors on 127.0.0.2 and 127.0.0.3, the
//! measurer on 127.0.0.1. No NAT and no firewall: nothing translated, everything let in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::channel,
    time::{Duration, Instant},
};

use assert_cmd::Command as Cmd;
use p2plab_contract::{
    nat::Profile,
    parse_line,
    probe::{NatProbe, Proto, ReflectorReady, Verdict},
};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

/// A running `probe reflect`, killed on drop.
struct Reflector {
    child: Child,
    /// The main port's address (UDP and TCP).
    main: String,
}

impl Reflector {
    fn start(ip: &str) -> Self {
        let mut child = Command::new(PROBE)
            .args(["reflect", "--listen", ip, "--port", "0", "--alt-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn reflector");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut reflector = Reflector {
            child,
            main: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready: ReflectorReady = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("reflector_ready within 20 s");
            if let Some(ready) = parse_line(&line) {
                break ready;
            }
        };
        assert_eq!(ready.udp, ready.tcp, "{ready:?}");
        let main = ready.udp[0];
        assert_eq!(main.ip().to_string(), ip, "{ready:?}");
        reflector.main = main.to_string();
        reflector
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Cmd::new(PROBE)
        .args(args)
        .timeout(Duration::from_secs(30))
        .output()
        .expect("run probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn loopback_is_no_nat_and_open() {
    let (r1, r2) = (Reflector::start("127.0.0.2"), Reflector::start("127.0.0.3"));
    let (code, out, err) = run(&["measure", "--reflector", &r1.main, "--reflector", &r2.main]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<NatProbe> = out
        .lines()
        .map(|l| parse_line::<NatProbe>(l).expect("a nat_probe line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, proto) in lines.iter().zip(Proto::BOTH) {
        assert_eq!(line.proto, proto, "{line:?}");
        assert_eq!(line.local.ip().to_string(), "127.0.0.1", "{line:?}");
        assert_eq!(line.observed, Some([line.local; 2]), "{line:?}");
        // nothing translated, everything let in: what a plain router declares
        assert_eq!(
            line.verdict,
            Verdict::expected(Profile::Routed, proto),
            "{line:?}"
        );
        assert_eq!(line.hairpin, None, "{line:?}");
    }
    // One protocol at a time, and an explicit local address.
    let (code, out, err) = run(&[
        "measure",
        "--reflector",
        &r1.main,
        "--reflector",
        &r2.main,
        "--proto",
        "tcp",
        "--bind",
        "127.0.0.1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(r#""proto":"tcp""#) && out.contains(r#""filtering":"endpoint-independent""#),
        "{out}"
    );
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    for (args, flag) in [
        (
            &["measure", "--reflector", "127.0.0.2:3478"][..],
            "--reflector",
        ),
        (
            &[
                "measure",
                "--reflector",
                "127.0.0.2:3478",
                "--reflector",
                "127.0.0.2:3479",
            ],
            "--reflector",
        ),
        (
            &[
                "measure",
                "--reflector",
                "127.0.0.2",
                "--reflector",
                "127.0.0.300",
            ],
            "--reflector",
        ),
        (
            &[
                "measure",
                "--reflector",
                "127.0.0.2",
                "--reflector",
                "127.0.0.3:http",
            ],
            "--reflector",
        ),
        (&["measure"], "--reflector"),
        (
            &[
                "measure",
                "--reflector",
                "127.0.0.2",
                "--reflector",
                "127.0.0.3",
                "--proto",
                "sctp",
            ],
            "--proto",
        ),
        (&["reflect", "--listen", "nowhere"], "--listen"),
        (
            &["reflect", "--port", "4000", "--alt-port", "4000"],
            "--alt-port",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{args:?}: {err}");
        // clap names a missing flag on the line after "error: the following required arguments...".
        let named = if args.len() == 1 {
            err.contains(flag)
        } else {
            first.contains(flag)
        };
        assert!(named, "{args:?}: {err}");
    }
}

#[test]
fn unreachable_reflector_is_a_runtime_error() {
    // Nothing listens on port 9 (discard) of 127.0.0.2/3 in a test environment.
    for proto in ["udp", "tcp"] {
        let (code, out, err) = run(&[
            "measure",
            "--reflector",
            "127.0.0.2:9",
            "--reflector",
            "127.0.0.3:9",
            "--proto",
            proto,
            "--timeout-ms",
            "300",
        ]);
        assert_eq!(code, 1, "{proto}: {err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: reflector 127.0.0.2:9 unreachable"),
            "{err}"
        );
    }
}
