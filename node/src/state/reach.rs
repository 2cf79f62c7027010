//! Reachability, and when to hold relay reservations.
//!
//! With `--relay auto` (the default) a peer reserves a slot on every bootstrap relay **as soon as
//! it is connected to it**, while AutoNAT still decides: a peer behind NAT is reachable through
//! the relay about one round trip after it joins, not after `--reachability-timeout`. A later
//! public verdict releases the reservations, and with them the relayed external addresses (the
//! announcer then publishes the direct ones only). A private or unknown verdict keeps them.
//! `--relay always` reserves whatever AutoNAT says (its verdicts are ignored); `--relay never`
//! never reserves. With `--upnp`, reservations wait for the UPnP outcome (a mapping may make the
//! node public without a relay), as before.
//!
//! The reachability timeout still writes its `private` verdict (source `timeout`) when AutoNAT has
//! said nothing that long after the node joined; it no longer gates anything.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p::{core::transport::ListenerId, multiaddr::Protocol, Multiaddr, PeerId};

use crate::{
    config::RelayMode,
    events::{Event, Reachability, ReachabilitySource, ReservationStatus},
};

/// Wait before a failed or lost reservation on a relay that is still connected is tried again.
pub const RELAY_RETRY: Duration = Duration::from_secs(2);

/// Where `--upnp` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upnp {
    /// No `--upnp`.
    Off,
    /// Searching the gateway or waiting for the first mapping.
    Pending,
    /// A port is mapped (since then): AutoNAT is asked to check it.
    Mapped(Instant),
    /// No gateway, an unusable one, or a refused mapping.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Listen on `addr` (a `/p2p-circuit` address through `relay`); report the listener with
    /// [`Reach::listening`] or the refusal with [`Reach::listen_failed`].
    Reserve { relay: PeerId, addr: Multiaddr },
    /// Close this relayed listener: the node is public.
    Release { listener: ListenerId },
    /// A `reachability` or `reservation` event.
    Emit(Event),
}

#[derive(Debug)]
struct Reservation {
    addr: Multiaddr,
    listener: Option<ListenerId>,
    accepted: bool,
    released: bool,
    /// Not wanted any more, but the relay has not answered yet: released when it accepts.
    /// Closing the listener of a reservation in flight made libp2p-relay 0.22's client panic
    /// ("Relay connection exist") when the acceptance arrived: a dialer in the NAT matrix died so.
    release_when_accepted: bool,
}

/// What the command line says.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub relay: RelayMode,
    pub no_direct: bool,
    /// `--external-addr` given: public by flag.
    pub external_addr: bool,
    pub timeout: Duration,
    pub upnp: bool,
}

#[derive(Debug)]
pub struct Reach {
    policy: Policy,
    reachability: Reachability,
    /// `--relay always`: AutoNAT's verdicts are not used.
    ignore_autonat: bool,
    /// When the timeout verdict is due (once joined).
    timeout_at: Option<Instant>,
    started: Instant,
    upnp: Upnp,
    /// Relays we are connected to, with the direct address we reach each on.
    relays: HashMap<PeerId, Multiaddr>,
    reservations: HashMap<PeerId, Reservation>,
    retry_at: HashMap<PeerId, Instant>,
    actions: VecDeque<Action>,
}

impl Reach {
    /// Emits the `flag` verdict, if the command line gives one.
    pub fn new(policy: Policy, now: Instant) -> Self {
        let mut r = Reach {
            policy,
            reachability: Reachability::Unknown,
            ignore_autonat: policy.relay == RelayMode::Always,
            timeout_at: None,
            started: now,
            upnp: if policy.upnp {
                Upnp::Pending
            } else {
                Upnp::Off
            },
            relays: HashMap::new(),
            reservations: HashMap::new(),
            retry_at: HashMap::new(),
            actions: VecDeque::new(),
        };
        if policy.external_addr && !policy.no_direct && policy.relay != RelayMode::Always {
            r.reachability = Reachability::Public;
        } else if policy.relay == RelayMode::Always
            || (policy.no_direct && policy.relay != RelayMode::Never)
        {
            r.reachability = Reachability::Private;
        }
        r
    }

