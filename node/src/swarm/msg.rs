//! `/p2plab/msg/2.0.0`: acked messages over one long-lived stream per connection.
//!
//! Why not request-response: it opens a stream per message, and each new stream costs a
//! multistream-select round trip before the message goes out; the request then travels connection
//! task → node loop on the receiver, and the ack back again, before the sender's connection task
//! sees it. Here the sender opens one stream per connection and pipelines messages on it; the
//! receiver's connection handler acks each message the moment its last byte arrives, in the
//! connection task, and only tells the node loop afterwards. A round trip is one network round trip
//! plus two hand-offs on the sender (node loop → connection task → node loop).
//!
//! Wire format, both directions big-endian: a message is `len: u32, id: u64, payload: [u8; len]`;
//! an ack is `id: u64`. Message frames larger than the configured maximum close the stream.
//!
//! Retries are not done here: a message that cannot be sent, is not acked within the timeout, or
//! whose connection closes is reported [`Event::Failed`], and the node's `messaging::Outbox`
//! decides whether to try again.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use asynchronous_codec::{Decoder, Encoder, Framed};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Sink, StreamExt};
use libp2p::{
    core::{transport::PortUse, upgrade::ReadyUpgrade, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dial_opts::DialOpts,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, Stream, StreamUpgradeError, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};
use tokio::time::{Instant, Sleep};

/// The messaging protocol. 2.0.0: one stream per connection (1.0.0 was request-response, a stream
/// per message).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/p2plab/msg/2.0.0");

/// The error of an attempt whose ack did not come within the timeout.
pub const TIMEOUT: &str = "timeout";

/// Inbound streams kept per connection; a peer opening more loses its oldest.
const MAX_INBOUND: usize = 4;

/// What the node loop hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `peer` sent message `id` of `size` bytes on `connection`; it is acked already.
    Received {
        peer: PeerId,
        connection: ConnectionId,
        id: u64,
        size: usize,
    },
    /// `peer` acked message `id`, sent on `connection`.
    Acked {
        peer: PeerId,
        connection: ConnectionId,
        id: u64,
    },
    /// Message `id` to `peer` was not delivered (or its ack never came): why, and on which
    /// connection (`None`: no connection was ever found for it).
    Failed {
        peer: PeerId,
        connection: Option<ConnectionId>,
        id: u64,
        error: String,
    },
}

/// The behaviour: sends each message on the peer's best connection (the newest direct one, else
/// the newest relayed one), dialing the peer first if there is none.
pub struct Behaviour {
    timeout: Duration,
    max_size: usize,
    /// Per peer, its connections oldest first, with whether each is direct.
    conns: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// Messages waiting for a connection to their peer.
    waiting: HashMap<PeerId, Vec<(u64, Bytes)>>,
    /// Messages handed to a connection and not settled yet.
    assigned: HashMap<ConnectionId, HashSet<u64>>,
    events: VecDeque<ToSwarm<Event, Command>>,
}

impl Behaviour {
    /// `timeout`: from send to ack; `max_size`: the largest payload accepted from a peer.
    pub fn new(timeout: Duration, max_size: usize) -> Self {
        Self {
            timeout,
            max_size,
            conns: HashMap::new(),
            waiting: HashMap::new(),
            assigned: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Sends message `id` to `peer`; the outcome comes back as [`Event::Acked`] or [`Event::Failed`].
    pub fn send(&mut self, peer: PeerId, id: u64, payload: Bytes) {
        match self.best(&peer) {
            Some(conn) => self.assign(peer, conn, id, payload),
            None => {
                let waiting = self.waiting.entry(peer).or_default();
                if waiting.is_empty() {
                    // `Disconnected`, not `...AndNotDialing`: a dial already under way (the
                    // node's own, after discovery) must not fail these messages.
                    self.events.push_back(ToSwarm::Dial {
                        opts: DialOpts::peer_id(peer).build(),
                    });
                }
                waiting.push((id, payload));
            }
        }
    }

    fn best(&self, peer: &PeerId) -> Option<ConnectionId> {
        let conns = self.conns.get(peer)?;
        conns
            .iter()
            .rev()
            .find(|(_, direct)| *direct)
            .or(conns.last())
            .map(|(c, _)| *c)
    }

    fn assign(&mut self, peer: PeerId, conn: ConnectionId, id: u64, payload: Bytes) {
        self.assigned.entry(conn).or_default().insert(id);
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(conn),
            event: Command { id, payload },
        });
    }

