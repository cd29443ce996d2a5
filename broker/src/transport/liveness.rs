//! QUIC-level liveness counts as MQTT keep-alive.
//!
//! A phone on QUIC keeps its connection alive most cheaply with QUIC PING frames (about
//! 120 B an exchange against about 200 B for an MQTT PINGREQ/PINGRESP over QUIC or TLS;
//! `bench --heartbeat`). Those never reach the MQTT stream, so the session's keep-alive
//! timer would close a client that only sends them. The QUIC listener runs each MQTT
//! connection inside [`scope`], and when the keep-alive deadline passes the connection asks
//! [`peer_heard`]: if any datagram came from the peer since the last time it asked, the
//! peer is alive and the deadline moves on (`ServerSession::peer_alive`).
//!
//! The QUIC statistics give counts, not times, so a client heard at some point since the
//! previous check counts as heard at the check: a client that falls silent is closed
//! within 3 × its keep-alive (instead of 1.5 ×) after the last packet seen. Outside a QUIC
//! connection's task [`peer_heard`] is always false: TCP, TLS and WebSocket keep the MQTT
//! rule.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// The QUIC connection under this task's MQTT connection, and its datagram count when
/// last asked.
struct QuicPeer {
    conn: quinn::Connection,
    seen: AtomicU64,
}

tokio::task_local! {
    static QUIC_PEER: QuicPeer;
}

/// Runs `f` (one MQTT connection over a stream of `conn`) with `conn`'s liveness visible
/// to [`peer_heard`]. Not an `async fn`: the returned future holds `f` once, not twice
/// (an idle QUIC connection keeps this future).
pub(crate) fn scope<F: Future>(conn: quinn::Connection, f: F) -> impl Future<Output = F::Output> {
    let seen = AtomicU64::new(conn.stats().udp_rx.datagrams);
    QUIC_PEER.scope(QuicPeer { conn, seen }, f)
}

/// Whether the QUIC connection under this task received anything from the peer since the
/// last call (or since [`scope`] began). False outside a QUIC connection's task.
pub(crate) fn peer_heard() -> bool {
    QUIC_PEER
        .try_with(|q| {
            let now = q.conn.stats().udp_rx.datagrams;
            q.seen.swap(now, Ordering::Relaxed) != now
        })
        .unwrap_or(false)
}
