//! Acked messaging, as pure logic without I/O: at-least-once delivery with acknowledgements.
//!
//! The sender keeps each message in an [`Outbox`] until the receiver acks it; a failed attempt
//! (timeout, connection closed, dial failure) is retried with exponential backoff until the
//! message's deadline, after which it is given up. Because a message may arrive more than once
//! (an ack can be lost), the receiver recognises duplicates by message id with an [`Inbox`].
//! An event loop elsewhere drives both, passing the current time in so that tests are deterministic.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How an [`Outbox`] retries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt; it doubles after each further failure.
    pub initial_backoff: Duration,
    /// Upper bound on the wait between attempts.
    pub max_backoff: Duration,
    /// How long after `push` a message is given up.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 250 ms initial backoff, 5 s maximum backoff, 120 s deadline.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts: `initial_backoff * 2^(attempts-1)`, capped at
    /// `max_backoff` (the shift is capped too, so huge counts cannot overflow).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(31);
        self.initial_backoff
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// A message to send now, as returned by [`Outbox::due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<P> {
    /// The message id (to put on the wire; the receiver acks it).
    pub id: u64,
    /// The receiver.
    pub to: P,
    /// The message size in bytes.
    pub size: usize,
    /// Which attempt this is: 1 for the first send.
    pub attempt: u32,
}

/// A message the receiver acknowledged, as returned by [`Outbox::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked<P> {
    /// The message id.
    pub id: u64,
    /// The receiver.
    pub to: P,
    /// How many attempts were made.
    pub attempts: u32,
    /// Time from the latest attempt's send to the ack.
    pub rtt: Duration,
}

/// A message given up, as returned by [`Outbox::fail`] and [`Outbox::expire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed<P> {
    /// The message id.
    pub id: u64,
    /// The receiver.
    pub to: P,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why the last attempt failed, or `"deadline"` when it expired while waiting.
    pub reason: String,
}

/// One pending message.
#[derive(Debug)]
struct Entry<P> {
    to: P,
    size: usize,
    /// `None` when `push + deadline` is not representable (never expires).
    deadline: Option<Instant>,
    attempts: u32,
    sent_at: Option<Instant>,
    /// When the next attempt is due; `None` while an attempt is in flight.
    due_at: Option<Instant>,
}

impl<P> Entry<P> {
    fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// When `due` or `expire` may act on this entry (`None` while in flight).
    fn wake(&self) -> Option<Instant> {
        let due = self.due_at?;
        Some(self.deadline.map_or(due, |d| due.min(d)))
    }
}

/// The sender's side: messages awaiting an ack, their attempts and retry schedule.
#[derive(Debug)]
pub struct Outbox<P> {
    policy: RetryPolicy,
    next_id: u64,
    entries: HashMap<u64, Entry<P>>,
    /// `(wake, id)` of every entry not in flight.
    schedule: BTreeSet<(Instant, u64)>,
    by_peer: HashMap<P, BTreeSet<u64>>,
}

impl<P: Clone + Eq + Hash + Debug> Outbox<P> {
    /// An empty outbox retrying with `policy`.
    #[cfg(test)]
    pub fn new(policy: RetryPolicy) -> Self {
        Self::starting_at(policy, 1)
    }

    /// Like [`Outbox::new`], with ids starting at `first` (at least 1). A sender that may restart
    /// with the same identity starts above every id it used before (for example from the clock),
    /// or its receivers would take its new messages for duplicates.
    pub fn starting_at(policy: RetryPolicy, first: u64) -> Self {
        Self {
            policy,
            next_id: first.max(1),
            entries: HashMap::new(),
            schedule: BTreeSet::new(),
            by_peer: HashMap::new(),
        }
    }

