//! A [`ClientSession`] and a [`ServerSession`] joined in memory, stepped by hand with a
//! virtual clock (after `quinn-proto`'s `tests/util.rs`): protocol edge cases run in
//! microseconds, without sockets or sleeps.
//!
//! The server side answers the way the broker does (accept CONNECT, grant subscriptions,
//! acknowledge publishes once "routed"); switches let a test hold acknowledgements back or
//! cut the link.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::properties::Properties;

mod tests;

pub(crate) struct Pair {
    pub now: Instant,
    pub client: ClientSession,
    pub server: ServerSession,
    pub limits: SessionLimits,
    /// How the server accepts the next CONNECT.
    pub accept: Accept,
    /// Acknowledge incoming publishes at once; when off they wait in `unacked`.
    pub auto_ack: bool,
    /// Incoming publishes the server has routed but not acknowledged.
    pub unacked: Vec<u16>,
    /// Publishes the server routed, in order.
    pub routed: Vec<Publish>,
    /// Other server events, in order.
    pub server_events: Vec<Event>,
    pub client_events: Vec<ClientEvent>,
    pub client_error: Option<ClientError>,
    pub server_error: Option<Violation>,
    /// While false, bytes in both directions are lost (a dead link).
    pub link_up: bool,
    to_server: BytesMut,
    to_client: BytesMut,
}

impl Pair {
    pub fn new(cfg: ClientConfig) -> Pair {
        Self::with_limits(cfg, SessionLimits::default())
    }

    pub fn with_limits(cfg: ClientConfig, limits: SessionLimits) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            client: ClientSession::new(cfg, now),
            server: ServerSession::new(limits.clone(), now),
            limits,
            accept: Accept::default(),
            auto_ack: true,
            unacked: Vec::new(),
            routed: Vec::new(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            client_error: None,
            server_error: None,
            link_up: true,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
        }
    }

    /// Connects and checks CONNACK accepted.
    pub fn connect(&mut self) {
        self.client.connect(self.now);
        self.drive();
        assert!(
            self.client.is_connected(),
            "not connected: {:?}",
            self.client_error
        );
    }

    /// A new connection to a new server session: the old connection's unsent bytes are
    /// lost. With `session_present` the server resumes the old session's inflight state.
    pub fn reconnect(&mut self, session_present: bool) {
        let old = std::mem::replace(
            &mut self.server,
            ServerSession::new(self.limits.clone(), self.now),
        );
        self.accept = Accept {
            session_present,
            resume: session_present.then(|| old.into_inflight()),
            ..Accept::default()
        };
        self.unacked.clear();
        self.to_server.clear();
        self.to_client.clear();
        self.client_error = None;
        self.server_error = None;
        self.link_up = true;
        self.client.connection_lost();
        self.connect();
    }

    /// Moves bytes both ways and answers server events until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// One round: client → server, server answers, server → client. True if bytes moved.
    pub fn step(&mut self) -> bool {
        let c = self.client.take_transmit();
        let moved_c = !c.is_empty();
        if self.link_up {
            self.to_server.extend_from_slice(&c);
        }
        if self.server_error.is_none()
            && let Err(v) = self.server.handle_read(self.now, &mut self.to_server)
        {
            self.server.disconnect(v.code, Some(v.reason));
            self.server_error = Some(v);
        }
        self.answer_server_events();
        let s = self.server.take_transmit();
        let moved_s = !s.is_empty();
        if self.link_up {
            self.deliver_to_client(&s);
        }
        moved_c || moved_s
    }

    /// Feeds bytes to the client as if the server had sent them.
    pub fn deliver_to_client(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
        if self.client_error.is_none()
            && let Err(e) = self.client.handle_read(self.now, &mut self.to_client)
        {
            self.client_error = Some(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    fn answer_server_events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::Connect(c) => {
                    let accept = std::mem::take(&mut self.accept);
                    self.server.accept(&c, accept);
                    // CONNECT stops the reading until accepted: read on.
                    if let Err(v) = self.server.handle_read(self.now, &mut self.to_server) {
                        self.server_error = Some(v);
                    }
                }
                Event::Publish(p) => {
                    if p.qos != QoS::AtMostOnce {
                        if self.auto_ack {
                            self.server.ack_publish(p.pkid, ReasonCode::Success);
                        } else {
                            self.unacked.push(p.pkid);
                        }
                    }
                    self.routed.push(*p);
                }
                Event::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|(_, o)| match o.qos {
                            QoS::AtMostOnce => ReasonCode::Success,
                            QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                            QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                        })
                        .collect();
                    self.server.send_suback(s.pkid, codes);
                }
                Event::Unsubscribe(u) => {
                    let codes = vec![ReasonCode::Success; u.filters.len()];
                    self.server.send_unsuback(u.pkid, codes);
                }
                other => self.server_events.push(other),
            }
        }
    }

    /// The server acknowledges every publish it holds back.
    pub fn ack_all(&mut self) {
        for pkid in std::mem::take(&mut self.unacked) {
            self.server.ack_publish(pkid, ReasonCode::Success);
        }
        self.drive();
    }

    /// Lets `d` pass: both sides' timers fire, then the pair is driven.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.client_error.is_none()
            && let Err(e) = self.client.handle_timeout(self.now)
        {
            self.client_error = Some(e);
        }
        if self.server_error.is_none()
            && let Err(v) = self.server.handle_timeout(self.now)
        {
            self.server_error = Some(v);
        }
        self.drive();
    }

    /// Client events so far, emptied.
    pub fn take_client_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    /// Messages the client delivered so far, emptied from the events.
    pub fn take_messages(&mut self) -> Vec<Publish> {
        let mut out = Vec::new();
        self.client_events.retain(|e| match e {
            ClientEvent::Message(p) => {
                out.push((**p).clone());
                false
            }
            _ => true,
        });
        out
    }
}

/// A message with a small payload.
pub(crate) fn msg(topic: &str, qos: QoS, payload: &'static str) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid: 0,
        properties: Properties::default(),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

/// A client config for the pair: MQTT 5, persistent session, keep-alive off.
pub(crate) fn config(version: Version) -> ClientConfig {
    ClientConfig {
        version,
        clean_start: false,
        keep_alive: Duration::ZERO,
        ..ClientConfig::new("pair")
    }
}

/// Decodes everything in `bytes` (as the server would, with no size limit).
pub(crate) fn decode_all(bytes: &[u8], v: Version) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(p)) = Packet::read(&mut buf, v, usize::MAX) {
        out.push(p);
    }
    out
}
