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
//! not move. A sample taken right after a trim measures what is kept.

use std::time::Duration;

/// How often a node trims its heap: a burst's memory is back with the system within this.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Returns the free pages of every malloc arena to the system (glibc; elsewhere a no-op).
#[allow(unsafe_code)]
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and is thread-safe (it locks each arena in turn);
    // its result only says whether anything was released.
    unsafe {
        libc::malloc_trim(0);
    }
}
