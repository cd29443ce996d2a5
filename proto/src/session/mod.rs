//! One MQTT connection as a sans-IO state machine, both sides, in the style of `quinn-proto`:
//! bytes are pushed in with `handle_read(now, buf)`, outgoing bytes are pulled with
//! `take_transmit()`, events are pulled with `poll_event()`, and time only enters through
//! `now` arguments.
//!
//! - [`ServerSession`] (module `server`): the broker's side of one connection.
//! - [`client`]: the client's side of one logical session across connections, used by the
//!   client SDK.
//!
//! This module holds the types both sides share (the [`Violation`] that ends a connection)
//! and the server's public types.

pub mod client;
mod server;

pub use client::{
    ClientConfig, ClientError, ClientEvent, ClientSession, RequestError, ServerLimits,
};
pub use server::DormantSession;
pub use server::ServerSession;

use crate::packet::*;
use crate::properties::Properties;
use crate::{DecodeError, ReasonCode};

/// Limits this server applies to one connection.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest packet accepted from the client.
    pub max_packet_size: u32,
    /// Incoming QoS 1/2 publishes the client may have unacknowledged at once.
    pub receive_maximum: u16,
    /// Topic aliases the client may use towards us.
    pub topic_alias_maximum: u16,
    /// Outgoing QoS 1/2 publishes awaiting acknowledgement, further capped by the client's
    /// Receive Maximum.
    pub max_inflight: u16,
    /// Topic aliases we use towards the client, capped by what it allows.
    pub outgoing_topic_aliases: u16,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_inflight: 1024,
            outgoing_topic_aliases: 64,
        }
    }
}

/// A protocol violation: the connection must end with this reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code})")]
pub struct Violation {
    pub code: ReasonCode,
    pub reason: &'static str,
}

impl Violation {
    fn new(code: ReasonCode, reason: &'static str) -> Self {
        Violation { code, reason }
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Self {
        let reason = match e {
            DecodeError::Malformed(s)
            | DecodeError::Protocol(s)
            | DecodeError::TopicName(s)
            | DecodeError::TopicFilter(s) => s,
            DecodeError::TooLarge { .. } => "[MQTT-3.2.2-15] packet exceeds maximum packet size",
            DecodeError::UnsupportedVersion(_) => "unsupported protocol version",
            DecodeError::PayloadFormat => "[MQTT-3.3.2-4] payload is not valid UTF-8",
        };
        Violation::new(e.reason_code(), reason)
    }
}

/// What the broker must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client asks to connect; answer with [`ServerSession::accept`] or
    /// [`ServerSession::reject`].
    Connect(Box<Connect>),
    /// An application message to route. For QoS 1/2 answer with
    /// [`ServerSession::ack_publish`] once it is routed (and stored).
    Publish(Box<Publish>),
    /// Answer with [`ServerSession::send_suback`].
    Subscribe(Subscribe),
    /// Answer with [`ServerSession::send_unsuback`].
    Unsubscribe(Unsubscribe),
    /// The client ended the connection with DISCONNECT.
    Disconnect(Disconnect),
    /// An outgoing QoS 1/2 message was fully acknowledged by the client.
    Delivered { pkid: u16 },
    /// PUBREL arrived for an incoming QoS 2 message: its identifier is free again.
    Released { pkid: u16 },
    /// PUBREC arrived for an outgoing QoS 2 message and PUBREL went out: the client has it;
    /// only PUBCOMP is awaited.
    Received { pkid: u16 },
    /// An enhanced-authentication step (AUTH 0x18 during CONNECT or a re-authentication, or
    /// AUTH 0x19 starting one); answer with [`ServerSession::auth_continue`],
    /// [`ServerSession::auth_success`], [`ServerSession::accept`] or a refusal.
    Auth(crate::packet::Auth),
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitAck(Box<Publish>),
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitComp,
}

/// The packet identifier state that survives the connection in a persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InflightState {
    /// Outgoing messages not yet completed, in the order they were first sent.
    pub outbound: Vec<(u16, Outbound)>,
    /// Incoming QoS 2 packet identifiers whose PUBREL has not arrived.
    pub awaiting_rel: Vec<u16>,
}

/// Why an outgoing publish was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// [MQTT-3.1.2-25] larger than the client's Maximum Packet Size: discarded as if delivered.
    #[error("larger than the client's maximum packet size")]
    TooLarge,
    /// The inflight window is full; try again after an acknowledgement.
    #[error("inflight window full")]
    WindowFull,
    /// The connection is not in the connected state.
    #[error("not connected")]
    NotConnected,
}

/// What the broker grants in CONNACK.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub session_present: bool,
    /// Properties to add to CONNACK (assigned client id, session expiry, reason string...).
    /// The machine fills in receive maximum, topic alias maximum, maximum packet size and
    /// server keep alive itself.
    pub properties: Properties,
    /// Overrides the client's keep-alive (MQTT 5 Server Keep Alive; silently for 3.1.1).
    pub server_keep_alive: Option<u16>,
    /// State of a resumed session: unacknowledged messages are sent again.
    pub resume: Option<InflightState>,
}

#[cfg(test)]
mod pair;
