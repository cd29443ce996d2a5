//! Helpers for the transport tests (`transports*.rs`): a broker listening on TCP, TLS, WS,
//! WSS and QUIC with dev certificates, and a QUIC MQTT client on quinn.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use switchboard_broker::transport::certs::{DevCerts, ensure_dev_certs};
use switchboard_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use switchboard_client::transport::quic_client_endpoint;
use switchboard_proto::{Packet, ReasonCode, Version};

use crate::{WAIT, connect_packet};

/// One listener on an ephemeral loopback port.
pub fn local() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 0))]
}

/// The ring crypto provider, for client TLS configs.
pub fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A broker with every transport on an ephemeral port and dev certificates in `dir`;
/// `f` adjusts the config before it starts.
pub async fn start(
    dir: &Path,
    f: impl FnOnce(&mut BrokerConfig, &DevCerts),
) -> (BrokerHandle, DevCerts) {
    // rumqttc builds its TLS config with the process default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = ensure_dev_certs(dir).expect("dev certs");
    let mut cfg = BrokerConfig {
        listeners: Listeners {
            tcp: local(),
            tls: local(),
            ws: local(),
            wss: local(),
            quic: local(),
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.tls.cert = Some(certs.server_cert.clone());
    cfg.tls.key = Some(certs.server_key.clone());
    f(&mut cfg, &certs);
    let h = Broker::new(cfg).start().await.expect("broker starts");
    (h, certs)
}

/// A QUIC MQTT client on quinn: one bidirectional stream per MQTT connection.
pub struct QuicClient {
    pub endpoint: quinn::Endpoint,
}

/// One MQTT connection's bidirectional QUIC stream.
pub struct QuicStream {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    buf: BytesMut,
}

impl QuicClient {
    /// A client trusting the CA certificate at `ca`.
    pub fn new(ca: &Path) -> QuicClient {
        let endpoint = quic_client_endpoint(ca, None).expect("QUIC endpoint");
        QuicClient { endpoint }
    }

    /// Connects (trying 0-RTT) and sends CONNECT on a new stream; returns whether 0-RTT was
    /// accepted, the connection and the stream.
    pub async fn open_0rtt(
        &self,
        addr: SocketAddr,
        id: &str,
    ) -> (bool, quinn::Connection, QuicStream) {
        let connecting = self.endpoint.connect(addr, "localhost").expect("connect");
        let (conn, zero_rtt) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => (conn, Some(accepted)),
            Err(connecting) => (
                tokio::time::timeout(WAIT, connecting)
                    .await
                    .expect("in time")
                    .expect("handshake"),
                None,
            ),
        };
        let (send, recv) = conn.open_bi().await.expect("stream");
        let mut s = QuicStream {
            send,
            recv,
            buf: BytesMut::new(),
        };
        s.send(&Packet::Connect(Box::new(connect_packet(Version::V5, id))))
            .await;
        let accepted = match zero_rtt {
            Some(a) => a.await,
            None => false,
        };
        assert!(
            matches!(s.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success)
        );
        (accepted, conn, s)
    }

    /// Connects and sends CONNECT on a new stream: the connection and the stream.
    pub async fn open(&self, addr: SocketAddr, id: &str) -> (quinn::Connection, QuicStream) {
        let (_, c, s) = self.open_0rtt(addr, id).await;
        (c, s)
    }
}

impl QuicStream {
    /// Writes one MQTT 5 packet.
    pub async fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(Version::V5, &mut b);
        self.send.write_all(&b).await.expect("write");
    }

    /// The next MQTT 5 packet; `None` when the stream ends.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) =
                    Packet::read(&mut self.buf, Version::V5, usize::MAX).expect("well formed")
                {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.recv.read(&mut chunk).await {
                    Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        })
        .await
        .expect("timed out on QUIC")
    }
}
