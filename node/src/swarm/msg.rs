//! `/p2plab/msg/2.0.0`: acked messages over one long-lived stream per connection.
//!
//! Why not request-response: it opens a stream per message, and each new stream costs a
//! multistream-select round trip before the message goes out; the request then travels connection
//! task → node loop on the receiver, and the ack back again, before the sender's connection task
//! sees it. Here the sender opens one stream per connection and pipelines messages on it; the
//! receiver's connection handler acks each message the moment its last byte arrives, in the
//! connection task, and only tells the node loop afterwards.
//!
//! The sender's end of a stream (a [`Lane`]) lives in the behaviour, not in the connection
//! handler: the handler opens the stream and hands it over. So a message is written to the stream
//! by the node loop itself, in [`Behaviour::send`], and its ack is read there too, when the
//! stream wakes the node loop; neither goes through the swarm's hand-offs (behaviour →
//! `NotifyHandler` → connection task, handler event → pool → behaviour), which cost a message
//! about as much as the network round trip on one machine (docs/benchmark-findings.md). Only the
//! lanes that were woken are polled, so a node with many connections pays per message, not per
//! connection.
//!
//! Wire format, both directions big-endian: a message is `len: u32, id: u64, payload: [u8; len]`;
//! an ack is `id: u64`. Message frames larger than the configured maximum close the stream.
//!
//! Retries are not done here: a message that cannot be sent, is not acked within the timeout, or
//! whose connection closes is reported [`Event::Failed`], and the node's `messaging::Outbox`
//! decides whether to try again.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use asynchronous_codec::{Decoder, Encoder, Framed};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{
    task::{waker, ArcWake, AtomicWaker},
    Sink, StreamExt,
};
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

