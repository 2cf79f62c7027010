//! `/metrics` (Prometheus text), `/health` (200 once bootstrapped and serving) and `/status`
//! (JSON) on `--metrics-addr`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Serialize;

use crate::events::{Path, Totals};

/// Label of the ack round-trip histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: &'static str,
}

/// Label of the hole punch counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// p2plab's own metrics, next to libp2p's.
#[derive(Clone)]
pub struct Metrics {
    pub connected_peers: Gauge,
    pub routing_table_size: Gauge,
    pub messages_sent: Counter,
    pub messages_received: Counter,
    pub messages_acked: Counter,
    pub messages_failed: Counter,
    pub duplicates: Counter,
    pub connection_failures: Counter,
    pub connections_denied: Counter,
    pub ack_rtt_seconds: Family<PathLabel, Histogram>,
    pub hole_punches: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            connected_peers: Gauge::default(),
            routing_table_size: Gauge::default(),
            messages_sent: Counter::default(),
            messages_received: Counter::default(),
            messages_acked: Counter::default(),
            messages_failed: Counter::default(),
            duplicates: Counter::default(),
            connection_failures: Counter::default(),
            connections_denied: Counter::default(),
            ack_rtt_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
            }),
            hole_punches: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("p2plab");
        r.register(
            "connected_peers",
            "Peers with at least one open connection",
            m.connected_peers.clone(),
        );
        r.register(
            "routing_table_size",
            "Peers in the Kademlia routing table",
            m.routing_table_size.clone(),
        );
        r.register(
            "messages_sent",
            "Distinct messages originated",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_received",
            "Distinct messages received",
            m.messages_received.clone(),
        );
        r.register(
            "messages_acked",
            "Messages acknowledged by their receiver",
            m.messages_acked.clone(),
        );
        r.register(
            "messages_failed",
            "Messages given up at their deadline",
            m.messages_failed.clone(),
        );
        r.register(
            "message_duplicates",
            "Duplicate deliveries recognised by id",
            m.duplicates.clone(),
        );
        r.register(
            "connection_failures",
            "Failed incoming or outgoing connection attempts",
            m.connection_failures.clone(),
        );
        r.register(
            "connections_denied",
            "Incoming connections refused by a limit (per IP, per peer, in all): counted, not logged one by one",
            m.connections_denied.clone(),
        );
        r.register(
            "ack_rtt_seconds",
            "Round trip from send to ack, by path",
            m.ack_rtt_seconds.clone(),
        );
        r.register(
            "hole_punches",
            "DCUtR hole punches by outcome",
            m.hole_punches.clone(),
        );
        m
    }

    pub fn observe_rtt(&self, path: Path, secs: f64) {
        self.ack_rtt_seconds
            .get_or_create(&PathLabel {
                path: path.as_str(),
            })
            .observe(secs);
    }

    pub fn hole_punch(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.hole_punches
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

/// One open connection in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    pub peer: PeerId,
    pub path: Path,
    pub remote_addr: Multiaddr,
}

/// The body of `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub name: String,
    pub role: String,
    pub peer_id: Option<PeerId>,
    pub namespace: Option<String>,
    pub bootstrapped: bool,
    pub listen_addrs: Vec<Multiaddr>,
    pub external_addrs: Vec<Multiaddr>,
    pub connections: Vec<ConnectionStatus>,
    pub routing_table_size: usize,
    pub namespace_peers: Vec<PeerId>,
    pub totals: Totals,
}

/// What the event loop shares with the HTTP server.
pub struct Shared {
    pub registry: Mutex<Registry>,
    pub status: RwLock<Status>,
    pub healthy: AtomicBool,
}

impl Shared {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Shared {
            registry: Mutex::new(registry),
            status: RwLock::new(Status::default()),
            healthy: AtomicBool::new(false),
        })
    }
}

/// Binds `addr` now (so a port in use fails the start) and serves in the background.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, crate::RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::RunError::flag("--metrics-addr", addr.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| crate::RunError::flag("--metrics-addr", addr.to_string(), e))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/status", get(status))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(local)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let mut body = String::new();
    let encoded = match s.registry.lock() {
        Ok(reg) => prometheus_client::encoding::text::encode(&mut body, &reg).is_ok(),
        Err(_) => false,
    };
    if !encoded {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn status(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.status.read() {
        Ok(st) => (
            StatusCode::OK,
            axum::Json(serde_json::to_value(&*st).unwrap_or_default()),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::Value::Null),
        ),
    }
}