    /// Queues a new message of `size` bytes to `to`, due immediately; returns its id (ids start
    /// at the first id and increase by one).
    pub fn push(&mut self, to: P, size: usize, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let entry = Entry {
            to: to.clone(),
            size,
            deadline: now.checked_add(self.policy.deadline),
            attempts: 0,
            sent_at: None,
            due_at: Some(now),
        };
        if let Some(wake) = entry.wake() {
            self.schedule.insert((wake, id));
        }
        self.entries.insert(id, entry);
        self.by_peer.entry(to).or_default().insert(id);
        id
    }

    /// Messages due at `now`, not in flight and not past their deadline: marks each in flight,
    /// counts the attempt, records the send time and returns them (earliest due first).
    pub fn due(&mut self, now: Instant) -> Vec<Attempt<P>> {
        let ready: Vec<(Instant, u64)> = self.schedule.range(..=(now, u64::MAX)).copied().collect();
        let mut out = Vec::new();
        for key in ready {
            let Some(e) = self.entries.get_mut(&key.1) else {
                self.schedule.remove(&key);
                continue;
            };
            if e.past_deadline(now) {
                continue; // left for `expire`
            }
            self.schedule.remove(&key);
            e.due_at = None;
            e.attempts = e.attempts.saturating_add(1);
            e.sent_at = Some(now);
            out.push(Attempt {
                id: key.1,
                to: e.to.clone(),
                size: e.size,
                attempt: e.attempts,
            });
        }
        out
    }

    /// The receiver acked `id`: removes the message. `None` if the id is unknown (already acked,
    /// failed, or never pushed). The RTT is measured from the latest attempt's send time.
    pub fn ack(&mut self, id: u64, now: Instant) -> Option<Acked<P>> {
        let e = self.remove(id)?;
        let rtt = now.saturating_duration_since(e.sent_at.unwrap_or(now));
        Some(Acked {
            id,
            to: e.to,
            attempts: e.attempts,
            rtt,
        })
    }

    /// The in-flight attempt for `id` failed. Past the deadline (measured from push) the message
    /// is removed and returned; otherwise it is retried after the backoff (never later than the
    /// deadline) and `None` is returned. Unknown or not-in-flight ids (a stale report) -> `None`.
    pub fn fail(&mut self, id: u64, reason: &str, now: Instant) -> Option<Failed<P>> {
        let e = self.entries.get(&id)?;
        if e.due_at.is_some() {
            return None;
        }
        if e.past_deadline(now) {
            let e = self.remove(id)?;
            return Some(Failed {
                id,
                to: e.to,
                attempts: e.attempts,
                reason: reason.to_owned(),
            });
        }
        let backoff = self.policy.backoff(e.attempts);
        let retry = match (now.checked_add(backoff), e.deadline) {
            (Some(t), Some(d)) => t.min(d),
            (Some(t), None) => t,
            (None, Some(d)) => d,
            (None, None) => now,
        };
        self.set_due(id, retry);
        None
    }

    /// Removes and returns the messages past their deadline that are not in flight, with reason
    /// `"deadline"` (in-flight ones wait for their attempt's outcome).
    pub fn expire(&mut self, now: Instant) -> Vec<Failed<P>> {
        let candidates: Vec<u64> = self
            .schedule
            .range(..=(now, u64::MAX))
            .map(|&(_, id)| id)
            .collect();
        let mut out = Vec::new();
        for id in candidates {
            if !self.entries.get(&id).is_some_and(|e| e.past_deadline(now)) {
                continue;
            }
            if let Some(e) = self.remove(id) {
                out.push(Failed {
                    id,
                    to: e.to,
                    attempts: e.attempts,
                    reason: "deadline".into(),
                });
            }
        }
        out
    }

