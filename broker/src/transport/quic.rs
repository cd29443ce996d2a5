//! MQTT over QUIC (quinn): ALPN `mqtt`, one bidirectional stream per MQTT connection, 0-RTT
//! resumption, and connection migration: when a phone moves from Wi-Fi to cellular its QUIC
//! connection follows the new address and the MQTT session goes on without a new CONNECT.
//!
//! Limits:
//! - A QUIC connection takes a slot of the broker-wide [`Admission`] (`max_connections`
//!   and the per-address cap) when it arrives, before its handshake, and keeps it while it
//!   lives: connections without streams count. It carries one MQTT connection (stream) at
//!   a time, on that slot, served in the connection's own task. A connection that opens no
//!   stream within `connect_timeout` is closed.
//! - The idle timeout follows the keep-alive: 1.5 × `max_keep_alive`, or 1.5 × 65,535 s
//!   without a cap, so QUIC never closes a connection MQTT still considers alive (the
//!   MQTT keep-alive closes dead ones; the client's own idle timeout also applies).
//! - Liveness: any QUIC packet from the client counts as MQTT keep-alive traffic
//!   ([`super::liveness`]), so a client may keep an idle connection with QUIC PING frames
//!   alone (announced in CONNACK, `sb-quic-ping`).
//! - Flow-control windows are small (64 KiB per stream, 128 KiB per connection), so an
//!   idle connection is granted little buffer; larger packets still pass as the broker
//!   reads.
//! - Memory of an idle connection: datagrams are off (MQTT uses none), and the endpoint's
//!   socket reports one datagram per transmit ([`OneSegment`]): quinn keeps, per
//!   connection, a send buffer as large as its largest transmit and never shrinks it; with
//!   GSO batching that is up to ten datagrams (~14 KB) for every idle connection, one
//!   datagram (~1.5 KB) without. What this costs is bulk sending over QUIC (one
//!   `sendmsg` per datagram), which MQTT's small packets rarely need. No MTU discovery
//!   (datagrams of 1,200 bytes). Our own part is small: the connection's task runs each
//!   step (handshake, waiting for a stream, serving it) as a boxed future, so an idle
//!   connection keeps only the served stream's. The rest of an idle connection's ~38 KB
//!   (debug count) is quinn's and rustls' own per-connection state, which no setting
//!   reaches: quinn's event channel to the connection (two 6.7 KB blocks once more than 32
//!   datagrams arrived), its connection state (6.2 KB inline), packet keys (current, next,
//!   and rustls' unused record-layer pair, ~4 KB), the rustls session and handshake
//!   leftovers (~3 KB). Each setting was measured (bench/results/transports-quic.md, with
//!   the table by owner; `tests/tests/idle_memory_quic.rs` counts it).
//! - 0-RTT: a returning client's 0-RTT flight is accepted by TLS, but the broker acts on
//!   none of its data before the handshake completes. A replayed 0-RTT flight cannot
//!   complete a handshake, so replay never reaches MQTT (no second CONNECT, no PUBLISH
//!   replay); what 0-RTT saves is the client's wait before sending.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;

use super::TransportError;
use super::tls::{Purpose, server_config};
use crate::config::{Limits, TlsFiles};
use crate::listener::Admission;
use crate::{BrokerState, connection};

/// MQTT connections (bidirectional streams) one QUIC connection may hold at once: one, as
/// a phone needs (the SDK opens a new QUIC connection to reconnect). quinn keeps state for
/// every stream the peer may open; a client's next stream waits until the previous one is
/// closed.
const MAX_STREAMS: u32 = 1;

/// Binds a QUIC endpoint on `addr`.
pub fn endpoint(
    files: &TlsFiles,
    addr: SocketAddr,
    limits: &Limits,
) -> Result<quinn::Endpoint, TransportError> {
    let tls = server_config(files, Purpose::Quic)?;
    let crypto = QuicServerConfig::try_from((*tls).clone())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.migration(true);
    let transport = Arc::get_mut(&mut config.transport)
        .ok_or_else(|| TransportError::Tls("transport config shared".into()))?;
    // Aligned with MQTT keep-alive (1.5 x), so QUIC never outlives a dead MQTT client by
    // much nor kills a live one.
    // With no cap, a client may ask for up to 65,535 s; the MQTT keep-alive (1.5 x what
    // the client asked) closes dead connections sooner, and the client's own QUIC idle
    // timeout (the SDK offers 2 h) applies too: the smaller one wins.
    let keep_alive = match limits.max_keep_alive {
        0 => u16::MAX,
        k => k,
    };
    let idle_ms = u32::from(keep_alive) * 1500;
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        idle_ms,
    ))));
    transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(128 * 1024));
    transport.send_window(256 * 1024);
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // MQTT sends no datagrams: no buffer for them.
    transport.datagram_receive_buffer_size(None);
    transport.datagram_send_buffer_size(0);
    // Datagrams stay at QUIC's 1,200-byte minimum: MTU discovery's state and the larger
    // per-connection send buffer it grows cost about 1.2 KB per idle connection
    // (`idle_memory_quic.rs`), for packets MQTT rarely fills.
    transport.mtu_discovery_config(None);
    let bind = |e: std::io::Error| TransportError::Tls(format!("bind {addr}: {e}"));
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let socket = Arc::new(OneSegment(runtime.wrap_udp_socket(socket).map_err(bind)?));
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
    .map_err(bind)
}

