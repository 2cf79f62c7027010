//! p2plab's harness: builds isolated Docker labs with NAT routers and drives p2plab nodes in them.
//!
//! # Layout
//! - [`plan`]: address planning (no Docker): subnets that overlap no host route, Docker network,
//!   resolver or TEST-NET range.
//! - [`docker`]: the Docker backend (bollard), the one seam with the engine: labelled networks and
//!   containers, exec, logs, signals, and cleanup on teardown, drop and panic.
//! - [`image`]: the node image, built offline by `docker/build-image.sh` when missing or stale.
//! - [`testing`]: what the Docker tests share: the engine or a clear skip, event waits with
//!   deadlines.

pub mod docker;
pub mod image;
pub mod plan;
pub mod testing;

pub use docker::{Attach, ContainerSpec, DockerError, Engine, Lab};