/// Why a message fails on a connection whose peer refused the protocol.
const UNSUPPORTED: &str = "the peer does not speak the messaging protocol";

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
    /// The sending end of every connection.
    lanes: HashMap<ConnectionId, Lane>,
    /// Which lanes were woken since the last poll.
    woken: Arc<Woken>,
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
            lanes: HashMap::new(),
            woken: Arc::new(Woken::default()),
            events: VecDeque::new(),
        }
    }

    /// Sends message `id` to `peer`; the outcome comes back as [`Event::Acked`] or [`Event::Failed`].
    /// On an open stream the message is written before this returns (the connection task takes
    /// it to the socket when it runs next).
    pub fn send(&mut self, peer: PeerId, id: u64, payload: Bytes) {
        match self.best(&peer) {
            Some(conn) => self.assign(conn, id, payload),
            None => {
                let waiting = self.waiting.entry(peer).or_default();
                if waiting.is_empty() {
                    // `Disconnected`, not `...AndNotDialing`: a dial already under way (the
                    // node's own, after discovery) must not fail these messages.
                    self.events.push_back(ToSwarm::Dial {
                        opts: DialOpts::peer_id(peer).build(),
                    });
                    self.woken.node.wake();
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

    fn assign(&mut self, conn: ConnectionId, id: u64, payload: Bytes) {
        let Some(lane) = self.lanes.get_mut(&conn) else {
            return;
        };
        let before = self.events.len();
        lane.push(id, payload, self.timeout);
        lane.poll(&mut self.events);
        if self.events.len() > before {
            self.woken.node.wake();
        }
    }

    fn established(&mut self, peer: PeerId, conn: ConnectionId, addr: &Multiaddr) -> Handler {
        let direct = !addr.iter().any(|p| p == Protocol::P2pCircuit);
        self.conns.entry(peer).or_default().push((conn, direct));
        let busy = Arc::new(AtomicBool::new(false));
        self.lanes
            .insert(conn, Lane::new(peer, conn, busy.clone(), &self.woken));
        Handler::new(self.timeout, self.max_size, busy)
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
                        self.assign(best, id, payload);
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
                // The stream is gone with the connection: what was not settled failed.
                if let Some(mut lane) = self.lanes.remove(&e.connection_id) {
                    lane.fail_all("connection closed", &mut self.events);
                }
            }
            FromSwarm::DialFailure(e) => {
                let Some(peer) = e.peer_id else { return };
                if self.conns.contains_key(&peer) {
                    return;
                }
                for (id, _) in self.waiting.remove(&peer).unwrap_or_default() {
                    self.events.push_back(ToSwarm::GenerateEvent(Event::Failed {
                        peer,
                        connection: None,
                        id,
                        error: format!("dial failed: {}", e.error),
                    }));
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
        match event {
            HandlerEvent::Received { id, size } => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::Received {
                        peer,
                        connection,
                        id,
                        size,
                    }));
            }
            HandlerEvent::Opened(stream) => {
                if let Some(lane) = self.lanes.get_mut(&connection) {
                    lane.out = Outbound::Open(Framed::new(stream, SendCodec));
                    lane.poll(&mut self.events);
                }
            }
            HandlerEvent::OpenFailed { unsupported, error } => {
                if let Some(lane) = self.lanes.get_mut(&connection) {
                    lane.out = if unsupported {
                        Outbound::Unsupported
                    } else {
                        Outbound::Idle
                    };
                    lane.fail_queue(&error, &mut self.events);
                    lane.poll(&mut self.events);
                }
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(e);
        }
        self.woken.node.register(cx.waker());
        for conn in self.woken.take() {
            if let Some(lane) = self.lanes.get_mut(&conn) {
                lane.poll(&mut self.events);
            }
        }
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

/// The lanes woken since the behaviour last looked, and the node loop's waker to wake for them.
#[derive(Default)]
struct Woken {
    lanes: Mutex<Vec<ConnectionId>>,
    node: AtomicWaker,
}

impl Woken {
    fn take(&self) -> Vec<ConnectionId> {
        let mut v = match self.lanes.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// One lane's waker: marks the lane woken, then wakes the node loop.
struct LaneWaker {
    conn: ConnectionId,
    woken: Arc<Woken>,
}

impl ArcWake for LaneWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        match this.woken.lanes.lock() {
            Ok(mut l) => l.push(this.conn),
            Err(poisoned) => poisoned.into_inner().push(this.conn),
        }
        this.woken.node.wake();
    }
}

// One per connection, held in place: boxing the open stream would add an allocation and a
// pointer chase per message to save bytes nobody copies.
#[allow(clippy::large_enum_variant)]
enum Outbound {
    /// No stream; one is asked of the handler when a message is queued.
    Idle,
    Opening,
    Open(Framed<Stream, SendCodec>),
    /// The peer does not speak the protocol: every message fails at once.
    Unsupported,
}

/// The sending end of one connection: its stream to the peer, once open, and the messages on it.
struct Lane {
    peer: PeerId,
    conn: ConnectionId,
    out: Outbound,
    /// Not written yet.
    queue: VecDeque<(u64, Bytes)>,
    /// Written, ack awaited (acks come in order).
    in_flight: VecDeque<u64>,
    /// Every unsettled message with its deadline, in send order (all share one timeout).
    deadlines: VecDeque<(u64, Instant)>,
    unsettled: HashSet<u64>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether anything is unsettled: the handler keeps the connection alive for it.
    busy: Arc<AtomicBool>,
    waker: Waker,
}

impl Lane {
    fn new(peer: PeerId, conn: ConnectionId, busy: Arc<AtomicBool>, woken: &Arc<Woken>) -> Self {
        Self {
            peer,
            conn,
            out: Outbound::Idle,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            deadlines: VecDeque::new(),
            unsettled: HashSet::new(),
            timer: None,
            busy,
            waker: waker(Arc::new(LaneWaker {
                conn,
                woken: woken.clone(),
            })),
        }
    }

    fn push(&mut self, id: u64, payload: Bytes, timeout: Duration) {
        self.unsettled.insert(id);
        self.deadlines.push_back((id, Instant::now() + timeout));
        self.queue.push_back((id, payload));
    }

    fn settle(
        &mut self,
        id: u64,
        outcome: Result<(), &str>,
        events: &mut VecDeque<ToSwarm<Event, Command>>,
    ) {
        if !self.unsettled.remove(&id) {
            return;
        }
        let (peer, connection) = (self.peer, self.conn);
        events.push_back(ToSwarm::GenerateEvent(match outcome {
            Ok(()) => Event::Acked {
                peer,
                connection,
                id,
            },
            Err(error) => Event::Failed {
                peer,
                connection: Some(connection),
                id,
                error: error.to_string(),
            },
        }));
    }

    fn fail_queue(&mut self, error: &str, events: &mut VecDeque<ToSwarm<Event, Command>>) {
        for (id, _) in std::mem::take(&mut self.queue) {
            self.settle(id, Err(error), events);
        }
    }

    /// Everything unsettled fails, in send order.
    fn fail_all(&mut self, error: &str, events: &mut VecDeque<ToSwarm<Event, Command>>) {
        for (id, _) in std::mem::take(&mut self.deadlines) {
            self.settle(id, Err(error), events);
        }
    }

    /// Writes what is queued, reads acks, expires deadlines, asks for a stream when one is needed;
    /// with the lane's own waker, so that whatever is pending wakes this lane.
    fn poll(&mut self, events: &mut VecDeque<ToSwarm<Event, Command>>) {
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        match std::mem::replace(&mut self.out, Outbound::Idle) {
            Outbound::Open(mut io) => match self.drive_out(&mut io, &mut cx, events) {
                Ok(()) => self.out = Outbound::Open(io),
                Err(e) => {
                    // What was written is lost; what was not goes on a new stream.
                    tracing::debug!("message stream: {e}");
                    let error = format!("stream: {e}");
                    for id in std::mem::take(&mut self.in_flight) {
                        self.settle(id, Err(&error), events);
                    }
                }
            },
            Outbound::Unsupported => {
                self.out = Outbound::Unsupported;
                self.fail_queue(UNSUPPORTED, events);
            }
            other => self.out = other,
        }
        self.poll_deadlines(&mut cx, events);
        if matches!(self.out, Outbound::Idle) {
            // Nothing to open a stream for if all that waited timed out.
            self.queue.retain(|(id, _)| self.unsettled.contains(id));
        }
        if matches!(self.out, Outbound::Idle) && !self.queue.is_empty() {
            self.out = Outbound::Opening;
            events.push_back(ToSwarm::NotifyHandler {
                peer_id: self.peer,
                handler: NotifyHandler::One(self.conn),
                event: Command::Open,
            });
        }
        self.busy
            .store(!self.unsettled.is_empty(), Ordering::Relaxed);
    }

    fn drive_out(
        &mut self,
        io: &mut Framed<Stream, SendCodec>,
        cx: &mut Context<'_>,
        events: &mut VecDeque<ToSwarm<Event, Command>>,
    ) -> io::Result<()> {
        while !self.queue.is_empty() {
            match Pin::new(&mut *io).poll_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => break,
            }
            let Some((id, payload)) = self.queue.pop_front() else {
                break;
            };
            if !self.unsettled.contains(&id) {
                continue; // timed out while queued
            }
            Pin::new(&mut *io).start_send((id, payload))?;
            self.in_flight.push_back(id);
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
                    self.settle(id, Ok(()), events);
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

    fn poll_deadlines(
        &mut self,
        cx: &mut Context<'_>,
        events: &mut VecDeque<ToSwarm<Event, Command>>,
    ) {
        let now = Instant::now();
        while let Some((id, at)) = self.deadlines.front().copied() {
            if !self.unsettled.contains(&id) {
                self.deadlines.pop_front();
            } else if at <= now {
                self.deadlines.pop_front();
                self.settle(id, Err(TIMEOUT), events);
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

/// What the behaviour asks of a connection's handler.
#[derive(Debug, Clone)]
pub enum Command {
    /// Open the message stream and hand it over.
    Open,
}

#[derive(Debug)]
pub enum HandlerEvent {
    /// The peer sent message `id` of `size` bytes; acked already.
    Received { id: u64, size: usize },
    /// The message stream asked for, negotiated.
    Opened(Stream),
    /// The stream asked for could not be opened.
    OpenFailed { unsupported: bool, error: String },
}

/// One connection's end: opens the outbound stream for its lane, reads and acks the peer's
/// inbound ones.
pub struct Handler {
    timeout: Duration,
    max_size: usize,
    /// Streams asked for by the lane and not requested from the connection yet.
    to_open: usize,
    /// The lane has messages unsettled: the connection stays open for them.
    busy: Arc<AtomicBool>,
    inbound: VecDeque<Inbound>,
    events: VecDeque<HandlerEvent>,
}

struct Inbound {
    io: Framed<Stream, RecvCodec>,
    acks: VecDeque<u64>,
}

impl Handler {
    fn new(timeout: Duration, max_size: usize, busy: Arc<AtomicBool>) -> Self {
        Self {
            timeout,
            max_size,
            to_open: 0,
            busy,
            inbound: VecDeque::new(),
            events: VecDeque::new(),
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
        match c {
            Command::Open => self.to_open += 1,
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        let had = self.events.len();
        self.poll_inbound(cx);
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
        if self.to_open > 0 {
            self.to_open -= 1;
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
                // Kept open by the lane's `busy`, not by the stream itself.
                stream.ignore_for_keep_alive();
                self.events.push_back(HandlerEvent::Opened(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                let (unsupported, error) = match error {
                    StreamUpgradeError::NegotiationFailed => (true, UNSUPPORTED.to_string()),
                    StreamUpgradeError::Timeout => {
                        (false, "timeout opening the message stream".to_string())
                    }
                    StreamUpgradeError::Io(e) => {
                        (false, format!("opening the message stream: {e}"))
                    }
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.events
                    .push_back(HandlerEvent::OpenFailed { unsupported, error });
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use libp2p::{
        swarm::{dummy, SwarmEvent},
        Swarm,
    };
    use p2plab_contract::Transport;

    /// A swarm over the memory transport with the node's noise and yamux, listening.
    async fn swarm<B: NetworkBehaviour + Send>(b: B) -> (Swarm<B>, Multiaddr) {
        let mut s = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_other_transport(|k| {
                crate::swarm::transport(k, Transport::Memory, None)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })
            .unwrap()
            .with_behaviour(|_| b)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        s.listen_on("/memory/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
                break address;
            }
        };
        (s, addr)
    }

    /// Drives both swarms until `f` takes one of `a`'s events, keeping `b`'s events in `seen`;
    /// 10 s at most.
    async fn until<B: NetworkBehaviour, T>(
        a: &mut Swarm<Behaviour>,
        b: &mut Swarm<B>,
        seen: &mut Vec<SwarmEvent<B::ToSwarm>>,
        mut f: impl FnMut(Event) -> Option<T>,
    ) -> T {
        let wait = async {
            loop {
                tokio::select! {
                    e = a.select_next_some() => {
                        if let SwarmEvent::Behaviour(e) = e {
                            if let Some(t) = f(e) {
                                return t;
                            }
                        }
                    }
                    e = b.select_next_some() => seen.push(e),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the event within 10 s")
    }

    /// `a` dials `b` and both see the connection.
    async fn connect<B: NetworkBehaviour>(
        a: &mut Swarm<Behaviour>,
        b: &mut Swarm<B>,
        addr: Multiaddr,
    ) -> PeerId {
        let b_id = *b.local_peer_id();
        a.dial(addr).unwrap();
        let wait = async {
            let (mut at_a, mut at_b) = (false, false);
            while !(at_a && at_b) {
                tokio::select! {
                    e = a.select_next_some() => at_a |= matches!(e, SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b_id),
                    e = b.select_next_some() => at_b |= matches!(e, SwarmEvent::ConnectionEstablished { .. }),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("connected within 10 s");
        b_id
    }

    fn acked(e: Event) -> Option<u64> {
        match e {
            Event::Acked { id, .. } => Some(id),
            Event::Failed { id, error, .. } => panic!("message {id} failed: {error}"),
            Event::Received { .. } => None,
        }
    }

    fn failed(e: Event) -> Option<(u64, String)> {
        match e {
            Event::Failed { id, error, .. } => Some((id, error)),
            Event::Acked { id, .. } => panic!("message {id} acked"),
            Event::Received { .. } => None,
        }
    }

    const T: Duration = Duration::from_secs(5);

    /// The first message waits for the stream; the rest are written straight onto it and acked
    /// in order, and the receiver hears each once.
    #[tokio::test]
    async fn messages_are_acked_in_order_on_one_stream() {
        let (mut a, _) = swarm(Behaviour::new(T, 1024)).await;
        let (mut b, b_addr) = swarm(Behaviour::new(T, 1024)).await;
        let b_id = connect(&mut a, &mut b, b_addr).await;
        let mut seen = Vec::new();
        a.behaviour_mut().send(b_id, 1, Bytes::from_static(b"one"));
        assert_eq!(until(&mut a, &mut b, &mut seen, acked).await, 1);
        for id in 2..=5 {
            a.behaviour_mut().send(b_id, id, Bytes::from(vec![7u8; 64]));
        }
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(until(&mut a, &mut b, &mut seen, acked).await);
        }
        assert_eq!(got, [2, 3, 4, 5]);
        // The receiver acks before its loop hears of a message: wait for the last.
        let received = |seen: &[SwarmEvent<Event>]| -> Vec<(u64, usize)> {
            seen.iter()
                .filter_map(|e| match e {
                    SwarmEvent::Behaviour(Event::Received { id, size, .. }) => Some((*id, *size)),
                    _ => None,
                })
                .collect()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while received(&seen).len() < 5 {
                seen.push(b.select_next_some().await);
            }
        })
        .await
        .unwrap();
        assert_eq!(
            received(&seen),
            [(1, 3), (2, 64), (3, 64), (4, 64), (5, 64)]
        );
        // Nothing unsettled: the connection is not held open for the lane.
        let lane = a.behaviour().lanes.values().next().unwrap();
        assert!(!lane.busy.load(Ordering::Relaxed));
    }

    /// A peer that does not speak the protocol fails the message once the stream is refused, and
    /// every later one at once, without asking for another stream.
    #[tokio::test]
    async fn a_peer_without_the_protocol_fails_every_message() {
        let (mut a, _) = swarm(Behaviour::new(T, 1024)).await;
        let (mut b, b_addr) = swarm(dummy::Behaviour).await;
        let b_id = connect(&mut a, &mut b, b_addr).await;
        let mut seen = Vec::new();
        a.behaviour_mut().send(b_id, 1, Bytes::from_static(b"x"));
        assert_eq!(
            until(&mut a, &mut b, &mut seen, failed).await,
            (1, UNSUPPORTED.to_string())
        );
        a.behaviour_mut().send(b_id, 2, Bytes::from_static(b"x"));
        assert_eq!(
            until(&mut a, &mut b, &mut seen, failed).await,
            (2, UNSUPPORTED.to_string())
        );
        let lane = a.behaviour().lanes.values().next().unwrap();
        assert!(matches!(lane.out, Outbound::Unsupported));
    }

    /// A message the receiver refuses (too large) closes the stream: it fails, and the next
    /// message goes on a new stream and is acked.
    #[tokio::test]
    async fn a_broken_stream_fails_what_was_written_and_the_next_message_opens_another() {
        let (mut a, _) = swarm(Behaviour::new(T, 1024)).await;
        let (mut b, b_addr) = swarm(Behaviour::new(T, 16)).await;
        let b_id = connect(&mut a, &mut b, b_addr).await;
        let mut seen = Vec::new();
        a.behaviour_mut()
            .send(b_id, 1, Bytes::from_static(b"small"));
        assert_eq!(until(&mut a, &mut b, &mut seen, acked).await, 1);
        a.behaviour_mut().send(b_id, 2, Bytes::from(vec![0u8; 64]));
        let (id, error) = until(&mut a, &mut b, &mut seen, failed).await;
        assert_eq!(id, 2);
        assert!(error.starts_with("stream: "), "{error}");
        a.behaviour_mut()
            .send(b_id, 3, Bytes::from_static(b"small"));
        assert_eq!(until(&mut a, &mut b, &mut seen, acked).await, 3);
    }

    /// A message whose ack has not come by its deadline fails with [`TIMEOUT`] (the node's
    /// failover tells a dead path by it). With no time at all, it fails before it is written, and
    /// the receiver never hears of it.
    #[tokio::test]
    async fn a_message_not_acked_by_its_deadline_times_out() {
        let (mut a, _) = swarm(Behaviour::new(Duration::ZERO, 1024)).await;
        let (mut b, b_addr) = swarm(Behaviour::new(T, 1024)).await;
        let b_id = connect(&mut a, &mut b, b_addr).await;
        let mut seen = Vec::new();
        a.behaviour_mut().send(b_id, 1, Bytes::from_static(b"one"));
        assert_eq!(
            until(&mut a, &mut b, &mut seen, failed).await,
            (1, TIMEOUT.to_string())
        );
        assert!(!seen
            .iter()
            .any(|e| matches!(e, SwarmEvent::Behaviour(Event::Received { .. }))));
        assert!(a.behaviour().lanes.values().all(|l| l.unsettled.is_empty()));
    }

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