/// The endpoint's UDP socket, reporting one datagram per transmit (no GSO batches), so
/// that quinn's per-connection send buffer stays one datagram large (see the module docs).
#[derive(Debug)]
struct OneSegment(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for OneSegment {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

/// Accepts QUIC connections until shutdown. Every QUIC connection takes a permit from the
/// broker-wide connection limit on arrival, like TCP connections do once they send CONNECT.
pub async fn accept(broker: Arc<BrokerState>, endpoint: quinn::Endpoint, permits: Arc<Admission>) {
    loop {
        let incoming = tokio::select! {
            _ = broker.shutdown.cancelled() => {
                endpoint.close(quinn::VarInt::from_u32(0), b"server shutting down");
                return;
            }
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
        };
        let b = broker.clone();
        let permits = permits.clone();
        broker.tasks.spawn(async move {
            if let Err(e) = serve_connection(b, Box::new(incoming), permits).await {
                tracing::debug!(error = %e, "QUIC connection ended");
            }
        });
    }
}

async fn serve_connection(
    broker: Arc<BrokerState>,
    incoming: Box<quinn::Incoming>,
    permits: Arc<Admission>,
) -> Result<(), quinn::ConnectionError> {
    // The handshake runs boxed: its state (the client's first packet, the handshake
    // future, its timer) is freed once it is done instead of widening this task's future
    // for the connection's whole life.
    let Some((_slot, conn)) = Box::pin(handshake(&broker, incoming, &permits)).await? else {
        return Ok(());
    };
    let peer = conn.remote_address();
    let user = super::tls::certificate_user(
        conn.peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .as_deref()
            .map(Vec::as_slice),
    );
    // One MQTT connection (stream) at a time, served in this task: no second task per
    // connection, and the connection's slot is the stream's. Each step runs boxed, so
    // that this task's own future is a few pointers and an idle connection keeps only the
    // step it is in (the served stream), exactly sized.
    let mut first = true;
    loop {
        let Some((send, recv)) = Box::pin(next_stream(&broker, &conn, first)).await? else {
            return Ok(());
        };
        first = false;
        let stream = tokio::io::join(recv, send);
        let serve = connection::serve(broker.clone(), stream, peer, "quic", user.clone(), None);
        // QUIC PINGs count as keep-alive traffic for this MQTT connection.
        Box::pin(super::liveness::scope(conn.clone(), serve)).await;
    }
}

/// The next MQTT connection (bidirectional stream) the client opens on `conn`; `None` when
/// the broker shuts down or the client opened no first stream within the connect timeout
/// (then the connection is closed).
async fn next_stream(
    broker: &BrokerState,
    conn: &quinn::Connection,
    first: bool,
) -> Result<Option<(quinn::SendStream, quinn::RecvStream)>, quinn::ConnectionError> {
    let timeout = Duration::from_secs(broker.config.limits.connect_timeout);
    let next = async {
        if first {
            // A connection must open its first stream within the connect timeout.
            tokio::time::timeout(timeout, conn.accept_bi())
                .await
                .unwrap_or(Err(quinn::ConnectionError::TimedOut))
        } else {
            conn.accept_bi().await
        }
    };
    tokio::select! {
        _ = broker.shutdown.cancelled() => Ok(None),
        s = next => match s {
            Ok(s) => Ok(Some(s)),
            Err(quinn::ConnectionError::TimedOut) => {
                conn.close(quinn::VarInt::from_u32(0), b"no stream");
                Ok(None)
            }
            Err(e) => Err(e),
        },
    }
}

/// Admits and completes the handshake of an incoming connection: its admission slot (held
/// until the connection ends) and the connection, or `None` when it was refused or did not
/// complete its handshake within the connect timeout.
async fn handshake(
    broker: &BrokerState,
    incoming: Box<quinn::Incoming>,
    permits: &Arc<Admission>,
) -> Result<Option<(crate::listener::Slot, quinn::Connection)>, quinn::ConnectionError> {
    let slot = match permits.admit_full(incoming.remote_address().ip()) {
        Ok(s) => s,
        Err(why) => {
            crate::metrics::Metrics::inc(&broker.metrics.refused_max_connections);
            tracing::warn!(peer = %incoming.remote_address(), %why, "refusing a QUIC connection");
            (*incoming).refuse();
            return Ok(None);
        }
    };
    // Unboxed here: the box is freed with this step.
    let connecting = (*incoming).accept()?;
    let timeout = Duration::from_secs(broker.config.limits.connect_timeout);
    // No application data is acted on before the handshake completes: 0-RTT data that an
    // attacker replays never gets this far (see the module docs).
    match tokio::time::timeout(timeout, connecting).await {
        Ok(c) => Ok(Some((slot, c?))),
        Err(_) => Ok(None),
    }
}
