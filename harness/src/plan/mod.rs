//! Stage 2, plan (no Docker): where everything of a lab goes.
//!
//! - [`subnets`] (re-exported here): which /24s a lab may use, away from host routes, Docker
//!   networks, the resolver and the TEST-NETs.
//! - [`layout`]: every container of a lab from a topology and its subnets: addresses, command
//!   lines, environment, routers before the hosts behind them.
//! - [`compose`]: a topology as a docker compose file, from its layout.
//! - [`matrix`]: the NAT matrix's topology files, from the rule that gives each pair its outcome.

pub mod compose;
pub mod layout;
pub mod matrix;
pub mod subnets;

pub use subnets::*;