    /// The `flag` verdict event to write after `started`, if any.
    pub fn flag_event(&self, external: Option<Multiaddr>) -> Option<Event> {
        (self.reachability != Reachability::Unknown).then(|| Event::Reachability {
            status: self.reachability,
            source: ReachabilitySource::Flag,
            addr: if self.reachability == Reachability::Public {
                external
            } else {
                None
            },
        })
    }

    /// Whether AutoNAT can change anything: not when the command line decided (`--external-addr`,
    /// `--relay always`, `--no-direct`); then the node asks nobody for probes.
    pub fn wants_probes(&self) -> bool {
        self.reachability == Reachability::Unknown || self.upnp != Upnp::Off
    }

    pub fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Relays the node holds an accepted reservation on.
    #[cfg(test)]
    pub fn reserved(&self) -> usize {
        self.reservations
            .values()
            .filter(|r| r.accepted && !r.released)
            .count()
    }

    fn wants_relay(&self, now: Instant) -> bool {
        match self.policy.relay {
            RelayMode::Never => false,
            RelayMode::Always => true,
            RelayMode::Auto => self.reachability != Reachability::Public && !self.upnp_holds(now),
        }
    }

    /// Whether UPnP may still make this node reachable: while the search or the first mapping is
    /// pending (at most the reachability timeout from start), and after a mapping until AutoNAT
    /// says public (at most the reachability timeout after the mapping).
    fn upnp_holds(&self, now: Instant) -> bool {
        match self.upnp {
            Upnp::Off | Upnp::Failed => false,
            Upnp::Pending => now < self.started + self.policy.timeout,
            Upnp::Mapped(at) => {
                self.reachability != Reachability::Public && now < at + self.policy.timeout
            }
        }
    }

    /// The node joined the DHT: the reachability timeout starts counting (from start).
    pub fn joined(&mut self, now: Instant) {
        if self.timeout_at.is_none() {
            self.timeout_at = Some((self.started + self.policy.timeout).max(now));
        }
        self.sync(now);
    }

    /// Connected to `relay` (a bootstrap node that speaks HOP) on `addr`.
    pub fn relay_available(&mut self, relay: PeerId, addr: Multiaddr, now: Instant) {
        self.relays.insert(relay, addr);
        self.sync(now);
    }

    /// No connection to `relay` is left (or it is no bootstrap node any more).
    pub fn relay_gone(&mut self, relay: &PeerId) {
        self.relays.remove(relay);
        self.retry_at.remove(relay);
    }

    pub fn autonat(&mut self, status: Reachability, addr: Option<Multiaddr>, now: Instant) {
        if self.ignore_autonat {
            return;
        }
        self.reachability = status;
        self.actions.push_back(Action::Emit(Event::Reachability {
            status,
            source: ReachabilitySource::Autonat,
            addr,
        }));
        if status == Reachability::Unknown {
            // No verdict again: the timeout may speak again.
            self.timeout_at = self.timeout_at.map(|t| t.max(now));
        }
        self.sync(now);
    }

    pub fn upnp(&mut self, state: Upnp, now: Instant) {
        self.upnp = match (self.upnp, state) {
            (Upnp::Mapped(at), Upnp::Mapped(_)) => Upnp::Mapped(at),
            (Upnp::Pending, s) | (_, s @ Upnp::Mapped(_)) => s,
            (s, _) => s,
        };
        self.sync(now);
    }

    pub fn listening(&mut self, relay: PeerId, listener: ListenerId) {
        if let Some(r) = self.reservations.get_mut(&relay) {
            r.listener = Some(listener);
        }
    }

    pub fn listen_failed(&mut self, relay: PeerId, error: String, now: Instant) {
        let addr = self.reservations.remove(&relay).map(|r| r.addr);
        self.retry_at.insert(relay, now + RELAY_RETRY);
        self.actions.push_back(Action::Emit(reservation(
            relay,
            ReservationStatus::Failed,
            addr,
            Some(error),
        )));
    }

