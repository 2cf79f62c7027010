//! The libp2p peer under test in p2plab.
//!
//! One library, three thin binaries (`monitor`, `listener`, `dialer`). A node joins through one or
//! more bootstrap nodes, finds the members of its namespace through the Kademlia DHT, reserves a
//! relay slot when it is not reachable, upgrades relayed connections by hole punching (DCUtR), and
//! exchanges acknowledged messages. Everything it does is reported as JSON lines on stdout
//! ([`events`]); human logs go to stderr.
//!
//! # Layout
//! The public API is [`run`], [`run_with_sink`], [`Config`] (with [`config`] and [`cli`]), the
//! event types ([`events`]), the transport stack and identities ([`swarm`]), and the runtime
//! helpers ([`block_on_and_exit`], [`shutdown_signal`]); the rest is private.
//! - [`config`]: a [`Config`]: the role (monitor, listener, dialer, each with what only it needs)
//!   and a builder, for in-process users; [`cli`]: the command line of the three binaries,
//!   which produces one.
//! - [`events`]: the event stream (its types, and [`ports`], re-exported from `p2plab-contract`,
//!   the crate the harness compiles instead of this one; documented in `EVENTS.md`), and the
//!   emitter that writes it.
//! - `messaging` (private): at-least-once delivery: ids, acks, retries with backoff, duplicates. No I/O.
//! - `discovery` (private): namespace keys and peer records on the DHT. No I/O.
//! - `state` (private): the node's decisions as I/O-free state machines (bootstrap, reachability and
//!   relay, announcing, discovering, one LAN, refresh, traffic), each with `handle_*(…, now)`,
//!   `poll` and `poll_timeout`, unit-tested beside its code.
//! - [`swarm`]: identity, the transport stack ([`swarm::transport`], also what the benchmark's
//!   libp2p end runs), the composed libp2p behaviour and its configuration.
//! - `node` (private): the event loop: one `tokio::select!` over the swarm, the earliest deadline of the
//!   state machines and shutdown; it turns events into inputs and actions into swarm calls.
//! - `http` (private): `/metrics`, `/health` and `/status`.
//! - `heap` (private): the free heap handed back to the system every 30 s (glibc keeps a burst's).
//!
//! The lab's tools (the NAT probe, the delay line, the `bench` binary) are the `p2plab-tools`
//! crate: they run this peer ([`run_with_sink`]) but the peer does not need them.
//!
//! Shutdown is a future passed to [`run`], so tests drive it; the binaries pass Ctrl-C/SIGTERM.

pub mod cli;
pub mod config;
mod discovery;
pub mod events;
#[doc(hidden)]
pub mod fuzz;
mod heap;
mod http;
mod messaging;
mod node;
mod state;
pub mod swarm;

use std::future::Future;

pub use config::{Config, Role};
pub use events::{Event, EventLine, Path, Totals};
/// The libp2p this node is built on (the harness and tests name its types, e.g. `PeerId`).
pub use libp2p;
/// The event stream and the other process-boundary types live in `p2plab-contract`.
pub use p2plab_contract::ports;

/// Largest payload a dialer may send (`--size`), under the codec's 1 MiB request limit.
pub const MAX_MESSAGE_SIZE: usize = 512 * 1024;

/// A bad flag value found after parsing: exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid value '{value}' for '{flag}': {reason}")]
pub struct UsageError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Exit code 2.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A flag whose value failed at run time (unreadable file, port in use): exit code 1.
    #[error("{flag} {value}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// Exit code 1.
    #[error("{0}")]
    Runtime(String),
}

impl RunError {
    pub fn flag(
        flag: &'static str,
        value: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        RunError::Flag {
            flag,
            value: value.into(),
            reason: reason.to_string(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs a node until `shutdown` resolves; returns its totals. Emits `stopped` last.
pub async fn run(cfg: Config, shutdown: impl Future<Output = String>) -> Result<Totals, RunError> {
    node::Node::start(cfg).await?.run(shutdown).await
}

/// [`run`] with the events sent to a channel instead of stdout: many nodes in one process.
pub async fn run_with_sink(
    cfg: Config,
    sink: tokio::sync::mpsc::UnboundedSender<EventLine>,
    shutdown: impl Future<Output = String>,
) -> Result<Totals, RunError> {
    node::Node::start_with(cfg, events::Sink::Channel(sink))
        .await?
        .run(shutdown)
        .await
}

/// What the binaries call: parse the command line (clap exits 2 on bad flags), set up logging,
/// run until Ctrl-C or SIGTERM, and exit 0, or 1/2 with one line on stderr.
pub fn main_for(cfg: Config) -> ! {
    init_logging(cfg.common.log_format);
    heap::fix_mmap_threshold();
    let threads = match cfg.role() {
        // Many connections, each its own task: both cores are worth their hand-offs.
        Role::Monitor => Threads::Many,
        Role::Listener | Role::Dialer => Threads::One,
    };
    block_on_and_exit(threads, run(cfg, shutdown_signal()))
}

/// The runtime a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Everything on the calling thread. A peer's message goes node loop → connection task →
    /// socket and back; on several threads each of those hand-offs can be a cross-thread wake-up
    /// (a futex and, in a VM, an interrupt to a halted vCPU: about 0.1 ms each here), which
    /// tripled a 64 B round trip (0.36 ms against 0.11 ms between two containers, 2026-12-04).
    One,
    /// A worker per core, for work spread over many tasks (a monitor's connections, many nodes in
    /// one process). `main` runs on a worker too, not on the thread that waits for it, so that
    /// its hand-offs to the tasks it wakes can stay on one worker.
    Many,
}

/// Runs `main` on a runtime of `threads` and exits: 0 on success, else one `error:` line on
/// stderr and the error's exit code (2 for usage, 1 at run time). Shared by every binary.
pub fn block_on_and_exit<T: Send + 'static>(
    threads: Threads,
    main: impl Future<Output = Result<T, RunError>> + Send + 'static,
) -> ! {
    let rt = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Threads::Many => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let code = match rt {
        Ok(rt) => match rt.block_on(async move {
            match threads {
                Threads::One => main.await,
                Threads::Many => tokio::spawn(main).await.unwrap_or_else(|e| {
                    Err(RunError::Runtime(format!("the main task failed: {e}")))
                }),
            }
        }) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        },
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn init_logging(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p=warn,p2plab_node=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Text => builder.try_init(),
        config::LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolves on Ctrl-C or SIGTERM with the signal's name.
pub async fn shutdown_signal() -> String {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT".to_string(),
                _ = term.recv() => "SIGTERM".to_string(),
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT".to_string()
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT".to_string()
    }
}
