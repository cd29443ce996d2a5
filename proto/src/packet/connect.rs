//! CONNECT and CONNACK (spec §3.1, §3.2), including the will message.

use bytes::{BufMut, Bytes, BytesMut};

use super::{QoS, Version};
use crate::codec::{Reader, put_bin, put_str, str_len};
use crate::properties::{Properties, PropertyContext};
use crate::{DecodeError, ReasonCode};

/// The will message a client leaves in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5): delay, expiry, content type, response topic...
    pub properties: Properties,
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: Properties,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ReasonCode,
    pub properties: Properties,
}

impl Connect {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let version = match (&name[..], level) {
            (b"MQTT", 4) => Version::V3_1_1,
            (b"MQTT", 5) => Version::V5,
            (b"MQIsdp", 3) => Version::V3_1,
            (b"MQTT" | b"MQIsdp", other) => return Err(DecodeError::UnsupportedVersion(other)),
            _ => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.2-1] protocol name is not MQTT",
                ));
            }
        };
        let flags = r.u8()?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.1.2-3] reserved CONNECT flag is set",
            ));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03)
            .ok_or(DecodeError::Malformed("[MQTT-3.1.2-12] will QoS of 3"))?;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "[MQTT-3.1.2-11] will QoS or retain set without a will",
            ));
        }
        if !version.is_v5() && has_password && !has_username {
            return Err(DecodeError::Malformed(
                "[MQTT-3.1.2-22] password without user name",
            ));
        }
        let keep_alive = r.u16()?;
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Connect)?
        } else {
            Properties::default()
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if version.is_v5() {
                Properties::decode(r, PropertyContext::Will)?
            } else {
                Properties::default()
            };
            let topic = r.string()?;
            crate::topic::validate_topic_name(&topic).map_err(DecodeError::TopicName)?;
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Connect {
            version,
            client_id,
            clean_start,
            keep_alive,
            properties,
            will,
            username,
            password,
        })
    }

    fn protocol_name(&self) -> &'static str {
        if self.version == Version::V3_1 {
            "MQIsdp"
        } else {
            "MQTT"
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.version.is_v5();
        let mut n = str_len(self.protocol_name()) + 1 + 1 + 2 + str_len(&self.client_id);
        if v5 {
            n += self.properties.wire_len();
        }
        if let Some(w) = &self.will {
            if v5 {
                n += w.properties.wire_len();
            }
            n += str_len(&w.topic) + 2 + w.payload.len();
        }
        if let Some(u) = &self.username {
            n += str_len(u);
        }
        if let Some(p) = &self.password {
            n += 2 + p.len();
        }
        n
    }

    pub(crate) fn write_body(&self, buf: &mut BytesMut) {
        let v5 = self.version.is_v5();
        put_str(buf, self.protocol_name());
        buf.put_u8(self.version as u8);
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(buf);
        }
        put_str(buf, &self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(buf);
            }
            put_str(buf, &w.topic);
            put_bin(buf, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(buf, u);
        }
        if let Some(p) = &self.password {
            put_bin(buf, p);
        }
    }
}

const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.2.2-1] reserved CONNACK flags set",
            ));
        }
        let session_present = flags & 1 == 1;
        if v.is_v5() {
            let code = super::read_reason(r, CONNACK_CODES)?;
            let properties = Properties::decode(r, PropertyContext::ConnAck)?;
            Ok(ConnAck {
                session_present,
                code,
                properties,
            })
        } else {
            let code = ReasonCode::from_v3_connack_code(r.u8()?)
                .ok_or(DecodeError::Malformed("unknown CONNACK return code"))?;
            Ok(ConnAck {
                session_present,
                code,
                properties: Properties::default(),
            })
        }
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        if v.is_v5() {
            2 + self.properties.wire_len()
        } else {
            2
        }
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u8(u8::from(self.session_present));
        if v.is_v5() {
            buf.put_u8(self.code.as_u8());
            self.properties.encode(buf);
        } else {
            buf.put_u8(self.code.v3_connack_code());
        }
    }
}
