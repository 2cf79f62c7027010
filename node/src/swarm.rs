//! The libp2p parts: identity, transports (TCP with optional pnet, QUIC), the composed behaviour
//! and its lab-friendly configuration.

use std::{path::Path as FsPath, time::Duration};

use libp2p::{
    autonat, connection_limits,
    core::muxing::StreamMuxerBox,
    core::transport::Boxed,
    core::upgrade::Version,
    dcutr, identify,
    identity::Keypair,
    kad, noise, ping,
    pnet::{PnetConfig, PreSharedKey},
    relay,
    swarm::behaviour::toggle::Toggle,
    swarm::NetworkBehaviour,
    tcp, yamux, PeerId, StreamProtocol, Swarm, Transport as _,
};

use p2plab_contract::Transport;

use crate::{config::Config, RunError, UsageError};

pub mod ip_limit;
pub mod keep;
pub mod msg;
pub mod upnp;

/// The Kademlia protocol of p2plab's DHT (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2plab/kad/1.0.0");
/// The identify protocol version string.
pub const ID_PROTOCOL: &str = "/p2plab/id/1.0.0";
/// Between two pings on a connection (libp2p's default). A ping feeds the round-trip metrics,
/// and its traffic renews NAT mappings: at 60 s a dialer's direct connection stayed dead after
/// the listener's NAT forgot its mappings (topologies/faults.yaml lost a message in a CI run),
/// although 300 idle nodes in one process used 13% of a core at 60 s against 42% at 15 s
/// (docs/benchmark-findings.md). On a connection to a bootstrap node (held open, see `keep.rs`)
/// a failed ping closes the connection so that it is dialed again.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Between two pings over the in-process memory transport (`bench swarm`): no NAT can forget a
/// mapping there, so pings only find dead peers, and at 15 s they were most of what 1,000 idle
/// nodes in one process cost (docs/benchmark-findings.md).
pub const PING_INTERVAL_MEMORY: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub ip_limit: ip_limit::Behaviour,
    /// Polled first after the two limits (the derive polls in field order): a message's ack is
    /// read in this behaviour's poll, and waits for every behaviour polled before it.
    pub msg: msg::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub autonat: autonat::v1::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    /// Connections to the bootstrap nodes stay open.
    pub keep: keep::Behaviour,
    /// `--upnp`: port mappings on the LAN's IGD.
    pub upnp: Toggle<upnp::Behaviour>,
}

/// The identity from `--seed` or `--key-file` (created if missing), else a fresh one.
pub fn identity(cfg: &Config) -> Result<Keypair, RunError> {
    if let Some(seed) = cfg.common.seed {
        return identity_from_seed(seed).map_err(|e| RunError::flag("--seed", seed.to_string(), e));
    }
    match &cfg.common.key_file {
        Some(path) => load_or_create_key(path),
        None => Ok(Keypair::generate_ed25519()),
    }
}

/// The deterministic identity of `--seed N` (the same key for the same number, in every binary).
pub fn identity_from_seed(seed: u64) -> Result<Keypair, libp2p::identity::DecodingError> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(b"p2plab!!");
    let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(bytes)?;
    Ok(libp2p::identity::ed25519::Keypair::from(secret).into())
}

fn load_or_create_key(path: &FsPath) -> Result<Keypair, RunError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| RunError::flag("--key-file", shown, format!("not a libp2p key: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| RunError::flag("--key-file", shown.clone(), e))?;
            write_private(path, &bytes).map_err(|e| RunError::flag("--key-file", shown, e))?;
            Ok(key)
        }
        Err(e) => Err(RunError::flag("--key-file", shown, e)),
    }
}

fn write_private(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(bytes)
}

/// The PSK from `--psk-file`, if any.
pub fn psk(cfg: &Config) -> Result<Option<PreSharedKey>, RunError> {
    let Some(path) = &cfg.common.psk_file else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::flag("--psk-file", shown.clone(), e))?;
    text.parse::<PreSharedKey>()
        .map(Some)
        .map_err(|e| RunError::flag("--psk-file", shown, format!("not a swarm key: {e}")))
}

/// Which transports to build after the PSK rule: pnet is TCP only, so a PSK with
/// `--transport both` means TCP, and with `--transport quic` is a usage error.
pub fn transports(cfg: &Config, psk: bool) -> Result<(bool, bool), UsageError> {
    let t = cfg.common.transport;
    if psk && !t.tcp() {
        return Err(UsageError {
            flag: "--transport",
            value: if t.memory() { "memory" } else { "quic" }.into(),
            reason: "a private network (--psk-file) works over TCP only".into(),
        });
    }
    Ok((t.tcp(), t.quic() && !psk))
}