    fn established(&mut self, peer: PeerId, conn: ConnectionId, addr: &Multiaddr) -> Handler {
        let direct = !addr.iter().any(|p| p == Protocol::P2pCircuit);
        self.conns.entry(peer).or_default().push((conn, direct));
        Handler::new(self.timeout, self.max_size)
    }

    fn fail(&mut self, peer: PeerId, connection: Option<ConnectionId>, id: u64, error: String) {
        self.events.push_back(ToSwarm::GenerateEvent(Event::Failed {
            peer,
            connection,
            id,
            error,
        }));
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(peer, conn, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.established(peer, conn, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                // The handler exists now: hand it what waited for a connection.
                if let Some(best) = self.best(&e.peer_id) {
                    for (id, payload) in self.waiting.remove(&e.peer_id).unwrap_or_default() {
                        self.assign(e.peer_id, best, id, payload);
                    }
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(conns) = self.conns.get_mut(&e.peer_id) {
                    conns.retain(|(c, _)| *c != e.connection_id);
                    if conns.is_empty() {
                        self.conns.remove(&e.peer_id);
                    }
                }
                // The handler is gone with whatever it held: those messages failed.
                for id in self.assigned.remove(&e.connection_id).unwrap_or_default() {
                    self.fail(
                        e.peer_id,
                        Some(e.connection_id),
                        id,
                        "connection closed".into(),
                    );
                }
            }
            FromSwarm::DialFailure(e) => {
                let Some(peer) = e.peer_id else { return };
                if self.conns.contains_key(&peer) {
                    return;
                }
                for (id, _) in self.waiting.remove(&peer).unwrap_or_default() {
                    self.fail(peer, None, id, format!("dial failed: {}", e.error));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let settle = |this: &mut Self, id: u64| {
            this.assigned
                .get_mut(&connection)
                .is_some_and(|s| s.remove(&id))
        };
        let event = match event {
            HandlerEvent::Received { id, size } => Event::Received {
                peer,
                connection,
                id,
                size,
            },
            HandlerEvent::Acked { id } => {
                if !settle(self, id) {
                    return;
                }
                Event::Acked {
                    peer,
                    connection,
                    id,
                }
            }
            HandlerEvent::Failed { id, error } => {
                if !settle(self, id) {
                    return;
                }
                Event::Failed {
                    peer,
                    connection: Some(connection),
                    id,
                    error,
                }
            }
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

/// A message for one connection's handler to send.
#[derive(Debug, Clone)]
pub struct Command {
    id: u64,
    payload: Bytes,
}

#[derive(Debug, Clone)]
pub enum HandlerEvent {
    Received { id: u64, size: usize },
    Acked { id: u64 },
    Failed { id: u64, error: String },
}

// One per connection, held in place by its handler: boxing the open stream would add an
// allocation and a pointer chase per message to save bytes nobody copies.
#[allow(clippy::large_enum_variant)]
enum Outbound {
    /// No stream; one is requested when a message is queued.
    Idle,
    Opening,
    Open(Framed<Stream, SendCodec>),
    /// The peer does not speak the protocol: every message fails at once.
    Unsupported,
}

/// One connection's end: its outbound stream and the peer's inbound ones.
pub struct Handler {
    timeout: Duration,
    max_size: usize,
    out: Outbound,
    /// Not written yet.
    queue: VecDeque<Command>,
    /// Written, ack awaited (acks come in order).
    in_flight: VecDeque<u64>,
    /// Every unsettled message with its deadline, in send order (all share one timeout).
    deadlines: VecDeque<(u64, Instant)>,
    unsettled: HashSet<u64>,
    timer: Option<Pin<Box<Sleep>>>,
    inbound: VecDeque<Inbound>,
    events: VecDeque<HandlerEvent>,
}

struct Inbound {
    io: Framed<Stream, RecvCodec>,
    acks: VecDeque<u64>,
}

impl Handler {
    fn new(timeout: Duration, max_size: usize) -> Self {
        Self {
            timeout,
            max_size,
            out: Outbound::Idle,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            deadlines: VecDeque::new(),
            unsettled: HashSet::new(),
            timer: None,
            inbound: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn settle(&mut self, id: u64, outcome: Result<(), String>) {
        if self.unsettled.remove(&id) {
            self.events.push_back(match outcome {
                Ok(()) => HandlerEvent::Acked { id },
                Err(error) => HandlerEvent::Failed { id, error },
            });
        }
    }

    /// The outbound stream broke: what was written is lost; what was not goes on a new stream.
    fn out_failed(&mut self, error: &str) {
        self.out = Outbound::Idle;
        for id in std::mem::take(&mut self.in_flight) {
            self.settle(id, Err(error.to_string()));
        }
    }

    fn fail_queue(&mut self, error: &str) {
        for c in std::mem::take(&mut self.queue) {
            self.settle(c.id, Err(error.to_string()));
        }
    }

    /// Writes what is queued, flushes, reads acks. Errors close the stream.
    fn poll_out(&mut self, cx: &mut Context<'_>) {
        let mut io = match std::mem::replace(&mut self.out, Outbound::Idle) {
            Outbound::Open(io) => io,
            other => {
                self.out = other;
                return;
            }
        };
        match self.drive_out(&mut io, cx) {
            Ok(()) => self.out = Outbound::Open(io),
            Err(e) => {
                tracing::debug!("message stream: {e}");
                self.out_failed(&format!("stream: {e}"));
            }
        }
    }

    fn drive_out(
        &mut self,
        io: &mut Framed<Stream, SendCodec>,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        while !self.queue.is_empty() {
            match Pin::new(&mut *io).poll_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => break,
            }
            let Some(c) = self.queue.pop_front() else {
                break;
            };
            if !self.unsettled.contains(&c.id) {
                continue; // timed out while queued
            }
            Pin::new(&mut *io).start_send((c.id, c.payload))?;
            self.in_flight.push_back(c.id);
        }
        if let Poll::Ready(r) = Pin::new(&mut *io).poll_flush(cx) {
            r?;
        }
        loop {
            match io.poll_next_unpin(cx) {
                Poll::Ready(Some(ack)) => {
                    let id = ack?;
                    // Acks come in send order; anything written before this one and not acked
                    // was settled already (timed out).
                    while let Some(f) = self.in_flight.pop_front() {
                        if f == id {
                            break;
                        }
                    }
                    self.settle(id, Ok(()));
                }
                Poll::Ready(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed by the peer",
                    ))
                }
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// Reads messages from each inbound stream and acks them at once.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        let streams = std::mem::take(&mut self.inbound);
        for mut s in streams {
            match drive_inbound(&mut s, &mut self.events, cx) {
                Ok(true) => self.inbound.push_back(s),
                Ok(false) => {}
                Err(e) => tracing::debug!("inbound message stream: {e}"),
            }
        }
    }

    fn poll_deadlines(&mut self, cx: &mut Context<'_>) {
        let now = Instant::now();
        while let Some((id, at)) = self.deadlines.front().copied() {
            if !self.unsettled.contains(&id) {
                self.deadlines.pop_front();
            } else if at <= now {
                self.deadlines.pop_front();
                self.settle(id, Err(TIMEOUT.into()));
            } else {
                break;
            }
        }
        match self.deadlines.front() {
            Some((_, at)) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*at)));
                if timer.deadline() != *at {
                    timer.as_mut().reset(*at);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // Woken early by rounding: poll again next time round.
                    cx.waker().wake_by_ref();
                }
            }
            None => self.timer = None,
        }
    }
}

/// Acks what was read, then reads on. `Ok(false)`: the peer closed the stream.
fn drive_inbound(
    s: &mut Inbound,
    events: &mut VecDeque<HandlerEvent>,
    cx: &mut Context<'_>,
) -> io::Result<bool> {
    loop {
        while !s.acks.is_empty() {
            match Pin::new(&mut s.io).poll_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => break,
            }
            if let Some(id) = s.acks.pop_front() {
                Pin::new(&mut s.io).start_send(id)?;
            }
        }
        if let Poll::Ready(r) = Pin::new(&mut s.io).poll_flush(cx) {
            r?;
        }
        // Read on only while the acks keep up: a peer that does not read its acks is not sent
        // more than the codec buffers.
        if !s.acks.is_empty() {
            return Ok(true);
        }
        match s.io.poll_next_unpin(cx) {
            Poll::Ready(Some(m)) => {
                let (id, size) = m?;
                s.acks.push_back(id);
                events.push_back(HandlerEvent::Received { id, size });
            }
            Poll::Ready(None) => return Ok(false),
            Poll::Pending => return Ok(true),
        }
    }
}

use std::future::Future as _;

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, c: Command) {
        if matches!(self.out, Outbound::Unsupported) {
            self.events.push_back(HandlerEvent::Failed {
                id: c.id,
                error: "the peer does not speak the messaging protocol".into(),
            });
            return;
        }
        self.unsettled.insert(c.id);
        self.deadlines
            .push_back((c.id, Instant::now() + self.timeout));
        self.queue.push_back(c);
    }

    fn connection_keep_alive(&self) -> bool {
        !self.unsettled.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        let had = self.events.len();
        self.poll_inbound(cx);
        self.poll_out(cx);
        self.poll_deadlines(cx);
        if self.events.len() > had
            && self
                .events
                .iter()
                .skip(had)
                .any(|e| matches!(e, HandlerEvent::Received { .. }))
        {
            // Acks were just written to the stream, but they reach the socket only when the
            // connection polls its muxer, after this returns Pending. Tell the behaviour on the
            // next poll, so the sender's round trip never waits for the hand-off to the loop.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e));
        }
        if matches!(self.out, Outbound::Idle) && !self.queue.is_empty() {
            self.out = Outbound::Opening;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
                    .with_timeout(self.timeout),
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
                protocol: mut stream,
                ..
            }) => {
                // An idle stream must not hold the connection open: the idle timeout decides.
                stream.ignore_for_keep_alive();
                if self.inbound.len() >= MAX_INBOUND {
                    self.inbound.pop_front();
                }
                self.inbound.push_back(Inbound {
                    io: Framed::new(
                        stream,
                        RecvCodec {
                            max_size: self.max_size,
                        },
                    ),
                    acks: VecDeque::new(),
                });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.out = Outbound::Open(Framed::new(stream, SendCodec));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let (unsupported, error) = match error {
                    StreamUpgradeError::NegotiationFailed => (
                        true,
                        "the peer does not speak the messaging protocol".to_string(),
                    ),
                    StreamUpgradeError::Timeout => {
                        (false, "timeout opening the message stream".to_string())
                    }
                    StreamUpgradeError::Io(e) => {
                        (false, format!("opening the message stream: {e}"))
                    }
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.out = if unsupported {
                    Outbound::Unsupported
                } else {
                    Outbound::Idle
                };
                self.fail_queue(&error);
            }
            _ => {}
        }
    }
}

