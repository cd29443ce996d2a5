//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (spec §3.8-3.11).
//!
//! Topic filters are checked only for UTF-8 here; whether a filter is valid is answered per
//! filter in SUBACK by the broker, as MQTT 5 allows.

use bytes::{BufMut, BytesMut};

use super::{QoS, Version, read_pkid};
use crate::codec::{Reader, put_str, str_len};
use crate::properties::{Properties, PropertyContext};
use crate::{DecodeError, ReasonCode};

/// When retained messages are sent for a new subscription (MQTT 5 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist.
    SendIfNew = 1,
    /// Never send them.
    DoNotSend = 2,
}

/// Options of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub properties: Properties,
    pub filters: Vec<(String, SubscriptionOptions)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    pub properties: Properties,
    pub codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub properties: Properties,
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub pkid: u16,
    pub properties: Properties,
    /// Empty for MQTT 3.1.1, which has no UNSUBACK payload.
    pub codes: Vec<ReasonCode>,
}

fn props(r: &mut Reader, v: Version, ctx: PropertyContext) -> Result<Properties, DecodeError> {
    if v.is_v5() {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

fn props_len(p: &Properties, v: Version) -> usize {
    if v.is_v5() { p.wire_len() } else { 0 }
}

fn put_props(p: &Properties, v: Version, buf: &mut BytesMut) {
    if v.is_v5() {
        p.encode(buf);
    }
}

impl SubscriptionOptions {
    fn decode(b: u8, v: Version) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8(b & 0x03).ok_or(DecodeError::Malformed(
            "[MQTT-3.8.3-4] subscription QoS of 3",
        ))?;
        if !v.is_v5() {
            if b & 0xFC != 0 {
                return Err(DecodeError::Malformed(
                    "[MQTT-3.8.3-4] reserved subscription option bits set",
                ));
            }
            return Ok(SubscriptionOptions {
                qos,
                ..Default::default()
            });
        }
        if b & 0xC0 != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.8.3-5] reserved subscription option bits set",
            ));
        }
        let retain_handling = match (b >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Protocol("retain handling of 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(&self, v: Version) -> u8 {
        let mut b = self.qos as u8;
        if v.is_v5() {
            b |= u8::from(self.no_local) << 2;
            b |= u8::from(self.retain_as_published) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let pkid = read_pkid(r)?;
        let properties = props(r, v, PropertyContext::Subscribe)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let opts = SubscriptionOptions::decode(r.u8()?, v)?;
            filters.push((filter, opts));
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol(
                "[MQTT-3.8.3-2] SUBSCRIBE without a topic filter",
            ));
        }
        Ok(Subscribe {
            pkid,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        2 + props_len(&self.properties, v)
            + self
                .filters
                .iter()
                .map(|(f, _)| str_len(f) + 1)
                .sum::<usize>()
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u16(self.pkid);
        put_props(&self.properties, v, buf);
        for (f, o) in &self.filters {
            put_str(buf, f);
            buf.put_u8(o.encode(v));
        }
    }
}

const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let pkid = read_pkid(r)?;
        let properties = props(r, v, PropertyContext::SubAck)?;
        let mut codes = Vec::new();
        while !r.is_empty() {
            let allowed: &[u8] = if v.is_v5() {
                SUBACK_CODES
            } else {
                &[0x00, 0x01, 0x02, 0x80]
            };
            codes.push(super::read_reason(r, allowed)?);
        }
        Ok(SubAck {
            pkid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        2 + props_len(&self.properties, v) + self.codes.len()
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u16(self.pkid);
        put_props(&self.properties, v, buf);
        for c in &self.codes {
            let b = if v.is_v5() || !c.is_error() {
                c.as_u8()
            } else {
                0x80
            };
            buf.put_u8(b);
        }
    }
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let pkid = read_pkid(r)?;
        let properties = props(r, v, PropertyContext::Unsubscribe)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol(
                "[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter",
            ));
        }
        Ok(Unsubscribe {
            pkid,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        2 + props_len(&self.properties, v) + self.filters.iter().map(|f| str_len(f)).sum::<usize>()
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u16(self.pkid);
        put_props(&self.properties, v, buf);
        for f in &self.filters {
            put_str(buf, f);
        }
    }
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let pkid = read_pkid(r)?;
        let properties = props(r, v, PropertyContext::UnsubAck)?;
        let mut codes = Vec::new();
        if v.is_v5() {
            while !r.is_empty() {
                codes.push(super::read_reason(r, UNSUBACK_CODES)?);
            }
        }
        Ok(UnsubAck {
            pkid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        if v.is_v5() {
            2 + self.properties.wire_len() + self.codes.len()
        } else {
            2
        }
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u16(self.pkid);
        if v.is_v5() {
            self.properties.encode(buf);
            for c in &self.codes {
                buf.put_u8(c.as_u8());
            }
        }
    }
}
