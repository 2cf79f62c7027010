//! The event lines a node writes and the harness reads: parsed, and what parses written again and
//! read back the same.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        for line in text.lines() {
            if let Ok(l) = p2plab_contract::events::EventLine::parse(line) {
                let again = p2plab_contract::events::EventLine::parse(&l.to_json());
                assert!(again.is_ok(), "a line written from a parsed one does not parse");
            }
        }
    });
}
