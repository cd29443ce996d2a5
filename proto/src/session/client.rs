//! The client side of one MQTT session as a sans-IO state machine, the mirror of
//! [`super::ServerSession`]: bytes are pushed in with [`ClientSession::handle_read`], outgoing
//! bytes are pulled with [`ClientSession::take_transmit`], events for the application are
//! pulled with [`ClientSession::poll_event`], and time only enters through `now` arguments
//! ([`ClientSession::poll_timeout`] says when to call [`ClientSession::handle_timeout`]).
//!
//! One `ClientSession` lives as long as the logical session, across network connections:
//! [`ClientSession::connect`] starts a connection (queues CONNECT) and
//! [`ClientSession::connection_lost`] ends one, keeping what must survive it.
//!
//! It owns what the protocol requires of a client: the CONNECT/CONNACK handshake and the
//! server's limits (Receive Maximum, Maximum Packet Size, Server Keep Alive, assigned client
//! identifier); packet identifiers shared by publishes, subscribes and unsubscribes, never
//! reused while in flight; the outgoing QoS 1/2 window (excess publishes wait here, in
//! order, in a bounded queue); exactly-once delivery of incoming QoS 2; resending
//! unacknowledged PUBLISH (with DUP) and PUBREL when a session resumes; keep-alive pings; and
//! the Maximum Packet Size it accepts. Incoming publishes are acknowledged as soon as they are
//! handed to the application as events.

mod inbound;
mod types;

pub use types::{ClientConfig, ClientError, ClientEvent, RequestError, ServerLimits};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::packet::*;
use crate::properties::Properties;
use crate::{ReasonCode, topic};

/// Hash maps keyed by packet identifiers and topic aliases: a fast hasher, seeded per process.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection.
    Idle,
    /// CONNECT queued, CONNACK awaited.
    Connecting,
    Connected,
}

/// An outgoing QoS 1/2 message in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inflight {
    /// PUBLISH sent, PUBACK or PUBREC awaited.
    AwaitAck(Box<Publish>),
    /// PUBREL sent, PUBCOMP awaited.
    AwaitComp,
}

/// Client side of one logical MQTT session.
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    state: State,
    out: BytesMut,
    events: VecDeque<ClientEvent>,
    server: ServerLimits,
    /// Ping interval in force.
    keep_alive: Duration,
    last_send: Instant,
    /// When CONNECT went out (Connecting) or PINGREQ went out (Connected), if awaited.
    awaiting_since: Option<Instant>,
    /// Outgoing QoS 1/2 in the window, in order of first send.
    inflight: HashMap<u16, Inflight>,
    inflight_order: VecDeque<u16>,
    /// Publishes waiting for a connection or for room in the window (QoS 1/2 already have
    /// their packet identifier).
    queue: VecDeque<Publish>,
    /// SUBSCRIBE and UNSUBSCRIBE awaiting SUBACK/UNSUBACK, resent on a new connection.
    requests: Vec<(u16, Packet)>,
    /// Every packet identifier in use: inflight, queued and requests.
    used_ids: HashSet<u16>,
    next_pkid: u16,
    /// Incoming QoS 2 identifiers acknowledged with PUBREC, awaiting PUBREL.
    awaiting_rel: HashSet<u16>,
    aliases_in: HashMap<u16, String>,
}

impl ClientSession {
    pub fn new(cfg: ClientConfig, now: Instant) -> Self {
        ClientSession {
            keep_alive: cfg.keep_alive,
            cfg,
            state: State::Idle,
            out: BytesMut::new(),
            events: VecDeque::new(),
            server: ServerLimits::default(),
            last_send: now,
            awaiting_since: None,
            inflight: HashMap::default(),
            inflight_order: VecDeque::new(),
            queue: VecDeque::new(),
            requests: Vec::new(),
            used_ids: HashSet::default(),
            next_pkid: 1,
            awaiting_rel: HashSet::default(),
            aliases_in: HashMap::default(),
        }
    }

    pub fn version(&self) -> Version {
        self.cfg.version
    }

    /// True between an accepted CONNACK and the end of that connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// What the server announced in the last CONNACK.
    pub fn server_limits(&self) -> &ServerLimits {
        &self.server
    }

