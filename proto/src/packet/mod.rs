//! MQTT control packets (spec §3): framing, the [`Packet`] enum, and the dispatch of decoding
//! and encoding to one module per packet family.
//!
//! Decoding takes a whole frame from a [`BytesMut`] only once it is complete and within the
//! receiver's Maximum Packet Size, so a peer cannot make us buffer more than that limit.

mod ack;
mod connect;
mod publish;
mod subscribe;

use bytes::BytesMut;

pub use ack::{Auth, Disconnect, PubResponse};
pub use connect::{ConnAck, Connect, Will};
pub use publish::{PlainPublish, Publish};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use crate::codec::{Reader, decode_varint};
use crate::{DecodeError, ReasonCode};

/// Protocol level negotiated in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// MQTT 3.1 (protocol name `MQIsdp`), served with 3.1.1 semantics.
    V3_1 = 3,
    V3_1_1 = 4,
    V5 = 5,
}

impl Version {
    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == Version::V5
    }
}

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// A complete frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The first byte: packet type and flags.
    pub header: u8,
    /// Bytes of fixed header (type byte + remaining length).
    pub header_len: usize,
    /// Remaining length.
    pub body_len: usize,
}

impl Frame {
    /// Whole packet size.
    pub fn len(&self) -> usize {
        self.header_len + self.body_len
    }

    /// Never true: a frame has at least its fixed header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Looks for a frame at the start of `buf`. `Ok(None)`: not all of it has arrived yet.
/// The size check against `max_size` happens as soon as the remaining length is known.
pub fn check_frame(buf: &[u8], max_size: usize) -> Result<Option<Frame>, DecodeError> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    let Some((body_len, used)) = decode_varint(&buf[1..])? else {
        return Ok(None);
    };
    let frame = Frame {
        header,
        header_len: 1 + used,
        body_len: body_len as usize,
    };
    if frame.len() > max_size {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            max: max_size,
        });
    }
    if buf.len() < frame.len() {
        return Ok(None);
    }
    Ok(Some(frame))
}

fn expect_flags(header: u8, flags: u8) -> Result<(), DecodeError> {
    if header & 0x0F != flags {
        return Err(DecodeError::Malformed(
            "[MQTT-2.1.3-1] reserved fixed header flags are wrong",
        ));
    }
    Ok(())
}

impl Packet {
    /// Removes one packet from the front of `buf` and decodes it.
    ///
    /// `version` is the connection's negotiated version (CONNECT decodes its own). Returns
    /// `Ok(None)` when the packet is not complete yet.
    pub fn read(
        buf: &mut BytesMut,
        version: Version,
        max_size: usize,
    ) -> Result<Option<Packet>, DecodeError> {
        let Some(frame) = check_frame(buf, max_size)? else {
            return Ok(None);
        };
        let mut bytes = buf.split_to(frame.len()).freeze();
        let body = bytes.split_off(frame.header_len);
        Self::decode_body(frame.header, Reader::new(body), version).map(Some)
    }

