//! Developer certificates: a local CA and a server certificate for `localhost`,
//! `127.0.0.1`, `::1` and the host name, made with rcgen. Private keys are written with mode
//! 0600 and `.gitignore`d; production deployments configure their own files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::TransportError;

/// Paths of a dev certificate set.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevCerts {
    pub fn in_dir(dir: &Path) -> DevCerts {
        DevCerts {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }

    /// True when all four files exist.
    pub fn exist(&self) -> bool {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
        ]
        .iter()
        .all(|p| p.exists())
    }
}

fn err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Certs(e.to_string())
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), TransportError> {
    std::fs::write(path, contents).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Creates the CA and server certificate in `dir` unless they exist; returns their paths.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, TransportError> {
    let certs = DevCerts::in_dir(dir);
    if certs.exist() {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Switchboard dev CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    write(&certs.ca_cert, &ca_cert.pem(), false)?;
    write(&certs.ca_key, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    let mut params = CertificateParams::new(names).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    write(&certs.server_cert, &cert.pem(), false)?;
    write(&certs.server_key, &key.serialize_pem(), true)?;
    Ok(certs)
}

/// Makes a client certificate with common name `user`, signed by the dev CA in `dir`;
/// returns (certificate, key) paths.
pub fn make_client_cert(dir: &Path, user: &str) -> Result<(PathBuf, PathBuf), TransportError> {
    let certs = DevCerts::in_dir(dir);
    let ca_pem = std::fs::read_to_string(&certs.ca_cert).map_err(err)?;
    let ca_key_pem = std::fs::read_to_string(&certs.ca_key).map_err(err)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let safe: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (cp, kp) = (
        dir.join(format!("client-{safe}.pem")),
        dir.join(format!("client-{safe}.key")),
    );
    write(&cp, &cert.pem(), false)?;
    write(&kp, &key.serialize_pem(), true)?;
    Ok((cp, kp))
}
