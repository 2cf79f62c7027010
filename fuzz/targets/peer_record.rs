//! Peer records from the DHT: the signed envelope as it arrives, and (signed with a fixed key) the
//! record inside it, with its addresses.
fn main() {
    afl::fuzz!(|data: &[u8]| p2plab_node::fuzz::peer_record(data));
}
