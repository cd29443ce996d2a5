//! The secrets `up` keeps in the data directory, readable by their owner only: the admin
//! API token, the service credential (gateway, push worker) and the default developer
//! account.

use std::path::Path;

use anyhow::Context;

/// Where `up` keeps the admin API token, inside the data directory.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";

pub(crate) fn random_token() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 24];
    // /dev/urandom is there on every Linux; fall back to time-and-pid entropy elsewhere.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id());
        bytes[..16].copy_from_slice(&seed.to_le_bytes());
    }
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where `up` keeps the service credential (gateway, push worker), inside the data
/// directory: JSON `{"username": "$service", "password": ...}`.
pub(crate) const SERVICE_CREDENTIALS: &str = "service.credentials";

/// Where `up` writes the default developer account's id and token (the `Account-Id` and
/// `Account-Token` of the gateway's account-level calls), readable by its owner only.
pub(crate) const ACCOUNT_FILE: &str = "developer.account";

/// Writes `body` to `path`, readable and writable by the owner only.
pub(crate) fn write_private(path: &Path, body: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The service credential's password, made on first start.
pub(crate) fn service_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SERVICE_CREDENTIALS);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if let Some(p) = v["password"].as_str() {
            return Ok(p.to_owned());
        }
    }
    let secret = random_token();
    let body = serde_json::json!({ "username": "$service", "password": secret }).to_string();
    std::fs::create_dir_all(data_dir)?;
    write_private(&path, &body)?;
    Ok(secret)
}
