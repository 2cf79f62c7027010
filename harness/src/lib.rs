//! p2plab's harness: builds isolated Docker labs with NAT routers and drives p2plab nodes in them.
//! It does not link the peer: what it reads from a node (events, roles, transports, ports) comes
//! from `p2plab-contract`, and the nodes run as binaries in the lab's containers.
//!
//! # Layout
//! - [`topology`]: topology files (YAML) parsed strictly and validated into a model, with
//!   file:line:column errors (no Docker).
//! - [`expect`]: expectations and fault conditions judged over the merged event timeline, and
//!   the per-pair figures of the report (no Docker).
//! - [`layout`]: every container of a lab (addresses, commands, environment) from a topology
//!   and its subnets (no Docker).
//! - [`compose`]: a topology as a docker compose file (v1.29 and v2), from its layout, and
//!   subnets for it chosen without Docker.
//! - [`plan`]: address planning (no Docker): subnets that overlap no host route, Docker network,
//!   resolver or TEST-NET range.
//! - [`schedule`]: when a run's faults (and their undos) fire, as a pure function of the time
//!   and of which checks hold (no Docker).
//! - [`run`]: a topology run for real: bring-up, merged timeline, faults on time, verdicts,
//!   teardown on every path.
//! - [`report`]: what a run leaves behind (no Docker): the merged `events.jsonl`, `results.json`
//!   (with success rates and Wilson intervals over repeats), `junit.xml`, `summary.md`, a
//!   self-contained `index.html`, and the terminal's verdict block.
//! - [`graph`]: a topology drawn (no Docker): Mermaid, Graphviz DOT, and the inline SVG of the
//!   HTML report.
//! - [`docker`]: the Docker backend (bollard), the one seam with the engine: labelled networks and
//!   containers, exec, logs, signals, and cleanup on teardown, drop and panic.
//! - [`image`]: the node image, built offline by `docker/build-image.sh` when missing or stale.
//! - `paths` (private): the report's picture of the path each pair held over time.
//! - [`testing`]: what the Docker tests share: the engine or a clear skip, event waits with
//!   deadlines.

pub mod bench;
pub mod benchlab;
pub mod compose;
pub mod docker;
pub mod expect;
pub mod graph;
pub mod image;
pub mod layout;
mod paths;
pub mod plan;
pub mod report;
pub mod run;
pub mod schedule;
pub mod testing;
pub mod topology;

pub use docker::{Attach, ContainerSpec, DockerError, Engine, Lab};
