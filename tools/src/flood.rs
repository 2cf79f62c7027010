//! `bench flood`: one hostile host against a node (a bootstrap node, a relay), from one IP
//! address, with as many made-up identities as it likes.
//!
//! Each of `--identities` identities is its own swarm (the peer's transport stack: TCP, noise,
//! yamux) and, at `--rate` new identities a second:
//! 1. connects to `--target` (connections beyond the node's limits are refused);
//! 2. the first `--reservations` ask the target for a relay reservation;
//! 3. the first `--circuits` open a circuit through the target to `--victim-seed`'s peer (or to
//!    a made-up peer when none is given); over a circuit that opens, it sends the victim a
//!    message frame claiming 64 MiB, then garbage;
//! 4. opens `--streams` streams on the target, never closed, in turn: a Kademlia stream with a
//!    frame claiming 64 MiB, one with garbage, a message stream with an oversized frame, and one
//!    idle on the keep protocol;
//!
//! then holds everything for `--duration` and prints one line:
//! `{"event":"flood_result","identities":1000,"connected":256,"refused":744,
//! "reservations_accepted":..,"reservations_denied":..,"circuits_opened":..,"circuits_denied":..,
//! "streams_opened":..,"streams_refused":..,"streams_reset":..,"wall_ms":..}`.
//! Progress lines (`flood_progress`) come every 10 s. Nothing here is meant to be nice: the
//! honest peers of the lab, judged by its expectations, say whether the target held.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use clap::Args;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    identity::Keypair,
    multiaddr::Protocol,
    relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    Multiaddr, PeerId, StreamProtocol, Swarm,
};
use serde::Serialize;
use tokio::time::{timeout_at, Instant};

use p2plab_node::{cli::parse_duration_secs, swarm as node_swarm, RunError};

/// `bench flood`: see the module documentation.
#[derive(Debug, Clone, Args)]
pub struct FloodArgs {
    /// The node to flood, e.g. /ip4/198.18.0.10/tcp/4001 (its /p2p/ id is learnt on connecting).
    #[arg(long, value_name = "MULTIADDR")]
    pub target: Multiaddr,
    /// Made-up identities, one connection each.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub identities: u32,
    /// Relay reservations asked for in all (one per identity, the first ones).
    #[arg(long, default_value_t = 1000)]
    pub reservations: u32,
    /// Circuits asked for in all (one per identity, the first ones).
    #[arg(long, default_value_t = 1000)]
    pub circuits: u32,
    /// The peer the circuits go to: the identity of `--seed N` (an honest peer of the lab).
    #[arg(long, value_name = "N")]
    pub victim_seed: Option<u64>,
    /// Streams each identity opens on the target and never closes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub streams: u32,
    /// New identities a second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// How long everything is held once the last identity started.
    #[arg(long, default_value = "60", value_parser = parse_duration_secs)]
    pub duration: Duration,
}

/// What the flood got. Counts over all identities.
#[derive(Debug, Default, Serialize)]
pub struct FloodResult {
    pub event: &'static str,
    pub identities: u32,
    pub connected: u64,
    pub refused: u64,
    pub reservations_accepted: u64,
    pub reservations_denied: u64,
    pub circuits_opened: u64,
    pub circuits_denied: u64,
    pub streams_opened: u64,
    pub streams_refused: u64,
    /// Streams the target closed or reset while they were held.
    pub streams_reset: u64,
    pub wall_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    refused: AtomicU64,
    reservations_accepted: AtomicU64,
    reservations_denied: AtomicU64,
    circuits_opened: AtomicU64,
    circuits_denied: AtomicU64,
    streams_opened: AtomicU64,
    streams_refused: AtomicU64,
    streams_reset: AtomicU64,
}