    /// The earliest instant at which `due` or `expire` could return something, if any.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.schedule.first().map(|&(t, _)| t)
    }

    /// Pending (not yet acked or failed) messages, in flight or not.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Pending messages to `to`.
    #[cfg(test)]
    pub fn pending_to(&self, to: &P) -> usize {
        self.by_peer.get(to).map_or(0, BTreeSet::len)
    }

    /// Makes every in-flight message to `to` due at `now` again without counting a failure (the
    /// connection is gone, so the attempt will never be answered). Returns how many.
    #[cfg(test)]
    pub fn requeue_peer(&mut self, to: &P, now: Instant) -> usize {
        let ids: Vec<u64> = self
            .by_peer
            .get(to)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut n = 0;
        for id in ids {
            if self.entries.get(&id).is_some_and(|e| e.due_at.is_none()) {
                self.set_due(id, now);
                n += 1;
            }
        }
        n
    }

    /// Reschedules entry `id` (keeping `schedule` in step).
    fn set_due(&mut self, id: u64, at: Instant) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some(old) = e.wake() {
            self.schedule.remove(&(old, id));
        }
        e.due_at = Some(at);
        if let Some(wake) = e.wake() {
            self.schedule.insert((wake, id));
        }
    }

    /// Removes entry `id` from every index.
    fn remove(&mut self, id: u64) -> Option<Entry<P>> {
        let e = self.entries.remove(&id)?;
        if let Some(wake) = e.wake() {
            self.schedule.remove(&(wake, id));
        }
        if let Some(ids) = self.by_peer.get_mut(&e.to) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_peer.remove(&e.to);
            }
        }
        Some(e)
    }
}

/// What an [`Inbox`] remembers about one sender.
#[derive(Debug)]
struct Seen {
    highest: u64,
    /// Ids seen in `(highest - window, highest]`.
    ids: BTreeSet<u64>,
}

/// The receiver's side: recognises duplicate messages by id, per sender, in bounded memory.
#[derive(Debug)]
pub struct Inbox<P> {
    window: u64,
    senders: HashMap<P, Seen>,
    distinct: u64,
    duplicates: u64,
}

impl<P: Clone + Eq + Hash + Debug> Inbox<P> {
    /// The window normally used: 65 536 ids per sender.
    pub const DEFAULT_WINDOW: usize = 65_536;

    /// An empty inbox remembering the newest `window` ids per sender (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: u64::try_from(window).unwrap_or(u64::MAX).max(1),
            senders: HashMap::new(),
            distinct: 0,
            duplicates: 0,
        }
    }

    /// Records that `id` arrived from `from`; returns true if it is a duplicate. An id at or
    /// below `highest seen - window` counts as a duplicate (ids are sequential per sender).
    pub fn receive(&mut self, from: P, id: u64) -> bool {
        let window = self.window;
        let seen = self.senders.entry(from).or_insert_with(|| Seen {
            highest: id,
            ids: BTreeSet::new(),
        });
        let too_old = seen
            .highest
            .checked_sub(window)
            .is_some_and(|floor| id <= floor);
        let duplicate = too_old || !seen.ids.insert(id);
        if duplicate {
            self.duplicates = self.duplicates.saturating_add(1);
            return true;
        }
        self.distinct = self.distinct.saturating_add(1);
        if id > seen.highest {
            seen.highest = id;
            if let Some(floor) = id.checked_sub(window) {
                while seen.ids.first().is_some_and(|&x| x <= floor) {
                    seen.ids.pop_first();
                }
            }
        }
        false
    }

    /// Every id remembered, per sender: what a journal must hold to rebuild this inbox.
    pub fn entries(&self) -> impl Iterator<Item = (&P, u64)> + '_ {
        self.senders
            .iter()
            .flat_map(|(p, seen)| seen.ids.iter().map(move |id| (p, *id)))
    }

    /// Distinct messages received in total.
    #[cfg(test)]
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Duplicates recognised in total.
    #[cfg(test)]
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// The inbox journal: one line `<sender> <id>` per message delivered, appended before its
/// delivery is reported. A restarted receiver reads it back into its [`Inbox`], so a message whose
/// ack died with the old process is recognised when it comes again (exactly once across restarts,
/// not only within one process).
pub mod journal {
    use std::fmt::Display;
    use std::str::FromStr;

    /// The line for one delivered message, with its newline.
    pub fn line(from: &impl Display, id: u64) -> String {
        format!("{from} {id}\n")
    }

