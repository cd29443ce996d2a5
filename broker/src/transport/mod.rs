//! The transports beside plain TCP: TLS, WebSocket (plain and over TLS) and QUIC, plus
//! developer certificates. Each turns an accepted connection into a byte stream that
//! [`crate::connection::serve`] drives exactly like TCP.

pub mod certs;
pub(crate) mod liveness;
pub mod quic;
pub mod tls;
pub mod ws;

/// Errors setting up a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS transports need broker.tls.cert and broker.tls.key (or run `switchboard certs`)")]
    NoCertificate,
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("certificate generation: {0}")]
    Certs(String),
}
