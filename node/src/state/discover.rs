//! A dialer's lookups of its namespace: who provides the namespace key, then each member's signed
//! peer record (its addresses).
//!
//! No fixed cadence: the first provider lookup goes out the moment the node has joined, the next
//! ones after 250 ms, 500 ms, 1 s, ... up to 5 s (each ±20%, spread per node), and the wait drops
//! back to 250 ms whenever a lookup finds a new member (more are probably joining). Two lookups may
//! run at once, so one slow lookup (a dead peer's timeout) never holds discovery back. Each member's
//! record is fetched the moment the member is seen, retried after 250 ms doubling to 5 s while it
//! is not found, refreshed every 30 s, and at once (at most once a second) when the loop says the
//! member could not be reached.
//!
//! Cost per dialer, once its namespace is stable: about 12 provider lookups a minute, plus 2 record
//! lookups a minute per member.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

use super::{Backoff, Jitter};

pub const QUERY_MIN: Duration = Duration::from_millis(250);
pub const QUERY_MAX: Duration = Duration::from_secs(5);
pub const REFRESH: Duration = Duration::from_secs(30);
/// Provider lookups running at once.
pub const PARALLEL: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look up the namespace's providers; report with [`Discoverer::providers`] and
    /// [`Discoverer::providers_done`].
    QueryProviders,
    /// Fetch `peer`'s record; report with [`Discoverer::record`] and [`Discoverer::record_done`].
    QueryRecord { peer: PeerId },
    /// A member, or its addresses changed.
    Discovered { peer: PeerId, addrs: Vec<Multiaddr> },
    /// A record that must not be believed (bad signature, another peer's).
    Rejected { peer: PeerId, error: String },
}

#[derive(Debug)]
struct Member {
    addrs: Option<Vec<Multiaddr>>,
    /// `None` while a lookup runs.
    next_lookup: Option<Instant>,
    backoff: Backoff,
    last_urgent: Option<Instant>,
}

#[derive(Debug)]
pub struct Discoverer {
    joined: bool,
    next_query: Option<Instant>,
    interval: Backoff,
    running: u32,
    jitter: Jitter,
    members: HashMap<PeerId, Member>,
    actions: VecDeque<Action>,
}

