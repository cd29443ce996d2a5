//! The client session's public vocabulary: its configuration, the limits the server
//! announced, the events it reports and the errors it returns.

use std::time::Duration;

use bytes::Bytes;

use crate::ReasonCode;
use crate::packet::*;
use crate::session::Violation;

/// What the client asks for and the limits it applies to itself.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// MQTT 5 or 3.1.1 (3.1.1 ignores every property below that only MQTT 5 carries).
    pub version: Version,
    pub client_id: String,
    /// Clean Start on every connection. With `false` the server keeps the session and
    /// unacknowledged messages are resent on reconnect.
    pub clean_start: bool,
    /// Ping after this much time without sending anything; zero turns keep-alive off.
    /// Announced in CONNECT rounded up to seconds; changed at runtime with
    /// [`ClientSession::set_keep_alive`].
    pub keep_alive: Duration,
    /// How long to wait for PINGRESP after PINGREQ.
    pub ping_timeout: Duration,
    /// How long to wait for CONNACK after CONNECT.
    pub connack_timeout: Duration,
    /// MQTT 5 Session Expiry Interval, seconds.
    pub session_expiry: u32,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Will>,
    /// Largest packet accepted from the server (announced as Maximum Packet Size); a larger
    /// one ends the connection with DISCONNECT 0x95.
    pub max_packet_size: u32,
    /// Incoming QoS 2 messages awaiting PUBREL at once (announced as Receive Maximum); a
    /// server that exceeds it is disconnected with 0x93.
    pub receive_maximum: u16,
    /// Topic aliases the server may use towards us (announced as Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Our own cap on outgoing QoS 1/2 messages awaiting acknowledgement; the server's
    /// Receive Maximum caps it further.
    pub max_inflight: u16,
    /// Publishes waiting for the connection or for room in the window. At the bound,
    /// [`ClientSession::publish`] refuses with [`RequestError::QueueFull`]: the caller
    /// decides whether to drop, wait or fail.
    pub max_queued: usize,
}

impl ClientConfig {
    /// MQTT 5, clean start, no session expiry, 60 s keep-alive, 1 MiB packets.
    pub fn new(client_id: &str) -> Self {
        ClientConfig {
            version: Version::V5,
            client_id: client_id.to_owned(),
            clean_start: true,
            keep_alive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
            connack_timeout: Duration::from_secs(10),
            session_expiry: 0,
            username: None,
            password: None,
            will: None,
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            topic_alias_maximum: 16,
            max_inflight: 1024,
            max_queued: 1000,
        }
    }
}

/// What the server announced in CONNACK (MQTT 5 defaults when absent, and for 3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// QoS 1/2 publishes the server takes unacknowledged at once.
    pub receive_maximum: u16,
    /// Largest packet the server accepts.
    pub maximum_packet_size: u32,
    /// Topic aliases the server accepts from us.
    pub topic_alias_maximum: u16,
    /// Server Keep Alive, when the server imposed one (seconds).
    pub server_keep_alive: Option<u16>,
    pub maximum_qos: QoS,
    pub retain_available: bool,
    /// The CONNACK's user properties (a broker's extensions: heartbeat hints...).
    pub user_properties: Vec<(String, String)>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            receive_maximum: u16::MAX,
            maximum_packet_size: u32::MAX,
            topic_alias_maximum: 0,
            server_keep_alive: None,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            user_properties: Vec::new(),
        }
    }
}

/// What the application must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// CONNACK accepted the connection. Without `session_present` the server has no
    /// subscriptions of ours: subscribe again.
    Connected {
        session_present: bool,
        /// The client identifier the server assigned (MQTT 5), if it did.
        assigned_client_id: Option<String>,
        limits: ServerLimits,
    },
    /// An application message (already acknowledged, delivered exactly once for QoS 2).
    Message(Box<Publish>),
    /// An outgoing QoS 1/2 publish is finished: PUBACK or PUBCOMP arrived (`code` success),
    /// the server refused it (PUBACK/PUBREC error code), or it could never be sent
    /// (it was queued and the server's limits refuse it: [`ReasonCode::PacketTooLarge`],
    /// [`ReasonCode::QosNotSupported`] or [`ReasonCode::RetainNotSupported`]).
    Published { pkid: u16, code: ReasonCode },
    /// SUBACK for the SUBSCRIBE with this packet identifier: one code per filter.
    SubAck { pkid: u16, codes: Vec<ReasonCode> },
    /// UNSUBACK for the UNSUBSCRIBE with this identifier (empty codes for 3.1.1).
    UnsubAck { pkid: u16, codes: Vec<ReasonCode> },
    /// PINGRESP answered our keep-alive PINGREQ.
    Pong,
}

/// Why the connection ended. The session survives it: call [`ClientSession::connect`] on
/// a new connection to resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server broke the protocol; DISCONNECT with the violation's code was queued (MQTT 5).
    #[error("the server broke the protocol: {0}")]
    Violation(#[from] Violation),
    /// CONNACK refused the connection.
    #[error("connection refused: {code}")]
    Refused {
        code: ReasonCode,
        reason: Option<String>,
    },
    /// The server sent DISCONNECT.
    #[error("disconnected by the server: {code}")]
    Disconnected {
        code: ReasonCode,
        reason: Option<String>,
    },
    /// No PINGRESP within the ping timeout (§3.1.2.10): the link is dead.
    #[error("no PINGRESP in time")]
    PingTimeout,
    /// No CONNACK within the CONNACK timeout.
    #[error("no CONNACK in time")]
    ConnAckTimeout,
}

/// Why a publish, subscribe or unsubscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The bounded queue of waiting publishes is full.
    #[error("publish queue full")]
    QueueFull,
    /// [MQTT-3.2.2-15] larger than the server's Maximum Packet Size.
    #[error("larger than the server's maximum packet size")]
    TooLarge,
    /// Every packet identifier is in flight.
    #[error("no free packet identifier")]
    NoPacketId,
    /// A topic name or filter breaks the topic rules.
    #[error("invalid topic: {0}")]
    InvalidTopic(&'static str),
    /// [MQTT-3.2.2-11] above the server's Maximum QoS.
    #[error("QoS above the server's maximum")]
    QosNotSupported,
    /// [MQTT-3.2.2-14] retained messages are not available on this server.
    #[error("the server does not keep retained messages")]
    RetainNotSupported,
    /// A SUBSCRIBE or UNSUBSCRIBE needs at least one filter ([MQTT-3.8.3-2]).
    #[error("no topic filter")]
    NoFilter,
}
