//! The small packets that carry a reason code: PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-3.7),
//! DISCONNECT (§3.14) and AUTH (§3.15).

use bytes::{BufMut, BytesMut};

use super::{Version, read_pkid, read_reason};
use crate::codec::Reader;
use crate::properties::{Properties, PropertyContext};
use crate::{DecodeError, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP; which one is given by the [`super::Packet`] variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub pkid: u16,
    pub code: ReasonCode,
    pub properties: Properties,
}

/// DISCONNECT, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub code: ReasonCode,
    pub properties: Properties,
}

/// AUTH (MQTT 5 enhanced authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub code: ReasonCode,
    pub properties: Properties,
}

const PUB_RESPONSE_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x92, 0x97, 0x99];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

impl PubResponse {
    /// A success response for `pkid` with no properties.
    pub fn new(pkid: u16) -> Self {
        PubResponse {
            pkid,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let pkid = read_pkid(r)?;
        let mut out = PubResponse::new(pkid);
        if v.is_v5() && !r.is_empty() {
            out.code = read_reason(r, PUB_RESPONSE_CODES)?;
            if !r.is_empty() {
                out.properties = Properties::decode(r, PropertyContext::PubResponse)?;
            }
        }
        Ok(out)
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        if !v.is_v5() || (self.code == ReasonCode::Success && self.properties.is_empty()) {
            2
        } else if self.properties.is_empty() {
            3
        } else {
            3 + self.properties.wire_len()
        }
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        buf.put_u16(self.pkid);
        let n = self.body_len(v);
        if n > 2 {
            buf.put_u8(self.code.as_u8());
        }
        if n > 3 {
            self.properties.encode(buf);
        }
    }
}

impl Disconnect {
    /// A DISCONNECT with `code` and no properties.
    pub fn new(code: ReasonCode) -> Self {
        Disconnect {
            code,
            properties: Properties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, v: Version) -> Result<Self, DecodeError> {
        let mut out = Disconnect::new(ReasonCode::Success);
        if v.is_v5() && !r.is_empty() {
            out.code = read_reason(r, DISCONNECT_CODES)?;
            if !r.is_empty() {
                out.properties = Properties::decode(r, PropertyContext::Disconnect)?;
            }
        }
        Ok(out)
    }

    pub(crate) fn body_len(&self, v: Version) -> usize {
        if !v.is_v5() || (self.code == ReasonCode::Success && self.properties.is_empty()) {
            0
        } else if self.properties.is_empty() {
            1
        } else {
            1 + self.properties.wire_len()
        }
    }

    pub(crate) fn write_body(&self, v: Version, buf: &mut BytesMut) {
        let n = self.body_len(v);
        if n > 0 {
            buf.put_u8(self.code.as_u8());
        }
        if n > 1 {
            self.properties.encode(buf);
        }
    }
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut out = Auth {
            code: ReasonCode::Success,
            properties: Properties::default(),
        };
        if !r.is_empty() {
            out.code = read_reason(r, AUTH_CODES)?;
            out.properties = Properties::decode(r, PropertyContext::Auth)?;
        }
        Ok(out)
    }

    pub(crate) fn body_len(&self) -> usize {
        if self.code == ReasonCode::Success && self.properties.is_empty() {
            0
        } else {
            1 + self.properties.wire_len()
        }
    }

    pub(crate) fn write_body(&self, buf: &mut BytesMut) {
        if self.body_len() > 0 {
            buf.put_u8(self.code.as_u8());
            self.properties.encode(buf);
        }
    }
}
