//! Entry points for the fuzz targets (`fuzz/`): what the probe and the router parse from the
//! network. Each must return, whatever the bytes; a panic is a bug.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Every line of `data` as a reflector's request and as a probe's reply.
pub fn probe_lines(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = crate::probe::parse_request(line);
        let _ = crate::probe::parse_reply(line);
    }
}

/// `data` as a UDP payload to the router's STUN answerer.
pub fn stun(data: &[u8]) {
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000);
    if let Some(answer) = crate::router::stun_answer(data, from, Ipv4Addr::new(198, 18, 0, 2)) {
        assert!(answer.len() >= 20, "an answer shorter than a STUN header");
    }
}
