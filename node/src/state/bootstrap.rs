//! Dialing the `--bootstrap` addresses and (re)joining the DHT through them.
//!
//! Each address is one entry: waiting (until its backoff ends), dialing, or connected. A dial that
//! fails, or a connection that closes, puts the entry back to waiting with exponential backoff
//! (0.5 s doubling to 15 s); a connection resets it.
//!
//! Identity: an address given with `/p2p/<id>` is pinned to that peer (the swarm refuses anyone
//! else). An address without one accepts **whoever answers there now**: it is always dialed
//! without a peer id, so a bootstrap node redeployed with a new identity at the same address is
//! joined again (the old identity is reported as [`Action::IdentityChanged`] and forgotten). A
//! peer id learned at run time never locks a node out.
//!
//! Joining: whenever an entry becomes connected, the node joins the DHT again once identify says
//! that peer serves Kademlia ([`Action::Join`]), so a bootstrap node that came back (empty, after
//! a restart) learns the node's records again. When the last bootstrap connection closes the node
//! is [`Action::Offline`]; it comes back by the same path.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use libp2p::{multiaddr::Protocol, swarm::ConnectionId, Multiaddr, PeerId};

use super::Backoff;

pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Wait before a failed Kademlia join is tried again (while a bootstrap peer is connected).
pub const JOIN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial entry `index` at `addr`, pinned to `peer` when the flag named one. Report the
    /// connection id with [`Bootstrap::dial_started`] (or the refusal with
    /// [`Bootstrap::dial_refused`]).
    Dial {
        index: usize,
        addr: Multiaddr,
        peer: Option<PeerId>,
    },
    /// A dial failed or the connection closed; the next try is in `retry_in`.
    Retry {
        addr: Multiaddr,
        error: String,
        retry_in: Duration,
    },
    /// Connected to bootstrap peer `peer` on `addr` (ask it for AutoNAT probes).
    Connected { peer: PeerId, addr: Multiaddr },
    /// The node at `addr` now answers as `new`: forget `old`.
    IdentityChanged {
        addr: Multiaddr,
        old: PeerId,
        new: PeerId,
    },
    /// Join the DHT (a Kademlia bootstrap). `rejoin`: not the first time.
    Join { rejoin: bool },
    /// Every bootstrap connection is gone.
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting(Instant),
    /// The dial is requested; the connection id follows.
    Dialing(Option<ConnectionId>),
    Connected,
}

#[derive(Debug)]
struct Entry {
    /// Without `/p2p/`.
    addr: Multiaddr,
    pinned: Option<PeerId>,
    /// The peer that answered last.
    peer: Option<PeerId>,
    state: State,
    backoff: Backoff,
}

#[derive(Debug)]
pub struct Bootstrap {
    entries: Vec<Entry>,
    actions: VecDeque<Action>,
    /// An entry became connected: join once identify says its peer serves Kademlia.
    join_pending: bool,
    join_retry: Option<Instant>,
    joined_once: bool,
    online: bool,
}

impl Bootstrap {
    pub fn new(addrs: &[Multiaddr], now: Instant) -> Self {
        let entries = addrs
            .iter()
            .map(|a| {
                let mut addr = a.clone();
                let pinned = match addr.iter().last() {
                    Some(Protocol::P2p(p)) => {
                        addr.pop();
                        Some(p)
                    }
                    _ => None,
                };
                Entry {
                    addr,
                    pinned,
                    peer: pinned,
                    state: State::Waiting(now),
                    backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
                }
            })
            .collect();
        Self {
            entries,
            actions: VecDeque::new(),
            join_pending: false,
            join_retry: None,
            joined_once: false,
            online: false,
        }
    }

    /// At least one bootstrap connection is open.
    pub fn online(&self) -> bool {
        self.online
    }