/// The peer's transport stack: TCP (with the PSK handshake first when there is one), QUIC, or
/// the in-process memory transport, each upgraded with noise and yamux (multistream-select's lazy
/// V1 for the upgrade). Public so that the benchmark's libp2p end (`p2plab-tools`, `bench
/// throughput` and `bench rtt`) measures this very stack rather than one of its own. A PSK turns
/// QUIC off (pnet is TCP only; [`transports`] reports that as a usage error for the peer).
pub fn transport(
    key: &Keypair,
    transport: Transport,
    psk: Option<PreSharedKey>,
) -> std::io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let (tcp_on, quic_on, memory_on) = (
        transport.tcp(),
        transport.quic() && psk.is_none(),
        transport.memory(),
    );
    let noise = noise::Config::new(key).map_err(std::io::Error::other)?;
    if memory_on {
        return Ok(libp2p::core::transport::MemoryTransport::default()
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed());
    }
    let tcp_t = tcp_on.then(|| {
        let raw = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
        let upgraded = match psk {
            Some(psk) => raw
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise.clone())
                .multiplex(yamux::Config::default())
                .boxed(),
            None => raw
                .upgrade(Version::V1Lazy)
                .authenticate(noise.clone())
                .multiplex(yamux::Config::default())
                .boxed(),
        };
        upgraded
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed()
    });
    let quic_t = quic_on.then(|| {
        libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
            .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
            .boxed()
    });
    Ok(match (tcp_t, quic_t) {
        (Some(t), Some(q)) => t
            .or_transport(q)
            .map(|either, _| either.into_inner())
            .boxed(),
        (Some(t), None) => t,
        (None, Some(q)) => q,
        (None, None) => return Err(std::io::Error::other("no transport enabled")),
    })
}

