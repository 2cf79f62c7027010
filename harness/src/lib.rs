//! p2plab's harness: builds isolated Docker labs with NAT routers and drives p2plab nodes in them.
//! It does not link the peer: what it reads from a node (events, roles, transports, ports) comes
//! from `p2plab-contract`, and the nodes run as binaries in the lab's containers.
//!
//! # Layout
//! One folder per stage of a topology file's way to a verdict; only `engine` touches Docker.
//! - [`model`]: topology files (YAML) parsed strictly (`raw`) and validated (`validate`) into a
//!   [`Topology`], with file:line:column errors (`errors`).
//! - [`plan`]: subnets that overlap nothing ([`plan::subnets`]), every container of a lab
//!   ([`plan::layout`]), the same as a compose file ([`plan::compose`]).
//! - [`judge`]: expectations and fault conditions over the merged timeline
//!   ([`judge::expect`]), and when faults fire ([`judge::schedule`]), pure functions of time and
//!   timeline.
//! - [`report`]: what a run leaves behind: `events.jsonl`, `results.json` (with success rates and
//!   Wilson intervals over repeats), `junit.xml`, `summary.md`, a self-contained `index.html`
//!   with the topology drawn ([`report::graph`]) and each pair's path over time, and the
//!   terminal's verdict block.
//! - [`engine`]: the Docker backend ([`engine::docker`]), the node image ([`engine::image`]) and
//!   the runner, the one I/O loop of a lab run ([`engine::run`]).
//! - [`bench`](mod@bench): the figures of `p2plab bench`, their baseline (docs/benchmarks.json) and docs/benchmarks.md; the labs
//!   that measure them ([`bench::lab`]).
//! - [`topology_run`]: the library form of `p2plab run FILE` for a test of your own:
//!   [`TopologyRun::file`] runs a topology and hands back its verdicts, events and report.
//! - [`testing`]: what the Docker tests share: the engine or a clear skip, event waits with
//!   deadlines.

pub mod bench;
pub mod engine;
pub mod judge;
pub mod model;
pub mod plan;
pub mod report;
pub mod testing;
pub mod topology_run;

pub use engine::docker::{Attach, ContainerSpec, DockerError, Engine, Lab};
pub use model::{Topology, TopologyError};
pub use topology_run::TopologyRun;
