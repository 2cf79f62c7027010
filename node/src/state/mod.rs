//! The peer's decisions, as I/O-free state machines (the way `quinn-proto` is written, and
//! [`crate::messaging`] before them).
//!
//! Each machine takes inputs stamped with `now`, queues actions for the event loop
//! (`poll_action`), and says when it next needs waking (`poll_timeout`; the loop calls
//! `handle_timeout(now)` then). None of them touches the swarm, a socket or the clock, so each is
//! unit-tested next to its code with made-up instants.
//!
//! - [`bootstrap`]: dialing the `--bootstrap` addresses, backoff, (re)joining, identity changes.
//! - [`reach`]: reachability and the relay policy (reserve at once, drop on a public verdict).
//! - [`announce`]: a listener's announcements in its namespace.
//! - [`discover`]: a dialer's lookups of its namespace, without a fixed cadence.
//! - [`refresh`]: how much of Kademlia's bucket refresh runs (one full refresh per 5 min).
//! - [`traffic`]: a dialer's messages to every member, over [`crate::messaging`].
//! - [`failover`]: back to the relay when a direct path dies, direct again when a punch works.
//! - [`lan`]: direct connections to relayed peers on the same LAN or with a public address.

pub mod announce;
pub mod bootstrap;
pub mod discover;
pub mod failover;
pub mod lan;
pub mod reach;
pub mod refresh;
pub mod traffic;

use std::time::{Duration, Instant};

/// An exponential backoff: `min`, doubling on every [`Backoff::next`], capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The wait to use now; the next one doubles.
    pub fn next_wait(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        d
    }

    /// Back to `min`.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The earliest of some instants.
pub fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

/// A small deterministic jitter source (xorshift64*), so machines stay I/O-free and testable:
/// seeded from the peer id, every node spreads its timers differently.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// `d` scaled by a factor in [1 - frac, 1 + frac).
    pub fn spread(&mut self, d: Duration, frac: f64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(1.0 - frac + 2.0 * frac * r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let got: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let mut j = Jitter::new(42);
        let d = Duration::from_secs(10);
        for _ in 0..1000 {
            let s = j.spread(d, 0.2);
            assert!(
                s >= Duration::from_secs(8) && s < Duration::from_secs(12),
                "{s:?}"
            );
        }
    }
}
