//! How much of Kademlia's routing-table refresh a node runs.
//!
//! A libp2p Kademlia bootstrap is a lookup of the node's own id followed by one random lookup per
//! bucket farther than its closest neighbour's: about log2(N) lookups in a network of N, each
//! reaching some twenty peers, each peer a new connection (a noise handshake, identify, a ping
//! every 5 s while it stays open). libp2p starts one at the join, again whenever a peer enters a
//! routing table of fewer than 20, and every 5 minutes. In a network of 1,000 that is about 10
//! lookups and 100–150 connections per node within seconds of its start, for buckets that the
//! node's own lookups and the peers that query it fill anyway.
//!
//! So a node keeps the self-lookup of every bootstrap (it is what puts the node in the DHT and
//! fills its closest buckets) and cuts the bucket refreshes short, except in one full refresh
//! every [`INTERVAL`] (±20%, spread per node so nodes started together do not refresh together),
//! which the node asks for itself. Cost: one self-lookup per join, and about log2(N) lookups per
//! node every 5 minutes.

use std::{
    collections::{HashSet, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use super::Jitter;

/// Between two full refreshes of a node's buckets.
pub const INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a full bootstrap and tell [`Refresh::started_full`] its query id.
    FullRefresh,
}

/// What to do with a bootstrap query after one of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Let it run its next bucket refresh.
    Continue,
    /// Finish it: its self-lookup is done, and this is not the full refresh.
    Cut,
}

/// `Q` is the query id (Kademlia's `QueryId` in the node).
#[derive(Debug)]
pub struct Refresh<Q> {
    interval: Duration,
    next_full: Instant,
    full: HashSet<Q>,
    jitter: Jitter,
    actions: VecDeque<Action>,
}

impl<Q: Copy + Eq + Hash> Refresh<Q> {
    pub fn new(interval: Duration, seed: u64, now: Instant) -> Self {
        let mut jitter = Jitter::new(seed);
        let next_full = now + jitter.spread(interval, 0.2);
        Self {
            interval,
            next_full,
            full: HashSet::new(),
            jitter,
            actions: VecDeque::new(),
        }
    }

    /// The node started the full refresh it was asked for.
    pub fn started_full(&mut self, query: Q) {
        self.full.insert(query);
    }

    /// A bootstrap query (the node's join, libp2p's own, or a full refresh) made a step.
    pub fn step(&mut self, query: Q, last: bool) -> Step {
        if last {
            self.full.remove(&query);
            Step::Continue
        } else if self.full.contains(&query) {
            Step::Continue
        } else {
            Step::Cut
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_full {
            self.actions.push_back(Action::FullRefresh);
            self.next_full = now + self.jitter.spread(self.interval, 0.2);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_full)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_is_cut_after_its_self_lookup() {
        let t0 = Instant::now();
        let mut r: Refresh<u32> = Refresh::new(INTERVAL, 1, t0);
        // the join's bootstrap: the self-lookup step, then each cut step until the last
        assert_eq!(r.step(7, false), Step::Cut);
        assert_eq!(r.step(7, false), Step::Cut);
        assert_eq!(r.step(7, true), Step::Continue);
        assert_eq!(r.poll_action(), None);
    }

    #[test]
    fn one_full_refresh_per_interval_runs_to_its_end() {
        let t0 = Instant::now();
        let mut r: Refresh<u32> = Refresh::new(INTERVAL, 1, t0);
        let first = r.poll_timeout().unwrap();
        assert!(
            first >= t0 + INTERVAL.mul_f64(0.8) && first < t0 + INTERVAL.mul_f64(1.2),
            "{:?}",
            first - t0
        );
        r.handle_timeout(first - Duration::from_millis(1));
        assert_eq!(r.poll_action(), None, "not before its time");
        r.handle_timeout(first);
        assert_eq!(r.poll_action(), Some(Action::FullRefresh));
        assert_eq!(r.poll_action(), None);
        r.started_full(9);
        for _ in 0..10 {
            assert_eq!(r.step(9, false), Step::Continue);
        }
        // an automatic bootstrap meanwhile (a peer entered a small routing table) is still cut
        assert_eq!(r.step(10, false), Step::Cut);
        assert_eq!(r.step(9, true), Step::Continue);
        // the same id reused later is no longer the full one
        assert_eq!(r.step(9, false), Step::Cut);
        let next = r.poll_timeout().unwrap();
        assert!(next >= first + INTERVAL.mul_f64(0.8), "{:?}", next - first);
    }

    #[test]
    fn nodes_spread_their_refreshes() {
        let t0 = Instant::now();
        let times: HashSet<Instant> = (0..20u64)
            .map(|s| {
                Refresh::<u32>::new(INTERVAL, s * 7919 + 3, t0)
                    .poll_timeout()
                    .unwrap()
            })
            .collect();
        assert!(times.len() >= 15, "{} distinct of 20", times.len());
    }
}