/// Builds the swarm for `cfg`, registering libp2p's metrics in `registry`.
pub fn build(
    cfg: &Config,
    key: Keypair,
    psk: Option<PreSharedKey>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, RunError> {
    transports(cfg, psk.is_some()).map_err(RunError::Usage)?;
    let stack = cfg.common.transport;
    let memory_on = stack.memory();
    let relay_limits = cfg.relay_server().cloned();
    let ack_timeout = cfg
        .traffic()
        .map(|t| t.ack_timeout)
        .unwrap_or(Duration::from_secs(10));
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.common.max_connections))
        .with_max_established_per_peer(Some(cfg.common.max_connections_per_peer))
        .with_max_pending_outgoing(Some(cfg.common.max_connections.max(16)));
    let per_ip = cfg.common.max_connections_per_ip;
    let idle = cfg.common.idle_timeout;
    let replication = std::num::NonZeroUsize::new(usize::from(cfg.common.kad_replication))
        .unwrap_or(kad::K_VALUE);
    let upnp_on = cfg.common.upnp;
    let upnp_gateway = cfg.common.upnp_gateway;
    let with_bootstrap_servers = !cfg.common.bootstrap.is_empty();

    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(move |key| {
            transport(key, stack, psk)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| RunError::Runtime(format!("transport: {e}")))?
        .with_dns()
        .map_err(|e| RunError::Runtime(format!("dns: {e}")))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| RunError::Runtime(format!("relay client: {e}")))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            let local = key.public().to_peer_id();
            let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
            kad_cfg
                .set_query_timeout(Duration::from_secs(15))
                .set_replication_factor(replication)
                .set_record_ttl(Some(Duration::from_secs(600)))
                // No caching of found records at the closest peer that lacked them: one more
                // write per lookup, for records that are re-announced every 30 s anyway.
                .set_caching(kad::Caching::Disabled)
                .set_provider_record_ttl(Some(Duration::from_secs(600)))
                .set_publication_interval(None)
                .set_provider_publication_interval(None)
                // The node asks for its full bucket refreshes itself, spread per node (see
                // state/refresh.rs): Kademlia's own would run every 5 min from each node's start,
                // in lockstep for nodes started together.
                .set_periodic_bootstrap_interval(None);
            let kad =
                kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_cfg);
            let autonat_cfg = autonat::v1::Config {
                // The first probe soon after start: a public node's verdict lets its first
                // announcement name its direct address (see state/announce.rs, HOLD).
                boot_delay: Duration::from_millis(300),
                // The first probe often finds no server yet (the bootstrap node is added once
                // connected, see node.rs), and AutoNAT then waits `retry_interval` (even after a
                // new address: it counts from the last probe). At 5 s, an open peer of the NAT
                // matrix was confirmed public 5.3 s after its start, so its peer's dial-back came
                // after the tenth message; at 1 s a second try follows the bootstrap connection.
                // A server is still asked at most once per `throttle_server_period`.
                retry_interval: Duration::from_secs(1),
                refresh_interval: Duration::from_secs(60),
                throttle_server_period: Duration::from_secs(2),
                confidence_max: 1,
                // Lab addresses (198.18/15, 10/8, 100.64/10) are not global; AutoNAT v1 would
                // ignore every one of them.
                only_global_ips: false,
                // Probes go to the bootstrap nodes only (added as servers when connected): with
                // `only_global_ips` off, a peer on the same LAN would dial back a private
                // address and confirm it as external.
                use_connected: !with_bootstrap_servers,
                timeout: Duration::from_secs(10),
                ..Default::default()
            };
            let relay_server = relay_limits.map(|r| {
                relay::Behaviour::new(
                    local,
                    relay::Config {
                        max_reservations: r.max_reservations,
                        max_reservations_per_peer: 4,
                        reservation_duration: Duration::from_secs(3600),
                        max_circuits: r.max_circuits,
                        max_circuits_per_peer: 16,
                        max_circuit_duration: r.max_circuit_duration,
                        max_circuit_bytes: r.max_circuit_bytes,
                        reservation_rate_limiters: Vec::new(),
                        circuit_src_rate_limiters: Vec::new(),
                    }
                    .with_rate_limits(),
                )
            });
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                ip_limit: ip_limit::Behaviour::new(per_ip),
                identify: identify::Behaviour::new(
                    identify::Config::new(ID_PROTOCOL.to_string(), key.public())
                        .with_agent_version(format!("p2plab-node/{}", env!("CARGO_PKG_VERSION")))
                        .with_push_listen_addr_updates(true)
                        // No address cache for dials: it holds every listen address a peer ever
                        // reported, loopback ones included, and a dial to a peer's 127.0.0.1 can
                        // reach ourselves. Kademlia and the peer records keep the usable ones.
                        .with_cache_size(0),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(if memory_on {
                            PING_INTERVAL_MEMORY
                        } else {
                            PING_INTERVAL
                        })
                        .with_timeout(Duration::from_secs(10)),
                ),
                kad,
                autonat: autonat::v1::Behaviour::new(local, autonat_cfg),
                relay_server: Toggle::from(relay_server),
                relay_client,
                dcutr: dcutr::Behaviour::new(local),
                msg: msg::Behaviour::new(ack_timeout, crate::MAX_MESSAGE_SIZE),
                keep: keep::Behaviour::default(),
                upnp: Toggle::from(upnp_on.then(|| upnp::Behaviour::new(upnp_gateway))),
            }
        })
        .map_err(|e| RunError::Runtime(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// The relay's rate limits, per peer and per IP address (docs/reliability.md, "Limits").
///
/// libp2p's defaults (30 reservations and 30 circuits per peer every 2 minutes, 60 per IP a
/// minute) starved honest peers: behind one NAT many peers share an address, and a dialer whose
/// listener restarted opens a circuit per retry (the failover opens one every 2 to 10 s). These
/// are set from what honest peers do, with room: a peer asks a relay for a reservation at start,
/// at renewal and after a lost connection; a dialer opens a circuit per member of its namespace
/// and per retry. Per IP they allow a NAT full of such peers starting at once; what they stop is
/// one host asking thousands a minute. Reservations held at once are bounded per peer (4) and in
/// all (`--relay-max-reservations`), circuits the same way (16 per peer,
/// `--relay-max-circuits`).
trait RelayRateLimits {
    fn with_rate_limits(self) -> Self;
}

impl RelayRateLimits for relay::Config {
    fn with_rate_limits(self) -> Self {
        let minute = Duration::from_secs(60);
        let n = |v: u32| std::num::NonZeroU32::new(v).unwrap_or(std::num::NonZeroU32::MIN);
        self.reservation_rate_per_peer(n(RESERVATIONS_PER_PEER_MINUTE), minute)
            .reservation_rate_per_ip(n(RESERVATIONS_PER_IP_MINUTE), minute)
            .circuit_src_per_peer(n(CIRCUITS_PER_PEER_MINUTE), minute)
            .circuit_src_per_ip(n(CIRCUITS_PER_IP_MINUTE), minute)
    }
}

/// Relay reservations one peer may ask for a minute.
pub const RESERVATIONS_PER_PEER_MINUTE: u32 = 10;
/// Relay reservations one IP address may ask for a minute (a NAT full of peers starting at once).
pub const RESERVATIONS_PER_IP_MINUTE: u32 = 300;
/// Circuits one peer may open through the relay a minute.
pub const CIRCUITS_PER_PEER_MINUTE: u32 = 120;
/// Circuits the peers of one IP address may open through the relay a minute.
pub const CIRCUITS_PER_IP_MINUTE: u32 = 1200;
