//! The message protocol's frames (`/p2plab/msg/2.0.0`), both directions, in every split.
fn main() {
    afl::fuzz!(|data: &[u8]| p2plab_node::fuzz::message_frames(data));
}
