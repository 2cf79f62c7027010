//! Namespace discovery through the Kademlia DHT, without I/O.
//!
//! Membership and addresses are two kinds of record:
//! - every member of namespace `ns` is a *provider* of the key `/p2plab/ns/<ns>`. Provider records
//!   hold many peers under one key (a `put_record` on one key, as in the seed, keeps only the last
//!   writer), and rust-libp2p hands a `get_providers` caller the peer ids only;
//! - every member also puts a *peer record* under `/p2plab/peer/<peer id>` whose value lists the
//!   addresses others can reach it on: its confirmed external addresses, which for a peer behind
//!   NAT are its relayed (`/p2p-circuit`) addresses. A record is only believed when its Kademlia
//!   publisher is the peer named in the key.
//!
//! Both are re-announced periodically and whenever the peer's reachable addresses change.

use libp2p::{kad::RecordKey, multiaddr::Protocol, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

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
    #[error("record for {expected} was published by {publisher}")]
    WrongPublisher { expected: String, publisher: String },
}

impl PeerRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a record fetched from the DHT for `peer`, checking its publisher and bounding its
    /// size. Addresses that are unusable for dialing `peer` are dropped (see [`dialable`]).
    pub fn decode(peer: &PeerId, publisher: Option<PeerId>, value: &[u8]) -> Result<Self, RecordError> {
        if publisher != Some(*peer) {
            return Err(RecordError::WrongPublisher {
                expected: peer.to_string(),
                publisher: publisher.map_or_else(|| "nobody".to_string(), |p| p.to_string()),
            });
        }
        if value.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { size: value.len() });
        }
        let mut rec: PeerRecord =
            serde_json::from_slice(value).map_err(|e| RecordError::Malformed(e.to_string()))?;
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
pub fn publishable(local: &PeerId, external: impl IntoIterator<Item = Multiaddr>) -> Vec<Multiaddr> {
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

    #[test]
    fn record_round_trips_and_checks_publisher() {
        let p = PeerId::random();
        let rec = PeerRecord {
            namespace: "demo".into(),
            addrs: vec![addr("/ip4/10.0.0.2/tcp/4001")],
        };
        let bytes = rec.encode();
        assert_eq!(PeerRecord::decode(&p, Some(p), &bytes).unwrap(), rec);
        let other = PeerId::random();
        assert!(matches!(
            PeerRecord::decode(&p, Some(other), &bytes),
            Err(RecordError::WrongPublisher { .. })
        ));
        assert!(PeerRecord::decode(&p, None, &bytes).is_err());
    }

    #[test]
    fn hostile_records_are_rejected_without_panic() {
        let p = PeerId::random();
        assert!(matches!(
            PeerRecord::decode(&p, Some(p), &vec![b'x'; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge { .. })
        ));
        assert!(PeerRecord::decode(&p, Some(p), b"\xff\x00garbage").is_err());
        assert!(PeerRecord::decode(&p, Some(p), br#"{"namespace":1}"#).is_err());
        let many: Vec<String> = (0..100).map(|i| format!("\"/ip4/10.0.0.{}/tcp/1\"", i % 250 + 1)).collect();
        let json = format!(r#"{{"namespace":"n","addrs":[{}]}}"#, many.join(","));
        let rec = PeerRecord::decode(&p, Some(p), json.as_bytes()).unwrap();
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
        assert_eq!(dialable(&p, addr(&format!("/ip4/10.0.0.2/tcp/1/p2p/{q}"))), None);
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
            [relayed.clone(), direct.clone(), direct.clone().with(Protocol::P2p(p))],
        );
        assert_eq!(out, vec![direct, relayed]);
    }
}
