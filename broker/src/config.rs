//! Broker settings. Every knob has a default that works for a developer's laptop; the
//! binary fills this from TOML, environment overrides and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the broker needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub listeners: Listeners,
    /// Certificate and key for TLS, WSS and QUIC.
    pub tls: TlsFiles,
    /// Accept clients that send no credentials. Off by default.
    pub allow_anonymous: bool,
    /// `username:argon2-hash` lines for device accounts (see `switchboard passwd`).
    pub password_file: Option<PathBuf>,
    /// ACL rules in mosquitto's format (plus `share` rules); none: every topic is allowed
    /// (except publishing to `$` topics). Reloaded on SIGHUP and `switchboard ctl acl reload`.
    pub acl_file: Option<PathBuf>,
    /// Bounds on password checking (rate per address, back-off, pool size).
    pub auth: AuthLimits,
    /// The operator HTTP API (`/metrics`, `/api/v1/...`).
    pub admin: AdminConfig,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off.
    pub sys_interval: u64,
    pub limits: Limits,
    /// Response Information for MQTT 5 clients that ask for it (Request Response
    /// Information = 1): this prefix followed by the client id and `/`, a topic space for
    /// the responses the client asks for. Empty: no Response Information.
    pub response_topic_prefix: String,
    /// Send clients to another server (cluster mode, maintenance).
    pub redirect: Redirect,
    /// Heartbeat hints per network (`$control/network`, `$control/settled`).
    pub heartbeat_hints: crate::hints::HintConfig,
    /// Cluster mode (routing over NATS, durable state in PostgreSQL). Set by the binary
    /// from its top-level `cluster` section (`SWITCHBOARD__CLUSTER__...`), not read from the
    /// `broker` section.
    #[serde(skip)]
    pub cluster: ClusterConfig,
}

/// Cluster mode (`docs/cluster.md`): several nodes share routing over NATS core (off while
/// `nats_url` is unset) and their durable state in PostgreSQL (off while `postgres_url` is
/// unset).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (`node1`); required in cluster mode. No
    /// whitespace or control characters.
    pub node_id: String,
    /// The NATS server (`nats://127.0.0.1:4222`) that carries routing between nodes.
    pub nats_url: Option<String>,
    /// First token of every NATS subject the cluster uses, so that several clusters can
    /// share one NATS server.
    pub subject_prefix: String,
    /// Messages waiting to be published to NATS; when full, further forwards are dropped
    /// (counted in `switchboard_cluster_forward_dropped_total`, logged).
    pub forward_queue: usize,
    /// Messages received from NATS waiting to be routed locally; when full the NATS reader
    /// waits (and the NATS client's own per-subscription buffer takes the backlog).
    pub inbound_queue: usize,
    /// The PostgreSQL database that holds the durable state of every node
    /// (`postgres://user:password@host:5432/switchboard`); set, it replaces the embedded
    /// redb file. Unset: the embedded store.
    pub postgres_url: Option<String>,
    /// Seconds a node's lease lasts (with `postgres_url`): a node that has not renewed it
    /// for that long is taken for dead, and a survivor adopts its sessions and fires the
    /// wills of its connections. Renewed every third of it.
    pub lease_secs: u64,
    /// Server Reference given to clients while this node drains (`switchboard ctl
    /// drain`); unset: another live node's address from the leases.
    pub redirect_to: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            nats_url: None,
            subject_prefix: "sb".into(),
            forward_queue: 65_536,
            inbound_queue: 8192,
            postgres_url: None,
            lease_secs: 10,
            redirect_to: None,
        }
    }
}

/// Server redirection (MQTT 5.0 section 4.11).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redirect {
    /// If set, every CONNECT is refused with this Server Reference: MQTT 5 clients get
    /// CONNACK 0x9C Use another server (0x9D Server moved with `permanent`), 3.1.1 clients
    /// return code 3 Server unavailable.
    pub server_reference: Option<String>,
    /// The move is permanent (0x9D) rather than temporary (0x9C).
    pub permanent: bool,
}

/// Where the admin API listens and its bearer token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address; none: no admin API. Keep it on loopback or a private network.
    pub listen: Option<SocketAddr>,
    /// Bearer token for `/api/v1` and `/metrics`; without one only a public `/metrics`
    /// answers.
    pub token: Option<String>,
    /// Serve `/metrics` without the token (for a Prometheus that cannot send one). Off:
    /// `/metrics` needs the bearer token like the rest of the API.
    pub metrics_public: bool,
}

