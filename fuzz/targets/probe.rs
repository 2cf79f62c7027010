//! The NAT probe's wire: the reflector's requests and the probe's replies, as text lines from the
//! network.
fn main() {
    afl::fuzz!(|data: &[u8]| p2plab_tools::fuzz::probe_lines(data));
}
