//! Who may connect, and what they may publish and subscribe to.
//!
//! This is the seam the IM layer's tenant/token model plugs into: an [`Authenticator`]
//! turns CONNECT credentials into an [`Identity`], and an [`Acl`] is asked before every
//! publish and subscribe. Today's implementations: anonymous access (off by default) and a
//! password file of argon2 hashes for devices.

use std::collections::HashMap;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use switchboard_proto::ReasonCode;

/// Credentials from CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Subject common name of a client certificate that TLS already verified against the
    /// configured client CA.
    pub cert_user: Option<&'a str>,
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub username: Option<String>,
    pub anonymous: bool,
}

/// Decides whether a client may connect. Called off the async runtime (password hashing
/// is deliberately slow), so implementations may block briefly.
pub trait Authenticator: Send + Sync + 'static {
    /// `Err` carries the CONNACK reason: 0x86 bad user name or password, 0x87 not
    /// authorized, 0x8A banned...
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, ReasonCode>;
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

/// Decides per topic. Called on the hot path: keep it cheap.
pub trait Acl: Send + Sync + 'static {
    fn allowed(&self, who: &Identity, action: Action, topic: &str) -> bool;
}

/// The default ACL: everything except publishing to broker topics (`$SYS/...` and any
/// other topic starting with `$`), which only the broker may do.
#[derive(Debug, Default)]
pub struct DefaultAcl;

impl Acl for DefaultAcl {
    fn allowed(&self, _who: &Identity, action: Action, topic: &str) -> bool {
        !(action == Action::Publish && topic.starts_with('$'))
    }
}

/// Errors loading a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `username:$argon2...` with a valid PHC hash")]
    Syntax { path: String, line: usize },
}

/// Anonymous access and/or a password file.
#[derive(Debug, Default)]
pub struct PasswordAuth {
    allow_anonymous: bool,
    users: HashMap<String, String>,
}

impl PasswordAuth {
    /// Anonymous access only (if allowed), no accounts.
    pub fn new(allow_anonymous: bool) -> Self {
        PasswordAuth {
            allow_anonymous,
            users: HashMap::new(),
        }
    }

    /// Loads `username:hash` lines; blank lines and `#` comments are skipped.
    pub fn load(allow_anonymous: bool, path: &Path) -> Result<Self, PasswordFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: name.clone(),
            source,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = || PasswordFileError::Syntax {
                path: name.clone(),
                line: i + 1,
            };
            let (user, hash) = line.split_once(':').ok_or_else(syntax)?;
            PasswordHash::new(hash).map_err(|_| syntax())?;
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(PasswordAuth {
            allow_anonymous,
            users,
        })
    }

    /// Number of accounts loaded.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl Authenticator for PasswordAuth {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, ReasonCode> {
        if let Some(user) = creds.cert_user {
            // The certificate is the proof; a user name in CONNECT may not contradict it.
            if creds.username.is_some_and(|u| u != user) {
                return Err(ReasonCode::NotAuthorized);
            }
            return Ok(Identity {
                username: Some(user.to_owned()),
                anonymous: false,
            });
        }
        let Some(user) = creds.username else {
            return if self.allow_anonymous {
                Ok(Identity {
                    username: None,
                    anonymous: true,
                })
            } else {
                Err(ReasonCode::NotAuthorized)
            };
        };
        match self.users.get(user) {
            Some(hash) => {
                let password = creds.password.ok_or(ReasonCode::BadUserNameOrPassword)?;
                let parsed =
                    PasswordHash::new(hash).map_err(|_| ReasonCode::BadUserNameOrPassword)?;
                Argon2::default()
                    .verify_password(password, &parsed)
                    .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
                Ok(Identity {
                    username: Some(user.to_owned()),
                    anonymous: false,
                })
            }
            None if self.allow_anonymous && self.users.is_empty() => Ok(Identity {
                username: Some(user.to_owned()),
                anonymous: true,
            }),
            None => Err(ReasonCode::BadUserNameOrPassword),
        }
    }
}

/// Hashes a password for the password file (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_accepts_right_and_rejects_wrong_password() {
        let dir = std::env::temp_dir().join(format!("sb-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("passwd");
        let hash = hash_password("s3cret").expect("hash");
        std::fs::write(&path, format!("# devices\nsensor1:{hash}\n")).expect("write");
        let auth = PasswordAuth::load(false, &path).expect("load");
        let creds = |u, p: &'static [u8]| Credentials {
            client_id: "c",
            username: Some(u),
            password: Some(p),
            cert_user: None,
        };
        assert!(auth.authenticate(&creds("sensor1", b"s3cret")).is_ok());
        assert_eq!(
            auth.authenticate(&creds("sensor1", b"nope")),
            Err(ReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(
            auth.authenticate(&creds("ghost", b"s3cret")),
            Err(ReasonCode::BadUserNameOrPassword)
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_password_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("sb-auth-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("passwd");
        std::fs::write(&path, "sensor1 no-colon\n").expect("write");
        assert!(matches!(
            PasswordAuth::load(false, &path),
            Err(PasswordFileError::Syntax { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