    pub fn accepted(&mut self, relay: PeerId) {
        let Some(r) = self.reservations.get_mut(&relay) else {
            return;
        };
        if r.accepted || r.released {
            return;
        }
        r.accepted = true;
        let addr = r.addr.clone();
        self.actions.push_back(Action::Emit(reservation(
            relay,
            ReservationStatus::Accepted,
            Some(addr),
            None,
        )));
        if let (true, Some(listener)) = (r.release_when_accepted, r.listener) {
            r.released = true;
            self.actions.push_back(Action::Release { listener });
        }
    }

    /// The relayed listener `listener` closed (released by us, refused, or lost).
    pub fn listener_closed(&mut self, listener: ListenerId, error: Option<String>, now: Instant) {
        let Some(relay) = self
            .reservations
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
            .map(|(p, _)| *p)
        else {
            return;
        };
        let Some(r) = self.reservations.remove(&relay) else {
            return;
        };
        let status = if r.released {
            ReservationStatus::Released
        } else if r.accepted {
            ReservationStatus::Lost
        } else {
            ReservationStatus::Failed
        };
        if !r.released {
            self.retry_at.insert(relay, now + RELAY_RETRY);
        }
        self.actions.push_back(Action::Emit(reservation(
            relay,
            status,
            Some(r.addr),
            error,
        )));
        self.sync(now);
    }

