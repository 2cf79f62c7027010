//! `delayline`: a userspace delay line for NFQUEUE, the stand-in for netem's delay/jitter on
//! kernels without `sch_netem`. Installed in the node image and started by `p2plab-impair`
//! (docker/impair.sh) inside a router container.
//!
//! It binds NFQUEUE queue `--queue` (default 7), holds every queued packet for
//! `--delay-ms` plus a uniform random jitter in `[-jitter, +jitter]` ms (the sum is clamped at 0),
//! then issues the ACCEPT verdict, so the packet continues through the netfilter hooks after the
//! rule that queued it. Only packet metadata is copied to userspace (copy mode META).
//!
//! * **Ordering:** packets are released in order of their due time, like netem's default: with
//!   jitter, packets of one flow can be reordered (two packets sent 1 ms apart with 10 ms jitter
//!   can swap). Without jitter the order is kept (equal delays, ties broken by arrival order).
//! * **Bounds:** at most `--max-queue` packets are held (also the kernel queue length); a packet
//!   arriving when that many are held is dropped (DROP verdict), like a full netem queue.
//! * **Resolution:** the `nfq` crate gives no pollable descriptor, so the socket is read without
//!   blocking every `--poll-us` microseconds (default 500); a packet's delay is accurate to about
//!   that plus scheduling latency.
//! * **Output:** one JSON line `{"event":"delayline_ready",...}` on stdout once the queue is bound;
//!   on SIGTERM/SIGINT every held packet is accepted at once, the queue is unbound, a
//!   `{"event":"delayline_exit",...}` line is printed and the process exits 0. Errors: one line on
//!   stderr, exit 1.
use std::{
    cmp::Ordering,
    collections::BinaryHeap,
    io::ErrorKind,
    sync::{
        atomic::{AtomicBool, Ordering as AtomicOrdering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use clap::Parser;
use nfq::{Message, Queue, Verdict};
use p2plab_contract::bench::{DelaylineExit, DelaylineReady};
use rand::Rng;

/// Delay packets of an NFQUEUE queue (netem-like delay and jitter in userspace).
#[derive(Debug, Parser)]
#[command(name = "delayline", version)]
struct Cli {
    /// NFQUEUE queue number to bind.
    #[arg(long, default_value_t = 7)]
    queue: u16,
    /// Fixed delay added to every packet, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    delay_ms: u64,
    /// Uniform random jitter in [-jitter, +jitter] ms added to the delay (total clamped at 0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    jitter_ms: u64,
    /// Most packets held at once; packets beyond are dropped. Also the kernel queue length.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_queue: u32,
    /// How often the queue socket is read, in microseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=100_000))]
    poll_us: u64,
}

/// A packet waiting for its verdict.
struct Held {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // reversed: BinaryHeap is a max-heap, we want the earliest due time (then arrival) first
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Default)]
struct Stats {
    delayed: u64,
    dropped_full: u64,
    errors: u64,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("delayline: error: {e}");
            1
        }
    })
}

fn run(cli: &Cli) -> Result<(), String> {
    let mut queue = Queue::open().map_err(|e| {
        format!("cannot open the NFQUEUE netlink socket: {e} (needs CAP_NET_ADMIN)")
    })?;
    queue
        .bind(cli.queue)
        .map_err(|e| format!("cannot bind NFQUEUE queue {}: {e} (is another delayline bound to it? use another --queue)", cli.queue))?;
    queue
        .set_copy_range(cli.queue, 0)
        .map_err(|e| format!("cannot set copy mode of queue {}: {e}", cli.queue))?;
    queue
        .set_queue_max_len(cli.queue, cli.max_queue)
        .map_err(|e| format!("cannot set the length of queue {}: {e}", cli.queue))?;
    // a full kernel queue drops (a bounded queue, like netem's limit)
    queue
        .set_fail_open(cli.queue, false)
        .map_err(|e| format!("cannot set fail-open of queue {}: {e}", cli.queue))?;
    queue.set_nonblocking(true);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        let (delay, jitter, max, poll) = (cli.delay_ms, cli.jitter_ms, cli.max_queue, cli.poll_us);
        thread::Builder::new()
            .name("delayline".into())
            .spawn(move || {
                delay_loop(
                    queue,
                    delay,
                    jitter,
                    max as usize,
                    Duration::from_micros(poll),
                    &stop,
                )
            })
            .map_err(|e| format!("cannot start the worker thread: {e}"))?
    };
    let ready = DelaylineReady {
        queue: cli.queue,
        delay_ms: cli.delay_ms,
        jitter_ms: cli.jitter_ms,
        max_queue: cli.max_queue,
        reorder: cli.jitter_ms > 0,
        pid: std::process::id(),
    };
    println!("{}", serde_json::to_string(&ready).unwrap_or_default());
    let signal = rt.block_on(p2plab_node::shutdown_signal());
    stop.store(true, AtomicOrdering::SeqCst);
    let stats = worker
        .join()
        .map_err(|_| "the worker thread panicked".to_string())?;
    let exit = DelaylineExit {
        signal,
        delayed: stats.delayed,
        dropped_full: stats.dropped_full,
        errors: stats.errors,
    };
    println!("{}", serde_json::to_string(&exit).unwrap_or_default());
    Ok(())
}

fn delay_loop(
    mut queue: Queue,
    delay_ms: u64,
    jitter_ms: u64,
    max_queue: usize,
    poll: Duration,
    stop: &AtomicBool,
) -> Stats {
    let mut stats = Stats::default();
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq: u64 = 0;
    let mut rng = rand::thread_rng();
    let delay_us = i64::try_from(delay_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    let jitter_us = i64::try_from(jitter_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    while !stop.load(AtomicOrdering::SeqCst) {
        // 1. take every packet the kernel has queued
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    let now = Instant::now();
                    if held.len() >= max_queue {
                        msg.set_verdict(Verdict::Drop);
                        stats.dropped_full += 1;
                        if queue.verdict(msg).is_err() {
                            stats.errors += 1;
                        }
                        continue;
                    }
                    let j = if jitter_us > 0 {
                        rng.gen_range(-jitter_us..=jitter_us)
                    } else {
                        0
                    };
                    let total = u64::try_from(delay_us.saturating_add(j).max(0)).unwrap_or(0);
                    let due = now.checked_add(Duration::from_micros(total)).unwrap_or(now);
                    seq += 1;
                    held.push(Held { due, seq, msg });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // e.g. a truncated batch: count it, try again on the next round
                    stats.errors += 1;
                    break;
                }
            }
        }
        // 2. release the packets that are due
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            if let Some(h) = held.pop() {
                release(&mut queue, h.msg, &mut stats);
            }
        }
        // 3. sleep until the next poll (or the next due packet, if sooner)
        let nap = held
            .peek()
            .map(|h| h.due.saturating_duration_since(Instant::now()).min(poll))
            .unwrap_or(poll);
        if !nap.is_zero() {
            thread::sleep(nap);
        }
    }
    // shutting down: let every held packet through now rather than drop it with the socket
    while let Some(h) = held.pop() {
        release(&mut queue, h.msg, &mut stats);
    }
    for _ in 0..1000 {
        match queue.recv() {
            Ok(msg) => release(&mut queue, msg, &mut stats),
            Err(_) => break,
        }
    }
    stats
}

fn release(queue: &mut Queue, mut msg: Message, stats: &mut Stats) {
    msg.set_verdict(Verdict::Accept);
    match queue.verdict(msg) {
        Ok(()) => stats.delayed += 1,
        Err(_) => stats.errors += 1,
    }
}
