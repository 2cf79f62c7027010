//! `/p2plab/keep/1.0.0`: a connection to a bootstrap node stays open at both ends.
//!
//! Why: a connection with nothing to do closes after the idle timeout, at whichever end times out
//! first (a monitor's default is 60 s). A node cannot tell that close from its bootstrap node going
//! away, and a bootstrap node that came back has lost the node's records, so every reconnection is
//! a re-join: a self-lookup and a new announcement. Measured with 300 idle nodes in one process:
//! the re-joins after each idle close took both cores for several seconds every minute or so;
//! with the bootstrap connections held, the same nodes idle at about a third of one core
//! (docs/benchmark-findings.md). So a node holds its bootstrap connections open, as a real
//! peer keeps its way into the network, and a close now means the bootstrap node really went.
//!
//! How: the handler of a kept connection says keep-alive (this end) and opens one stream that
//! counts for keep-alive and carries nothing; the other end holds the stream it accepted, and
//! an open stream keeps its connection alive there too. An end that does not speak the protocol
//! (another implementation) keeps only ours. A peer opening more streams loses its older one.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    task::{Context, Poll},
};

use futures::AsyncRead;
use libp2p::{
    core::{transport::PortUse, upgrade::ReadyUpgrade, Endpoint},
    swarm::{
        handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound},
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, Stream, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2plab/keep/1.0.0");

/// Which peers' connections are kept open.
#[derive(Default)]
pub struct Behaviour {
    kept: HashSet<PeerId>,
    conns: HashMap<PeerId, Vec<ConnectionId>>,
    notify: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl Behaviour {
    /// Keep `peer`'s connections (those open now and those to come) open.
    pub fn keep(&mut self, peer: PeerId) {
        if self.kept.insert(peer) {
            self.tell(peer, true);
        }
    }

    /// Let `peer`'s connections close when idle again.
    pub fn release(&mut self, peer: &PeerId) {
        if self.kept.remove(peer) {
            self.tell(*peer, false);
        }
    }

    fn tell(&mut self, peer: PeerId, keep: bool) {
        for c in self.conns.get(&peer).into_iter().flatten() {
            self.notify.push_back((peer, *c, keep));
        }
    }

    fn established(&mut self, peer: PeerId, conn: ConnectionId) -> Handler {
        self.conns.entry(peer).or_default().push(conn);
        Handler::new(self.kept.contains(&peer))
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(peer, conn))
    }

    fn handle_established_outbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(peer, conn))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(e) = event {
            if let Some(conns) = self.conns.get_mut(&e.peer_id) {
                conns.retain(|c| *c != e.connection_id);
                if conns.is_empty() {
                    self.conns.remove(&e.peer_id);
                }
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.notify.pop_front() {
            Some((peer_id, c, keep)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(c),
                event: keep,
            }),
            None => Poll::Pending,
        }
    }
}

enum Out {
    None,
    Opening,
    Open(Stream),
    /// The peer does not speak the protocol: only this end keeps the connection.
    Unsupported,
}

/// One connection's end: the stream it opened (when kept) and the one the peer opened.
pub struct Handler {
    keep: bool,
    out: Out,
    inbound: Option<Stream>,
}

impl Handler {
    fn new(keep: bool) -> Self {
        Self {
            keep,
            out: Out::None,
            inbound: None,
        }
    }
}

/// A held stream carries nothing: `Ready` means it ended (closed, reset, or the peer wrote to it).
fn ended(stream: &mut Stream, cx: &mut Context<'_>) -> bool {
    let mut buf = [0u8; 1];
    std::pin::Pin::new(stream)
        .poll_read(cx, &mut buf)
        .is_ready()
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = std::convert::Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep = keep;
        if !keep && matches!(self.out, Out::Open(_)) {
            self.out = Out::None;
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if self.inbound.as_mut().is_some_and(|s| ended(s, cx)) {
            self.inbound = None;
        }
        if let Out::Open(s) = &mut self.out {
            if ended(s, cx) {
                self.out = Out::None;
            }
        }
        if self.keep && matches!(self.out, Out::None) {
            self.out = Out::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()),
            });
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => {
                self.inbound = Some(protocol);
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => {
                self.out = if self.keep {
                    Out::Open(protocol)
                } else {
                    Out::None
                };
            }
            ConnectionEvent::DialUpgradeError(_) => self.out = Out::Unsupported,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_handler_keeps_alive_and_asks_for_its_stream_once() {
        let mut h = Handler::new(true);
        assert!(h.connection_keep_alive());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            h.poll(&mut cx),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        ));
        assert!(h.poll(&mut cx).is_pending(), "one stream, not one per poll");
        h.on_behaviour_event(false);
        assert!(!h.connection_keep_alive());
    }

    #[test]
    fn an_unkept_handler_opens_nothing() {
        let mut h = Handler::new(false);
        assert!(!h.connection_keep_alive());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(h.poll(&mut cx).is_pending());
    }
}
