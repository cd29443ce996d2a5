//! The server side of one MQTT connection as a sans-IO state machine, in the style of
//! `quinn-proto`: bytes are pushed in with [`ServerSession::handle_read`], outgoing bytes are
//! pulled with [`ServerSession::take_transmit`], events for the broker are pulled with
//! [`ServerSession::poll_event`], and time only enters through `now` arguments.
//!
//! The machine owns what the protocol itself requires of a connection: the CONNECT handshake
//! order, keep-alive (the peer is dead after 1.5 × the keep-alive without a packet), the QoS 1
//! and 2 flows in both directions with their packet identifiers, the Receive Maximum windows
//! both ways, topic aliases both ways, and the Maximum Packet Size the client announced. The
//! broker decides everything else (authentication, routing, storage) and answers through
//! methods such as [`ServerSession::accept`] and [`ServerSession::ack_publish`].

use std::collections::VecDeque;

/// Hash maps keyed by packet identifiers and topics: a fast hasher, seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{Event, InflightState, Outbound, SendError, SessionLimits, Violation};
use crate::packet::*;
use crate::properties::Properties;
use crate::{DecodeError, ReasonCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitConnect,
    /// CONNECT (or an AUTH step) is with the broker; reading pauses.
    Connecting,
    /// The client's turn in an enhanced-authentication exchange before CONNACK.
    Authenticating,
    Connected,
    Closed,
}

/// Server side of one connection.
#[derive(Debug)]
pub struct ServerSession {
    limits: SessionLimits,
    state: State,
    version: Version,
    keep_alive: Duration,
    last_read: Instant,
    out: BytesMut,
    events: VecDeque<Event>,
    /// Client's limits towards us.
    client_receive_max: u16,
    client_max_packet: u32,
    client_alias_max: u16,
    connect_session_expiry: u32,
    next_pkid: u16,
    /// The QoS 1/2 tables and topic aliases, allocated on first use and freed when all
    /// are empty again: most connections are idle and most of those never need them.
    tables: Option<Box<Tables>>,
    /// Authentication Method of CONNECT (enhanced authentication, see `auth`).
    auth_method: Option<String>,
    /// A re-authentication is under way.
    reauthenticating: bool,
    /// Output from this offset of `out` on is held back (see `transmit`).
    held_from: Option<usize>,
    /// Hold output back before the PUBREL and the PUBCOMP that end QoS 2 flows (see
    /// `transmit`).
    hold_qos2_steps: bool,
}

/// What a session keeps only while something is in flight or aliased (see
/// [`ServerSession`]'s `tables`).
#[derive(Debug, Default)]
struct Tables {
    /// Outgoing inflight by packet identifier, plus order of first send.
    outbound: HashMap<u16, Outbound>,
    outbound_order: VecDeque<u16>,
    /// Incoming QoS 1/2 not yet acknowledged by the broker (pkid → qos).
    incoming_unacked: HashMap<u16, QoS>,
    /// Incoming QoS 2 acknowledged with PUBREC, awaiting PUBREL.
    awaiting_rel: HashSet<u16>,
    aliases_in: HashMap<u16, String>,
    aliases_out: HashMap<String, u16>,
}

impl Tables {
    fn is_empty(&self) -> bool {
        self.outbound.is_empty()
            && self.outbound_order.is_empty()
            && self.incoming_unacked.is_empty()
            && self.awaiting_rel.is_empty()
            && self.aliases_in.is_empty()
            && self.aliases_out.is_empty()
    }
}

impl ServerSession {
    /// The tables, allocated on first use.
    fn t(&mut self) -> &mut Tables {
        self.tables.get_or_insert_with(Box::default)
    }

    /// The tables if allocated (none: every table is empty).
    fn tr(&self) -> Option<&Tables> {
        self.tables.as_deref()
    }

    fn outbound_len(&self) -> usize {
        self.tr().map_or(0, |t| t.outbound.len())
    }

    pub fn new(limits: SessionLimits, now: Instant) -> Self {
        ServerSession {
            limits,
            state: State::AwaitConnect,
            version: Version::V5,
            keep_alive: Duration::ZERO,
            last_read: now,
            out: BytesMut::new(),
            events: VecDeque::new(),
            client_receive_max: u16::MAX,
            client_max_packet: u32::MAX,
            client_alias_max: 0,
            connect_session_expiry: 0,
            next_pkid: 1,
            tables: None,
            auth_method: None,
            reauthenticating: false,
            held_from: None,
            hold_qos2_steps: false,
        }
    }

    /// The protocol version (valid once CONNECT arrived).
    pub fn version(&self) -> Version {
        self.version
    }