    /// Whether `peer` is (the current identity of) a bootstrap node.
    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.entries.iter().any(|e| e.peer.as_ref() == Some(peer))
    }

    /// The first connected bootstrap peer.
    pub fn first_connected(&self) -> Option<PeerId> {
        self.entries
            .iter()
            .find(|e| e.state == State::Connected)
            .and_then(|e| e.peer)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (index, e) in self.entries.iter_mut().enumerate() {
            if matches!(e.state, State::Waiting(t) if t <= now) {
                e.state = State::Dialing(None);
                self.actions.push_back(Action::Dial {
                    index,
                    addr: e.addr.clone(),
                    peer: e.pinned,
                });
            }
        }
        if self.join_retry.is_some_and(|t| t <= now) {
            self.join_retry = None;
            if self.online {
                self.actions.push_back(Action::Join {
                    rejoin: self.joined_once,
                });
                self.joined_once = true;
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let waits = self.entries.iter().filter_map(|e| match e.state {
            State::Waiting(t) => Some(t),
            _ => None,
        });
        waits.chain(self.join_retry).min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn dial_started(&mut self, index: usize, conn: ConnectionId) {
        if let Some(e) = self.entries.get_mut(index) {
            if e.state == State::Dialing(None) {
                e.state = State::Dialing(Some(conn));
            }
        }
    }

    /// The swarm refused to start the dial.
    pub fn dial_refused(&mut self, index: usize, error: String, now: Instant) {
        self.retry(index, error, now);
    }

    /// An outgoing connection failed; true if it was a bootstrap dial.
    pub fn outgoing_error(
        &mut self,
        conn: ConnectionId,
        error: String,
        now: Instant,
    ) -> Option<Multiaddr> {
        let index = self
            .entries
            .iter()
            .position(|e| e.state == State::Dialing(Some(conn)))?;
        let addr = self.entries[index].addr.clone();
        self.retry(index, error, now);
        Some(addr)
    }

    fn retry(&mut self, index: usize, error: String, now: Instant) {
        let Some(e) = self.entries.get_mut(index) else {
            return;
        };
        let wait = e.backoff.next_wait();
        e.state = State::Waiting(now + wait);
        self.actions.push_back(Action::Retry {
            addr: e.addr.clone(),
            error,
            retry_in: wait,
        });
    }

    /// A connection to `peer` is up. Returns whether it is a bootstrap connection.
    pub fn connected(&mut self, peer: PeerId, conn: ConnectionId, remote: &Multiaddr) -> bool {
        let index = self
            .entries
            .iter()
            .position(|e| e.state == State::Dialing(Some(conn)))
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|e| e.peer == Some(peer) && e.state != State::Connected)
            });
        let Some(index) = index else {
            return self.entries.iter().any(|e| e.peer == Some(peer));
        };
        let e = &mut self.entries[index];
        if let Some(old) = e.peer.filter(|old| *old != peer) {
            self.actions.push_back(Action::IdentityChanged {
                addr: e.addr.clone(),
                old,
                new: peer,
            });
        }
        e.peer = Some(peer);
        e.state = State::Connected;
        e.backoff.reset();
        self.online = true;
        self.join_pending = true;
        self.actions.push_back(Action::Connected {
            peer,
            addr: remote.clone(),
        });
        true
    }

    /// Identify told us what `peer` speaks.
    pub fn identified(&mut self, peer: &PeerId, serves_kad: bool) {
        let connected = self
            .entries
            .iter()
            .any(|e| e.peer.as_ref() == Some(peer) && e.state == State::Connected);
        if self.join_pending && serves_kad && connected {
            self.join_pending = false;
            self.actions.push_back(Action::Join {
                rejoin: self.joined_once,
            });
            self.joined_once = true;
        }
    }

    /// The Kademlia join failed: try again shortly while a bootstrap peer is connected.
    pub fn join_failed(&mut self, now: Instant) {
        self.join_retry = Some(now + JOIN_RETRY);
    }

    /// A connection to `peer` closed, `remaining` are still open.
    pub fn disconnected(&mut self, peer: &PeerId, remaining: u32, now: Instant) {
        if remaining > 0 {
            return;
        }
        let lost: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                self.entries[i].peer.as_ref() == Some(peer)
                    && self.entries[i].state == State::Connected
            })
            .collect();
        for i in lost {
            // A bootstrap node that was up is worth retrying soon.
            self.entries[i].backoff.reset();
            self.retry(i, "connection closed".into(), now);
        }
        if self.online && !self.entries.iter().any(|e| e.state == State::Connected) {
            self.online = false;
            self.join_retry = None;
            self.actions.push_back(Action::Offline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut Bootstrap) -> Vec<Action> {
        std::iter::from_fn(|| b.poll_action()).collect()
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn dials_at_once_and_backs_off_while_down() {
        let t0 = Instant::now();
        let a = addr("/ip4/10.0.0.1/tcp/51820");
        let mut b = Bootstrap::new(std::slice::from_ref(&a), t0);
        assert_eq!(b.poll_timeout(), Some(t0));
        b.handle_timeout(t0);
        assert_eq!(
            drain(&mut b),
            [Action::Dial {
                index: 0,
                addr: a.clone(),
                peer: None
            }]
        );
        assert_eq!(b.poll_timeout(), None, "no timer while dialing");
        b.dial_started(0, conn(1));
        let mut waits = Vec::new();
        let mut now = t0;
        for n in 1..=7 {
            assert_eq!(
                b.outgoing_error(conn(n), "refused".into(), now),
                Some(a.clone())
            );
            let Some(Action::Retry { retry_in, .. }) = b.poll_action() else {
                panic!()
            };
            waits.push(retry_in.as_millis());
            now = b.poll_timeout().unwrap();
            b.handle_timeout(now);
            assert!(matches!(b.poll_action(), Some(Action::Dial { .. })));
            b.dial_started(0, conn(n + 1));
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
        assert!(!b.online());
    }

    #[test]
    fn joins_when_identify_says_kad_then_rejoins_after_a_loss() {
        let t0 = Instant::now();
        let a = addr("/ip4/10.0.0.1/tcp/51820");
        let mut b = Bootstrap::new(std::slice::from_ref(&a), t0);
        b.handle_timeout(t0);
        drain(&mut b);
        b.dial_started(0, conn(1));
        let p = PeerId::random();
        assert!(b.connected(p, conn(1), &a));
        assert_eq!(
            drain(&mut b),
            [Action::Connected {
                peer: p,
                addr: a.clone()
            }]
        );
        b.identified(&p, false);
        assert!(drain(&mut b).is_empty(), "not a Kademlia server yet");
        b.identified(&p, true);
        assert_eq!(drain(&mut b), [Action::Join { rejoin: false }]);
        b.identified(&p, true);
        assert!(drain(&mut b).is_empty(), "one join per connection");

        // The bootstrap node dies: offline, retried soon, and joined again when it is back.
        b.disconnected(&p, 0, t0);
        let acts = drain(&mut b);
        assert!(matches!(acts[0], Action::Retry { retry_in, .. } if retry_in == BACKOFF_MIN));
        assert_eq!(acts[1], Action::Offline);
        assert!(!b.online());
        b.handle_timeout(t0 + BACKOFF_MIN);
        drain(&mut b);
        b.dial_started(0, conn(2));
        b.connected(p, conn(2), &a);
        b.identified(&p, true);
        assert_eq!(
            drain(&mut b),
            [
                Action::Connected { peer: p, addr: a },
                Action::Join { rejoin: true }
            ]
        );
    }

    #[test]
    fn an_unpinned_address_accepts_a_new_identity() {
        let t0 = Instant::now();
        let a = addr("/ip4/10.0.0.1/tcp/51820");
        let mut b = Bootstrap::new(std::slice::from_ref(&a), t0);
        let (old, new) = (PeerId::random(), PeerId::random());
        b.handle_timeout(t0);
        drain(&mut b);
        b.dial_started(0, conn(1));
        b.connected(old, conn(1), &a);
        b.disconnected(&old, 0, t0);
        drain(&mut b);
        // Redeployed with a new key: the redial names no peer, so the new one is accepted.
        b.handle_timeout(t0 + BACKOFF_MIN);
        assert_eq!(
            drain(&mut b),
            [Action::Dial {
                index: 0,
                addr: a.clone(),
                peer: None
            }]
        );
        b.dial_started(0, conn(2));
        assert!(b.connected(new, conn(2), &a));
        assert_eq!(
            drain(&mut b),
            [
                Action::IdentityChanged {
                    addr: a.clone(),
                    old,
                    new
                },
                Action::Connected { peer: new, addr: a }
            ]
        );
        assert!(b.is_bootstrap(&new) && !b.is_bootstrap(&old));
    }

    #[test]
    fn a_pinned_address_dials_its_peer() {
        let p = PeerId::random();
        let t0 = Instant::now();
        let mut b = Bootstrap::new(&[addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{p}"))], t0);
        assert!(b.is_bootstrap(&p));
        b.handle_timeout(t0);
        assert_eq!(
            drain(&mut b),
            [Action::Dial {
                index: 0,
                addr: addr("/ip4/10.0.0.1/tcp/1"),
                peer: Some(p)
            }]
        );
    }

    #[test]
    fn an_inbound_connection_from_a_known_bootstrap_peer_counts() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let a = addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{p}"));
        let mut b = Bootstrap::new(&[a], t0);
        b.handle_timeout(t0);
        drain(&mut b);
        assert!(b.connected(p, conn(9), &addr("/ip4/10.0.0.1/tcp/1")));
        assert!(b.online());
        assert!(!b.connected(PeerId::random(), conn(10), &addr("/ip4/10.0.0.2/tcp/1")));
    }

    #[test]
    fn a_failed_join_is_retried_while_connected() {
        let t0 = Instant::now();
        let a = addr("/ip4/10.0.0.1/tcp/51820");
        let mut b = Bootstrap::new(std::slice::from_ref(&a), t0);
        b.handle_timeout(t0);
        b.dial_started(0, conn(1));
        let p = PeerId::random();
        b.connected(p, conn(1), &a);
        b.identified(&p, true);
        drain(&mut b);
        b.join_failed(t0);
        assert_eq!(b.poll_timeout(), Some(t0 + JOIN_RETRY));
        b.handle_timeout(t0 + JOIN_RETRY);
        assert_eq!(drain(&mut b), [Action::Join { rejoin: true }]);
    }
}