impl Counters {
    fn result(&self, identities: u32, wall: Duration) -> FloodResult {
        FloodResult {
            event: "flood_result",
            identities,
            connected: self.connected.load(Relaxed),
            refused: self.refused.load(Relaxed),
            reservations_accepted: self.reservations_accepted.load(Relaxed),
            reservations_denied: self.reservations_denied.load(Relaxed),
            circuits_opened: self.circuits_opened.load(Relaxed),
            circuits_denied: self.circuits_denied.load(Relaxed),
            streams_opened: self.streams_opened.load(Relaxed),
            streams_refused: self.streams_refused.load(Relaxed),
            streams_reset: self.streams_reset.load(Relaxed),
            wall_ms: wall.as_millis() as u64,
        }
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Hostile {
    relay: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn build(key: Keypair) -> Result<Swarm<Hostile>, RunError> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            node_swarm::transport(key, p2plab_node::config::Transport::Tcp, None)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| RunError::Runtime(format!("transport: {e}")))?
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .map_err(|e| RunError::Runtime(format!("relay client: {e}")))?
        .with_behaviour(|_, relay| Hostile {
            relay,
            stream: libp2p_stream::Behaviour::new(),
        })
        .map_err(|e| RunError::Runtime(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// How long one step (a connection, a reservation, a circuit) may take.
const STEP: Duration = Duration::from_secs(20);
/// A frame length far beyond any limit of the target: 64 MiB.
const CLAIMED: u64 = 64 << 20;

/// Polls `swarm` until `f` says what happened, or the step's deadline.
async fn until<T>(
    swarm: &mut Swarm<Hostile>,
    mut f: impl FnMut(SwarmEvent<HostileEvent>) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + STEP;
    loop {
        match timeout_at(deadline, swarm.select_next_some()).await {
            Ok(ev) => {
                if let Some(t) = f(ev) {
                    return Some(t);
                }
            }
            Err(_) => return None,
        }
    }
}

/// An unsigned varint, as libp2p's length-prefixed frames use.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// What a hostile stream carries.
fn payload(kind: u32, rng: &mut impl rand::Rng) -> Vec<u8> {
    match kind % 4 {
        // a frame claiming 64 MiB, then 16 KiB of it
        0 | 2 => {
            let mut v = varint(CLAIMED);
            v.extend((0..16 * 1024).map(|_| rng.gen::<u8>()));
            v
        }
        // garbage
        1 => (0..4096).map(|_| rng.gen::<u8>()).collect(),
        // nothing: an idle stream held open
        _ => Vec::new(),
    }
}

fn protocol(kind: u32) -> StreamProtocol {
    match kind % 4 {
        0 | 1 => node_swarm::KAD_PROTOCOL,
        2 => node_swarm::msg::PROTOCOL,
        _ => node_swarm::keep::PROTOCOL,
    }
}

/// Opens a stream, writes its payload and holds it (reading whatever comes) until the target
/// closes it or the task is dropped.
async fn hostile_stream(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    kind: u32,
    c: Arc<Counters>,
) {
    let mut s = match control.open_stream(peer, protocol(kind)).await {
        Ok(s) => s,
        Err(_) => {
            c.streams_refused.fetch_add(1, Relaxed);
            return;
        }
    };
    c.streams_opened.fetch_add(1, Relaxed);
    let data = payload(kind, &mut rand::thread_rng());
    if !data.is_empty() && (s.write_all(&data).await.is_err() || s.flush().await.is_err()) {
        c.streams_reset.fetch_add(1, Relaxed);
        return;
    }
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => {
                c.streams_reset.fetch_add(1, Relaxed);
                return;
            }
            Ok(_) => {}
        }
    }
}

struct Plan {
    target: Multiaddr,
    victim: Option<PeerId>,
    reserve: bool,
    circuit: bool,
    streams: u32,
    hold_until: Instant,
}

/// One identity, start to end.
async fn identity(plan: Arc<Plan>, index: u32, c: Arc<Counters>) {
    let Ok(mut swarm) = build(Keypair::generate_ed25519()) else {
        return;
    };
    let hold = async |swarm: &mut Swarm<Hostile>| {
        let _ = timeout_at(plan.hold_until, async {
            loop {
                swarm.select_next_some().await;
            }
        })
        .await;
    };
    // 1. connect
    if swarm.dial(plan.target.clone()).is_err() {
        c.refused.fetch_add(1, Relaxed);
        return;
    }
    let target = until(&mut swarm, |ev| match ev {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(Ok(peer_id)),
        SwarmEvent::OutgoingConnectionError { .. } => Some(Err(())),
        _ => None,
    })
    .await;
    let Some(Ok(target)) = target else {
        c.refused.fetch_add(1, Relaxed);
        return;
    };
    c.connected.fetch_add(1, Relaxed);
    let relay_addr = plan
        .target
        .clone()
        .with(Protocol::P2p(target))
        .with(Protocol::P2pCircuit);
    // 2. a reservation
    if plan.reserve {
        let ok = match swarm.listen_on(relay_addr.clone()) {
            Ok(_) => until(&mut swarm, |ev| match ev {
                SwarmEvent::Behaviour(HostileEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => Some(true),
                SwarmEvent::ListenerClosed { .. } | SwarmEvent::ListenerError { .. } => Some(false),
                _ => None,
            })
            .await
            .unwrap_or(false),
            Err(_) => false,
        };
        if ok {
            c.reservations_accepted.fetch_add(1, Relaxed);
        } else {
            c.reservations_denied.fetch_add(1, Relaxed);
        }
    }
    // 3. a circuit, and garbage to whoever is at its end
    let mut tasks = tokio::task::JoinSet::new();
    if plan.circuit {
        let victim = plan.victim.unwrap_or_else(PeerId::random);
        let opened = match swarm.dial(relay_addr.with(Protocol::P2p(victim))) {
            Ok(()) => until(&mut swarm, |ev| match ev {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == victim => {
                    Some(true)
                }
                SwarmEvent::OutgoingConnectionError {
                    peer_id: Some(p), ..
                } if p == victim => Some(false),
                _ => None,
            })
            .await
            .unwrap_or(false),
            Err(_) => false,
        };
        if opened {
            c.circuits_opened.fetch_add(1, Relaxed);
            let control = swarm.behaviour().stream.new_control();
            tasks.spawn(hostile_stream(control, victim, 2, c.clone()));
        } else {
            c.circuits_denied.fetch_add(1, Relaxed);
        }
    }
    // 4. streams on the target, never closed
    for k in 0..plan.streams {
        let control = swarm.behaviour().stream.new_control();
        tasks.spawn(hostile_stream(
            control,
            target,
            index.wrapping_add(k),
            c.clone(),
        ));
    }
    hold(&mut swarm).await;
    tasks.abort_all();
}

/// Runs the flood; see the module documentation.
pub async fn run(args: FloodArgs) -> Result<FloodResult, RunError> {
    let victim = match args.victim_seed {
        Some(s) => Some(
            node_swarm::identity_from_seed(s)
                .map_err(|e| RunError::flag("--victim-seed", s.to_string(), e))?
                .public()
                .to_peer_id(),
        ),
        None => None,
    };
    if args.target.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        return Err(RunError::flag(
            "--target",
            args.target.to_string(),
            "give the address without /p2p/ (the id is learnt on connecting)",
        ));
    }
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(f64::from(args.identities) / f64::from(args.rate));
    let plan_of = |i: u32| Plan {
        target: args.target.clone(),
        victim,
        reserve: i < args.reservations,
        circuit: i < args.circuits,
        streams: args.streams,
        hold_until: start + ramp + args.duration,
    };
    let c = Arc::new(Counters::default());
    let mut set = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut next_progress = start + Duration::from_secs(10);
    for i in 0..args.identities {
        tokio::time::sleep_until(start + every * i).await;
        set.spawn(identity(Arc::new(plan_of(i)), i, c.clone()));
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(10);
            progress(&c, args.identities, start);
        }
    }
    let mut ticker = tokio::time::interval_at(next_progress, Duration::from_secs(10));
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            _ = ticker.tick() => progress(&c, args.identities, start),
        }
    }
    Ok(c.result(args.identities, start.elapsed()))
}

fn progress(c: &Counters, identities: u32, start: Instant) {
    let mut r = c.result(identities, start.elapsed());
    r.event = "flood_progress";
    if let Ok(line) = serde_json::to_string(&r) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_libp2p_s() {
        assert_eq!(varint(1), [1]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(CLAIMED), [0x80, 0x80, 0x80, 0x20]);
    }
}
