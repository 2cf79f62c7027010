//! Real node processes for tests: spawn a binary, read its event stream, wait on events with
//! deadlines (never sleeps), stop it with a signal. A process is killed when its handle drops;
//! when a test fails, the tail of every node's stderr is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc::{channel, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use p2plab_node::{Event, EventLine, Path};

pub struct NodeProc {
    pub name: String,
    child: Child,
    rx: Receiver<EventLine>,
    pub events: Vec<EventLine>,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn bin(role: &str) -> &'static str {
    match role {
        "monitor" => env!("CARGO_BIN_EXE_monitor"),
        "listener" => env!("CARGO_BIN_EXE_listener"),
        "dialer" => env!("CARGO_BIN_EXE_dialer"),
        _ => panic!("unknown role {role}"),
    }
}

impl NodeProc {
    /// Starts `role` named `name` listening on 127.0.0.1 only, with `args` after the defaults.
    pub fn spawn(role: &str, name: &str, args: &[&str]) -> Self {
        Self::spawn_on("127.0.0.1", role, name, args)
    }

    /// Starts `role` named `name` listening on `ip` only.
    pub fn spawn_on(ip: &str, role: &str, name: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr.log");
        let err_file = std::fs::File::create(&stderr).expect("stderr file");
        let mut cmd = Command::new(bin(role));
        cmd.args(["--name", name, "--listen-addr", ip]);
        if !args.contains(&"--metrics-addr") {
            cmd.args(["--metrics-addr", "off"]);
        }
        if role != "monitor" || !args.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(args)
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file));
        let mut child = cmd.spawn().expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        let who = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match EventLine::parse(&line) {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            break;
                        }
                    }
                    Err(err) => panic!("{who}: stdout line is not an event ({err}): {line}"),
                }
            }
        });
        NodeProc {
            name: name.to_string(),
            child,
            rx,
            events: Vec::new(),
            stderr,
            _dir: dir,
        }
    }

    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.events.push(e);
        }
    }

    /// Waits until `check` over all events so far returns `Some`, or panics at the deadline
    /// naming `what`.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&[EventLine]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            if let Some(v) = check(&self.events) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{}: no {what} within {within:?}; events:\n{}",
                    self.name,
                    self.dump()
                );
            }
            match self.rx.recv_timeout(left) {
                Ok(e) => self.events.push(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain();
                    if let Some(v) = check(&self.events) {
                        return v;
                    }
                    panic!(
                        "{}: exited before {what}; events:\n{}",
                        self.name,
                        self.dump()
                    );
                }
            }
        }
    }

    /// Waits for the first event matching `pred`.
    pub fn wait_event(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait_for(what, within, |evs| {
            evs.iter().map(|l| &l.event).find(|e| pred(e)).cloned()
        })
    }

    pub fn peer_id(&mut self) -> PeerId {
        match self.wait_event("started", Duration::from_secs(20), |e| {
            matches!(e, Event::Started { .. })
        }) {
            Event::Started { peer_id, .. } => peer_id,
            _ => unreachable!(),
        }
    }

    /// The first TCP listen address, with `/p2p/<id>`.
    pub fn tcp_addr(&mut self) -> Multiaddr {
        self.listen_addr(|p| matches!(p, Protocol::Tcp(_)))
    }

    /// The first listen address with a protocol matching `which`, with `/p2p/<id>`.
    pub fn listen_addr(&mut self, which: impl Fn(&Protocol<'_>) -> bool) -> Multiaddr {
        let id = self.peer_id();
        let a = self.wait_event(
            "listen address",
            Duration::from_secs(20),
            |e| matches!(e, Event::Listening { addr } if addr.iter().any(|p| which(&p))),
        );
        match a {
            Event::Listening { addr } => addr.with(Protocol::P2p(id)),
            _ => unreachable!(),
        }
    }

    /// Every event seen so far.
    pub fn seen(&mut self) -> Vec<Event> {
        self.drain();
        self.events.iter().map(|l| l.event.clone()).collect()
    }

    /// Sends SIGTERM and waits up to `within` for `stopped`; returns its totals.
    pub fn terminate(&mut self, within: Duration) -> p2plab_node::Totals {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        match self.wait_event("stopped", within, |e| matches!(e, Event::Stopped { .. })) {
            Event::Stopped { totals, .. } => totals,
            _ => unreachable!(),
        }
    }

    /// SIGKILL: the node vanishes without a word, as a crashed bootstrap node would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn dump(&self) -> String {
        let mut s: String = self
            .events
            .iter()
            .map(|l| format!("  {}\n", l.to_json()))
            .collect::<String>();
        let mut err = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut err);
        }
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        s.push_str("stderr tail:\n");
        for l in tail.into_iter().rev() {
            s.push_str(&format!("  {l}\n"));
        }
        s
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.drain();
            eprintln!("==== {} ====\n{}", self.name, self.dump());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Acks the dialer got from `to`, as (id, path).
pub fn acks_to(events: &[EventLine], to: &PeerId) -> Vec<(u64, Path)> {
    events
        .iter()
        .filter_map(|l| match &l.event {
            Event::MessageAcked {
                to: t, id, path, ..
            } if t == to => Some((*id, *path)),
            _ => None,
        })
        .collect()
}

pub fn failures(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::MessageFailed { .. }))
        .cloned()
        .collect()
}

pub const SECS: fn(u64) -> Duration = Duration::from_secs;