/// Password checks are slow on purpose; these bounds keep them from being a lever against
/// the broker. Only logins with a user name or password count (anonymous and
/// client-certificate logins are free).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthLimits {
    /// Verifications running at once (on blocking threads); 0: one per core.
    pub max_concurrent: usize,
    /// Logins waiting for a verification slot; beyond it, CONNACK 0x89 Server busy
    /// (3.1.1: return code 3).
    pub max_waiting: usize,
    /// Login attempts per second per source address (IPv6: per /64), sustained; over it,
    /// CONNACK 0x9F Connection rate exceeded (3.1.1: 3).
    pub per_address_rate: f64,
    /// Attempts an address may make in a burst.
    pub per_address_burst: u32,
    /// Consecutive failed logins from one address that cost nothing more (typos).
    pub free_failures: u32,
    /// After a further failed login the address waits this long before its next attempt,
    /// doubled for each further consecutive failure (refused with 0x9F meanwhile); a
    /// successful login clears the count.
    pub failure_backoff_ms: u64,
    /// Cap on that wait, in seconds.
    pub max_backoff_secs: u64,
    /// Login attempts per second from all addresses together; over it, 0x89.
    pub global_rate: f64,
    pub global_burst: u32,
    /// Source addresses remembered; when full, idle ones are forgotten, and if none is idle
    /// new addresses get 0x89 until some are.
    pub max_tracked_addresses: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            max_concurrent: 0,
            max_waiting: 64,
            per_address_rate: 5.0,
            per_address_burst: 20,
            free_failures: 3,
            failure_backoff_ms: 250,
            max_backoff_secs: 60,
            global_rate: 500.0,
            global_burst: 1000,
            max_tracked_addresses: 100_000,
        }
    }
}

/// Bounds that keep one client from hurting the others. Each says what happens when hit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open client connections; further connections are closed right after accept. A QUIC
    /// connection counts from its handshake on, with or without streams, and each further
    /// stream (MQTT connection) on it counts too.
    pub max_connections: usize,
    /// Open connections from one source address (TCP and QUIC together); further ones are
    /// closed right after accept.
    pub max_connections_per_address: u32,
    /// TCP/TLS/WebSocket connections that have not sent CONNECT yet (handshakes included);
    /// further ones are closed right after accept. They hold none of `max_connections`
    /// until CONNECT arrives; if none is free then, CONNACK 0x89 Server busy (3.1.1: 3).
    pub max_pending_connections: usize,
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
    /// Highest Session Expiry Interval granted, in seconds (default 7 days; a 3.1.1
    /// persistent session gets this too). A longer request is cut to it (MQTT 5 clients
    /// see the granted value in CONNACK).
    pub max_session_expiry: u32,
    /// Persistent sessions (Session Expiry Interval above 0) at once; a CONNECT that would
    /// create one more gets CONNACK 0x97 Quota exceeded (3.1.1: 3 Server unavailable).
    pub max_persistent_sessions: usize,
    /// Longest client id of a persistent session, in bytes (they become store keys); a
    /// longer one gets CONNACK 0x85 (3.1.1: 2 identifier rejected).
    pub max_persistent_client_id_len: usize,
    /// Retained messages kept, over all topics. A retained PUBLISH that would go beyond
    /// any retained cap is refused as a whole: MQTT 5 QoS 1/2 get 0x97 Quota exceeded,
    /// 3.1.1 QoS 1/2 close the connection (the client resends later), QoS 0 is dropped;
    /// it is neither stored nor routed. Replacing or clearing a retained message is always
    /// possible within the caps.
    pub max_retained_messages: usize,
    /// Bytes of retained messages (topic, payload, properties), over all topics.
    pub max_retained_bytes: usize,
    /// Retained messages one client id may have set (restored ones count for nobody).
    pub max_retained_per_client: usize,
    /// Bytes of retained messages one client id may have set.
    pub max_retained_bytes_per_client: usize,
    /// Seconds between purges of expired retained messages (Message Expiry Interval);
    /// expired ones are never sent, and the purge frees their memory and store rows.
    pub retained_purge_interval: u64,
    /// If non-zero, the broker imposes this keep-alive (seconds) on clients asking for a
    /// longer one or none (MQTT 5 Server Keep Alive).
    pub max_keep_alive: u16,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Milliseconds a connection with nothing in flight stays quiet before it is parked:
    /// its connected loop (timers, waiters, `select!`) is freed and a small waiter keeps
    /// watching the socket, the mailbox, takeover, keep-alive and shutdown (see
    /// `connection::park`). 0 never parks. This is the longest wait: see `park_first_ms`.
    pub park_after_ms: u64,
    /// Milliseconds of quiet before a connection parks the first time after CONNECT. Each
    /// time it parks, its next wait doubles, up to `park_after_ms`: most clients go quiet
    /// right after connecting (a phone between messages, a device between readings), so a
    /// wave of connections parks before it has held its running state for long, while a
    /// client with sub-second gaps stops parking after a few rounds. 0, or a value not
    /// below `park_after_ms`, waits `park_after_ms` every time.
    pub park_first_ms: u64,
}