const MSG_HEADER: usize = 4 + 8;

/// The sender's side: writes messages, reads acks.
pub(crate) struct SendCodec;

impl Encoder for SendCodec {
    type Item<'a> = (u64, Bytes);
    type Error = io::Error;

    fn encode(&mut self, (id, payload): (u64, Bytes), dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        dst.reserve(MSG_HEADER + payload.len());
        dst.put_u32(len);
        dst.put_u64(id);
        dst.put_slice(&payload);
        Ok(())
    }
}

impl Decoder for SendCodec {
    type Item = u64;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<u64>> {
        if src.len() < 8 {
            return Ok(None);
        }
        Ok(Some(src.get_u64()))
    }
}

/// The receiver's side: reads messages (keeping only id and size), writes acks.
pub(crate) struct RecvCodec {
    pub(crate) max_size: usize,
}

impl Decoder for RecvCodec {
    type Item = (u64, usize);
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<(u64, usize)>> {
        if src.len() < MSG_HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a message of {len} bytes (at most {} accepted)",
                    self.max_size
                ),
            ));
        }
        if src.len() < MSG_HEADER + len {
            src.reserve(MSG_HEADER + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let id = src.get_u64();
        src.advance(len);
        Ok(Some((id, len)))
    }
}

impl Encoder for RecvCodec {
    type Item<'a> = u64;
    type Error = io::Error;

    fn encode(&mut self, id: u64, dst: &mut BytesMut) -> io::Result<()> {
        dst.put_u64(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut wire = BytesMut::new();
        SendCodec
            .encode((7, Bytes::from_static(b"hello")), &mut wire)
            .unwrap();
        SendCodec.encode((8, Bytes::new()), &mut wire).unwrap();
        let all = wire.freeze();
        // Fed one byte at a time, the receiver sees exactly the two messages.
        let mut r = RecvCodec { max_size: 64 };
        let (mut buf, mut got) = (BytesMut::new(), Vec::new());
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(m) = r.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [(7, 5), (8, 0)]);
        let mut acks = BytesMut::new();
        r.encode(7, &mut acks).unwrap();
        assert_eq!(SendCodec.decode(&mut acks).unwrap(), Some(7));
        assert_eq!(SendCodec.decode(&mut acks).unwrap(), None);
    }

    #[test]
    fn an_oversized_message_is_refused_before_it_is_buffered() {
        let mut wire = BytesMut::new();
        wire.put_u32(1 << 30);
        wire.put_u64(1);
        let e = RecvCodec { max_size: 1024 }.decode(&mut wire).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("1073741824"), "{e}");
    }
}
