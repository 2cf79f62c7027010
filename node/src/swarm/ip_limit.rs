//! At most `--max-connections-per-ip` inbound connections (pending and established) from one IP
//! address.
//!
//! Why: identities cost nothing, so a per-peer limit does not stop one host from opening a
//! connection per made-up identity until the node's `--max-connections` are gone and honest
//! peers are refused. A per-IP limit bounds what one address can take. It must stay generous:
//! a home NAT, a campus or a carrier-grade NAT puts many honest peers behind one address, and
//! they all count against it. The default (256, a quarter of the default `--max-connections`)
//! lets a NAT with 256 peers in, and leaves three quarters of the node to everyone else
//! whatever one address does. Peers behind the same address as a flooding host share its
//! quarter: nothing at this layer tells them from the flood.
//!
//! The check runs before the handshake (`handle_pending_inbound_connection`), so a refused
//! connection costs no noise handshake. Relayed inbound connections name the relay's address,
//! not the peer's: they are not counted. Outbound connections are never limited here.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// The connection was refused: its address already has `limit` connections.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {limit} inbound connections (--max-connections-per-ip)")]
pub struct Exceeded {
    pub ip: IpAddr,
    pub limit: u32,
}

/// The counting, apart from the swarm (unit-tested below).
#[derive(Debug, Default)]
struct Counts {
    per_ip: HashMap<IpAddr, u32>,
    by_connection: HashMap<ConnectionId, IpAddr>,
}

impl Counts {
    /// Admits `id` from `ip` when it has fewer than `limit`; 0 is no limit.
    fn admit(&mut self, id: ConnectionId, ip: IpAddr, limit: u32) -> Result<(), Exceeded> {
        let n = self.per_ip.entry(ip).or_default();
        if limit != 0 && *n >= limit {
            return Err(Exceeded { ip, limit });
        }
        *n += 1;
        self.by_connection.insert(id, ip);
        Ok(())
    }

    fn release(&mut self, id: ConnectionId) {
        if let Some(ip) = self.by_connection.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// The IP an inbound connection comes from; `None` for a relayed one (the address is the
/// relay's) or one without an IP.
fn source_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

pub struct Behaviour {
    limit: u32,
    counts: Counts,
}

impl Behaviour {
    /// `limit`: most inbound connections per IP; 0 is no limit.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            counts: Counts::default(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match source_ip(remote) {
            Some(ip) => self
                .counts
                .admit(id, ip, self.limit)
                .map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.counts.release(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_address_is_held_to_its_limit_and_others_are_not_touched() {
        let mut c = Counts::default();
        let a: IpAddr = "198.18.0.7".parse().unwrap();
        let b: IpAddr = "198.18.0.8".parse().unwrap();
        for i in 0..3 {
            c.admit(ConnectionId::new_unchecked(i), a, 3).unwrap();
        }
        let e = c.admit(ConnectionId::new_unchecked(3), a, 3).unwrap_err();
        assert_eq!((e.ip, e.limit), (a, 3));
        c.admit(ConnectionId::new_unchecked(4), b, 3).unwrap();
        // a closed (or failed) connection frees its slot; unknown ids change nothing
        c.release(ConnectionId::new_unchecked(1));
        c.release(ConnectionId::new_unchecked(99));
        c.admit(ConnectionId::new_unchecked(5), a, 3).unwrap();
        assert!(c.admit(ConnectionId::new_unchecked(6), a, 3).is_err());
        for i in [0, 2, 4, 5] {
            c.release(ConnectionId::new_unchecked(i));
        }
        assert!(c.per_ip.is_empty() && c.by_connection.is_empty());
        // 0: no limit
        for i in 10..1000 {
            c.admit(ConnectionId::new_unchecked(i), a, 0).unwrap();
        }
    }

    #[test]
    fn relayed_connections_are_not_counted() {
        let relayed: Multiaddr =
            "/ip4/198.18.0.2/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .unwrap();
        assert_eq!(source_ip(&relayed), None);
        let direct: Multiaddr = "/ip6/fd70::a/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(source_ip(&direct), Some("fd70::a".parse().unwrap()));
    }
}
