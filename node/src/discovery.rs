//! Namespace discovery through the Kademlia DHT, without I/O.
//!
//! Membership and addresses are two kinds of record:
//! - every member of namespace `ns` is a *provider* of the key `/p2plab/ns/<ns>`. Provider records
//!   hold many peers under one key (a `put_record` on one key, as in the seed, keeps only the last
//!   writer), and rust-libp2p hands a `get_providers` caller the peer ids only;
//! - every member also puts a *peer record* under `/p2plab/peer/<peer id>` whose value lists the
//!   addresses others can reach it on: its confirmed external addresses, which for a peer behind
//!   NAT are its relayed (`/p2p-circuit`) addresses. The record is **signed**: a libp2p signed
//!   envelope (domain `/p2plab/peer-record`) around the JSON, made with the peer's own key. A
//!   record is only believed when the envelope's signature checks and its signing key is the key
//!   of the peer named in the DHT key; Kademlia's publisher field is not signed, so it proves
//!   nothing and is not looked at.
//!
//! Both are re-announced periodically and whenever the peer's reachable addresses change.

use libp2p::{
    core::SignedEnvelope, identity::Keypair, kad::RecordKey, multiaddr::Protocol, Multiaddr, PeerId,
};
use serde::{Deserialize, Serialize};

/// The signature's domain: a signature made for anything else does not verify as a record.
pub const RECORD_DOMAIN: &str = "/p2plab/peer-record";
/// The envelope's payload type.
pub const RECORD_PAYLOAD_TYPE: &[u8] = b"/p2plab/peer-record/json";

/// Largest accepted peer record value, in bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Most addresses accepted in one record.
pub const MAX_RECORD_ADDRS: usize = 32;

/// The provider key of a namespace.
pub fn namespace_key(namespace: &str) -> RecordKey {
    RecordKey::new(&format!("/p2plab/ns/{namespace}"))
}

/// The key of a peer's address record.
pub fn peer_key(peer: &PeerId) -> RecordKey {
    RecordKey::new(&format!("/p2plab/peer/{peer}"))
}

/// The value stored under [`peer_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub namespace: String,
    pub addrs: Vec<Multiaddr>,
}

/// Why a record from the network was not believed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {size} bytes is larger than {MAX_RECORD_BYTES}")]
    TooLarge { size: usize },
    #[error("record is not valid JSON: {0}")]
    Malformed(String),
    #[error("record is not a signed envelope: {0}")]
    NotSigned(String),
    #[error("record signature does not verify: {0}")]
    BadSignature(String),
    #[error("record for {expected} is signed by {signer}")]
    WrongSigner { expected: String, signer: String },
}

impl PeerRecord {
    /// The record as stored in the DHT: signed with `key` (the publishing peer's own).
    pub fn sign(&self, key: &Keypair) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        match SignedEnvelope::new(
            key,
            RECORD_DOMAIN.to_string(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            json,
        ) {
            Ok(env) => env.into_protobuf_encoding(),
            Err(e) => {
                tracing::warn!("cannot sign the peer record: {e}");
                Vec::new()
            }
        }
    }

    /// Decodes a record fetched from the DHT for `peer`: bounds its size, checks the envelope's
    /// signature and that its signing key is `peer`'s. Addresses that are unusable for dialing
    /// `peer` are dropped (see [`dialable`]).
    pub fn verify(peer: &PeerId, value: &[u8]) -> Result<Self, RecordError> {
        if value.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { size: value.len() });
        }
        let env = SignedEnvelope::from_protobuf_encoding(value)
            .map_err(|e| RecordError::NotSigned(e.to_string()))?;
        let (json, signer) = env
            .payload_and_signing_key(RECORD_DOMAIN.to_string(), RECORD_PAYLOAD_TYPE)
            .map_err(|e| RecordError::BadSignature(e.to_string()))?;
        let signer = signer.to_peer_id();
        if signer != *peer {
            return Err(RecordError::WrongSigner {
                expected: peer.to_string(),
                signer: signer.to_string(),
            });
        }
        let mut rec: PeerRecord =
            serde_json::from_slice(json).map_err(|e| RecordError::Malformed(e.to_string()))?;
        rec.addrs = rec
            .addrs
            .into_iter()
            .filter_map(|a| dialable(peer, a))
            .take(MAX_RECORD_ADDRS)
            .collect();
        Ok(rec)
    }
}

/// The address to dial `peer` on, without a trailing `/p2p/<peer>`; `None` when it cannot lead
/// to `peer` (it names another peer at its end, is unspecified, or is empty).
pub fn dialable(peer: &PeerId, mut addr: Multiaddr) -> Option<Multiaddr> {
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        if id != *peer {
            return None;
        }
        addr.pop();
    }
    let unspecified = addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    if unspecified || addr.is_empty() {
        return None;
    }
    Some(addr)
}