    /// A listener reported an error (a relayed one may close next). Returns whether it was one
    /// of our reservations.
    pub fn listener_error(&mut self, listener: ListenerId, error: String) -> bool {
        let Some((relay, r)) = self
            .reservations
            .iter()
            .find(|(_, r)| r.listener == Some(listener))
        else {
            return false;
        };
        self.actions.push_back(Action::Emit(reservation(
            *relay,
            ReservationStatus::Failed,
            Some(r.addr.clone()),
            Some(error),
        )));
        true
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timeout_at.is_some_and(|t| t <= now) && self.reachability == Reachability::Unknown {
            self.timeout_at = None;
            self.reachability = Reachability::Private;
            self.actions.push_back(Action::Emit(Event::Reachability {
                status: Reachability::Private,
                source: ReachabilitySource::Timeout,
                addr: None,
            }));
        }
        self.sync(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self
            .timeout_at
            .filter(|_| self.reachability == Reachability::Unknown);
        let upnp = match self.upnp {
            Upnp::Pending => Some(self.started + self.policy.timeout),
            Upnp::Mapped(at) if self.reachability != Reachability::Public => {
                Some(at + self.policy.timeout)
            }
            _ => None,
        };
        let retries = self
            .retry_at
            .iter()
            .filter(|(p, _)| self.relays.contains_key(p))
            .map(|(_, t)| *t);
        retries.chain(timeout).chain(upnp).min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Reserve on every connected relay when reservations are wanted, release them when not.
    fn sync(&mut self, now: Instant) {
        if self.wants_relay(now) {
            let mut relays: Vec<(PeerId, Multiaddr)> =
                self.relays.iter().map(|(p, a)| (*p, a.clone())).collect();
            relays.sort();
            for (relay, remote) in &relays {
                if self.reservations.contains_key(relay)
                    || self.retry_at.get(relay).is_some_and(|t| *t > now)
                {
                    continue;
                }
                let addr = remote
                    .clone()
                    .with(Protocol::P2p(*relay))
                    .with(Protocol::P2pCircuit);
                self.retry_at.remove(relay);
                self.reservations.insert(
                    *relay,
                    Reservation {
                        addr: addr.clone(),
                        listener: None,
                        accepted: false,
                        released: false,
                        release_when_accepted: false,
                    },
                );
                self.actions.push_back(Action::Reserve {
                    relay: *relay,
                    addr,
                });
            }
        } else {
            for r in self.reservations.values_mut() {
                match (r.listener, r.released, r.accepted) {
                    (Some(listener), false, true) => {
                        r.released = true;
                        self.actions.push_back(Action::Release { listener });
                    }
                    (Some(_), false, false) => r.release_when_accepted = true,
                    _ => {}
                }
            }
        }
    }
}

fn reservation(
    relay: PeerId,
    status: ReservationStatus,
    addr: Option<Multiaddr>,
    error: Option<String>,
) -> Event {
    Event::Reservation {
        relay,
        status,
        addr,
        renewal: false,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(relay: RelayMode) -> Policy {
        Policy {
            relay,
            no_direct: false,
            external_addr: false,
            timeout: Duration::from_secs(10),
            upnp: false,
        }
    }

    fn drain(r: &mut Reach) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn relay_addr() -> Multiaddr {
        "/ip4/198.18.0.10/tcp/51820".parse().unwrap()
    }

    /// An `auto` node with an accepted reservation on a fresh relay (joined first if `joined`).
    fn reserved(t0: Instant, joined: bool) -> (Reach, ListenerId) {
        let mut r = Reach::new(policy(RelayMode::Auto), t0);
        let relay = PeerId::random();
        if joined {
            r.joined(t0);
        }
        r.relay_available(relay, relay_addr(), t0);
        drain(&mut r);
        let l = ListenerId::next();
        r.listening(relay, l);
        r.accepted(relay);
        drain(&mut r);
        (r, l)
    }

    fn reserves(acts: &[Action]) -> usize {
        acts.iter()
            .filter(|a| matches!(a, Action::Reserve { .. }))
            .count()
    }

    #[test]
    fn auto_reserves_as_soon_as_a_relay_is_connected_without_waiting_for_autonat() {
        let t0 = Instant::now();
        let mut r = Reach::new(policy(RelayMode::Auto), t0);
        assert_eq!(r.flag_event(None), None);
        let relay = PeerId::random();
        r.relay_available(relay, relay_addr(), t0);
        let acts = drain(&mut r);
        let want = relay_addr()
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        assert_eq!(
            acts,
            [Action::Reserve {
                relay,
                addr: want.clone()
            }]
        );
        r.listening(relay, ListenerId::next());
        r.accepted(relay);
        assert!(
            matches!(&drain(&mut r)[..], [Action::Emit(Event::Reservation { status: ReservationStatus::Accepted, addr: Some(a), .. })] if *a == want)
        );
        assert_eq!(r.reserved(), 1);
    }

    /// The listener `l` closes after a release: the reservation is reported released.
    fn assert_released(r: &mut Reach, l: ListenerId, t0: Instant) {
        r.listener_closed(l, None, t0);
        assert!(matches!(
            &drain(r)[..],
            [Action::Emit(Event::Reservation {
                status: ReservationStatus::Released,
                ..
            })]
        ));
    }

    #[test]
    fn a_public_verdict_before_the_relay_answers_releases_only_once_it_accepts() {
        let t0 = Instant::now();
        let mut r = Reach::new(policy(RelayMode::Auto), t0);
        let relay = PeerId::random();
        r.relay_available(relay, relay_addr(), t0);
        drain(&mut r);
        let l = ListenerId::next();
        r.listening(relay, l);
        r.autonat(Reachability::Public, Some(relay_addr()), t0);
        let acts = drain(&mut r);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Release { .. })),
            "closing a listener whose reservation is in flight panics libp2p-relay: {acts:?}"
        );
        r.accepted(relay);
        let acts = drain(&mut r);
        assert!(acts.contains(&Action::Release { listener: l }), "{acts:?}");
        assert_released(&mut r, l, t0);
    }

    #[test]
    fn a_public_verdict_releases_the_reservation_and_a_private_one_keeps_it() {
        let t0 = Instant::now();
        let (mut r, l) = reserved(t0, false);
        r.autonat(Reachability::Private, None, t0);
        assert_eq!(reserves(&drain(&mut r)), 0);
        assert_eq!(r.reserved(), 1);
        r.autonat(Reachability::Public, Some(relay_addr()), t0);
        let acts = drain(&mut r);
        assert!(acts.contains(&Action::Release { listener: l }), "{acts:?}");
        assert_released(&mut r, l, t0);
        assert_eq!(r.reserved(), 0);
        assert_eq!(
            r.poll_timeout(),
            None,
            "a released reservation is not retried"
        );
        // Private again (the NAT changed): reserve again at once.
        r.autonat(Reachability::Private, None, t0);
        assert_eq!(reserves(&drain(&mut r)), 1);
    }

