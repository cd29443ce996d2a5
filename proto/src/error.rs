//! Decoding errors. Each names the normative statement it enforces and maps to the reason
//! code the broker sends before closing the connection.

use crate::ReasonCode;

/// Why a packet could not be decoded. The `&'static str` names the rule broken, in the
/// form `"[MQTT-x.y.z-n] what was wrong"`, for logs and DISCONNECT reason strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not form a valid packet (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the receiver's Maximum Packet Size (reason 0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    /// CONNECT named a protocol level this server does not speak (reason 0x84).
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
    /// A PUBLISH topic name breaks the topic rules (reason 0x90).
    #[error("invalid topic name: {0}")]
    TopicName(&'static str),
    /// A payload marked as UTF-8 is not valid UTF-8 (reason 0x99).
    #[error("[MQTT-3.3.2-4] payload format indicator says UTF-8 but the payload is not")]
    PayloadFormat,
    /// A topic filter breaks the topic rules (reason 0x8F).
    #[error("invalid topic filter: {0}")]
    TopicFilter(&'static str),
}

impl DecodeError {
    /// The reason code to report to the peer.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::TooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::TopicName(_) => ReasonCode::TopicNameInvalid,
            DecodeError::TopicFilter(_) => ReasonCode::TopicFilterInvalid,
            DecodeError::PayloadFormat => ReasonCode::PayloadFormatInvalid,
        }
    }
}