    /// True once CONNACK with success has been queued and until the connection closes.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// True once the connection is over (DISCONNECT either way, or a violation).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Decodes and handles every complete packet in `buf`. Stops after CONNECT until the
    /// broker accepts it; call again then with the same buffer.
    pub fn handle_read(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), Violation> {
        loop {
            if matches!(self.state, State::Connecting | State::Closed) {
                return Ok(());
            }
            if self.state == State::AwaitConnect && buf.first().is_some_and(|&b| b != 0x10) {
                // Fail fast on a peer that is not speaking MQTT, without waiting for the
                // length its first byte pretends to announce.
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.0-1] first packet is not CONNECT",
                ));
            }
            let max = self.limits.max_packet_size as usize;
            let packet = match Packet::read(buf, self.version, max) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(DecodeError::UnsupportedVersion(_)) => {
                    // [MQTT-3.1.2-2] tell the client in the 3.1.1 format every version
                    // understands: return code 1, unacceptable protocol version.
                    self.out.extend_from_slice(&[0x20, 0x02, 0x00, 0x01]);
                    self.state = State::Closed;
                    return Err(Violation::new(
                        ReasonCode::UnsupportedProtocolVersion,
                        "[MQTT-3.1.2-2] unsupported protocol version",
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            self.last_read = now;
            self.handle_packet(packet)?;
        }
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), Violation> {
        if self.state == State::AwaitConnect {
            let Packet::Connect(connect) = packet else {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.0-1] first packet is not CONNECT",
                ));
            };
            self.version = connect.version;
            self.auth_method = connect.properties.authentication_method.clone();
            self.state = State::Connecting;
            self.events.push_back(Event::Connect(connect));
            return Ok(());
        }
        if self.state == State::Authenticating {
            return match packet {
                Packet::Auth(a) => self.handle_auth(a),
                Packet::Disconnect(d) => {
                    self.state = State::Closed;
                    self.events.push_back(Event::Disconnect(d));
                    Ok(())
                }
                _ => Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT 5.0 §4.12] packet other than AUTH before CONNACK",
                )),
            };
        }
        match packet {
            Packet::Connect(_) => Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT-3.1.0-2] second CONNECT",
            )),
            Packet::Publish(p) => self.handle_publish(p),
            Packet::PubAck(r) => self.handle_puback(r.pkid, QoS::AtLeastOnce),
            Packet::PubRec(r) => self.handle_pubrec(r),
            Packet::PubRel(r) => {
                let code = if self
                    .tables
                    .as_mut()
                    .is_some_and(|t| t.awaiting_rel.remove(&r.pkid))
                {
                    self.events.push_back(Event::Released { pkid: r.pkid });
                    if self.hold_qos2_steps {
                        self.hold_transmit();
                    }
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send_pub_response(PubKind::Comp, r.pkid, code);
                Ok(())
            }
            Packet::PubComp(r) => self.handle_puback(r.pkid, QoS::ExactlyOnce),
            Packet::Subscribe(s) => {
                self.events.push_back(Event::Subscribe(s));
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.events.push_back(Event::Unsubscribe(u));
                Ok(())
            }
            Packet::PingReq => {
                Packet::PingResp.encode(self.version, &mut self.out);
                Ok(())
            }
            Packet::Disconnect(d) => {
                if self.connect_session_expiry == 0
                    && d.properties.session_expiry_interval.is_some_and(|e| e > 0)
                {
                    return Err(Violation::new(
                        ReasonCode::ProtocolError,
                        "[MQTT-3.14.2-2] session expiry set on DISCONNECT after 0 in CONNECT",
                    ));
                }
                self.state = State::Closed;
                self.events.push_back(Event::Disconnect(d));
                Ok(())
            }
            Packet::Auth(a) => self.handle_auth(a),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "client sent a packet only a server may send",
                ))
            }
        }
    }

    fn handle_publish(&mut self, mut p: Publish) -> Result<(), Violation> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.limits.topic_alias_maximum {
                return Err(Violation::new(
                    ReasonCode::TopicAliasInvalid,
                    "[MQTT-3.3.2-8] topic alias is 0 or above the maximum",
                ));
            }
            if p.topic.is_empty() {
                match self.tr().and_then(|t| t.aliases_in.get(&alias)) {
                    Some(t) => p.topic.clone_from(t),
                    None => {
                        return Err(Violation::new(
                            ReasonCode::ProtocolError,
                            "[MQTT 5.0 §3.3.2.3.4] topic alias not yet mapped",
                        ));
                    }
                }
            } else {
                self.t().aliases_in.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT-3.3.2-1] empty topic name without a topic alias",
            ));
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                let receive_maximum = usize::from(self.limits.receive_maximum);
                let t = self.t();
                if p.qos == QoS::ExactlyOnce && t.awaiting_rel.contains(&p.pkid) {
                    // A resend of a message already received: acknowledge, don't deliver twice.
                    self.send_pub_response(PubKind::Rec, p.pkid, ReasonCode::Success);
                    return Ok(());
                }
                if t.incoming_unacked.contains_key(&p.pkid) {
                    // Still being routed; the acknowledgement will follow.
                    return Ok(());
                }
                if t.incoming_unacked.len() + t.awaiting_rel.len() >= receive_maximum {
                    return Err(Violation::new(
                        ReasonCode::ReceiveMaximumExceeded,
                        "[MQTT-3.3.4-9] more unacknowledged QoS 1/2 publishes than Receive Maximum",
                    ));
                }
                t.incoming_unacked.insert(p.pkid, p.qos);
            }
        }
        self.events.push_back(Event::Publish(Box::new(p)));
        Ok(())
    }

    fn handle_puback(&mut self, pkid: u16, expect: QoS) -> Result<(), Violation> {
        let ok = match self.tr().and_then(|t| t.outbound.get(&pkid)) {
            Some(Outbound::AwaitAck(p)) => expect == QoS::AtLeastOnce && p.qos == expect,
            Some(Outbound::AwaitComp) => expect == QoS::ExactlyOnce,
            None => false,
        };
        if ok {
            self.complete_outbound(pkid);
        }
        // An acknowledgement for an unknown identifier is ignored: it may be a late
        // duplicate after a resend.
        Ok(())
    }

    fn complete_outbound(&mut self, pkid: u16) {
        let t = self.t();
        t.outbound.remove(&pkid);
        // Acknowledgements mostly arrive in order: the common case is the front.
        if t.outbound_order.front() == Some(&pkid) {
            t.outbound_order.pop_front();
        } else {
            t.outbound_order.retain(|&id| id != pkid);
        }
        self.events.push_back(Event::Delivered { pkid });
    }

    fn handle_pubrec(&mut self, r: PubResponse) -> Result<(), Violation> {
        match self.tr().and_then(|t| t.outbound.get(&r.pkid)) {
            Some(Outbound::AwaitAck(p)) if p.qos == QoS::ExactlyOnce => {
                if r.code.is_error() {
                    // [MQTT-4.3.3] the client refused it: the flow ends here.
                    self.complete_outbound(r.pkid);
                } else {
                    self.t().outbound.insert(r.pkid, Outbound::AwaitComp);
                    self.events.push_back(Event::Received { pkid: r.pkid });
                    if self.hold_qos2_steps {
                        self.hold_transmit();
                    }
                    self.send_pub_response(PubKind::Rel, r.pkid, ReasonCode::Success);
                }
            }
            Some(Outbound::AwaitComp) => {
                self.send_pub_response(PubKind::Rel, r.pkid, ReasonCode::Success)
            }
            _ => {
                if self.version.is_v5() {
                    self.send_pub_response(
                        PubKind::Rel,
                        r.pkid,
                        ReasonCode::PacketIdentifierNotFound,
                    );
                }
            }
        }
        Ok(())
    }

    /// Acknowledges an incoming QoS 1 (PUBACK) or QoS 2 (PUBREC) publish once the broker has
    /// routed it. An error code for QoS 2 ends that message's flow.
    pub fn ack_publish(&mut self, pkid: u16, code: ReasonCode) {
        let Some(qos) = self
            .tables
            .as_mut()
            .and_then(|t| t.incoming_unacked.remove(&pkid))
        else {
            return;
        };
        if self.state != State::Connected {
            return;
        }
        if qos == QoS::ExactlyOnce {
            if !code.is_error() {
                self.t().awaiting_rel.insert(pkid);
            }
            self.send_pub_response(PubKind::Rec, pkid, code);
        } else {
            self.send_pub_response(PubKind::Ack, pkid, code);
        }
    }

    /// Queues SUBACK.
    pub fn send_suback(&mut self, pkid: u16, codes: Vec<ReasonCode>) {
        self.send_control(Packet::SubAck(SubAck {
            pkid,
            properties: Properties::default(),
            codes,
        }));
    }

    /// Queues UNSUBACK.
    pub fn send_unsuback(&mut self, pkid: u16, codes: Vec<ReasonCode>) {
        self.send_control(Packet::UnsubAck(UnsubAck {
            pkid,
            properties: Properties::default(),
            codes,
        }));
    }

    fn send_control(&mut self, packet: Packet) {
        if self.state == State::Connected {
            packet.encode(self.version, &mut self.out);
        }
    }

    fn send_pub_response(&mut self, kind: PubKind, pkid: u16, code: ReasonCode) {
        let r = PubResponse {
            pkid,
            code,
            properties: Properties::default(),
        };
        let packet = match kind {
            PubKind::Ack => Packet::PubAck(r),
            PubKind::Rec => Packet::PubRec(r),
            PubKind::Rel => Packet::PubRel(r),
            PubKind::Comp => Packet::PubComp(r),
        };
        packet.encode(self.version, &mut self.out);
    }

    /// Next event for the broker.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Number of outgoing messages awaiting acknowledgement.
    pub fn inflight_len(&self) -> usize {
        self.outbound_len()
    }

    /// The state a persistent session keeps when the connection goes.
    pub fn into_inflight(self) -> InflightState {
        let t = self.tables.map(|t| *t).unwrap_or_default();
        let mut outbound = Vec::with_capacity(t.outbound.len());
        let mut map = t.outbound;
        for id in t.outbound_order {
            if let Some(ob) = map.remove(&id) {
                outbound.push((id, ob));
            }
        }
        InflightState {
            outbound,
            awaiting_rel: t.awaiting_rel.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum PubKind {
    Ack,
    Rec,
    Rel,
    Comp,
}

mod auth;
mod connack;
mod dormant;
pub use dormant::DormantSession;
mod liveness;
mod outbound;
#[cfg(test)]
mod tests;
mod transmit;