    #[test]
    fn never_never_reserves_and_always_ignores_autonat() {
        let t0 = Instant::now();
        let mut never = Reach::new(policy(RelayMode::Never), t0);
        never.relay_available(PeerId::random(), relay_addr(), t0);
        never.autonat(Reachability::Private, None, t0);
        assert_eq!(reserves(&drain(&mut never)), 0);

        let mut always = Reach::new(policy(RelayMode::Always), t0);
        assert!(matches!(
            always.flag_event(None),
            Some(Event::Reachability {
                status: Reachability::Private,
                ..
            })
        ));
        let relay = PeerId::random();
        always.relay_available(relay, relay_addr(), t0);
        assert_eq!(reserves(&drain(&mut always)), 1);
        always.listening(relay, ListenerId::next());
        always.autonat(Reachability::Public, None, t0);
        assert!(
            drain(&mut always).is_empty(),
            "verdicts are ignored with --relay always"
        );
    }

    #[test]
    fn public_by_flag_does_not_reserve() {
        let t0 = Instant::now();
        let mut p = policy(RelayMode::Auto);
        p.external_addr = true;
        let mut r = Reach::new(p, t0);
        assert!(matches!(
            r.flag_event(Some(relay_addr())),
            Some(Event::Reachability {
                status: Reachability::Public,
                addr: Some(_),
                ..
            })
        ));
        r.relay_available(PeerId::random(), relay_addr(), t0);
        assert_eq!(reserves(&drain(&mut r)), 0);
    }

    #[test]
    fn a_lost_reservation_is_retried_on_a_connected_relay_and_the_timeout_still_speaks() {
        let t0 = Instant::now();
        let (mut r, l) = reserved(t0, true);
        r.listener_closed(l, Some("relay gone".into()), t0);
        assert!(matches!(
            &drain(&mut r)[..],
            [Action::Emit(Event::Reservation {
                status: ReservationStatus::Lost,
                ..
            })]
        ));
        assert_eq!(r.poll_timeout(), Some(t0 + RELAY_RETRY));
        r.handle_timeout(t0 + RELAY_RETRY);
        assert_eq!(reserves(&drain(&mut r)), 1);
        // No AutoNAT verdict within the timeout: `private` from the timeout.
        let due = r.poll_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_secs(10));
        r.handle_timeout(due);
        assert!(matches!(
            &drain(&mut r)[..],
            [Action::Emit(Event::Reachability {
                source: ReachabilitySource::Timeout,
                ..
            })]
        ));
    }

    #[test]
    fn upnp_holds_reservations_only_while_it_may_still_help() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut p = policy(RelayMode::Auto);
        p.upnp = true;
        let mut r = Reach::new(p, t0);
        let relay = PeerId::random();
        r.relay_available(relay, relay_addr(), t0);
        assert_eq!(reserves(&drain(&mut r)), 0, "searching the gateway");
        assert_eq!(r.poll_timeout(), Some(s(10)));
        r.upnp(Upnp::Mapped(s(8)), s(8));
        r.handle_timeout(s(17));
        assert_eq!(
            reserves(&drain(&mut r)),
            0,
            "mapped: AutoNAT has until 18 s"
        );
        r.handle_timeout(s(18));
        assert_eq!(reserves(&drain(&mut r)), 1);

        let mut failed = Reach::new(p, t0);
        failed.relay_available(relay, relay_addr(), t0);
        failed.upnp(Upnp::Failed, s(1));
        assert_eq!(
            reserves(&drain(&mut failed)),
            1,
            "no gateway: reserve at once"
        );
    }
}
