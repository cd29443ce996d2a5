//! MQTT 5.0 properties (spec §2.2.2): one struct for every packet type, decoded with the
//! per-packet allow-list, duplicate and value checks of §2.2.2.2 and §3.x.2.2.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::codec::{Reader, put_bin, put_str, put_varint, str_len, varint_len};

/// The packet a property block belongs to; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// All MQTT 5.0 properties. Absent ones are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// One in SUBSCRIBE; one per matching subscription in PUBLISH.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

pub(crate) mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_AVAILABLE: u8 = 0x2A;
}

impl PropertyContext {
    /// Whether property `pid` may appear in this packet (spec §2.2.2.2 table).
    fn allows(self, pid: u8) -> bool {
        use PropertyContext::*;
        use id::*;
        match pid {
            PAYLOAD_FORMAT | MESSAGE_EXPIRY | CONTENT_TYPE | RESPONSE_TOPIC | CORRELATION_DATA => {
                matches!(self, Publish | Will)
            }
            SUBSCRIPTION_ID => matches!(self, Publish | Subscribe),
            SESSION_EXPIRY => matches!(self, Connect | ConnAck | Disconnect),
            ASSIGNED_CLIENT_ID | RETAIN_AVAILABLE | WILDCARD_AVAILABLE | SUB_ID_AVAILABLE
            | SHARED_AVAILABLE | MAXIMUM_QOS | RESPONSE_INFO | SERVER_KEEP_ALIVE => self == ConnAck,
            AUTH_METHOD | AUTH_DATA => matches!(self, Connect | ConnAck | Auth),
            REQUEST_PROBLEM | REQUEST_RESPONSE => self == Connect,
            WILL_DELAY => self == Will,
            SERVER_REFERENCE => matches!(self, ConnAck | Disconnect),
            REASON_STRING => !matches!(self, Connect | Will | Publish | Subscribe | Unsubscribe),
            RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
                matches!(self, Connect | ConnAck)
            }
            TOPIC_ALIAS => self == Publish,
            USER_PROPERTY => true,
            _ => false,
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(
            "[MQTT-2.2.2-2] property included more than once",
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(r: &mut Reader, what: &'static str) -> Result<u8, DecodeError> {
    let v = r.u8()?;
    if v > 1 {
        return Err(DecodeError::Protocol(what));
    }
    Ok(v)
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Reads a property length and block from `r`, validating it for `ctx`.
    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint()? as usize;
        let mut r = Reader::new(r.take(len)?);
        let mut p = Properties::default();
        while !r.is_empty() {
            let pid = r.varint()?;
            let pid = u8::try_from(pid)
                .map_err(|_| DecodeError::Malformed("unknown property identifier"))?;
            if !ctx.allows(pid) {
                return Err(DecodeError::Malformed(
                    "[MQTT-2.2.2-1] property not valid for this packet type",
                ));
            }
            match pid {
                id::PAYLOAD_FORMAT => set_once(
                    &mut p.payload_format_indicator,
                    flag(&mut r, "payload format indicator must be 0 or 1")?,
                )?,
                id::MESSAGE_EXPIRY => set_once(&mut p.message_expiry_interval, r.u32()?)?,
                id::CONTENT_TYPE => set_once(&mut p.content_type, r.string()?)?,
                id::RESPONSE_TOPIC => {
                    let t = r.string()?;
                    crate::topic::validate_topic_name(&t).map_err(|_| {
                        DecodeError::Protocol("[MQTT-3.3.2-14] response topic must be a topic name")
                    })?;
                    set_once(&mut p.response_topic, t)?
                }
                id::CORRELATION_DATA => set_once(&mut p.correlation_data, r.binary()?)?,
                id::SUBSCRIPTION_ID => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "[MQTT-3.8.2-1] subscription identifier of 0",
                        ));
                    }
                    if ctx == PropertyContext::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol(
                            "[MQTT-2.2.2-2] more than one subscription identifier in SUBSCRIBE",
                        ));
                    }
                    p.subscription_identifiers.push(v);
                }
                id::SESSION_EXPIRY => set_once(&mut p.session_expiry_interval, r.u32()?)?,
                id::ASSIGNED_CLIENT_ID => set_once(&mut p.assigned_client_identifier, r.string()?)?,
                id::SERVER_KEEP_ALIVE => set_once(&mut p.server_keep_alive, r.u16()?)?,
                id::AUTH_METHOD => set_once(&mut p.authentication_method, r.string()?)?,
                id::AUTH_DATA => set_once(&mut p.authentication_data, r.binary()?)?,
                id::REQUEST_PROBLEM => set_once(
                    &mut p.request_problem_information,
                    flag(&mut r, "request problem information must be 0 or 1")?,
                )?,
                id::WILL_DELAY => set_once(&mut p.will_delay_interval, r.u32()?)?,
                id::REQUEST_RESPONSE => set_once(
                    &mut p.request_response_information,
                    flag(&mut r, "request response information must be 0 or 1")?,
                )?,
                id::RESPONSE_INFO => set_once(&mut p.response_information, r.string()?)?,
                id::SERVER_REFERENCE => set_once(&mut p.server_reference, r.string()?)?,
                id::REASON_STRING => set_once(&mut p.reason_string, r.string()?)?,
                id::RECEIVE_MAXIMUM => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "[MQTT-3.1.2-22] receive maximum of 0",
                        ));
                    }
                    set_once(&mut p.receive_maximum, v)?
                }
                id::TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, r.u16()?)?,
                id::TOPIC_ALIAS => set_once(&mut p.topic_alias, r.u16()?)?,
                id::MAXIMUM_QOS => set_once(
                    &mut p.maximum_qos,
                    flag(&mut r, "maximum QoS must be 0 or 1")?,
                )?,
                id::RETAIN_AVAILABLE => set_once(
                    &mut p.retain_available,
                    flag(&mut r, "retain available must be 0 or 1")?,
                )?,
                id::USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "[MQTT-3.1.2-24] maximum packet size of 0",
                        ));
                    }
                    set_once(&mut p.maximum_packet_size, v)?
                }
                id::WILDCARD_AVAILABLE => set_once(
                    &mut p.wildcard_subscription_available,
                    flag(&mut r, "wildcard subscription available must be 0 or 1")?,
                )?,
                id::SUB_ID_AVAILABLE => set_once(
                    &mut p.subscription_identifier_available,
                    flag(&mut r, "subscription identifier available must be 0 or 1")?,
                )?,
                id::SHARED_AVAILABLE => set_once(
                    &mut p.shared_subscription_available,
                    flag(&mut r, "shared subscription available must be 0 or 1")?,
                )?,
                _ => return Err(DecodeError::Malformed("unknown property identifier")),
            }
        }
        Ok(p)
    }

    /// Length of the property block, without its own length prefix.
    pub fn len(&self) -> usize {
        let byte = |o: &Option<u8>| o.map_or(0, |_| 2);
        let short = |o: &Option<u16>| o.map_or(0, |_| 3);
        let int = |o: &Option<u32>| o.map_or(0, |_| 5);
        let s = |o: &Option<String>| o.as_ref().map_or(0, |v| 1 + str_len(v));
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 3 + v.len());
        byte(&self.payload_format_indicator)
            + int(&self.message_expiry_interval)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|&v| 1 + varint_len(v as usize))
                .sum::<usize>()
            + int(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + short(&self.server_keep_alive)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + byte(&self.request_problem_information)
            + int(&self.will_delay_interval)
            + byte(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + short(&self.receive_maximum)
            + short(&self.topic_alias_maximum)
            + short(&self.topic_alias)
            + byte(&self.maximum_qos)
            + byte(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + str_len(k) + str_len(v))
                .sum::<usize>()
            + int(&self.maximum_packet_size)
            + byte(&self.wildcard_subscription_available)
            + byte(&self.subscription_identifier_available)
            + byte(&self.shared_subscription_available)
    }

    /// Length of the block including its variable byte integer prefix.
    pub fn wire_len(&self) -> usize {
        let n = self.len();
        varint_len(n) + n
    }

    /// Writes the length prefix and the block.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        put_varint(buf, self.len());
        let byte = |buf: &mut BytesMut, pid: u8, o: Option<u8>| {
            if let Some(v) = o {
                buf.put_u8(pid);
                buf.put_u8(v);
            }
        };
        let short = |buf: &mut BytesMut, pid: u8, o: Option<u16>| {
            if let Some(v) = o {
                buf.put_u8(pid);
                buf.put_u16(v);
            }
        };
        let int = |buf: &mut BytesMut, pid: u8, o: Option<u32>| {
            if let Some(v) = o {
                buf.put_u8(pid);
                buf.put_u32(v);
            }
        };
        let s = |buf: &mut BytesMut, pid: u8, o: &Option<String>| {
            if let Some(v) = o {
                buf.put_u8(pid);
                put_str(buf, v);
            }
        };
        let b = |buf: &mut BytesMut, pid: u8, o: &Option<Bytes>| {
            if let Some(v) = o {
                buf.put_u8(pid);
                put_bin(buf, v);
            }
        };
        byte(buf, id::PAYLOAD_FORMAT, self.payload_format_indicator);
        int(buf, id::MESSAGE_EXPIRY, self.message_expiry_interval);
        s(buf, id::CONTENT_TYPE, &self.content_type);
        s(buf, id::RESPONSE_TOPIC, &self.response_topic);
        b(buf, id::CORRELATION_DATA, &self.correlation_data);
        for &v in &self.subscription_identifiers {
            buf.put_u8(id::SUBSCRIPTION_ID);
            put_varint(buf, v as usize);
        }
        int(buf, id::SESSION_EXPIRY, self.session_expiry_interval);
        s(
            buf,
            id::ASSIGNED_CLIENT_ID,
            &self.assigned_client_identifier,
        );
        short(buf, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        s(buf, id::AUTH_METHOD, &self.authentication_method);
        b(buf, id::AUTH_DATA, &self.authentication_data);
        byte(buf, id::REQUEST_PROBLEM, self.request_problem_information);
        int(buf, id::WILL_DELAY, self.will_delay_interval);
        byte(buf, id::REQUEST_RESPONSE, self.request_response_information);
        s(buf, id::RESPONSE_INFO, &self.response_information);
        s(buf, id::SERVER_REFERENCE, &self.server_reference);
        s(buf, id::REASON_STRING, &self.reason_string);
        short(buf, id::RECEIVE_MAXIMUM, self.receive_maximum);
        short(buf, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        short(buf, id::TOPIC_ALIAS, self.topic_alias);
        byte(buf, id::MAXIMUM_QOS, self.maximum_qos);
        byte(buf, id::RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            buf.put_u8(id::USER_PROPERTY);
            put_str(buf, k);
            put_str(buf, v);
        }
        int(buf, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        byte(
            buf,
            id::WILDCARD_AVAILABLE,
            self.wildcard_subscription_available,
        );
        byte(
            buf,
            id::SUB_ID_AVAILABLE,
            self.subscription_identifier_available,
        );
        byte(
            buf,
            id::SHARED_AVAILABLE,
            self.shared_subscription_available,
        );
    }
}
