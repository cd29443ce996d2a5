//! rustls server configurations for TLS, WSS and QUIC, and the client-certificate identity.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::TransportError;
use crate::config::TlsFiles;

/// ALPN for MQTT over TLS and QUIC.
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// What a server configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// MQTT over TLS: ALPN `mqtt` if the client offers ALPN at all.
    Mqtt,
    /// WebSocket over TLS: ALPN `http/1.1`.
    WebSocket,
    /// QUIC: ALPN `mqtt` required, 0-RTT allowed.
    Quic,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TransportError {
    TransportError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// Builds the rustls server configuration for `purpose`.
pub fn server_config(
    files: &TlsFiles,
    purpose: Purpose,
) -> Result<Arc<rustls::ServerConfig>, TransportError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(TransportError::NoCertificate);
    };
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TransportError::Tls(e.to_string()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    match purpose {
        Purpose::Mqtt => config.alpn_protocols = vec![ALPN_MQTT.to_vec()],
        Purpose::WebSocket => config.alpn_protocols = vec![b"http/1.1".to_vec()],
        Purpose::Quic => {
            config.alpn_protocols = vec![ALPN_MQTT.to_vec()];
            // 0-RTT: a returning phone sends CONNECT in its first flight.
            config.max_early_data_size = u32::MAX;
        }
    }
    Ok(Arc::new(config))
}

/// The subject common name of a verified client certificate: the client's user name.
pub fn certificate_user(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let first = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
