//! A dialer's messages: `--count` messages (0 = forever) to every member of its namespace, one
//! every `--interval` per member, each retried by [`crate::messaging::Outbox`] until acked or past
//! `--deadline`. Each member's schedule starts the moment it is discovered (no global send tick).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p::PeerId;

use crate::messaging::{Acked, Attempt, Failed, Outbox, RetryPolicy};

/// What a dialer sends (`--count`, `--interval`, `--size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub count: u64,
    pub interval: Duration,
    pub size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this attempt (attempt 1 is a new message).
    Send(Attempt<PeerId>),
    /// Given up at its deadline.
    Failed(Failed<PeerId>),
}

#[derive(Debug)]
struct Target {
    sent: u64,
    next_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Traffic {
    plan: Plan,
    outbox: Outbox<PeerId>,
    targets: HashMap<PeerId, Target>,
    actions: VecDeque<Action>,
}

impl Traffic {
    /// Message ids start at `first_id` (see [`Outbox::starting_at`]).
    pub fn new(plan: Plan, policy: RetryPolicy, first_id: u64) -> Self {
        Self {
            plan,
            outbox: Outbox::starting_at(policy, first_id),
            targets: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// A member to send to, from now on (again: no effect).
    pub fn add_target(&mut self, peer: PeerId, now: Instant) {
        self.targets.entry(peer).or_insert(Target {
            sent: 0,
            next_at: Some(now),
        });
    }

    pub fn acked(&mut self, id: u64, now: Instant) -> Option<Acked<PeerId>> {
        self.outbox.ack(id, now)
    }

    /// An attempt failed; `Some` when the message is given up.
    pub fn failed(&mut self, id: u64, reason: &str, now: Instant) -> Option<Failed<PeerId>> {
        self.outbox.fail(id, reason, now)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<PeerId> = self
            .targets
            .iter()
            .filter(|(_, t)| t.next_at.is_some_and(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        due.sort();
        for peer in due {
            let Some(t) = self.targets.get_mut(&peer) else {
                continue;
            };
            if self.plan.count != 0 && t.sent >= self.plan.count {
                t.next_at = None;
                continue;
            }
            t.sent += 1;
            // Keep the cadence: the next one is an interval after this one was due.
            t.next_at = t.next_at.map(|at| (at + self.plan.interval).max(now));
            if self.plan.count != 0 && t.sent >= self.plan.count {
                t.next_at = None;
            }
            self.outbox.push(peer, self.plan.size, now);
        }
        self.actions
            .extend(self.outbox.due(now).into_iter().map(Action::Send));
        self.actions
            .extend(self.outbox.expire(now).into_iter().map(Action::Failed));
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter_map(|t| t.next_at)
            .chain(self.outbox.next_wakeup())
            .min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut Traffic) -> Vec<Action> {
        std::iter::from_fn(|| t.poll_action()).collect()
    }

    fn plan(count: u64) -> Plan {
        Plan {
            count,
            interval: Duration::from_millis(100),
            size: 64,
        }
    }

    #[test]
    fn sends_count_messages_per_member_from_its_discovery() {
        let t0 = Instant::now();
        let mut t = Traffic::new(plan(3), RetryPolicy::default(), 1);
        assert_eq!(t.poll_timeout(), None, "nobody to send to");
        let p = PeerId::random();
        t.add_target(p, t0);
        let mut ids = Vec::new();
        while let Some(at) = t.poll_timeout() {
            t.handle_timeout(at);
            for a in drain(&mut t) {
                let Action::Send(a) = a else { panic!() };
                assert_eq!((a.to, a.attempt), (p, 1));
                ids.push((a.id, at.duration_since(t0).as_millis()));
                assert!(t.acked(a.id, at).is_some());
            }
        }
        assert_eq!(ids, [(1, 0), (2, 100), (3, 200)]);
    }

    #[test]
    fn a_failed_attempt_is_retried_and_expires_at_its_deadline() {
        let t0 = Instant::now();
        let policy = RetryPolicy {
            deadline: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut t = Traffic::new(plan(1), policy, 10);
        let p = PeerId::random();
        t.add_target(p, t0);
        t.handle_timeout(t0);
        assert!(matches!(&drain(&mut t)[..], [Action::Send(a)] if a.id == 10));
        assert_eq!(t.failed(10, "closed", t0), None, "retried");
        let retry = t.poll_timeout().unwrap();
        assert_eq!(retry, t0 + policy.initial_backoff);
        t.handle_timeout(retry);
        assert!(matches!(&drain(&mut t)[..], [Action::Send(a)] if a.attempt == 2));
        assert_eq!(
            t.failed(10, "closed", t0 + Duration::from_secs(1))
                .map(|f| f.attempts),
            Some(2)
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn count_zero_sends_forever() {
        let t0 = Instant::now();
        let mut t = Traffic::new(plan(0), RetryPolicy::default(), 1);
        t.add_target(PeerId::random(), t0);
        for i in 0..50u32 {
            t.handle_timeout(t0 + Duration::from_millis(100) * i);
        }
        assert_eq!(drain(&mut t).len(), 50);
        assert!(t.poll_timeout().is_some());
    }
}
