//! A listener's announcements: the namespace's provider record and the node's signed peer record.
//!
//! An announcement goes out as soon as the node has joined the DHT and has an address others can
//! use (its confirmed external addresses: relayed ones behind NAT, which [`super::reach`] now
//! reserves at once), again shortly after those addresses change (a reservation, a public verdict,
//! a reservation released), renewed [`RENEW_FIRST`] later and then at doubling waits up to
//! `--announce-interval`, after every re-join (a bootstrap node
//! that restarted lost its records), and after a failure: [`RETRY`], doubling with each failure in
//! a row up to the interval, spread by ±25% per node. A fixed short retry turns an overloaded DHT
//! (a thousand nodes starting together on two cores) into a collapsed one: every query that timed
//! out is sent again at once, with all the work it did lost. One announcement is two Kademlia
//! queries (`put_record`, `start_providing`); it counts as done when both are.
//!
//! A node whose only addresses are relayed holds its first announcement until AutoNAT has spoken
//! or [`HOLD`] from start has passed: a public node gets its verdict in about half a second, and
//! announcing its relayed address first would send every dialer through the relay (and leave
//! them there when the relay dies) although a direct address was about to be confirmed.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;

use super::{Backoff, Jitter};

/// Batches address changes that come together (a reservation confirms its address, AutoNAT
/// several) into one announcement.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// The first retry after a failed round.
pub const RETRY: Duration = Duration::from_secs(2);
/// The first renewal after a join or an address change; renewals then double up to the interval.
///
/// Why not the interval at once: a record lives on the K peers closest to its key when it was
/// put, and rust-libp2p's Kademlia does not hand records to peers that join closer to the key
/// later, so a lookup that walks the grown network can miss them. A young network grows fastest
/// (its peers started together), so young records are renewed soon. Measured: 1,000 nodes in one
/// process started over 160 s, records renewed only every 300 s: the first namespaces' records sat
/// on peers no lookup reached any more, and 11 of 200 dialers never found their whole namespace
/// (docs/benchmark-findings.md).
pub const RENEW_FIRST: Duration = Duration::from_secs(30);
/// The longest a relayed-only first announcement waits for AutoNAT, from start.
pub const HOLD: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Put the peer record with these addresses and provide the namespace key; report both
    /// queries' outcomes with [`Announcer::query_done`] under `round`.
    Announce { round: u64, addrs: Vec<Multiaddr> },
    /// Both queries of the round succeeded (event `announced`).
    Announced { addrs: Vec<Multiaddr> },
}

#[derive(Debug)]
pub struct Announcer {
    joined: bool,
    addrs: Vec<Multiaddr>,
    due: Option<Instant>,
    round: u64,
    /// Queries of the current round still running, and whether one failed.
    pending: u8,
    failed: Option<String>,
    /// The addresses of the round in flight, and of the last successful one.
    in_flight: Option<Vec<Multiaddr>>,
    announced: Option<Vec<Multiaddr>>,
    /// Relayed-only announcements wait until then (`None`: no hold).
    hold_until: Option<Instant>,
    actions: std::collections::VecDeque<Action>,
    errors: std::collections::VecDeque<String>,
    /// The wait after a failed round: [`RETRY`] doubling up to the interval, reset by a success.
    retry: Backoff,
    /// The wait until the next renewal: [`RENEW_FIRST`] doubling up to the interval.
    renew: Backoff,
    jitter: Jitter,
}

impl Announcer {
    /// `started`: the node's start (the hold counts from it); `seed` spreads its retries.
    pub fn new(interval: Duration, started: Instant, seed: u64) -> Self {
        Self {
            retry: Backoff::new(RETRY, interval.max(RETRY)),
            renew: Backoff::new(RENEW_FIRST.min(interval), interval),
            jitter: Jitter::new(seed),
            hold_until: Some(started + HOLD),
            joined: false,
            addrs: Vec::new(),
            due: None,
            round: 0,
            pending: 0,
            failed: None,
            in_flight: None,
            announced: None,
            actions: Default::default(),
            errors: Default::default(),
        }
    }

    /// The node joined (or re-joined) the DHT: announce now.
    pub fn joined(&mut self, now: Instant) {
        self.joined = true;
        self.renew.reset();
        self.schedule(now);
    }

    /// Every bootstrap connection is gone: nothing to announce to until the next join.
    pub fn offline(&mut self) {
        self.joined = false;
    }

    /// The addresses others can use changed (already filtered by `discovery::publishable`).
    pub fn addresses(&mut self, addrs: Vec<Multiaddr>, now: Instant) {
        if addrs != self.addrs {
            self.addrs = addrs;
            self.renew.reset();
            self.schedule(now + DEBOUNCE);
        }
    }

    /// AutoNAT gave a verdict (or the command line did): no reason to hold any more.
    pub fn verdict(&mut self) {
        self.hold_until = None;
    }

