//! MQTT over QUIC (quinn): ALPN `mqtt`, one bidirectional stream per MQTT connection, 0-RTT
//! resumption, and connection migration: when a phone moves from Wi-Fi to cellular its QUIC
//! connection follows the new address and the MQTT session goes on without a new CONNECT.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;

use super::TransportError;
use super::tls::{Purpose, server_config};
use crate::config::TlsFiles;
use crate::{BrokerState, connection};

/// MQTT connections (bidirectional streams) one QUIC connection may hold at once.
const MAX_STREAMS: u32 = 4;

/// Binds a QUIC endpoint on `addr`.
pub fn endpoint(files: &TlsFiles, addr: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
    let tls = server_config(files, Purpose::Quic)?;
    let crypto = QuicServerConfig::try_from((*tls).clone())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.migration(true);
    let transport = Arc::get_mut(&mut config.transport)
        .ok_or_else(|| TransportError::Tls("transport config shared".into()))?;
    // Idle QUIC connections are kept by MQTT keep-alive, not by QUIC's idle timer alone.
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        30 * 60 * 1000,
    ))));
    // A phone needs one MQTT connection; a few streams leave room for a reconnect overlap.
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    quinn::Endpoint::server(config, addr)
        .map_err(|e| TransportError::Tls(format!("bind {addr}: {e}")))
}

/// Accepts QUIC connections until shutdown. Every MQTT connection (stream) takes a permit
/// from the broker-wide connection limit, like TCP connections do.
pub async fn accept(
    broker: Arc<BrokerState>,
    endpoint: quinn::Endpoint,
    permits: Arc<tokio::sync::Semaphore>,
) {
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
            if let Err(e) = serve_connection(b, incoming, permits).await {
                tracing::debug!(error = %e, "QUIC connection ended");
            }
        });
    }
}

async fn serve_connection(
    broker: Arc<BrokerState>,
    incoming: quinn::Incoming,
    permits: Arc<tokio::sync::Semaphore>,
) -> Result<(), quinn::ConnectionError> {
    let connecting = incoming.accept()?;
    // Accepting 0.5-RTT lets a resuming client's CONNECT (sent as 0-RTT data) be answered
    // without waiting for the handshake to finish.
    let conn = match connecting.into_0rtt() {
        Ok((conn, _)) => conn,
        Err(connecting) => connecting.await?,
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
    loop {
        let (send, recv) = tokio::select! {
            _ = broker.shutdown.cancelled() => return Ok(()),
            s = conn.accept_bi() => s?,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::metrics::Metrics::inc(&broker.metrics.refused_max_connections);
            tracing::warn!(%peer, "connection limit reached; refusing a QUIC stream");
            conn.close(quinn::VarInt::from_u32(0x89), b"server busy");
            return Ok(());
        };
        let b = broker.clone();
        let user = user.clone();
        broker.tasks.spawn(async move {
            connection::serve(b, tokio::io::join(recv, send), peer, "quic", user).await;
            drop(permit);
        });
    }
}