/// Where the broker listens, per transport. An empty list turns the transport off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// MQTT over TCP.
    pub tcp: Vec<SocketAddr>,
    /// MQTT over TLS (1.2 and 1.3).
    pub tls: Vec<SocketAddr>,
    /// MQTT over WebSocket, path `/mqtt`, subprotocol `mqtt`.
    pub ws: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS.
    pub wss: Vec<SocketAddr>,
    /// MQTT over QUIC, ALPN `mqtt`, one bidirectional stream per MQTT connection.
    pub quic: Vec<SocketAddr>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            tcp: vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
            tls: Vec::new(),
            ws: Vec::new(),
            wss: Vec::new(),
            quic: Vec::new(),
        }
    }
}

/// PEM files for the TLS-based transports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// Server certificate chain.
    pub cert: Option<PathBuf>,
    /// Server private key.
    pub key: Option<PathBuf>,
    /// CA whose client certificates are accepted; the certificate's subject common name then
    /// becomes the client's user name.
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a valid client certificate (only with `client_ca`).
    pub require_client_cert: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listeners: Listeners::default(),
            tls: TlsFiles::default(),
            admin: AdminConfig::default(),
            allow_anonymous: false,
            password_file: None,
            acl_file: None,
            auth: AuthLimits::default(),
            sys_interval: 10,
            limits: Limits::default(),
            response_topic_prefix: "reply/".into(),
            redirect: Redirect::default(),
            heartbeat_hints: crate::hints::HintConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Limits {
    /// The Session Expiry Interval the broker grants for one a client asked for (at
    /// CONNECT or DISCONNECT): capped by `max_session_expiry`.
    pub fn session_expiry(&self, asked: u32) -> u32 {
        asked.min(self.max_session_expiry)
    }

    /// How long a connection that has parked `parked` times before waits, quiet, before it
    /// parks again (see `park_first_ms`); zero never parks.
    pub fn park_wait(&self, parked: u8) -> std::time::Duration {
        let most = self.park_after_ms;
        let first = if self.park_first_ms == 0 {
            most
        } else {
            self.park_first_ms.min(most)
        };
        let doubled = first.saturating_mul(1 << parked.min(32));
        std::time::Duration::from_millis(doubled.min(most))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_connections_per_address: 1000,
            max_pending_connections: 10_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 128,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions: 1000,
            topic_alias_maximum: 64,
            max_session_expiry: 7 * 24 * 3600,
            max_persistent_sessions: 1_000_000,
            max_persistent_client_id_len: 256,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_retained_per_client: 10_000,
            max_retained_bytes_per_client: 16 * 1024 * 1024,
            retained_purge_interval: 60,
            max_keep_alive: 0,
            connect_timeout: 10,
            park_after_ms: 1000,
            park_first_ms: 125,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use std::time::Duration;

    #[test]
    fn the_park_wait_doubles_from_the_first_up_to_the_longest() {
        let limits = Limits::default();
        let waits: Vec<u128> = (0..6).map(|n| limits.park_wait(n).as_millis()).collect();
        assert_eq!(waits, [125, 250, 500, 1000, 1000, 1000]);
        assert_eq!(limits.park_wait(u8::MAX), Duration::from_millis(1000));
        let once = Limits {
            park_first_ms: 0,
            ..Limits::default()
        };
        assert_eq!(once.park_wait(0), Duration::from_millis(1000));
        let never = Limits {
            park_after_ms: 0,
            ..Limits::default()
        };
        assert!(never.park_wait(0).is_zero() && never.park_wait(9).is_zero());
    }
}
