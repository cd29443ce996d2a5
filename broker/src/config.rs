//! Broker settings. Every knob has a default that works for a developer's laptop; the
//! binary fills this from TOML, environment overrides and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the broker needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// TCP listener addresses for plain MQTT.
    pub tcp: Vec<SocketAddr>,
    /// Accept clients that send no credentials. Off by default.
    pub allow_anonymous: bool,
    /// `username:argon2-hash` lines for device accounts (see `switchboard passwd`).
    pub password_file: Option<PathBuf>,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off.
    pub sys_interval: u64,
    pub limits: Limits,
}

/// Bounds that keep one client from hurting the others. Each says what happens when hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open client connections; further connections are closed right after accept.
    pub max_connections: usize,
    /// Largest packet accepted (MQTT 5 Maximum Packet Size); larger ones end the connection
    /// with 0x95.
    pub max_packet_size: u32,
    /// Unacknowledged incoming QoS 1/2 publishes per client (our Receive Maximum); exceeding
    /// it ends the connection with 0x93.
    pub receive_maximum: u16,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement per client (also capped by the
    /// client's Receive Maximum); the rest wait in the session queue.
    pub max_inflight: u16,
    /// Messages queued per session. When full, a QoS 0 message replaces the oldest queued
    /// QoS 0 message (or is dropped); a QoS 1/2 message is refused for that session and its
    /// publisher gets 0x97 Quota exceeded in PUBACK/PUBREC (MQTT 5).
    pub max_queued_messages: usize,
    /// Payload and topic bytes queued per session; same policy as the count.
    pub max_queued_bytes: usize,
    /// Longest topic name or filter in bytes; longer ones are refused (0x90 / 0x8F).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Subscriptions per session; more are refused in SUBACK with 0x97.
    pub max_subscriptions: usize,
    /// Topic aliases a client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Highest Session Expiry Interval granted, in seconds.
    pub max_session_expiry: u32,
    /// If non-zero, the broker imposes this keep-alive (seconds) on clients asking for a
    /// longer one or none (MQTT 5 Server Keep Alive).
    pub max_keep_alive: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            tcp: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            allow_anonymous: false,
            password_file: None,
            sys_interval: 10,
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 128,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions: 1000,
            topic_alias_maximum: 64,
            max_session_expiry: u32::MAX,
            max_keep_alive: 0,
            connect_timeout: 10,
        }
    }
}
