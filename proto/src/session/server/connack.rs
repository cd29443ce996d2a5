//! Answering CONNECT (CONNACK: accept or refuse) and ending the connection from the server
//! side (DISCONNECT).

use std::time::Duration;

use super::{PubKind, ServerSession, State};
use crate::ReasonCode;
use crate::packet::*;
use crate::properties::Properties;
use crate::session::{Accept, Outbound};

impl ServerSession {
    /// Accepts the pending CONNECT: queues CONNACK and resends a resumed session's inflight.
    pub fn accept(&mut self, connect: &Connect, mut accept: Accept) {
        let p = &connect.properties;
        self.client_receive_max = p.receive_maximum.unwrap_or(u16::MAX);
        self.client_max_packet = p.maximum_packet_size.unwrap_or(u32::MAX);
        self.client_alias_max = p
            .topic_alias_maximum
            .unwrap_or(0)
            .min(self.limits.outgoing_topic_aliases);
        self.connect_session_expiry = p.session_expiry_interval.unwrap_or(0);
        let keep_alive = accept.server_keep_alive.unwrap_or(connect.keep_alive);
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));
        if self.version.is_v5() {
            let props = &mut accept.properties;
            props.receive_maximum = Some(self.limits.receive_maximum);
            props.maximum_packet_size = Some(self.limits.max_packet_size);
            if self.limits.topic_alias_maximum > 0 {
                props.topic_alias_maximum = Some(self.limits.topic_alias_maximum);
            }
            if accept.server_keep_alive.is_some() {
                props.server_keep_alive = Some(keep_alive);
            }
        }
        let connack = Packet::ConnAck(ConnAck {
            session_present: accept.session_present,
            code: ReasonCode::Success,
            properties: if self.version.is_v5() {
                accept.properties
            } else {
                Properties::default()
            },
        });
        connack.encode(self.version, &mut self.out);
        self.state = State::Connected;
        if let Some(resume) = accept.resume {
            self.t().awaiting_rel.extend(resume.awaiting_rel);
            for (pkid, ob) in resume.outbound {
                match &ob {
                    Outbound::AwaitAck(p) => {
                        let mut p = (**p).clone();
                        p.dup = true;
                        p.pkid = pkid;
                        let v = self.version;
                        let alias =
                            self.take_alias(&p.topic, |known| p.encoded_len_aliased(v, known));
                        self.encode_publish(&mut p, alias);
                    }
                    Outbound::AwaitComp => {
                        self.send_pub_response(PubKind::Rel, pkid, ReasonCode::Success)
                    }
                }
                let t = self.t();
                t.outbound.insert(pkid, ob);
                t.outbound_order.push_back(pkid);
                self.next_pkid = pkid.wrapping_add(1).max(1);
            }
        }
    }

    /// Refuses the pending CONNECT with `code` (mapped to a 3.1.1 return code as needed).
    pub fn reject(&mut self, code: ReasonCode, reason: Option<String>) {
        let properties = Properties {
            reason_string: reason,
            ..Properties::default()
        };
        self.reject_with(code, properties);
    }

    /// Like [`ServerSession::reject`] with CONNACK properties (Server Reference for 0x9C /
    /// 0x9D, Authentication Method...); a 3.1.1 client gets none.
    pub fn reject_with(&mut self, code: ReasonCode, mut properties: Properties) {
        if !self.version.is_v5() {
            properties = Properties::default();
        }
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties,
        })
        .encode(self.version, &mut self.out);
        self.state = State::Closed;
    }

    /// Ends the connection from the server side: a DISCONNECT with `code` for MQTT 5
    /// clients (3.1.1 has no server DISCONNECT; the connection just closes).
    pub fn disconnect(&mut self, code: ReasonCode, reason: Option<&str>) {
        let mut d = Disconnect::new(code);
        d.properties.reason_string = reason.map(str::to_owned);
        self.disconnect_with(d);
    }

    /// Like [`ServerSession::disconnect`] with a whole DISCONNECT (e.g. 0x9C with a Server
    /// Reference for a client that should move).
    pub fn disconnect_with(&mut self, d: Disconnect) {
        if self.state == State::Connected && self.version.is_v5() {
            Packet::Disconnect(d).encode(self.version, &mut self.out);
        } else if matches!(self.state, State::Connecting | State::Authenticating)
            && d.code != ReasonCode::Success
        {
            self.reject_with(d.code, d.properties);
        }
        self.state = State::Closed;
    }
}
