//! Handing the heap's free memory back to the system.
//!
//! glibc's malloc keeps what a burst freed: the pages stay in its arenas, between chunks still in
//! use, so a node's RSS steps up with its busiest moment and stays there. Measured on loopback
//! (2026-12-07, dev build): a monitor at 21 MiB, 300 made-up identities with 4 streams each
//! connect and leave; 15 s later it holds 49.4 MiB, and `malloc_trim(0)` brings it to 26.5 MiB.
//! In the hour's soak a bootstrap node stepped by 13.2% at the first NAT flush (every peer behind
//! the NAT reconnecting at once) and kept it (docs/reliability.md §6). Tried and not kept:
//! mimalloc (78 MiB after the same burst), `MALLOC_ARENA_MAX` (no change) and a lower
//! `MALLOC_MMAP_THRESHOLD_` (8 KiB: 29.7 MiB, but every buffer of 8 KiB or more its own mmap).
//!
//! What a trim gives back, and why `resources` samples follow one: in the soak, a bootstrap
//! node's trims each released about 2.7-3.0 MiB at the top of each of its two worker threads'
//! arenas (strace: `madvise(..., MADV_DONTNEED)`, no mmap, brk or mprotect in between), and its
//! allocation churn touched those pages again within 10-30 s: RSS sampled at random points of
//! that cycle swung by up to 8% between neighbouring samples, while what the process keeps did
//! not move. A sample taken right after a trim measures what is kept. (Those 3 MiB were QUIC
//! endpoints' receive buffers; they no longer come from the arenas, see below.)
//!
//! One trim serves the whole process: `malloc_trim` walks every arena of the process, not the
//! calling node's share. With many nodes in one process (`bench swarm`) each trimming on its own
//! clock, the trims multiplied with the nodes while each one's cost grew with the shared heap: at
//! 2,000 nodes (4 GiB resident) `perf` of the process (2026-12-07) had 54% of its samples sending
//! IPIs, 15% in `malloc_trim` and 8% in `smp_call_function_many_cond` (the TLB shootdowns of its
//! `madvise` calls). So a node's trim is skipped when the process trimmed within [`SHARED_FOR`]:
//! what a node wants, a heap trimmed recently, is then true. A process with one node trims as
//! before as long as its `--resources-interval` is 1 s or more (shorter, a sample follows a trim
//! at most once a second).
//!
//! Large buffers from mmap, always: glibc raises its mmap threshold each time a large mmapped
//! block is freed (up to 32 MiB), after which such blocks come from the arenas, and `calloc`
//! must zero (touch) them there. A bootstrap node's AutoNAT dial-backs each open a new QUIC
//! endpoint (a dial-back asks for a new port), whose receive buffer is about 3 MiB (quinn:
//! GRO segments × payload × batch): in the 5-minute soak of 2026-12-07 a bootstrap node's RSS
//! went up and down in steps of 2.9-3.0 MiB, 25 to 40 MiB, with the dial-backs in flight to the
//! three peers behind NAT (one every ~11 s each, 10 s to time out), and failed its flatness
//! check once (+31%). [`fix_mmap_threshold`] keeps the threshold at glibc's default, 128 KiB:
//! such a buffer is then an mmap of zero pages, resident only where packets were written, and
//! gone at its free. Smaller allocations are unchanged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a node trims its heap: a burst's memory is back with the system within this.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(30);

/// A trim this recent, by any node of the process, stands for a node's own: its `resources`
/// sample still follows a trim, and many nodes in one process trim at most once a second.
pub(crate) const SHARED_FOR: Duration = Duration::from_secs(1);

/// When the process last trimmed.
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Returns the free pages of every malloc arena to the system (glibc; elsewhere a no-op),
/// unless the process did within the last [`SHARED_FOR`]. True if this call trimmed.
pub(crate) fn trim() -> bool {
    if !claim(&LAST, Instant::now()) {
        return false;
    }
    malloc_trim();
    true
}

/// Takes the process's turn to trim at `now`: false if `last` is within [`SHARED_FOR`].
fn claim(last: &Mutex<Option<Instant>>, now: Instant) -> bool {
    // nothing under this lock can panic; were it poisoned, the instant in it is still good
    let mut last = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_some_and(|t| now.saturating_duration_since(t) < SHARED_FOR) {
        return false;
    }
    *last = Some(now);
    true
}

/// glibc's default mmap threshold, kept from now on (see the module's comment).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Keeps glibc's mmap threshold at [`MMAP_THRESHOLD`] for the rest of the process (elsewhere a
/// no-op). True when set.
#[allow(unsafe_code)]
pub(crate) fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointer; glibc serialises it with the arenas' locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[allow(unsafe_code)]
fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and is thread-safe (it locks each arena in turn);
    // its result only says whether anything was released.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_mmap_threshold() {
        assert!(fix_mmap_threshold());
    }

    #[test]
    fn one_trim_a_second_serves_every_node_of_the_process() {
        let last = Mutex::new(None);
        let t0 = Instant::now();
        assert!(claim(&last, t0), "the first trim runs");
        // 1,000 nodes asking within the same second: none of them trims again
        assert!((0..1000).all(|i| !claim(&last, t0 + Duration::from_micros(i * 900))));
        assert!(
            claim(&last, t0 + SHARED_FOR),
            "a second later the next one does"
        );
        // a clock read before the last trim (another node's older `now`) is within it too
        assert!(!claim(&last, t0));
    }
}