    /// Starts a new connection: queues CONNECT. Anything left of a previous connection
    /// (unsent bytes, topic aliases) is dropped; the session state is kept.
    pub fn connect(&mut self, now: Instant) {
        self.out.clear();
        self.aliases_in.clear();
        self.server = ServerLimits::default();
        let v5 = self.cfg.version.is_v5();
        let properties = if v5 {
            Properties {
                session_expiry_interval: Some(self.cfg.session_expiry).filter(|&s| s > 0),
                receive_maximum: Some(self.cfg.receive_maximum.max(1)),
                maximum_packet_size: Some(self.cfg.max_packet_size.max(1)),
                topic_alias_maximum: Some(self.cfg.topic_alias_maximum).filter(|&t| t > 0),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let keep_alive = self
            .keep_alive
            .as_secs_f64()
            .ceil()
            .min(f64::from(u16::MAX)) as u16;
        let mut will = self.cfg.will.clone();
        if let Some(w) = will.as_mut().filter(|_| !v5) {
            w.properties = Properties::default();
        }
        Packet::Connect(Box::new(Connect {
            version: self.cfg.version,
            client_id: self.cfg.client_id.clone(),
            clean_start: self.cfg.clean_start,
            keep_alive,
            properties,
            will,
            username: self.cfg.username.clone(),
            password: self.cfg.password.clone(),
        }))
        .encode(self.cfg.version, &mut self.out);
        self.state = State::Connecting;
        self.last_send = now;
        self.awaiting_since = Some(now);
    }

    /// The network connection ended (closed, failed, or after an error from this machine).
    /// Unsent bytes are dropped; inflight messages and requests are resent by the next
    /// [`ClientSession::connect`] if the server kept the session.
    pub fn connection_lost(&mut self) {
        self.state = State::Idle;
        self.awaiting_since = None;
        self.out.clear();
    }

    /// Ends the connection cleanly: DISCONNECT with `code` is queued (send it, then close).
    pub fn disconnect(&mut self, code: ReasonCode) {
        if self.state == State::Connected {
            let code = if self.cfg.version.is_v5() {
                code
            } else {
                ReasonCode::Success
            };
            Packet::Disconnect(Disconnect::new(code)).encode(self.cfg.version, &mut self.out);
        }
        self.state = State::Idle;
        self.awaiting_since = None;
    }

    /// Publishes an application message. QoS 1/2 get a packet identifier (returned; QoS 0
    /// returns 0) and are kept until acknowledged, reported by [`ClientEvent::Published`].
    /// Without a connection, or with the server's Receive Maximum reached, the message
    /// waits in the session's queue and goes out in order. A QoS 0 message takes no place
    /// in the window: while connected it goes out at once, possibly ahead of queued ones.
    pub fn publish(&mut self, now: Instant, mut p: Publish) -> Result<u16, RequestError> {
        if !p.topic.is_empty() || !self.cfg.version.is_v5() {
            topic::validate_topic_name(&p.topic).map_err(RequestError::InvalidTopic)?;
        } else {
            return Err(RequestError::InvalidTopic(
                "[MQTT-3.3.2-1] empty topic name",
            ));
        }
        if !self.cfg.version.is_v5() {
            p.properties = Properties::default();
        }
        p.properties.topic_alias = None;
        p.dup = false;
        if self.state == State::Connected
            && p.encoded_len(self.cfg.version) > self.server.maximum_packet_size as usize
        {
            return Err(RequestError::TooLarge);
        }
        if self.state == State::Connected {
            if p.qos > self.server.maximum_qos {
                return Err(RequestError::QosNotSupported);
            }
            if p.retain && !self.server.retain_available {
                return Err(RequestError::RetainNotSupported);
            }
        }
        let sendable = self.state == State::Connected && self.queue.is_empty();
        if p.qos == QoS::AtMostOnce {
            p.pkid = 0;
            if self.state == State::Connected {
                self.encode(now, &Packet::Publish(p));
            } else if self.queue.len() >= self.cfg.max_queued {
                return Err(RequestError::QueueFull);
            } else {
                self.queue.push_back(p);
            }
            return Ok(0);
        }
        if !(sendable && self.inflight.len() < self.window())
            && self.queue.len() >= self.cfg.max_queued
        {
            return Err(RequestError::QueueFull);
        }
        let pkid = self.alloc_pkid()?;
        p.pkid = pkid;
        if sendable && self.inflight.len() < self.window() {
            self.send_inflight(now, p);
        } else {
            self.queue.push_back(p);
        }
        Ok(pkid)
    }

    /// Subscribes; returns the packet identifier that [`ClientEvent::SubAck`] will carry.
    /// Without a connection it goes out with the next one.
    pub fn subscribe(
        &mut self,
        now: Instant,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: Properties,
    ) -> Result<u16, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::NoFilter);
        }
        for (f, _) in &filters {
            topic::parse_filter(f).map_err(RequestError::InvalidTopic)?;
        }
        let pkid = self.alloc_pkid()?;
        let packet = Packet::Subscribe(Subscribe {
            pkid,
            properties: self.v5_only(properties),
            filters,
        });
        self.request(now, pkid, packet);
        Ok(pkid)
    }

    /// Unsubscribes; returns the packet identifier that [`ClientEvent::UnsubAck`] will carry.
    pub fn unsubscribe(&mut self, now: Instant, filters: Vec<String>) -> Result<u16, RequestError> {
        if filters.is_empty() {
            return Err(RequestError::NoFilter);
        }
        for f in &filters {
            topic::parse_filter(f).map_err(RequestError::InvalidTopic)?;
        }
        let pkid = self.alloc_pkid()?;
        let packet = Packet::Unsubscribe(Unsubscribe {
            pkid,
            properties: Properties::default(),
            filters,
        });
        self.request(now, pkid, packet);
        Ok(pkid)
    }

    fn request(&mut self, now: Instant, pkid: u16, packet: Packet) {
        if self.state == State::Connected {
            self.encode(now, &packet);
        }
        self.requests.push((pkid, packet));
    }

    fn v5_only(&self, p: Properties) -> Properties {
        if self.cfg.version.is_v5() {
            p
        } else {
            Properties::default()
        }
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the connection; empty when there is nothing.
    pub fn take_transmit(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// True when bytes are waiting to be written.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// When to call [`ClientSession::handle_timeout`] next: the CONNACK or PINGRESP
    /// deadline, or when a PINGREQ is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.state, self.awaiting_since) {
            (State::Idle, _) => None,
            // Checked: a timeout too long to represent never fires.
            (State::Connecting, Some(since)) => since.checked_add(self.cfg.connack_timeout),
            (State::Connecting, None) => None,
            (State::Connected, Some(since)) => since.checked_add(self.cfg.ping_timeout),
            (State::Connected, None) if self.keep_alive.is_zero() => None,
            (State::Connected, None) => self.last_send.checked_add(self.keep_alive),
        }
    }

    /// Sends PINGREQ when due; fails when CONNACK or PINGRESP is overdue (the connection is
    /// then over: close it).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        let Some(deadline) = self.poll_timeout() else {
            return Ok(());
        };
        if now < deadline {
            return Ok(());
        }
        match (self.state, self.awaiting_since) {
            (State::Connecting, _) => {
                self.connection_lost();
                Err(ClientError::ConnAckTimeout)
            }
            (_, Some(_)) => {
                self.connection_lost();
                Err(ClientError::PingTimeout)
            }
            _ => {
                self.encode(now, &Packet::PingReq);
                self.awaiting_since = Some(now);
                Ok(())
            }
        }
    }

    /// Changes the ping interval in force (the adaptive heartbeat); zero turns pings off.
    /// The next CONNECT announces it, rounded up to seconds.
    pub fn set_keep_alive(&mut self, interval: Duration) {
        self.keep_alive = interval;
    }

    /// The ping interval in force.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// Outgoing QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Publishes waiting for a connection or for room in the window.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// SUBSCRIBE/UNSUBSCRIBE requests not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// The outgoing window: the server's Receive Maximum, capped by our own.
    fn window(&self) -> usize {
        usize::from(
            self.server
                .receive_maximum
                .min(self.cfg.max_inflight)
                .max(1),
        )
    }

    fn alloc_pkid(&mut self) -> Result<u16, RequestError> {
        for _ in 0..u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if self.used_ids.insert(id) {
                return Ok(id);
            }
        }
        Err(RequestError::NoPacketId)
    }

    fn free_pkid(&mut self, pkid: u16) {
        self.used_ids.remove(&pkid);
    }

    fn encode(&mut self, now: Instant, packet: &Packet) {
        packet.encode(self.cfg.version, &mut self.out);
        self.last_send = now;
    }

    /// Sends a QoS 1/2 publish that has its identifier and a place in the window.
    fn send_inflight(&mut self, now: Instant, p: Publish) {
        let pkid = p.pkid;
        let packet = Packet::Publish(p);
        self.encode(now, &packet);
        let Packet::Publish(p) = packet else { return };
        self.inflight.insert(pkid, Inflight::AwaitAck(Box::new(p)));
        self.inflight_order.push_back(pkid);
    }

    /// Moves waiting publishes into the window while there is room, in order.
    fn fill_window(&mut self, now: Instant) {
        while self.state == State::Connected {
            let Some(front) = self.queue.front() else {
                return;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window() {
                return;
            }
            let Some(p) = self.queue.pop_front() else {
                return;
            };
            // Queued before this server's limits were known: what it would refuse (and
            // disconnect us for) is reported and never sent.
            let refused =
                if p.encoded_len(self.cfg.version) > self.server.maximum_packet_size as usize {
                    Some(ReasonCode::PacketTooLarge) // [MQTT-3.2.2-15]
                } else if p.qos > self.server.maximum_qos {
                    Some(ReasonCode::QosNotSupported) // [MQTT-3.2.2-11]
                } else if p.retain && !self.server.retain_available {
                    Some(ReasonCode::RetainNotSupported) // [MQTT-3.2.2-14]
                } else {
                    None
                };
            if let Some(code) = refused {
                if p.qos != QoS::AtMostOnce {
                    self.free_pkid(p.pkid);
                    self.events
                        .push_back(ClientEvent::Published { pkid: p.pkid, code });
                }
                continue;
            }
            if p.qos == QoS::AtMostOnce {
                self.encode(now, &Packet::Publish(p));
            } else {
                self.send_inflight(now, p);
            }
        }
    }

    /// Ends the flow of an outgoing message and frees its identifier.
    fn complete(&mut self, now: Instant, pkid: u16, code: ReasonCode) {
        if self.inflight.remove(&pkid).is_none() {
            return;
        }
        if self.inflight_order.front() == Some(&pkid) {
            self.inflight_order.pop_front();
        } else {
            self.inflight_order.retain(|&id| id != pkid);
        }
        self.free_pkid(pkid);
        self.events.push_back(ClientEvent::Published { pkid, code });
        self.fill_window(now);
    }
}

#[cfg(test)]
mod tests;
