//! The ports a lab relies on.

/// The monitor's port, TCP and QUIC alike (the seed's).
pub const MONITOR_PORT: u16 = 51820;
/// The monitor's default metrics address.
pub const MONITOR_METRICS: &str = "0.0.0.0:9090";
/// The first port of the peers on a segment (the next peer on the same segment takes the next).
pub const PEER_PORT: u16 = 4001;
