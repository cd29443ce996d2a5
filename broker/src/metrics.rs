//! Broker-wide counters, read by `$SYS` topics (and later `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters and gauges. Relaxed atomics: figures, not synchronisation.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub clients_connected: AtomicU64,
    /// Connected clients whose connection is parked (quiet, see `connection::park`).
    pub connections_parked: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// QoS 0 deliveries dropped because a session queue was full.
    pub dropped_queue_full_qos0: AtomicU64,
    /// QoS 1/2 deliveries refused because a session queue was full.
    pub refused_queue_full: AtomicU64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// Largest output backlog (bytes encoded for one connection, not yet written) seen
    /// after a drain: bounded by the high-water mark (256 KiB) plus one message.
    pub output_backlog_peak: AtomicU64,
    /// Messages whose expiry interval ran out while queued.
    pub dropped_expired: AtomicU64,
    /// Connections refused at the connection limit.
    pub refused_max_connections: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// TLS or WebSocket handshakes that failed (wrong ALPN, no subprotocol, garbage...).
    pub handshake_failures: AtomicU64,
    /// Connected clients per transport, in [`TRANSPORTS`] order.
    pub connected_by_transport: [AtomicU64; 5],
}

/// Transport names, in the order of [`Metrics::connected_by_transport`].
pub const TRANSPORTS: [&str; 5] = ["tcp", "tls", "ws", "wss", "quic"];

/// Index of a transport in [`TRANSPORTS`].
pub fn transport_index(name: &str) -> usize {
    TRANSPORTS.iter().position(|t| *t == name).unwrap_or(0)
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
