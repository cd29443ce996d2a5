//! Bounds-checked reading and the primitive encodings of MQTT (spec §1.5): two- and
//! four-byte integers, variable byte integers, UTF-8 strings and binary data.
//!
//! Every read checks the remaining length first, so a truncated or lying packet yields a
//! [`DecodeError`] instead of a panic. Limits are enforced while decoding, never after.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Largest value a variable byte integer can carry (four bytes).
pub const VARINT_MAX: u32 = 268_435_455;

/// A cursor over one packet's bytes. Slices it hands out share the packet's buffer.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            Err(DecodeError::Malformed(
                "field runs past the end of the packet",
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        let b = &self.buf[self.pos..self.pos + 4];
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        self.pos += 4;
        Ok(v)
    }

    /// A variable byte integer (§1.5.5), rejecting encodings longer than needed.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let (value, used) = decode_varint(&self.buf[self.pos..])?
            .ok_or(DecodeError::Malformed("variable byte integer truncated"))?;
        self.pos += used;
        Ok(value)
    }

    /// `n` bytes, sharing the underlying buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// Binary data: a two-byte length and that many bytes (§1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 encoded string (§1.5.4): well-formed, no U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw)
            .map_err(|_| DecodeError::Malformed("[MQTT-1.5.4-1] ill-formed UTF-8 string"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed(
                "[MQTT-1.5.4-2] UTF-8 string contains U+0000",
            ));
        }
        Ok(s.to_owned())
    }
}

/// Decodes a variable byte integer from the start of `buf`. `Ok(None)` means more bytes
/// are needed; returns the value and the number of bytes used.
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        if i > 0 && byte == 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-1.5.5-1] variable byte integer not in its shortest form",
            ));
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than four bytes",
    ))
}

/// Bytes a variable byte integer of `value` occupies.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Size of a whole packet whose body (after the fixed header) is `body` bytes.
pub(crate) fn packet_len(body: usize) -> usize {
    1 + varint_len(body) + body
}

/// Makes room for a whole packet of `body` bytes and writes its fixed header.
pub(crate) fn put_fixed_header(buf: &mut BytesMut, header: u8, body: usize) {
    buf.reserve(packet_len(body));
    buf.put_u8(header);
    put_varint(buf, body);
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut value: usize) {
    debug_assert!(value <= VARINT_MAX as usize);
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

pub(crate) fn put_str(buf: &mut BytesMut, s: &str) {
    put_bin(buf, s.as_bytes());
}

pub(crate) fn put_bin(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// Encoded size of a string or binary field: its two-byte length plus its bytes.
pub(crate) fn str_len(s: &str) -> usize {
    2 + s.len()
}