impl Discoverer {
    pub fn new(seed: u64) -> Self {
        Self {
            joined: false,
            next_query: None,
            interval: Backoff::new(QUERY_MIN, QUERY_MAX),
            running: 0,
            jitter: Jitter::new(seed),
            members: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The node joined (or re-joined): look now, and fast again.
    pub fn joined(&mut self, now: Instant) {
        self.joined = true;
        self.interval.reset();
        self.next_query = Some(now);
    }

    pub fn offline(&mut self) {
        self.joined = false;
    }

    /// Members with known addresses.
    pub fn members(&self) -> impl Iterator<Item = &PeerId> {
        self.members
            .iter()
            .filter(|(_, m)| m.addrs.is_some())
            .map(|(p, _)| p)
    }

    /// A provider lookup found these peers (the loop leaves itself out).
    pub fn providers(&mut self, peers: impl IntoIterator<Item = PeerId>, now: Instant) {
        let mut new = false;
        for peer in peers {
            if self.members.contains_key(&peer) {
                continue;
            }
            new = true;
            self.members.insert(
                peer,
                Member {
                    addrs: None,
                    next_lookup: None,
                    backoff: Backoff::new(QUERY_MIN, QUERY_MAX),
                    last_urgent: None,
                },
            );
            self.actions.push_back(Action::QueryRecord { peer });
        }
        if new {
            self.interval.reset();
            let soon = now + self.jitter.spread(self.interval.next_wait(), 0.2);
            self.next_query = Some(self.next_query.map_or(soon, |t| t.min(soon)));
        }
    }

    pub fn providers_done(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// `peer`'s record, checked by the loop: its addresses, or why it is not believed.
    pub fn record(&mut self, peer: PeerId, result: Result<Vec<Multiaddr>, String>, now: Instant) {
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                m.backoff.reset();
                m.next_lookup = Some(now + REFRESH);
                if m.addrs.as_ref() != Some(&addrs) {
                    m.addrs = Some(addrs.clone());
                    self.actions.push_back(Action::Discovered { peer, addrs });
                }
            }
            Ok(_) => m.next_lookup = Some(now + m.backoff.next_wait()),
            Err(error) => {
                m.next_lookup = Some(now + m.backoff.next_wait());
                self.actions.push_back(Action::Rejected { peer, error });
            }
        }
    }

    /// The record lookup for `peer` finished (found or not).
    pub fn record_done(&mut self, peer: &PeerId, now: Instant) {
        if let Some(m) = self.members.get_mut(peer) {
            if m.next_lookup.is_none() {
                m.next_lookup = Some(now + m.backoff.next_wait());
            }
        }
    }

    /// `peer` could not be reached: its addresses may have changed.
    pub fn unreachable(&mut self, peer: &PeerId, now: Instant) {
        if let Some(m) = self.members.get_mut(peer) {
            let recent = m
                .last_urgent
                .is_some_and(|t| now < t + Duration::from_secs(1));
            if let (Some(next), false) = (m.next_lookup, recent) {
                m.last_urgent = Some(now);
                m.next_lookup = Some(next.min(now));
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.joined {
            return;
        }
        if self.running < PARALLEL && self.next_query.is_some_and(|t| t <= now) {
            self.running += 1;
            self.next_query = Some(now + self.jitter.spread(self.interval.next_wait(), 0.2));
            self.actions.push_back(Action::QueryProviders);
        }
        let mut due: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| m.next_lookup.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        due.sort();
        for peer in due {
            if let Some(m) = self.members.get_mut(&peer) {
                m.next_lookup = None;
            }
            self.actions.push_back(Action::QueryRecord { peer });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.joined {
            return None;
        }
        let query = self.next_query.filter(|_| self.running < PARALLEL);
        self.members
            .values()
            .filter_map(|m| m.next_lookup)
            .chain(query)
            .min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Discoverer) -> Vec<Action> {
        std::iter::from_fn(|| d.poll_action()).collect()
    }

    fn addrs() -> Vec<Multiaddr> {
        vec!["/ip4/198.18.0.7/tcp/4001".parse().unwrap()]
    }

    #[test]
    fn looks_at_once_then_backs_off_without_a_fixed_step() {
        let t0 = Instant::now();
        let mut d = Discoverer::new(7);
        assert_eq!(d.poll_timeout(), None, "nothing before joining");
        d.joined(t0);
        assert_eq!(d.poll_timeout(), Some(t0));
        let mut times = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            d.handle_timeout(now);
            assert_eq!(drain(&mut d), [Action::QueryProviders]);
            d.providers_done();
            times.push(now.duration_since(t0).as_millis());
            now = d.poll_timeout().unwrap();
        }
        // 0, then about 250, 500, 1000, 2000, 4000, 5000, 5000 ms apart (±20%).
        let gaps: Vec<u128> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, want) in gaps
            .iter()
            .zip([250u128, 500, 1000, 2000, 4000, 5000, 5000])
        {
            assert!(*gap >= want * 8 / 10 && *gap <= want * 12 / 10, "{gaps:?}");
        }
    }

    #[test]
    fn a_new_member_is_fetched_at_once_and_speeds_lookups_up_again() {
        let t0 = Instant::now();
        let mut d = Discoverer::new(7);
        d.joined(t0);
        d.handle_timeout(t0);
        drain(&mut d);
        let p = PeerId::random();
        let t1 = t0 + Duration::from_secs(20);
        d.providers([p], t1);
        assert_eq!(drain(&mut d), [Action::QueryRecord { peer: p }]);
        assert!(d.poll_timeout().unwrap() <= t1 + QUERY_MIN * 12 / 10);
        d.record(p, Ok(addrs()), t1);
        d.record_done(&p, t1);
        assert_eq!(
            drain(&mut d),
            [Action::Discovered {
                peer: p,
                addrs: addrs()
            }]
        );
        assert_eq!(d.members().collect::<Vec<_>>(), [&p]);
        // Seen again: no new lookup, no new event.
        d.providers([p], t1);
        assert!(drain(&mut d).is_empty());
    }

    #[test]
    fn a_missing_record_is_retried_soon_and_a_forged_one_is_reported() {
        let t0 = Instant::now();
        let mut d = Discoverer::new(1);
        d.joined(t0);
        d.handle_timeout(t0);
        d.providers_done();
        drain(&mut d);
        let p = PeerId::random();
        d.providers([p], t0);
        drain(&mut d);
        d.record_done(&p, t0);
        let Some(next) = d.poll_timeout() else {
            panic!()
        };
        assert!(next <= t0 + QUERY_MIN * 12 / 10);
        d.handle_timeout(t0 + QUERY_MIN);
        assert!(drain(&mut d).contains(&Action::QueryRecord { peer: p }));
        d.record(p, Err("bad signature".into()), t0 + QUERY_MIN);
        assert_eq!(
            drain(&mut d),
            [Action::Rejected {
                peer: p,
                error: "bad signature".into()
            }]
        );
        assert_eq!(d.members().count(), 0);
    }

    #[test]
    fn an_unreachable_member_is_looked_up_again_at_once_but_not_in_a_loop() {
        let t0 = Instant::now();
        let mut d = Discoverer::new(1);
        d.joined(t0);
        let p = PeerId::random();
        d.providers([p], t0);
        d.record(p, Ok(addrs()), t0);
        d.record_done(&p, t0);
        drain(&mut d);
        d.unreachable(&p, t0 + Duration::from_secs(3));
        d.handle_timeout(t0 + Duration::from_secs(3));
        assert!(drain(&mut d).contains(&Action::QueryRecord { peer: p }));
        d.record_done(&p, t0 + Duration::from_secs(3));
        d.unreachable(&p, t0 + Duration::from_secs(3));
        d.handle_timeout(t0 + Duration::from_secs(3));
        assert!(
            !drain(&mut d).contains(&Action::QueryRecord { peer: p }),
            "at most once a second"
        );
    }

    #[test]
    fn at_most_two_lookups_run_at_once() {
        let t0 = Instant::now();
        let mut d = Discoverer::new(3);
        d.joined(t0);
        let mut now = t0;
        for _ in 0..5 {
            d.handle_timeout(now);
            now += Duration::from_secs(10);
        }
        assert_eq!(drain(&mut d).len(), PARALLEL as usize);
        assert_eq!(d.poll_timeout(), None);
    }
}