    /// Every well-formed line of a journal; others (a line cut short by a crash, garbage) are
    /// skipped.
    pub fn parse<P: FromStr>(text: &str) -> impl Iterator<Item = (P, u64)> + '_ {
        text.lines().filter_map(|l| {
            let (from, id) = l.split_once(' ')?;
            Some((from.parse().ok()?, id.parse().ok()?))
        })
    }
}

impl<P: Clone + Eq + Hash + Debug> Default for Inbox<P> {
    /// An inbox with [`Inbox::DEFAULT_WINDOW`].
    fn default() -> Self {
        Self::new(Self::DEFAULT_WINDOW)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_rebuilds_the_inbox_and_skips_torn_lines() {
        let mut a: Inbox<String> = Inbox::new(8);
        let mut text = String::new();
        for id in [1u64, 2, 5] {
            assert!(!a.receive("p".to_string(), id));
            text.push_str(&journal::line(&"p", id));
        }
        text.push_str("p 7x\nno-id\np 9"); // garbage and a line cut short: 9 is whole, though
        let mut b: Inbox<String> = Inbox::new(8);
        for (p, id) in journal::parse::<String>(&text) {
            b.receive(p, id);
        }
        assert!(b.receive("p".into(), 2), "remembered across the restart");
        assert!(b.receive("p".into(), 9));
        assert!(!b.receive("p".into(), 3));
        let mut kept: Vec<u64> = b.entries().map(|(_, id)| id).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            vec![2, 3, 5, 9],
            "1 fell out of the window of 8 below 9"
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(initial: u64, max: u64, deadline: u64) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: ms(initial),
            max_backoff: ms(max),
            deadline: ms(deadline),
        }
    }

    fn ids<P>(v: &[Attempt<P>]) -> Vec<(u64, u32)> {
        v.iter().map(|a| (a.id, a.attempt)).collect()
    }

