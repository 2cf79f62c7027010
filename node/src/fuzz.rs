//! Entry points for the fuzz targets (`fuzz/`): the decoders that take bytes from the network,
//! without a swarm around them. Each must return, whatever the bytes; a panic is a bug.

use asynchronous_codec::Decoder;
use bytes::BytesMut;
use libp2p::{core::SignedEnvelope, identity::Keypair, PeerId};

use crate::discovery::{PeerRecord, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE};

/// A peer record: with a first byte of 0 the rest is the DHT value as it arrives (a signed
/// envelope, checked against a fixed peer); otherwise the rest is the JSON inside an envelope
/// signed by that peer, so the record itself and its addresses are reached too.
pub fn peer_record(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(key) = crate::swarm::identity_from_seed(1) else {
        return;
    };
    let peer = PeerId::from(key.public());
    if *mode == 0 {
        let _ = PeerRecord::verify(&peer, rest);
        return;
    }
    if let Some(value) = sign(&key, rest) {
        if let Ok(r) = PeerRecord::verify(&peer, &value) {
            // what is believed is only what may be dialed: never another peer's address
            assert!(r.addrs.len() <= crate::discovery::MAX_RECORD_ADDRS);
        }
    }
}

fn sign(key: &Keypair, json: &[u8]) -> Option<Vec<u8>> {
    SignedEnvelope::new(
        key,
        RECORD_DOMAIN.into(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        json.to_vec(),
    )
    .ok()
    .map(|e| e.into_protobuf_encoding())
}

/// The message protocol's frames: `data` read by the receiver's and the sender's codec, split
/// into chunks at the lengths the first byte gives, as a stream would deliver it.
pub fn message_frames(data: &[u8]) {
    let Some((split, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(*split).max(1);
    let mut recv = crate::swarm::msg::RecvCodec {
        max_size: crate::MAX_MESSAGE_SIZE,
    };
    let mut send = crate::swarm::msg::SendCodec;
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    for piece in rest.chunks(chunk) {
        a.extend_from_slice(piece);
        b.extend_from_slice(piece);
        loop {
            match recv.decode(&mut a) {
                Ok(Some((_, size))) => assert!(size <= crate::MAX_MESSAGE_SIZE),
                Ok(None) => break,
                Err(_) => return, // the stream is closed on a bad frame
            }
        }
        while let Ok(Some(_)) = send.decode(&mut b) {}
    }
}
