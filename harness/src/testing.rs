//! Shared by the Docker tests: the engine (or a skip only when asked for), the image, and waits
//! on node events with deadlines.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;

use p2plab_contract::{Event, EventLine};
use tokio::sync::{mpsc, OnceCell, Semaphore, SemaphorePermit};

use crate::engine::docker::{Engine, LogLine};

/// The engine, or `None` when `P2PLAB_SKIP_DOCKER=1` asks to skip Docker tests. Without an
/// engine and without that variable this panics with one clear message: a test that claims a
/// network behaviour must not pass without a network.
pub async fn engine_or_skip(test: &str) -> Option<Engine> {
    if std::env::var("P2PLAB_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("{test}: skipped (P2PLAB_SKIP_DOCKER=1)");
        return None;
    }
    let engine = Engine::connect().await;
    Some(engine.unwrap_or_else(|e| panic!("{test}: {e}")))
}

/// The `n`th host address of `net`; panics outside it (a test's own addressing mistake).
pub fn ip(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    crate::plan::host(net, n).unwrap_or_else(|| panic!("no host {n} in {net}"))
}

/// `["a", "b"]` as owned strings, for commands.
pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

static IMAGE: OnceCell<Result<String, String>> = OnceCell::const_new();

/// The node image, built once per test process from the dev-profile binaries `cargo test`
/// built already (`P2PLAB_CARGO_PROFILE=release` to test release builds).
pub async fn image() -> String {
    let r = IMAGE
        .get_or_init(|| async { crate::engine::image::ensure_image_profile(Some("dev")).await.map_err(|e| e.to_string()) })
        .await;
    r.clone().unwrap_or_else(|e| panic!("{e}"))
}

/// The merged timeline of a lab's node events, read from the containers' stdout.
pub struct Timeline {
    rx: mpsc::UnboundedReceiver<LogLine>,
    pub events: Vec<EventLine>,
    /// Lines that are not node events (a router's or a probe's JSON), by node.
    pub other: Vec<LogLine>,
}

impl Timeline {
    pub fn new() -> (Self, mpsc::UnboundedSender<LogLine>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Timeline {
                rx,
                events: Vec::new(),
                other: Vec::new(),
            },
            tx,
        )
    }

    /// Takes one more line, waiting for it until `deadline`; false once the deadline has passed.
    /// When every stream has ended, nothing more can come: it waits out the deadline.
    async fn receive(&mut self, deadline: Instant) -> bool {
        if Instant::now() >= deadline {
            return false;
        }
        match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            Ok(Some(l)) => self.push(l),
            Ok(None) => tokio::time::sleep_until(deadline.into()).await,
            Err(_) => {}
        }
        true
    }

    fn push(&mut self, l: LogLine) {
        match EventLine::parse(&l.line) {
            Ok(e) => self.events.push(e),
            Err(_) => self.other.push(l),
        }
    }

    /// Waits until `check` over the timeline returns `Some`, or fails at the deadline with the
    /// timeline's tail.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&[EventLine]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check(&self.events) {
                return Ok(v);
            }
            if !self.receive(deadline).await {
                return Err(format!("no {what} within {within:?}; last events:\n{}", self.tail(40)));
            }
        }
    }

    /// Waits for a line of `node` that is not a node event (a router's, a probe's) and contains
    /// `needle`; returns it.
    pub async fn wait_line(&mut self, node: &str, needle: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.other.iter().find(|l| l.node == node && l.line.contains(needle)) {
                return Ok(l.line.clone());
            }
            if !self.receive(deadline).await {
                return Err(format!("no line with {needle:?} from {node} within {within:?}"));
            }
        }
    }

    /// Waits for the first event of `node` matching `pred`.
    pub async fn wait_event(
        &mut self,
        node: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        self.wait_for(&format!("{what} from {node}"), within, |evs| {
            evs.iter().find(|l| l.node == node && pred(&l.event)).map(|l| l.event.clone())
        })
        .await
    }

    /// Events of one node seen so far.
    pub fn of(&self, node: &str) -> Vec<Event> {
        self.events.iter().filter(|l| l.node == node).map(|l| l.event.clone()).collect()
    }

    pub fn tail(&self, n: usize) -> String {
        let skip = self.events.len().saturating_sub(n);
        self.events[skip..].iter().map(|l| format!("  {}\n", l.to_json())).collect()
    }
}

/// `docker-compose` when installed, else `docker compose`, as a command and its first arguments.
pub fn compose_cmd() -> Vec<String> {
    let v1 = std::process::Command::new("docker-compose").arg("version").output();
    if v1.is_ok_and(|o| o.status.success()) {
        vec!["docker-compose".into()]
    } else {
        vec!["docker".into(), "compose".into()]
    }
}

/// Every Docker test of a crate runs in one test process on a two-core machine: these slots keep
/// labs from racing each other's timing deadlines (two small labs at once at most).
static LAB_SLOTS: Semaphore = Semaphore::const_new(2);

/// One of two slots: a small lab that may run beside another.
pub async fn lab_slot() -> SemaphorePermit<'static> {
    LAB_SLOTS.acquire().await.unwrap_or_else(|e| panic!("lab slots: {e}"))
}

/// Both slots: a test that measures timing, builds images or brings up a big lab has the machine
/// to itself.
pub async fn whole_machine() -> SemaphorePermit<'static> {
    LAB_SLOTS.acquire_many(2).await.unwrap_or_else(|e| panic!("lab slots: {e}"))
}

/// The DOM of an HTML file after a real headless browser (Chromium from Debian's packages) has
/// loaded it and run its scripts: `Ok(None)` when no browser is installed, unless
/// `P2PLAB_REQUIRE_BROWSER=1` (what `.ci/run` sets once it has installed Chromium) makes that an
/// error.
pub fn browser_dom(file: &std::path::Path) -> Result<Option<String>, String> {
    let found = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
        std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success())
    });
    let Some(browser) = found else {
        if std::env::var("P2PLAB_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            return Err("no chromium on this machine, and P2PLAB_REQUIRE_BROWSER=1 requires one (apt-get install chromium)".into());
        }
        eprintln!("no chromium on this machine: the report is not checked in a browser (apt-get install chromium)");
        return Ok(None);
    };
    let path = std::fs::canonicalize(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let out = std::process::Command::new("timeout")
        .args(["120", browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--dump-dom"])
        .arg(format!("file://{}", path.display()))
        .output()
        .map_err(|e| format!("{browser}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{browser} --dump-dom {}: {}\n{}", path.display(), out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}
