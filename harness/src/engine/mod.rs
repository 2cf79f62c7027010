//! Stage 5, engine (the only stage that touches Docker).
//!
//! - [`docker`]: the Docker backend (bollard): labelled networks and containers, exec, logs,
//!   signals, and cleanup on teardown, drop and panic.
//! - [`image`]: the node image, built offline by `docker/build-image.sh` when missing or stale.
//! - [`reaper`]: the container that removes a lab whose harness died, and the sweep of such labs.
//! - [`run`]: a topology run for real, the one I/O loop of a lab: bring-up, merged timeline,
//!   faults on time, verdicts, teardown on every path.

pub mod docker;
pub mod image;
pub mod reaper;
pub mod run;
