//! The topology loader: any bytes give a topology or one clean error (rendered with file, line and
//! column), never a panic; AFL's time and memory limits bound both.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = String::from_utf8_lossy(data);
        if let Err(e) = p2plab::model::parse("fuzz.yaml", &text) {
            let _ = e.render();
        }
    });
}
