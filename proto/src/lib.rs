//! Sans-IO MQTT for Switchboard: the codec for every MQTT 3.1.1 and 5.0 packet, topic rules
//! and matching, and the per-connection protocol state machines (server and client).
//!
//! Nothing here touches a socket or a clock: bytes go in, packets come out, and every
//! time-dependent call takes `now`. The broker, the client SDK, the bench tool and the
//! fuzzers all drive the same code.
//!
//! Modules:
//! - [`packet`]: framing and one type per control packet.
//! - [`properties`]: MQTT 5 properties, validated per packet type.
//! - [`topic`]: topic name and filter validation, matching, shared subscriptions.
//! - [`session`]: one connection as a state machine: the server side ([`session::ServerSession`])
//!   and the client side ([`session::ClientSession`], which the client SDK drives).

mod codec;
mod error;
pub mod im;
pub mod packet;
pub mod properties;
mod reason;
pub mod session;
pub mod topic;

pub use codec::{VARINT_MAX, decode_varint, varint_len};
pub use error::DecodeError;
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;

/// Reserved topic on which a client announces the heartbeat (keep-alive) interval it now
/// uses, as ASCII seconds; the broker then expects a packet within 1.5 × that interval.
/// The broker consumes these messages (never routes them); plain MQTT clients never send
/// them and keep the keep-alive of their CONNECT. See the README's protocol section.
pub const KEEP_ALIVE_TOPIC: &str = "$control/keepalive";

/// Reserved topic on which a client declares the network it is on (an id, 1..=64 printable
/// ASCII characters) and asks for that network's heartbeat hint; the broker answers on
/// [`HINT_TOPIC`]. Consumed by the broker, never routed (docs/protocol.md, "Heartbeat
/// hints").
pub const NETWORK_TOPIC: &str = "$control/network";

/// The broker's answer to [`NETWORK_TOPIC`], sent to the asking connection only (no
/// subscription needed): `"{seconds} {network id}"`, seconds 0 when there is no hint.
pub const HINT_TOPIC: &str = "$control/hint";

/// Reserved topic on which a client reports the idle interval its heartbeat proved on a
/// network: `"{seconds} {network id}"`. Consumed by the broker, never routed.
pub const SETTLED_TOPIC: &str = "$control/settled";

/// MQTT 5 CONNACK user property: `"1"` when the broker answers [`NETWORK_TOPIC`] with
/// heartbeat hints (a client asks only then; docs/protocol.md 2.5).
pub const HINTS_PROPERTY: &str = "sb-heartbeat-hints";

/// MQTT 5 CONNACK user property: the longest keep-alive, in seconds, that the broker takes
/// on [`KEEP_ALIVE_TOPIC`] (65535 without a cap): an adaptive heartbeat's ceiling.
pub const MAX_KEEP_ALIVE_PROPERTY: &str = "sb-max-keep-alive";

/// MQTT 5 CONNACK user property: `"1"` when QUIC packets from the client count as
/// keep-alive traffic on a QUIC connection, so a client may keep it alive with QUIC PING
/// frames alone.
pub const QUIC_PING_PROPERTY: &str = "sb-quic-ping";
