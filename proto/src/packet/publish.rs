//! PUBLISH (spec §3.3).

use bytes::{BufMut, Bytes, BytesMut};

use super::{QoS, Version, read_pkid};
use crate::DecodeError;
use crate::codec::{Reader, put_str, put_varint, str_len, varint_len};
use crate::properties::{Properties, PropertyContext, id};

/// An application message on its way between client and server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias stands for it.
    pub topic: String,
    /// Zero for QoS 0.
    pub pkid: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

impl Publish {
    pub(crate) fn decode(header: u8, r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let dup = header & 0x08 != 0;
        let qos = QoS::from_u8((header >> 1) & 0x03)
            .ok_or(DecodeError::Malformed("[MQTT-3.3.1-4] PUBLISH with QoS 3"))?;
        let retain = header & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed(
                "[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH",
            ));
        }
        let topic = r.string()?;
        if !topic.is_empty() || !v.is_v5() {
            crate::topic::validate_topic_name(&topic).map_err(DecodeError::TopicName)?;
        }
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            read_pkid(r)?
        };
        let properties = if v.is_v5() {
            Properties::decode(r, PropertyContext::Publish)?
        } else {
            Properties::default()
        };
        let payload = r.rest();
        if properties.payload_format_indicator == Some(1) && std::str::from_utf8(&payload).is_err()
        {
            return Err(DecodeError::PayloadFormat);
        }
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            pkid,
            properties,
            payload,
        })
    }

    /// Size of the whole packet when encoded for `v`.
    pub fn encoded_len(&self, v: Version) -> usize {
        crate::codec::packet_len(self.body_len(v))
    }

    /// [`Publish::encoded_len`] once a topic alias is added (MQTT 5), the topic left out
    /// when `known` (the client has the alias already).
    pub fn encoded_len_aliased(&self, v: Version, known: bool) -> usize {
        let topic = if known { 0 } else { self.topic.len() };
        let alias = if self.properties.topic_alias.is_none() {
            3
        } else {
            0
        };
        let props = self.properties.len() + alias;
        let mut body = 2 + topic + self.payload.len() + varint_len(props) + props;
        if self.qos != QoS::AtMostOnce {
            body += 2;
        }
        if !v.is_v5() {
            return self.encoded_len(v);
        }
        crate::codec::packet_len(body)
    }

    /// Appends the packet, encoded for `v`, to `buf` (same bytes as
    /// [`super::Packet::encode`] without wrapping it).
    pub fn encode(&self, v: Version, buf: &mut BytesMut) {
        crate::codec::put_fixed_header(buf, self.header(), self.body_len(v));
        self.write_body(v, buf);
    }

    pub(crate) fn header(&self) -> u8 {
        0x30 | (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        let mut n = str_len(&self.topic) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if v.is_v5() {
            n += self.properties.wire_len();
        }
        n
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.pkid);
        }
        if v.is_v5() {
            self.properties.encode(buf);
        }
        buf.put_slice(&self.payload);
    }
}

/// An outgoing QoS 0 PUBLISH whose only properties are those a sender adds per delivery
/// (what is left of the expiry interval, subscription identifiers, a topic alias): the
/// common fan-out case, encoded from borrowed parts without building a [`Publish`]. The
/// bytes are those of the equivalent [`Publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainPublish<'a> {
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias stands for it.
    pub topic: &'a str,
    pub message_expiry_interval: Option<u32>,
    pub subscription_identifiers: &'a [u32],
    pub topic_alias: Option<u16>,
    pub payload: &'a [u8],
}

impl PlainPublish<'_> {
    /// Length of the property block, without its own length prefix (same order and size
    /// as [`Properties::len`] of these fields).
    fn properties_len(&self) -> usize {
        self.message_expiry_interval.map_or(0, |_| 5)
            + self
                .subscription_identifiers
                .iter()
                .map(|&v| 1 + varint_len(v as usize))
                .sum::<usize>()
            + self.topic_alias.map_or(0, |_| 3)
    }

    fn body_len(&self, v: Version) -> usize {
        let mut n = str_len(self.topic) + self.payload.len();
        if v.is_v5() {
            let p = self.properties_len();
            n += varint_len(p) + p;
        }
        n
    }

    /// Size of the whole packet when encoded for `v`.
    pub fn encoded_len(&self, v: Version) -> usize {
        crate::codec::packet_len(self.body_len(v))
    }

    /// Appends the packet, encoded for `v` (MQTT 3.1.1 has no properties: they are left
    /// out), to `buf`.
    pub fn encode(&self, v: Version, buf: &mut BytesMut) {
        crate::codec::put_fixed_header(buf, 0x30 | u8::from(self.retain), self.body_len(v));
        put_str(buf, self.topic);
        if v.is_v5() {
            put_varint(buf, self.properties_len());
            if let Some(e) = self.message_expiry_interval {
                buf.put_u8(id::MESSAGE_EXPIRY);
                buf.put_u32(e);
            }
            for &s in self.subscription_identifiers {
                buf.put_u8(id::SUBSCRIPTION_ID);
                put_varint(buf, s as usize);
            }
            if let Some(a) = self.topic_alias {
                buf.put_u8(id::TOPIC_ALIAS);
                buf.put_u16(a);
            }
        }
        buf.put_slice(self.payload);
    }
}
