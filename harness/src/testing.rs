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
        .get_or_init(|| async {
            crate::engine::image::ensure_image_profile(Some("dev"))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    r.clone().unwrap_or_else(|e| panic!("{e}"))
}

/// A lab's container lines as they arrive (node events, and other lines such as a router's),
/// with waits on them that have deadlines. The run's own merged timeline, with names and
/// judgement, is [`crate::judge::expect::Timeline`]; this one is for tests that build labs by hand.
pub struct Watch {
    rx: mpsc::UnboundedReceiver<LogLine>,
    pub events: Vec<EventLine>,
    /// Lines that are not node events (a router's or a probe's JSON), by node.
    pub other: Vec<LogLine>,
}

impl Watch {
    pub fn new() -> (Self, mpsc::UnboundedSender<LogLine>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Watch {
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
                return Err(format!(
                    "no {what} within {within:?}; last events:\n{}",
                    self.tail(40)
                ));
            }
        }
    }

    /// Waits for a line of `node` that is not a node event (a router's, a probe's) and contains
    /// `needle`; returns it.
    pub async fn wait_line(
        &mut self,
        node: &str,
        needle: &str,
        within: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .other
                .iter()
                .find(|l| l.node == node && l.line.contains(needle))
            {
                return Ok(l.line.clone());
            }
            if !self.receive(deadline).await {
                return Err(format!(
                    "no line with {needle:?} from {node} within {within:?}"
                ));
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
            evs.iter()
                .find(|l| l.node == node && pred(&l.event))
                .map(|l| l.event.clone())
        })
        .await
    }

    /// Events of one node seen so far.
    pub fn of(&self, node: &str) -> Vec<Event> {
        self.events
            .iter()
            .filter(|l| l.node == node)
            .map(|l| l.event.clone())
            .collect()
    }

    pub fn tail(&self, n: usize) -> String {
        let skip = self.events.len().saturating_sub(n);
        self.events[skip..]
            .iter()
            .map(|l| format!("  {}\n", l.to_json()))
            .collect()
    }
}

/// `docker-compose` when installed, else `docker compose`, as a command and its first arguments.
pub fn compose_cmd() -> Vec<String> {
    let v1 = std::process::Command::new("docker-compose")
        .arg("version")
        .output();
    if v1.is_ok_and(|o| o.status.success()) {
        vec!["docker-compose".into()]
    } else {
        vec!["docker".into(), "compose".into()]
    }
}

/// A docker compose project under test: `down -v` when dropped (also while a panic unwinds;
/// `P2PLAB_KEEP=1` keeps it), then its own directory, if it has one, goes.
#[derive(Debug)]
pub struct ComposeProject {
    pub name: String,
    /// `docker-compose` or `docker compose` ([`compose_cmd`]).
    pub cmd: Vec<String>,
    pub file: std::path::PathBuf,
    /// Where compose runs; removed on drop when `owned_dir`.
    pub dir: std::path::PathBuf,
    pub owned_dir: bool,
    /// `P2PLAB_IMAGE` for compose's interpolation.
    pub image: String,
    /// Taken down already (or never brought up): nothing to do on drop but the directory.
    pub down: bool,
}

impl ComposeProject {
    pub fn new(
        name: String,
        file: std::path::PathBuf,
        dir: std::path::PathBuf,
        owned_dir: bool,
        image: String,
    ) -> Self {
        Self {
            name,
            cmd: compose_cmd(),
            file,
            dir,
            owned_dir,
            image,
            down: false,
        }
    }

    /// `<compose> -p NAME -f FILE ARGS...`, with `P2PLAB_IMAGE` set.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.cmd[0]);
        c.args(&self.cmd[1..])
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .args(args)
            .env("P2PLAB_IMAGE", &self.image)
            .current_dir(&self.dir);
        c
    }

    /// Runs a compose command: its stdout and stderr, or why it failed with them.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.cmd.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{} -p {} {}: {}\n{text}",
                self.cmd.join(" "),
                self.name,
                args.join(" "),
                out.status
            ))
        }
    }

    pub fn down(&mut self) -> Result<String, String> {
        self.down = true;
        self.run(&["down", "-v", "--remove-orphans", "-t", "5"])
    }

    /// The last `n` lines of every service's log, or why there are none.
    pub fn logs_tail(&self, n: usize) -> String {
        self.run(&["logs", "--no-color", "--tail", &n.to_string()])
            .unwrap_or_else(|e| e)
    }

    fn filter(&self) -> std::collections::HashMap<String, Vec<String>> {
        std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={}", self.name)],
        )])
    }

    /// The project's containers: service name → container id.
    pub async fn containers(&self, engine: &Engine) -> std::collections::HashMap<String, String> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.filter())
            .build();
        let list = engine
            .api()
            .list_containers(Some(opts))
            .await
            .unwrap_or_else(|e| panic!("list containers: {e}"));
        list.into_iter()
            .filter_map(|c| {
                Some((
                    c.labels
                        .as_ref()?
                        .get("com.docker.compose.service")?
                        .clone(),
                    c.id?,
                ))
            })
            .collect()
    }

    /// The project's networks: name → labels.
    pub async fn networks(
        &self,
        engine: &Engine,
    ) -> std::collections::HashMap<String, std::collections::HashMap<String, String>> {
        let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&self.filter())
            .build();
        let list = engine
            .api()
            .list_networks(Some(opts))
            .await
            .unwrap_or_else(|e| panic!("list networks: {e}"));
        list.into_iter()
            .filter_map(|n| Some((n.name?, n.labels.unwrap_or_default())))
            .collect()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if !self.down && std::env::var("P2PLAB_KEEP").map_or(true, |v| v != "1") {
            if let Err(e) = self.down() {
                eprintln!("compose down failed: {e}");
            }
        }
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every Docker test of a crate runs in one test process on a two-core machine: these slots keep
/// labs from racing each other's timing deadlines (two small labs at once at most).
static LAB_SLOTS: Semaphore = Semaphore::const_new(2);

/// One of two slots: a small lab that may run beside another.
pub async fn lab_slot() -> SemaphorePermit<'static> {
    LAB_SLOTS
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("lab slots: {e}"))
}

/// Both slots: a test that measures timing, builds images or brings up a big lab has the machine
/// to itself.
pub async fn whole_machine() -> SemaphorePermit<'static> {
    LAB_SLOTS
        .acquire_many(2)
        .await
        .unwrap_or_else(|e| panic!("lab slots: {e}"))
}

/// The DOM of an HTML file after a real headless browser (Chromium from Debian's packages) has
/// loaded it and run its scripts: `Ok(None)` when no browser is installed, unless
/// `P2PLAB_REQUIRE_BROWSER=1` (what `.ci/run` sets once it has installed Chromium) makes that an
/// error.
pub fn browser_dom(file: &std::path::Path) -> Result<Option<String>, String> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
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
        .args([
            "120",
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
        ])
        .arg(format!("file://{}", path.display()))
        .output()
        .map_err(|e| format!("{browser}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{browser} --dump-dom {}: {}\n{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}
