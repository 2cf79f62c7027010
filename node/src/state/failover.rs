//! A direct path that died while the relay still answers: back to the relay within one ack
//! timeout, and direct again once a hole punch works.
//!
//! Jepsen's bridge is the case: two peers cannot reach each other any more, yet both still reach
//! the relay. The direct connection looks alive (TCP retransmits for minutes, QUIC idles out after
//! its own timeout), so every retry of a message would wait on it until the heal. Instead, the
//! first ack timeout on a direct connection to a peer we send to closes that connection and dials
//! the peer through the relay: the next attempt of every message goes over the circuit.
//!
//! Going direct again: DCUtR runs once per new relayed connection (the side that accepts the
//! circuit starts it). So while a peer that fell back is relayed only, a fresh circuit is opened
//! now and then ([`PUNCH`], doubling to [`PUNCH_MAX`]), each one a new hole punch; a direct
//! connection ends it, and the node closes the relayed ones as always. Peers that never had a
//! direct connection (a pair only a relay can join) are left alone: their punches failed for a
//! reason that does not heal.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::Backoff;

/// The first fresh circuit after a fallback (besides the one the fallback dials at once).
pub const PUNCH: Duration = Duration::from_secs(2);
/// The longest wait between fresh circuits while a fallen-back peer stays relayed.
pub const PUNCH_MAX: Duration = Duration::from_secs(10);
/// Fresh circuits after one fallback before giving up (about three minutes): a path that stays
/// unpunchable that long has changed for good (a new NAT), and the relay carries on.
pub const PUNCH_TRIES: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close every direct connection to `peer`: they share the path that died (TCP and QUIC,
    /// or both ends' hole punches), and the next one chosen would time out all over again.
    CloseDirect { peer: PeerId },
    /// Open a new relayed connection to `peer` (another chance for DCUtR).
    DialRelayed { peer: PeerId },
}

#[derive(Debug)]
struct Fallen {
    backoff: Backoff,
    next: Instant,
    tries: u32,
}

/// Which peers fell back to the relay, and when each gets its next circuit.
#[derive(Debug, Default)]
pub struct Failover {
    fallen: HashMap<PeerId, Fallen>,
    actions: Vec<Action>,
}

impl Failover {
    pub fn new() -> Self {
        Self::default()
    }

    /// An attempt to `peer` got no ack in time. `direct`: on a direct connection still open (a
    /// relayed one has nothing better to fall back to).
    pub fn ack_timeout(&mut self, peer: PeerId, direct: bool, now: Instant) {
        // Fallen already: its direct connections are closing, and later timeouts on them (the
        // other messages in flight) are the same failure.
        if !direct || self.fallen.contains_key(&peer) {
            return;
        }
        self.actions.push(Action::CloseDirect { peer });
        self.actions.push(Action::DialRelayed { peer });
        let mut backoff = Backoff::new(PUNCH, PUNCH_MAX);
        let next = now + backoff.next_wait();
        self.fallen.insert(
            peer,
            Fallen {
                backoff,
                next,
                tries: 0,
            },
        );
    }

    /// A direct connection to `peer` is up: nothing to retry.
    pub fn direct(&mut self, peer: &PeerId) {
        self.fallen.remove(peer);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (peer, f) in &mut self.fallen {
            if f.next <= now {
                self.actions.push(Action::DialRelayed { peer: *peer });
                f.next = now + f.backoff.next_wait();
                f.tries += 1;
            }
        }
        self.fallen.retain(|_, f| f.tries < PUNCH_TRIES);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fallen.values().map(|f| f.next).min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    /// Whether `peer` fell back and has no direct connection yet.
    #[cfg(test)]
    pub fn is_fallen(&self, peer: &PeerId) -> bool {
        self.fallen.contains_key(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(f: &mut Failover) -> Vec<Action> {
        std::iter::from_fn(|| f.poll_action()).collect()
    }

    #[test]
    fn a_timeout_on_a_direct_connection_closes_it_and_dials_the_relay() {
        let (mut f, t0, peer) = (Failover::new(), Instant::now(), PeerId::random());
        f.ack_timeout(peer, true, t0);
        assert_eq!(
            drain(&mut f),
            vec![Action::CloseDirect { peer }, Action::DialRelayed { peer }]
        );
        assert!(f.is_fallen(&peer));
        assert_eq!(f.poll_timeout(), Some(t0 + PUNCH));
        // the other messages in flight on it time out too: the same failure, nothing new
        f.ack_timeout(peer, true, t0 + Duration::from_millis(10));
        assert!(drain(&mut f).is_empty());
        assert_eq!(f.poll_timeout(), Some(t0 + PUNCH));
    }

    #[test]
    fn punching_stops_after_its_tries() {
        let (mut f, peer) = (Failover::new(), PeerId::random());
        f.ack_timeout(peer, true, Instant::now());
        drain(&mut f);
        let mut dials = 0;
        while let Some(t) = f.poll_timeout() {
            f.handle_timeout(t);
            dials += drain(&mut f).len();
        }
        assert_eq!(dials, PUNCH_TRIES as usize);
        assert!(!f.is_fallen(&peer));
    }

    #[test]
    fn a_timeout_on_a_relayed_connection_changes_nothing() {
        let mut f = Failover::new();
        f.ack_timeout(PeerId::random(), false, Instant::now());
        assert!(drain(&mut f).is_empty());
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn circuits_are_retried_with_backoff_until_a_direct_connection() {
        let (mut f, t0, peer) = (Failover::new(), Instant::now(), PeerId::random());
        f.ack_timeout(peer, true, t0);
        drain(&mut f);
        let mut t = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let next = f.poll_timeout().unwrap();
            // nothing before it is due
            f.handle_timeout(next - Duration::from_millis(1));
            assert!(drain(&mut f).is_empty());
            f.handle_timeout(next);
            assert_eq!(drain(&mut f), vec![Action::DialRelayed { peer }]);
            waits.push(next - t);
            t = next;
        }
        assert_eq!(
            waits,
            [2, 4, 8, 10, 10].map(Duration::from_secs).to_vec(),
            "PUNCH doubling to PUNCH_MAX"
        );
        f.direct(&peer);
        assert!(!f.is_fallen(&peer));
        assert_eq!(f.poll_timeout(), None);
        f.handle_timeout(t + Duration::from_secs(60));
        assert!(drain(&mut f).is_empty());
    }
}