    fn held(&self, now: Instant) -> Option<Instant> {
        let relayed_only = self
            .addrs
            .iter()
            .all(|a| crate::events::Path::of([a]) == crate::events::Path::Relayed);
        self.hold_until
            .filter(|t| *t > now && relayed_only && self.announced.is_none())
    }

    /// Whether the current addresses are announced (for `/health`): the last round succeeded
    /// with exactly these addresses and the node is still joined.
    pub fn is_current(&self) -> bool {
        self.joined && self.announced.as_ref() == Some(&self.addrs) && !self.addrs.is_empty()
    }

    fn schedule(&mut self, at: Instant) {
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// One query of `round` finished, with an error or not.
    pub fn query_done(&mut self, round: u64, error: Option<String>, now: Instant) {
        if round != self.round || self.pending == 0 {
            return;
        }
        self.pending -= 1;
        if let Some(e) = error {
            self.errors.push_back(e.clone());
            self.failed = Some(e);
        }
        if self.pending > 0 {
            return;
        }
        if self.failed.take().is_some() {
            let wait = self.jitter.spread(self.retry.next_wait(), 0.25);
            self.schedule(now + wait);
        } else {
            self.retry.reset();
            let addrs = self.in_flight.take().unwrap_or_default();
            self.actions.push_back(Action::Announced {
                addrs: addrs.clone(),
            });
            self.announced = Some(addrs);
        }
    }

    /// Errors of announce queries, to report.
    pub fn poll_error(&mut self) -> Option<String> {
        self.errors.pop_front()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.joined || self.pending > 0 || self.due.is_none_or(|d| d > now) {
            return;
        }
        if self.addrs.is_empty() {
            // Nothing others could use yet: the next address change schedules one.
            self.due = None;
            return;
        }
        if let Some(until) = self.held(now) {
            self.due = Some(until);
            return;
        }
        self.round += 1;
        self.pending = 2;
        self.in_flight = Some(self.addrs.clone());
        self.due = Some(now + self.renew.next_wait());
        self.actions.push_back(Action::Announce {
            round: self.round,
            addrs: self.addrs.clone(),
        });
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.joined || self.pending > 0 {
            return None;
        }
        self.due
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(a: &mut Announcer) -> Vec<Action> {
        std::iter::from_fn(|| a.poll_action()).collect()
    }

    /// Joined, public, one address: its first round (1) has started.
    fn first_round_started(t0: Instant) -> Announcer {
        let mut a = Announcer::new(Duration::from_secs(30), t0, 7);
        a.verdict();
        a.joined(t0);
        a.addresses(addrs(&["/ip4/10.0.0.1/tcp/1"]), t0);
        a.handle_timeout(t0 + DEBOUNCE);
        drain(&mut a);
        a
    }

    fn addrs(s: &[&str]) -> Vec<Multiaddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn announces_once_joined_with_an_address_then_periodically() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        let mut a = Announcer::new(every, t0, 7);
        a.verdict();
        a.joined(t0);
        a.handle_timeout(t0);
        assert!(drain(&mut a).is_empty(), "no address yet");
        assert_eq!(a.poll_timeout(), None);
        let relayed = addrs(&["/ip4/198.18.0.10/tcp/51820/p2p/12D3KooWJHsbXYdPv9bCceBBQrxN6aTM5YTDyFCGGB3Gy4tHDQXU/p2p-circuit"]);
        a.addresses(relayed.clone(), t0);
        let due = a.poll_timeout().unwrap();
        assert_eq!(due, t0 + DEBOUNCE);
        a.handle_timeout(due);
        assert_eq!(
            drain(&mut a),
            [Action::Announce {
                round: 1,
                addrs: relayed.clone()
            }]
        );
        assert!(!a.is_current());
        a.query_done(1, None, due);
        assert!(drain(&mut a).is_empty(), "one of two queries");
        a.query_done(1, None, due);
        assert_eq!(
            drain(&mut a),
            [Action::Announced {
                addrs: relayed.clone()
            }]
        );
        assert!(a.is_current());
        assert_eq!(a.poll_timeout(), Some(due + every));
    }

    #[test]
    fn renewals_start_soon_and_slow_down_to_the_interval_until_a_rejoin() {
        let t0 = Instant::now();
        let mut a = Announcer::new(Duration::from_secs(300), t0, 7);
        a.verdict();
        a.joined(t0);
        a.addresses(addrs(&["/ip4/198.18.0.5/tcp/4001"]), t0);
        let mut now = a.poll_timeout().unwrap();
        let mut gaps = Vec::new();
        for round in 1..=6 {
            a.handle_timeout(now);
            assert!(
                matches!(&drain(&mut a)[..], [Action::Announce { round: r, .. }] if *r == round)
            );
            a.query_done(round, None, now);
            a.query_done(round, None, now);
            drain(&mut a);
            let next = a.poll_timeout().unwrap();
            gaps.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(gaps, [30, 60, 120, 240, 300, 300]);
        a.joined(now);
        a.handle_timeout(now);
        drain(&mut a);
        a.query_done(7, None, now);
        a.query_done(7, None, now);
        assert_eq!(
            a.poll_timeout(),
            Some(now + RENEW_FIRST),
            "a re-join renews soon again"
        );
    }

    #[test]
    fn a_relayed_only_first_announcement_waits_briefly_for_autonat() {
        let t0 = Instant::now();
        let relayed = addrs(&["/ip4/198.18.0.10/tcp/51820/p2p/12D3KooWJHsbXYdPv9bCceBBQrxN6aTM5YTDyFCGGB3Gy4tHDQXU/p2p-circuit"]);
        // No verdict: the relayed address goes out at HOLD.
        let mut a = Announcer::new(Duration::from_secs(30), t0, 7);
        a.joined(t0);
        a.addresses(relayed.clone(), t0);
        a.handle_timeout(t0 + DEBOUNCE);
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.poll_timeout(), Some(t0 + HOLD));
        a.handle_timeout(t0 + HOLD);
        assert!(matches!(&drain(&mut a)[..], [Action::Announce { .. }]));
        // A public verdict and its direct address within the hold: only the direct one goes out.
        let mut b = Announcer::new(Duration::from_secs(30), t0, 7);
        b.joined(t0);
        b.addresses(relayed, t0);
        b.handle_timeout(t0 + DEBOUNCE);
        let direct = addrs(&["/ip4/198.18.0.5/tcp/4001"]);
        b.verdict();
        b.addresses(direct.clone(), t0 + DEBOUNCE);
        b.handle_timeout(t0 + DEBOUNCE * 2);
        assert_eq!(
            drain(&mut b),
            [Action::Announce {
                round: 1,
                addrs: direct
            }]
        );
    }

    #[test]
    fn a_change_during_a_round_is_announced_right_after_it() {
        let t0 = Instant::now();
        let mut a = first_round_started(t0);
        let direct = addrs(&["/ip4/198.18.0.5/tcp/4001"]);
        a.addresses(direct.clone(), t0 + DEBOUNCE);
        assert_eq!(a.poll_timeout(), None, "one round at a time");
        a.query_done(1, None, t0 + DEBOUNCE);
        a.query_done(1, None, t0 + DEBOUNCE);
        drain(&mut a);
        assert!(!a.is_current(), "the announced addresses are stale");
        let due = a.poll_timeout().unwrap();
        assert!(due <= t0 + DEBOUNCE * 2);
        a.handle_timeout(due);
        assert_eq!(
            drain(&mut a),
            [Action::Announce {
                round: 2,
                addrs: direct
            }]
        );
    }

    #[test]
    fn failures_retry_and_rejoins_reannounce() {
        let t0 = Instant::now();
        let mut a = first_round_started(t0);
        a.query_done(1, Some("no peers".into()), t0);
        a.query_done(1, None, t0);
        assert_eq!(a.poll_error().as_deref(), Some("no peers"));
        assert!(drain(&mut a).is_empty());
        let within = |due: Option<Instant>, from: Instant, d: Duration| {
            let due = due.unwrap();
            assert!(
                due >= from + d.mul_f64(0.75) && due < from + d.mul_f64(1.25),
                "{:?} after, want about {d:?}",
                due - from
            );
        };
        within(a.poll_timeout(), t0, RETRY);
        // Failures in a row wait twice as long each time, up to the interval; a success resets.
        let mut now;
        for k in 1..=5u32 {
            now = a.poll_timeout().unwrap();
            a.handle_timeout(now);
            let [Action::Announce { round, .. }] = &drain(&mut a)[..] else {
                panic!("no retry")
            };
            a.query_done(*round, Some("timed out".into()), now);
            a.query_done(*round, None, now);
            within(
                a.poll_timeout(),
                now,
                (RETRY * 2u32.pow(k)).min(Duration::from_secs(30)),
            );
        }
        now = a.poll_timeout().unwrap();
        a.handle_timeout(now);
        let [Action::Announce { round, .. }] = &drain(&mut a)[..] else {
            panic!("no retry")
        };
        let round = *round;
        a.query_done(round, None, now);
        a.query_done(round, None, now);
        assert!(matches!(&drain(&mut a)[..], [Action::Announced { .. }]));
        a.addresses(addrs(&["/ip4/10.0.0.2/tcp/1"]), now);
        now += DEBOUNCE;
        a.handle_timeout(now);
        drain(&mut a);
        a.query_done(round + 1, Some("no peers".into()), now);
        a.query_done(round + 1, None, now);
        within(a.poll_timeout(), now, RETRY);
        let t0 = now;
        a.offline();
        assert_eq!(a.poll_timeout(), None, "offline: nobody to announce to");
        a.joined(t0 + Duration::from_secs(1));
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        a.handle_timeout(t0 + Duration::from_secs(1));
        assert!(
            matches!(&drain(&mut a)[..], [Action::Announce { round: r, .. }] if *r == round + 2)
        );
        a.query_done(round + 1, None, t0);
        assert_eq!(a.poll_timeout(), None, "a stale round's outcome is ignored");
    }
}
