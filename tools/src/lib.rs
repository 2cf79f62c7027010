//! The lab's tools, apart from the peer they measure: they run in the node image next to it,
//! but nothing in the peer needs them.
//!
//! # Layout
//! - [`probe`]: the NAT probe (`probe reflect`, `probe measure`): what a router does to a
//!   host's UDP and TCP mappings and filtering, measured from inside the lab.
//! - [`perf`]: the `bench` binary's baselines: raw TCP ping-pong and bulk transfer, and the same
//!   over one libp2p stream on the peer's own transport stack (TCP or QUIC).
//! - [`load`]: many nodes in one process (`bench swarm`) and the node's own round trip
//!   (`bench p2p-rtt`); they run the very peer of [`p2plab_node`].
//! - [`nft`]: a lab router's nftables ruleset, rendered from its typed NAT profile; every
//!   profile's whole ruleset is snapshot-tested against `snapshots/nft/<profile>.nft`.
//! - [`router`]: the rest of a router's decisions: its settings from the typed environment, its
//!   interfaces, miniupnpd's configuration, the STUN answer of its self-test, its ready line.
//! - Binaries: `probe`, `bench`, `router-rules` (a router's decisions for `docker/router.sh`,
//!   which only waits for interfaces, sets routes, loads the ruleset and supervises miniupnpd), and `delayline` (an NFQUEUE delay and loss line for the routers'
//!   impairments, where the kernel has no netem).
//!
//! Errors, runtimes and shutdown are the node's ([`p2plab_node::RunError`],
//! [`p2plab_node::block_on_and_exit`], [`p2plab_node::shutdown_signal`]): one exit-code contract
//! for every binary in the image.

#[doc(hidden)]
pub mod flood;
pub mod fuzz;
pub mod load;
pub mod nft;
pub mod perf;
pub mod probe;
pub mod router;
