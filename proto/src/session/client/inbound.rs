//! What the client session does with each packet from the server: the CONNACK handshake
//! and session resumption, incoming publishes (QoS 2 exactly once), and the
//! acknowledgements that complete outgoing publishes and subscribe requests.

use std::time::Instant;

use bytes::BytesMut;

use super::{ClientError, ClientEvent, ClientSession, Inflight, ServerLimits, State};
use crate::packet::*;
use crate::session::Violation;
use crate::{DecodeError, ReasonCode};

impl ClientSession {
    /// Decodes and handles every complete packet in `buf`. On an error the connection is
    /// over: send what [`ClientSession::take_transmit`] still holds (DISCONNECT for a
    /// violation), close, and call [`ClientSession::connect`] on a new connection.
    pub fn handle_read(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), ClientError> {
        while self.state != State::Idle {
            let max = self.cfg.max_packet_size as usize;
            let packet = match Packet::read(buf, self.cfg.version, max) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(DecodeError::TooLarge { .. }) => {
                    return Err(self.violation(Violation::new(
                        ReasonCode::PacketTooLarge,
                        "[MQTT-3.1.2-24] the server sent a packet over our maximum packet size",
                    )));
                }
                Err(e) => return Err(self.violation(e.into())),
            };
            if let Err(e) = self.handle_packet(now, packet) {
                return Err(match e {
                    ClientError::Violation(v) => self.violation(v),
                    other => {
                        self.state = State::Idle;
                        self.awaiting_since = None;
                        other
                    }
                });
            }
        }
        Ok(())
    }

    /// Queues DISCONNECT with the violation's code (MQTT 5) and ends the connection.
    fn violation(&mut self, v: Violation) -> ClientError {
        if self.cfg.version.is_v5() && self.state == State::Connected {
            let mut d = Disconnect::new(v.code);
            d.properties.reason_string = Some(v.reason.to_owned());
            Packet::Disconnect(d).encode(self.cfg.version, &mut self.out);
        }
        self.state = State::Idle;
        self.awaiting_since = None;
        ClientError::Violation(v)
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), ClientError> {
        if self.state == State::Connecting {
            let Packet::ConnAck(ack) = packet else {
                return Err(protocol(
                    "[MQTT-3.2.0-1] first packet from the server is not CONNACK",
                ));
            };
            return self.on_connack(now, ack);
        }
        match packet {
            Packet::Publish(p) => self.on_publish(now, p)?,
            Packet::PubAck(r) => {
                if matches!(self.inflight.get(&r.pkid), Some(Inflight::AwaitAck(p)) if p.qos == QoS::AtLeastOnce)
                {
                    self.complete(now, r.pkid, r.code);
                }
                // Otherwise a late duplicate after a resend: ignored.
            }
            Packet::PubRec(r) => self.on_pubrec(now, r),
            Packet::PubComp(r) => {
                if matches!(self.inflight.get(&r.pkid), Some(Inflight::AwaitComp)) {
                    self.complete(now, r.pkid, r.code);
                }
            }
            Packet::PubRel(r) => {
                let code = if self.awaiting_rel.remove(&r.pkid) {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.pub_response(now, Packet::PubComp, r.pkid, code);
            }
            Packet::SubAck(a) => {
                if self.take_request(a.pkid, |p| matches!(p, Packet::Subscribe(_))) {
                    self.events.push_back(ClientEvent::SubAck {
                        pkid: a.pkid,
                        codes: a.codes,
                    });
                }
            }
            Packet::UnsubAck(a) => {
                if self.take_request(a.pkid, |p| matches!(p, Packet::Unsubscribe(_))) {
                    self.events.push_back(ClientEvent::UnsubAck {
                        pkid: a.pkid,
                        codes: a.codes,
                    });
                }
            }
            Packet::PingResp => {
                if self.awaiting_since.take().is_some() {
                    self.events.push_back(ClientEvent::Pong);
                }
            }
            Packet::Disconnect(d) => {
                return Err(ClientError::Disconnected {
                    code: d.code,
                    reason: d.properties.reason_string,
                });
            }
            Packet::ConnAck(_) => return Err(protocol("[MQTT-3.2.0-2] second CONNACK")),
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Auth(_) => {
                return Err(protocol(
                    "packet a server never sends (or AUTH, unsupported)",
                ));
            }
        }
        Ok(())
    }

    fn on_connack(&mut self, now: Instant, ack: ConnAck) -> Result<(), ClientError> {
        if ack.code.is_error() {
            return Err(ClientError::Refused {
                code: ack.code,
                reason: ack.properties.reason_string,
            });
        }
        if ack.session_present && self.cfg.clean_start {
            return Err(protocol(
                "[MQTT-3.2.2-2] session present in answer to a clean start",
            ));
        }
        let p = ack.properties;
        let limits = ServerLimits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX).max(1),
            maximum_packet_size: p.maximum_packet_size.unwrap_or(u32::MAX),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            server_keep_alive: p.server_keep_alive,
            maximum_qos: p
                .maximum_qos
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available != Some(0),
            user_properties: p.user_properties.clone(),
        };
        if let Some(secs) = p.server_keep_alive {
            // [MQTT-3.2.2-21] the server's keep-alive replaces ours.
            self.keep_alive = std::time::Duration::from_secs(u64::from(secs));
        }
        if let Some(id) = &p.assigned_client_identifier {
            // Resume this session under the identifier the server gave it.
            self.cfg.client_id = id.clone();
        }
        self.server = limits.clone();
        self.state = State::Connected;
        self.awaiting_since = None;
        if ack.session_present {
            self.resume(now);
        } else {
            self.restart();
        }
        for i in 0..self.requests.len() {
            let packet = self.requests[i].1.clone();
            self.encode(now, &packet);
        }
        self.events.push_back(ClientEvent::Connected {
            session_present: ack.session_present,
            assigned_client_id: p.assigned_client_identifier,
            limits,
        });
        self.fill_window(now);
        Ok(())
    }

    /// The server kept the session: [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP) and
    /// PUBREL with their identifiers, in order, within the (possibly smaller) new window.
    fn resume(&mut self, now: Instant) {
        let window = self.window();
        let mut sent = 0;
        let mut back_to_queue = Vec::new();
        for pkid in std::mem::take(&mut self.inflight_order) {
            match self.inflight.remove(&pkid) {
                Some(Inflight::AwaitComp) => {
                    self.pub_response(now, Packet::PubRel, pkid, ReasonCode::Success);
                    self.inflight.insert(pkid, Inflight::AwaitComp);
                    self.inflight_order.push_back(pkid);
                    sent += 1;
                }
                Some(Inflight::AwaitAck(mut p)) => {
                    p.dup = true;
                    if sent < window {
                        self.send_inflight(now, *p);
                        sent += 1;
                    } else {
                        back_to_queue.push(*p);
                    }
                }
                None => {}
            }
        }
        for p in back_to_queue.into_iter().rev() {
            self.queue.push_front(p);
        }
    }

    /// The server has no session of ours ([MQTT-3.2.2-5]: discard the session state). What
    /// the application handed us is not dropped: publishes the server never acknowledged go
    /// again as new messages, in order; a QoS 2 message already PUBREC'd counts as
    /// delivered; incoming QoS 2 state is forgotten.
    fn restart(&mut self) {
        self.awaiting_rel.clear();
        let mut again = Vec::new();
        for pkid in std::mem::take(&mut self.inflight_order) {
            match self.inflight.remove(&pkid) {
                Some(Inflight::AwaitAck(mut p)) => {
                    p.dup = false;
                    again.push(*p);
                }
                Some(Inflight::AwaitComp) => {
                    self.free_pkid(pkid);
                    self.events.push_back(ClientEvent::Published {
                        pkid,
                        code: ReasonCode::Success,
                    });
                }
                None => {}
            }
        }
        for p in again.into_iter().rev() {
            self.queue.push_front(p);
        }
        for p in self.queue.iter_mut() {
            p.dup = false;
        }
    }

    fn on_publish(&mut self, now: Instant, mut p: Publish) -> Result<(), ClientError> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.cfg.topic_alias_maximum {
                return Err(ClientError::Violation(Violation::new(
                    ReasonCode::TopicAliasInvalid,
                    "[MQTT-3.3.2-9] topic alias 0 or above our Topic Alias Maximum",
                )));
            }
            if p.topic.is_empty() {
                match self.aliases_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(protocol("[MQTT-3.3.2-12] topic alias not yet mapped")),
                }
            } else {
                self.aliases_in.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return Err(protocol(
                "[MQTT-3.3.2-1] empty topic name without a topic alias",
            ));
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.pub_response(now, Packet::PubAck, p.pkid, ReasonCode::Success),
            QoS::ExactlyOnce => {
                if self.awaiting_rel.contains(&p.pkid) {
                    // [MQTT-4.3.3-10] a resend of a message we already have: acknowledge it
                    // again, never deliver it twice.
                    self.pub_response(now, Packet::PubRec, p.pkid, ReasonCode::Success);
                    return Ok(());
                }
                if self.awaiting_rel.len() >= usize::from(self.cfg.receive_maximum.max(1)) {
                    return Err(ClientError::Violation(Violation::new(
                        ReasonCode::ReceiveMaximumExceeded,
                        "[MQTT-3.3.4-9] more unacknowledged QoS 2 publishes than Receive Maximum",
                    )));
                }
                self.awaiting_rel.insert(p.pkid);
                self.pub_response(now, Packet::PubRec, p.pkid, ReasonCode::Success);
            }
        }
        self.events.push_back(ClientEvent::Message(Box::new(p)));
        Ok(())
    }

    fn on_pubrec(&mut self, now: Instant, r: PubResponse) {
        match self.inflight.get(&r.pkid) {
            Some(Inflight::AwaitAck(p)) if p.qos == QoS::ExactlyOnce => {
                if r.code.is_error() {
                    // [MQTT-4.3.3] the server refused it: the flow ends here.
                    self.complete(now, r.pkid, r.code);
                } else {
                    self.inflight.insert(r.pkid, Inflight::AwaitComp);
                    self.pub_response(now, Packet::PubRel, r.pkid, ReasonCode::Success);
                }
            }
            Some(Inflight::AwaitComp) => {
                self.pub_response(now, Packet::PubRel, r.pkid, ReasonCode::Success)
            }
            _ => self.pub_response(
                now,
                Packet::PubRel,
                r.pkid,
                ReasonCode::PacketIdentifierNotFound,
            ),
        }
    }

    fn pub_response(
        &mut self,
        now: Instant,
        kind: fn(PubResponse) -> Packet,
        pkid: u16,
        code: ReasonCode,
    ) {
        let mut r = PubResponse::new(pkid);
        if self.cfg.version.is_v5() {
            r.code = code;
        }
        self.encode(now, &kind(r));
    }

    /// Removes the request with `pkid` if it is of the expected kind; frees its identifier.
    fn take_request(&mut self, pkid: u16, kind: impl Fn(&Packet) -> bool) -> bool {
        let Some(i) = self
            .requests
            .iter()
            .position(|(id, p)| *id == pkid && kind(p))
        else {
            return false;
        };
        self.requests.remove(i);
        self.free_pkid(pkid);
        true
    }
}

fn protocol(reason: &'static str) -> ClientError {
    ClientError::Violation(Violation::new(ReasonCode::ProtocolError, reason))
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Violation(e.into())
    }
}
