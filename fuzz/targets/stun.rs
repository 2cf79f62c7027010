//! The router's STUN answer (miniupnpd's self-test): any UDP payload gives an answer or none.
fn main() {
    afl::fuzz!(|data: &[u8]| p2plab_tools::fuzz::stun(data));
}