    fn decode_body(header: u8, mut r: Reader, v: Version) -> Result<Packet, DecodeError> {
        let kind = header >> 4;
        let packet = match kind {
            1 => {
                expect_flags(header, 0)?;
                Packet::Connect(Box::new(Connect::decode(&mut r)?))
            }
            2 => {
                expect_flags(header, 0)?;
                Packet::ConnAck(ConnAck::decode(&mut r, v)?)
            }
            3 => Packet::Publish(Publish::decode(header, &mut r, v)?),
            4 => {
                expect_flags(header, 0)?;
                Packet::PubAck(PubResponse::decode(&mut r, v)?)
            }
            5 => {
                expect_flags(header, 0)?;
                Packet::PubRec(PubResponse::decode(&mut r, v)?)
            }
            6 => {
                expect_flags(header, 2)?;
                Packet::PubRel(PubResponse::decode(&mut r, v)?)
            }
            7 => {
                expect_flags(header, 0)?;
                Packet::PubComp(PubResponse::decode(&mut r, v)?)
            }
            8 => {
                expect_flags(header, 2)?;
                Packet::Subscribe(Subscribe::decode(&mut r, v)?)
            }
            9 => {
                expect_flags(header, 0)?;
                Packet::SubAck(SubAck::decode(&mut r, v)?)
            }
            10 => {
                expect_flags(header, 2)?;
                Packet::Unsubscribe(Unsubscribe::decode(&mut r, v)?)
            }
            11 => {
                expect_flags(header, 0)?;
                Packet::UnsubAck(UnsubAck::decode(&mut r, v)?)
            }
            12 => {
                expect_flags(header, 0)?;
                Packet::PingReq
            }
            13 => {
                expect_flags(header, 0)?;
                Packet::PingResp
            }
            14 => {
                expect_flags(header, 0)?;
                Packet::Disconnect(Disconnect::decode(&mut r, v)?)
            }
            15 if v.is_v5() => {
                expect_flags(header, 0)?;
                Packet::Auth(Auth::decode(&mut r)?)
            }
            _ => return Err(DecodeError::Malformed("reserved packet type")),
        };
        if !r.is_empty() {
            return Err(DecodeError::Malformed(
                "packet has bytes beyond its last field",
            ));
        }
        Ok(packet)
    }

    /// The first byte of the fixed header.
    fn header(&self) -> u8 {
        match self {
            Packet::Connect(_) => 0x10,
            Packet::ConnAck(_) => 0x20,
            Packet::Publish(p) => p.header(),
            Packet::PubAck(_) => 0x40,
            Packet::PubRec(_) => 0x50,
            Packet::PubRel(_) => 0x62,
            Packet::PubComp(_) => 0x70,
            Packet::Subscribe(_) => 0x82,
            Packet::SubAck(_) => 0x90,
            Packet::Unsubscribe(_) => 0xA2,
            Packet::UnsubAck(_) => 0xB0,
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect(_) => 0xE0,
            Packet::Auth(_) => 0xF0,
        }
    }

    /// Remaining length when encoded for `v`.
    fn body_len(&self, v: Version) -> usize {
        match self {
            Packet::Connect(p) => p.body_len(),
            Packet::ConnAck(p) => p.body_len(v),
            Packet::Publish(p) => p.body_len(v),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.body_len(v)
            }
            Packet::Subscribe(p) => p.body_len(v),
            Packet::SubAck(p) => p.body_len(v),
            Packet::Unsubscribe(p) => p.body_len(v),
            Packet::UnsubAck(p) => p.body_len(v),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.body_len(v),
            Packet::Auth(p) => p.body_len(),
        }
    }

    /// Size of the whole packet when encoded for `v`.
    pub fn encoded_len(&self, v: Version) -> usize {
        crate::codec::packet_len(self.body_len(v))
    }

    /// Appends the packet, encoded for `v`, to `buf`.
    pub fn encode(&self, v: Version, buf: &mut BytesMut) {
        crate::codec::put_fixed_header(buf, self.header(), self.body_len(v));
        match self {
            Packet::Connect(p) => p.write_body(buf),
            Packet::ConnAck(p) => p.write_body(v, buf),
            Packet::Publish(p) => p.write_body(v, buf),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.write_body(v, buf)
            }
            Packet::Subscribe(p) => p.write_body(v, buf),
            Packet::SubAck(p) => p.write_body(v, buf),
            Packet::Unsubscribe(p) => p.write_body(v, buf),
            Packet::UnsubAck(p) => p.write_body(v, buf),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.write_body(v, buf),
            Packet::Auth(p) => p.write_body(buf),
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// Reads a non-zero packet identifier ([MQTT-2.2.1-3]).
pub(crate) fn read_pkid(r: &mut Reader) -> Result<u16, DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-2.2.1-3] packet identifier of 0",
        ));
    }
    Ok(id)
}

/// Reads a reason code byte that must be one of `allowed`.
pub(crate) fn read_reason(r: &mut Reader, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let b = r.u8()?;
    if !allowed.contains(&b) {
        return Err(DecodeError::Malformed(
            "reason code not valid for this packet",
        ));
    }
    ReasonCode::from_u8(b).ok_or(DecodeError::Malformed("unknown reason code"))
}