/// The addresses a peer should publish: the external ones, without `/p2p/<self>` and without
/// duplicates, relayed ones last so that direct ones are tried first.
pub fn publishable(
    local: &PeerId,
    external: impl IntoIterator<Item = Multiaddr>,
) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in external {
        if let Some(a) = dialable(local, a) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out.sort_by_key(|a| crate::events::Path::of([a]) == crate::events::Path::Relayed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn namespaces_have_distinct_keys() {
        assert_ne!(namespace_key("a"), namespace_key("b"));
        assert_eq!(namespace_key("a"), namespace_key("a"));
    }

    fn signed(key: &Keypair, json: &[u8]) -> Vec<u8> {
        SignedEnvelope::new(
            key,
            RECORD_DOMAIN.into(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            json.to_vec(),
        )
        .unwrap()
        .into_protobuf_encoding()
    }

    #[test]
    fn record_round_trips_signed_by_its_peer() {
        let key = Keypair::generate_ed25519();
        let p = key.public().to_peer_id();
        let rec = PeerRecord {
            namespace: "demo".into(),
            addrs: vec![addr("/ip4/10.0.0.2/tcp/4001")],
        };
        let bytes = rec.sign(&key);
        assert_eq!(PeerRecord::verify(&p, &bytes).unwrap(), rec);
    }

    #[test]
    fn forged_records_are_rejected() {
        let victim = Keypair::generate_ed25519();
        let p = victim.public().to_peer_id();
        let rec = PeerRecord {
            namespace: "demo".into(),
            addrs: vec![addr("/ip4/10.6.6.6/tcp/1")],
        };
        // Signed by someone else and stored under the victim's key.
        let forger = Keypair::generate_ed25519();
        assert!(matches!(
            PeerRecord::verify(&p, &rec.sign(&forger)),
            Err(RecordError::WrongSigner { .. })
        ));
        // The victim's genuine envelope with its payload swapped: the signature breaks.
        let genuine = rec.sign(&victim);
        let mut tampered = genuine.clone();
        let at = tampered.windows(4).position(|w| w == b"10.6").unwrap();
        tampered[at + 1] = b'1';
        assert!(matches!(
            PeerRecord::verify(&p, &tampered),
            Err(RecordError::BadSignature(_) | RecordError::NotSigned(_))
        ));
        // Unsigned JSON, as the seed stored it.
        assert!(matches!(
            PeerRecord::verify(&p, &serde_json::to_vec(&rec).unwrap()),
            Err(RecordError::NotSigned(_))
        ));
        // Signed for another purpose (another domain).
        let other = SignedEnvelope::new(
            &victim,
            "/other".into(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap()
        .into_protobuf_encoding();
        assert!(PeerRecord::verify(&p, &other).is_err());
    }

    #[test]
    fn hostile_records_are_rejected_without_panic() {
        let key = Keypair::generate_ed25519();
        let p = key.public().to_peer_id();
        assert!(matches!(
            PeerRecord::verify(&p, &vec![b'x'; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge { .. })
        ));
        assert!(PeerRecord::verify(&p, b"\xff\x00garbage").is_err());
        assert!(PeerRecord::verify(&p, &signed(&key, br#"{"namespace":1}"#)).is_err());
        let many: Vec<String> = (0..100)
            .map(|i| format!("\"/ip4/10.0.0.{}/tcp/1\"", i % 250 + 1))
            .collect();
        let json = format!(r#"{{"namespace":"n","addrs":[{}]}}"#, many.join(","));
        let rec = PeerRecord::verify(&p, &signed(&key, json.as_bytes())).unwrap();
        assert_eq!(rec.addrs.len(), MAX_RECORD_ADDRS);
    }

    #[test]
    fn dialable_drops_foreign_and_unspecified() {
        let p = PeerId::random();
        let q = PeerId::random();
        assert_eq!(
            dialable(&p, addr(&format!("/ip4/10.0.0.2/tcp/1/p2p/{p}"))),
            Some(addr("/ip4/10.0.0.2/tcp/1"))
        );
        assert_eq!(
            dialable(&p, addr(&format!("/ip4/10.0.0.2/tcp/1/p2p/{q}"))),
            None
        );
        assert_eq!(dialable(&p, addr("/ip4/0.0.0.0/tcp/1")), None);
        // A relayed address names the relay inside, and that is fine.
        let relayed = addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{q}/p2p-circuit"));
        assert_eq!(dialable(&p, relayed.clone()), Some(relayed));
    }

    #[test]
    fn publishable_puts_direct_first_and_dedups() {
        let p = PeerId::random();
        let q = PeerId::random();
        let relayed = addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{q}/p2p-circuit"));
        let direct = addr("/ip4/10.0.0.2/tcp/1");
        let out = publishable(
            &p,
            [
                relayed.clone(),
                direct.clone(),
                direct.clone().with(Protocol::P2p(p)),
            ],
        );
        assert_eq!(out, vec![direct, relayed]);
    }
}
