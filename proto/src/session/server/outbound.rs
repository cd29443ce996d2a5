//! Application messages to the client: the outgoing window (the client's Receive
//! Maximum), packet identifiers, and topic aliases within the client's Maximum Packet Size.
//! A QoS 0 message without properties of its own goes out from borrowed parts
//! ([`PlainPublish`]), with the same rules and bytes as an owned [`Publish`].

use super::{Outbound, SendError, ServerSession, State};
use crate::packet::{PlainPublish, Publish, QoS};
use crate::properties::Properties;

impl ServerSession {
    /// Room in the outgoing window for one more QoS 1/2 message.
    pub fn can_send(&self) -> bool {
        self.state == State::Connected && self.outbound_len() < self.window()
    }

    /// How many more QoS 1/2 messages the outgoing window takes now.
    pub fn send_room(&self) -> usize {
        if self.state == State::Connected {
            self.window().saturating_sub(self.outbound_len())
        } else {
            0
        }
    }

    fn window(&self) -> usize {
        usize::from(self.client_receive_max.min(self.limits.max_inflight).max(1))
    }

    /// Sends an application message to the client. For QoS 1/2 a packet identifier is
    /// assigned and the message kept until acknowledged; returns that identifier.
    pub fn publish(&mut self, mut p: Publish) -> Result<u16, SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        if p.qos != QoS::AtMostOnce && self.outbound_len() >= self.window() {
            return Err(SendError::WindowFull);
        }
        if !self.version.is_v5() {
            p.properties = Properties::default();
        }
        p.properties.topic_alias = None;
        let v = self.version;
        let full = p.encoded_len(v);
        let alias = self.take_alias(&p.topic, |known| p.encoded_len_aliased(v, known));
        if alias.is_none() && full > self.client_max_packet as usize {
            return Err(SendError::TooLarge);
        }
        if p.qos == QoS::AtMostOnce {
            p.pkid = 0;
            self.encode_publish(&mut p, alias);
            return Ok(0);
        }
        let pkid = self.alloc_pkid();
        p.pkid = pkid;
        self.encode_publish(&mut p, alias);
        let t = self.t();
        t.outbound.insert(pkid, Outbound::AwaitAck(Box::new(p)));
        t.outbound_order.push_back(pkid);
        Ok(pkid)
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.tr().is_some_and(|t| t.outbound.contains_key(&id)) {
                return id;
            }
        }
    }

    /// Sends a QoS 0 application message that has no properties of its own (see
    /// [`PlainPublish`]) without building a [`Publish`]: the same rules and bytes as
    /// [`ServerSession::publish`] of the equivalent message. `p.topic_alias` is the
    /// session's to set; MQTT 3.1.1 leaves the properties out.
    pub fn publish_plain(&mut self, mut p: PlainPublish<'_>) -> Result<(), SendError> {
        if self.state != State::Connected {
            return Err(SendError::NotConnected);
        }
        p.topic_alias = None;
        let v = self.version;
        let full = p.encoded_len(v);
        let alias = self.take_alias(p.topic, |known| {
            let mut q = p;
            q.topic_alias = Some(1);
            if known {
                q.topic = "";
            }
            q.encoded_len(v)
        });
        match alias {
            Some((a, known)) => {
                p.topic_alias = Some(a);
                if known {
                    p.topic = "";
                }
            }
            None if full > self.client_max_packet as usize => return Err(SendError::TooLarge),
            None => {}
        }
        p.encode(v, &mut self.out);
        Ok(())
    }

    /// The topic alias an outgoing PUBLISH of `topic` goes with: `(alias, already known to
    /// the client)`, a known one or a new one while the client's Topic Alias Maximum
    /// leaves room, and only if the packet then fits the client's Maximum Packet Size
    /// (`len(known)`: its size with an alias, the topic left out when known; an alias
    /// can add bytes [MQTT-3.1.2-24]). A new alias is recorded only when taken.
    pub(super) fn take_alias(
        &mut self,
        topic: &str,
        len: impl FnOnce(bool) -> usize,
    ) -> Option<(u16, bool)> {
        if !self.version.is_v5() || self.client_alias_max == 0 {
            return None;
        }
        let (known, used) = self.tr().map_or((None, 0), |t| {
            (t.aliases_out.get(topic).copied(), t.aliases_out.len())
        });
        let (alias, is_known) = match known {
            Some(a) => (a, true),
            None if used < usize::from(self.client_alias_max) => (used as u16 + 1, false),
            None => return None,
        };
        if len(is_known) > self.client_max_packet as usize {
            return None;
        }
        if !is_known {
            self.t().aliases_out.insert(topic.to_owned(), alias);
        }
        Some((alias, is_known))
    }

    /// Encodes an outgoing PUBLISH with `alias` (from [`ServerSession::take_alias`]), the
    /// topic left out when the client knows it. `p` is left as it came (a QoS 1/2 message
    /// is kept for a resend, which may go on a new connection without the alias).
    pub(super) fn encode_publish(&mut self, p: &mut Publish, alias: Option<(u16, bool)>) {
        let Some((alias, known)) = alias else {
            p.encode(self.version, &mut self.out);
            return;
        };
        let topic = if known {
            std::mem::take(&mut p.topic)
        } else {
            String::new()
        };
        p.properties.topic_alias = Some(alias);
        p.encode(self.version, &mut self.out);
        p.properties.topic_alias = None;
        if known {
            p.topic = topic;
        }
    }
}
