//! Placeholder: being written (raw TCP and libp2p stream benchmarks).
