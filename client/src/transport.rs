//! Opening a byte stream to the broker: QUIC first (one bidirectional stream), then TLS,
//! then plain TCP, in the order the endpoints are configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;

/// Where the broker can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// MQTT over QUIC (UDP), ALPN `mqtt`.
    Quic(SocketAddr),
    /// MQTT over TLS (TCP).
    Tls(SocketAddr),
    /// Plain MQTT over TCP (tests, trusted networks).
    Tcp(SocketAddr),
}

impl Endpoint {
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Quic(_) => "quic",
            Endpoint::Tls(_) => "tls",
            Endpoint::Tcp(_) => "tcp",
        }
    }
}

/// The idle timeout the client offers QUIC servers: two hours, above any heartbeat.
const QUIC_MAX_IDLE_MS: u32 = 2 * 3600 * 1000;

/// Any transport's stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

pub type BoxStream = Pin<Box<dyn Stream>>;

/// TLS trust for QUIC and TLS endpoints, and the QUIC endpoint reused across reconnects
/// (its session tickets make reconnects 0-RTT).
pub struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
    quic: Option<quinn::Endpoint>,
    server_name: String,
    timeout: Duration,
}

impl Connector {
    pub fn new(
        ca: Option<&PathBuf>,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Connector, Error> {
        let tls = match ca {
            Some(path) => Some(Arc::new(tls_client_config(path)?)),
            None => None,
        };
        Ok(Connector {
            tls,
            quic: None,
            server_name: server_name.to_owned(),
            timeout,
        })
    }

    /// Opens a stream to `ep`.
    pub async fn open(&mut self, ep: &Endpoint) -> Result<BoxStream, Error> {
        self.open_with_quic(ep).await.map(|(s, _)| s)
    }

    /// Opens a stream to `ep`, with the QUIC connection under it when there is one: its
    /// path statistics tell the heartbeat when a NAT forgot the mapping and the connection
    /// survived it by migrating.
    pub async fn open_with_quic(
        &mut self,
        ep: &Endpoint,
    ) -> Result<(BoxStream, Option<quinn::Connection>), Error> {
        let timeout = self.timeout;
        let server_name = self.server_name.clone();
        if matches!(ep, Endpoint::Quic(_)) {
            self.quic_endpoint()?;
        }
        let work = async {
            match ep {
                Endpoint::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    Ok::<_, Error>((Box::pin(s) as BoxStream, None))
                }
                Endpoint::Tls(addr) => {
                    let tls = self
                        .tls
                        .clone()
                        .ok_or_else(|| Error::Config("TLS needs a CA".into()))?;
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                        .map_err(|e| Error::Config(e.to_string()))?;
                    let s = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, s)
                        .await?;
                    Ok((Box::pin(s) as BoxStream, None))
                }
                Endpoint::Quic(addr) => {
                    let endpoint = self
                        .quic
                        .as_ref()
                        .ok_or_else(|| Error::Config("QUIC endpoint".into()))?;
                    let connecting = endpoint
                        .connect(*addr, &server_name)
                        .map_err(|e| Error::Transport(e.to_string()))?;
                    let conn = match connecting.into_0rtt() {
                        Ok((conn, _)) => conn,
                        Err(connecting) => connecting
                            .await
                            .map_err(|e| Error::Transport(e.to_string()))?,
                    };
                    let (send, recv) = conn
                        .open_bi()
                        .await
                        .map_err(|e| Error::Transport(e.to_string()))?;
                    let stream = Box::pin(QuicStream {
                        _conn: conn.clone(),
                        io: tokio::io::join(recv, send),
                    }) as BoxStream;
                    Ok((stream, Some(conn)))
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::Transport(format!("{} connect timed out", ep.name())))?
    }

    fn quic_endpoint(&mut self) -> Result<&quinn::Endpoint, Error> {
        if self.quic.is_none() {
            let tls = self
                .tls
                .clone()
                .ok_or_else(|| Error::Config("QUIC needs a CA".into()))?;
            let qc = quinn::crypto::rustls::QuicClientConfig::try_from((*tls).clone())
                .map_err(|e| Error::Config(e.to_string()))?;
            let bind: SocketAddr = "0.0.0.0:0"
                .parse()
                .map_err(|_| Error::Config("bind".into()))?;
            let mut ep = quinn::Endpoint::client(bind)?;
            let mut client = quinn::ClientConfig::new(Arc::new(qc));
            // The MQTT heartbeat keeps the connection, not QUIC's idle timer: quinn's default
            // (30 s) would close it long before the first ping. The broker's own limit
            // (the smaller of the two applies) bounds how long it may idle.
            let mut transport = quinn::TransportConfig::default();
            transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
                QUIC_MAX_IDLE_MS,
            ))));
            // A finite window, so that the heartbeat's QUIC pings can widen it by a byte.
            transport.receive_window(quinn::VarInt::from_u32(crate::driver::QUIC_RECEIVE_WINDOW));
            client.transport_config(Arc::new(transport));
            ep.set_default_client_config(client);
            self.quic = Some(ep);
        }
        self.quic
            .as_ref()
            .ok_or_else(|| Error::Config("QUIC endpoint".into()))
    }
}

/// A QUIC stream that keeps its connection alive.
struct QuicStream {
    _conn: quinn::Connection,
    io: tokio::io::Join<quinn::RecvStream, quinn::SendStream>,
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client TLS config for MQTT over TLS and QUIC: trusts the PEM certificates in `ca`,
/// ALPN `mqtt`, 0-RTT allowed (resumed QUIC connections may send early data).
pub fn tls_client_config(ca: &Path) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let config = |e: &dyn std::fmt::Display| Error::Config(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| config(&e))? {
        roots
            .add(c.map_err(|e| config(&e))?)
            .map_err(|e| config(&e))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| config(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"mqtt".to_vec()];
    cfg.enable_early_data = true;
    Ok(cfg)
}

/// A bare quinn client endpoint on an ephemeral loopback port with [`tls_client_config`]
/// as its default, sending QUIC PINGs every `ping` (none: `None`), for tools and tests that
/// drive MQTT over QUIC by hand (the [`Connector`] keeps its own endpoint).
pub fn quic_client_endpoint(ca: &Path, ping: Option<Duration>) -> Result<quinn::Endpoint, Error> {
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls_client_config(ca)?)
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(qc));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(ping);
    client.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