    #[test]
    fn ids_are_sequential_and_due_returns_each_once_until_it_fails() {
        let t0 = Instant::now();
        let mut o = Outbox::new(RetryPolicy::default());
        assert_eq!(
            (
                o.push("a", 10, t0),
                o.push("b", 20, t0),
                o.push("a", 30, t0)
            ),
            (1, 2, 3)
        );
        let first = o.due(t0);
        assert_eq!(ids(&first), vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(
            first[1],
            Attempt {
                id: 2,
                to: "b",
                size: 20,
                attempt: 1
            }
        );
        assert!(o.due(t0 + ms(10_000)).is_empty());
        assert_eq!(o.fail(2, "timeout", t0 + ms(1000)), None);
        assert_eq!(
            o.fail(2, "timeout", t0 + ms(1000)),
            None,
            "a second report changes nothing"
        );
        assert!(o.due(t0 + ms(1249)).is_empty());
        assert_eq!(ids(&o.due(t0 + ms(1250))), vec![(2, 2)]);
        assert_eq!(
            (
                o.pending(),
                o.pending_to(&"a"),
                o.pending_to(&"b"),
                o.pending_to(&"c")
            ),
            (3, 2, 1, 0)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy(100, 1000, 3_600_000);
        let t0 = Instant::now();
        let mut o = Outbox::new(p);
        let id = o.push(7u32, 1, t0);
        let mut t = t0;
        for (n, expect) in [100u64, 200, 400, 800, 1000, 1000].into_iter().enumerate() {
            assert_eq!(ids(&o.due(t)), vec![(id, n as u32 + 1)]);
            assert_eq!(o.fail(id, "closed", t), None);
            assert_eq!(o.next_wakeup(), Some(t + ms(expect)));
            assert!(o.due(t + ms(expect - 1)).is_empty());
            t += ms(expect);
        }
        assert_eq!(p.backoff(0), ms(100));
        assert_eq!(p.backoff(u32::MAX), ms(1000));
        assert_eq!(
            RetryPolicy {
                max_backoff: Duration::MAX,
                ..p
            }
            .backoff(u32::MAX),
            ms(100 << 31)
        );
    }

    #[test]
    fn retry_never_scheduled_past_the_deadline() {
        let t0 = Instant::now();
        let mut o = Outbox::new(policy(1000, 10_000, 3000));
        let id = o.push(1u32, 1, t0);
        o.due(t0);
        o.fail(id, "timeout", t0 + ms(1000));
        o.due(t0 + ms(2000));
        assert_eq!(o.fail(id, "timeout", t0 + ms(2500)), None);
        assert_eq!(
            o.next_wakeup(),
            Some(t0 + ms(3000)),
            "2 s backoff capped at the deadline"
        );
        assert!(
            o.due(t0 + ms(3000)).is_empty(),
            "nothing is sent once the deadline is reached"
        );
        let failed = o.expire(t0 + ms(3000));
        assert_eq!(
            failed,
            vec![Failed {
                id,
                to: 1,
                attempts: 2,
                reason: "deadline".into()
            }]
        );
        assert_eq!(
            (o.pending(), o.pending_to(&1), o.next_wakeup()),
            (0, 0, None)
        );
    }

    #[test]
    fn fail_after_deadline_gives_failed_with_attempts() {
        let t0 = Instant::now();
        let mut o = Outbox::new(policy(250, 5000, 3000));
        let id = o.push("p", 5, t0);
        o.due(t0);
        o.fail(id, "timeout", t0 + ms(100));
        o.due(t0 + ms(350));
        let f = o.fail(id, "dial failure", t0 + ms(3001)).unwrap();
        assert_eq!(
            f,
            Failed {
                id,
                to: "p",
                attempts: 2,
                reason: "dial failure".into()
            }
        );
        assert_eq!(o.pending(), 0);
        assert_eq!(o.fail(id, "dial failure", t0 + ms(3001)), None);
        assert_eq!(o.fail(99, "x", t0), None);
    }

    #[test]
    fn ack_measures_rtt_from_latest_attempt_and_only_once() {
        let t0 = Instant::now();
        let mut o = Outbox::new(RetryPolicy::default());
        let id = o.push(3u32, 1, t0);
        o.due(t0);
        o.fail(id, "timeout", t0 + ms(1000));
        assert_eq!(ids(&o.due(t0 + ms(1250))), vec![(id, 2)]);
        let acked = o.ack(id, t0 + ms(1350)).unwrap();
        assert_eq!(
            acked,
            Acked {
                id,
                to: 3,
                attempts: 2,
                rtt: ms(100)
            }
        );
        assert_eq!(o.ack(id, t0 + ms(1400)), None);
        assert_eq!(o.ack(999, t0), None);
        assert_eq!(
            (o.pending(), o.pending_to(&3), o.next_wakeup()),
            (0, 0, None)
        );
    }

    #[test]
    fn expire_removes_only_idle_messages_past_deadline() {
        let t0 = Instant::now();
        let mut o = Outbox::new(policy(250, 5000, 1000));
        let flying = o.push(1u32, 1, t0);
        o.due(t0);
        let idle = o.push(1u32, 1, t0);
        let young = o.push(1u32, 1, t0 + ms(500));
        assert!(o.expire(t0 + ms(999)).is_empty());
        let failed = o.expire(t0 + ms(1000));
        assert_eq!(
            failed,
            vec![Failed {
                id: idle,
                to: 1,
                attempts: 0,
                reason: "deadline".into()
            }]
        );
        assert_eq!(o.pending(), 2);
        assert_eq!(
            o.fail(flying, "timeout", t0 + ms(1200)).map(|f| f.attempts),
            Some(1)
        );
        assert_eq!(ids(&o.due(t0 + ms(1200))), vec![(young, 1)]);
    }

    #[test]
    fn next_wakeup_is_minimum_of_due_times_and_deadlines() {
        let t0 = Instant::now();
        let mut o = Outbox::new(policy(250, 5000, 2000));
        assert_eq!(o.next_wakeup(), None);
        let a = o.push(1u32, 1, t0);
        assert_eq!(o.next_wakeup(), Some(t0));
        o.due(t0);
        assert_eq!(o.next_wakeup(), None, "in flight: nothing to wake for");
        o.fail(a, "timeout", t0 + ms(1000));
        assert_eq!(o.next_wakeup(), Some(t0 + ms(1250)));
        o.push(2u32, 1, t0 + ms(1100));
        assert_eq!(o.next_wakeup(), Some(t0 + ms(1100)));
        o.due(t0 + ms(1100));
        assert_eq!(o.next_wakeup(), Some(t0 + ms(1250)));
        o.due(t0 + ms(1250));
        o.fail(a, "timeout", t0 + ms(1900));
        assert_eq!(
            o.next_wakeup(),
            Some(t0 + ms(2000)),
            "deadline before the 500 ms backoff"
        );
    }

    #[test]
    fn requeue_peer_makes_in_flight_due_again_without_an_attempt() {
        let t0 = Instant::now();
        let mut o = Outbox::new(RetryPolicy::default());
        let (a, b, c) = (
            o.push(1u32, 1, t0),
            o.push(1u32, 1, t0),
            o.push(2u32, 1, t0),
        );
        o.due(t0);
        let t1 = t0 + ms(50);
        assert_eq!(o.requeue_peer(&1, t1), 2);
        assert_eq!(o.requeue_peer(&1, t1), 0, "no longer in flight");
        assert_eq!(o.requeue_peer(&9, t1), 0);
        assert_eq!(
            (o.pending(), o.pending_to(&1), o.next_wakeup()),
            (3, 2, Some(t1))
        );
        assert_eq!(o.fail(a, "closed", t1), None, "a stale failure is ignored");
        assert_eq!(ids(&o.due(t1)), vec![(a, 2), (b, 2)]);
        assert_eq!(o.ack(c, t1).map(|x| x.attempts), Some(1));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let t0 = Instant::now();
        let mut o = Outbox::new(RetryPolicy {
            max_backoff: Duration::MAX,
            deadline: Duration::MAX,
            ..policy(1, 0, 0)
        });
        let id = o.push(1u32, 1, t0);
        for n in 1..=70 {
            assert_eq!(o.requeue_peer(&1, t0), 0);
            let next = o.next_wakeup().unwrap_or(t0);
            assert_eq!(ids(&o.due(next)), vec![(id, n)]);
            assert_eq!(o.fail(id, "timeout", next), None);
        }
        assert!(o.expire(t0 + ms(u64::from(u32::MAX))).is_empty());
        assert_eq!(o.pending(), 1);
    }

    #[test]
    fn inbox_detects_duplicates_and_out_of_order_ids() {
        let mut i = Inbox::new(Inbox::<&str>::DEFAULT_WINDOW);
        assert!(!i.receive("a", 1));
        assert!(!i.receive("a", 3));
        assert!(!i.receive("a", 2), "out of order but new");
        assert!(i.receive("a", 3));
        assert!(i.receive("a", 1));
        assert!(!i.receive("b", 1), "ids are per sender");
        assert_eq!((i.distinct(), i.duplicates()), (4, 2));
    }

    #[test]
    fn inbox_window_bounds_memory_and_old_ids_count_as_duplicates() {
        let mut i = Inbox::new(4);
        assert!(!i.receive(1u32, 10));
        assert!(!i.receive(1, 8), "within (6, 10]");
        assert!(i.receive(1, 6), "at highest - window: given up");
        assert!(i.receive(1, 2));
        assert!(!i.receive(1, 7));
        for id in 11..=100 {
            assert!(!i.receive(1, id));
            assert!(i.senders[&1].ids.len() <= 4);
        }
        assert!(i.receive(1, 96));
        assert!(!i.receive(1, u64::MAX));
        assert!(i.receive(1, 100));
        assert_eq!((i.distinct(), i.duplicates()), (94, 4));
        let mut zero = Inbox::new(0);
        assert!(!zero.receive(5u32, 0));
        assert!(zero.receive(5, 0));
    }
}
