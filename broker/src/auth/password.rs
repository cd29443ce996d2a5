//! The password file and anonymous access.
//!
//! Lines are `username:CREDENTIAL`, where the credential is an argon2 PHC string
//! (`switchboard passwd USER`) or a SCRAM-SHA-256 credential
//! (`switchboard passwd --scram USER`, see [`super::scram`]); blank lines and `#` comments
//! are skipped. Both kinds check a CONNECT password; SCRAM credentials also serve the
//! SCRAM exchange.
//!
//! No user enumeration: an unknown user, a user without a password and a wrong password
//! all cost one full verification (against a dummy credential made at load time with the
//! file's own parameters) and all answer 0x86 (3.1.1: return code 4).

use std::collections::HashMap;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::SecureRandom;
use switchboard_proto::ReasonCode;

use super::scram::{self, ScramCredential, ScramCredentials};
use super::{Authenticator, Credentials, Identity};

/// Errors loading a password file.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read password file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: expected `username:$argon2...` (a valid PHC hash) or `username:$scram-sha-256$...`"
    )]
    Syntax { path: String, line: usize },
    #[error("cannot make the dummy credential: {0}")]
    Dummy(String),
}

#[derive(Debug, Clone)]
enum Stored {
    Argon2(String),
    Scram(ScramCredential),
}

/// Anonymous access and/or a password file.
#[derive(Debug, Default)]
pub struct PasswordAuth {
    allow_anonymous: bool,
    users: HashMap<String, Stored>,
    /// Verified instead when the user is unknown, so that it costs the same.
    dummy: Option<Stored>,
    /// Key for the stable fake SCRAM salts of unknown users.
    mock_key: [u8; 32],
}

impl PasswordAuth {
    /// Anonymous access only (if allowed), no accounts.
    pub fn new(allow_anonymous: bool) -> Self {
        PasswordAuth {
            allow_anonymous,
            ..Default::default()
        }
    }

    /// Loads a password file.
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
            let (user, cred) = line.split_once(':').ok_or_else(syntax)?;
            let stored = if cred.starts_with(scram::PREFIX) {
                Stored::Scram(ScramCredential::parse(cred).ok_or_else(syntax)?)
            } else {
                PasswordHash::new(cred).map_err(|_| syntax())?;
                Stored::Argon2(cred.to_owned())
            };
            users.insert(user.to_owned(), stored);
        }
        let mut mock_key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut mock_key)
            .map_err(|_| PasswordFileError::Dummy("no randomness".into()))?;
        let dummy = users.values().next().map(dummy_like).transpose()?;
        Ok(PasswordAuth {
            allow_anonymous,
            users,
            dummy,
            mock_key,
        })
    }

    /// Number of accounts loaded.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks `password` against `stored` (the slow part).
    fn verify(stored: &Stored, password: &[u8]) -> bool {
        match stored {
            Stored::Argon2(hash) => PasswordHash::new(hash)
                .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok()),
            Stored::Scram(c) => c.verify_password(password),
        }
    }
}

impl Authenticator for PasswordAuth {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, ReasonCode> {
        let identity = |user: Option<&str>, anonymous| Identity {
            username: user.map(str::to_owned),
            anonymous,
            client_id: creds.client_id.to_owned(),
            ..Identity::default()
        };
        if let Some(user) = creds.cert_user {
            // The certificate is the proof; a user name in CONNECT may not contradict it.
            if creds.username.is_some_and(|u| u != user) {
                return Err(ReasonCode::NotAuthorized);
            }
            return Ok(identity(Some(user), false));
        }
        let Some(user) = creds.username else {
            return if self.allow_anonymous {
                Ok(identity(None, true))
            } else {
                Err(ReasonCode::NotAuthorized)
            };
        };
        if self.allow_anonymous && self.users.is_empty() {
            return Ok(identity(Some(user), true));
        }
        let stored = self.users.get(user);
        // Always one full verification: unknown users and missing passwords cost the same
        // as a wrong password.
        let ok = match (stored.or(self.dummy.as_ref()), creds.password) {
            (Some(s), Some(p)) => Self::verify(s, p) && stored.is_some(),
            (Some(s), None) => {
                let _ = Self::verify(s, b"");
                false
            }
            (None, _) => false,
        };
        if ok {
            Ok(identity(Some(user), false))
        } else {
            Err(ReasonCode::BadUserNameOrPassword)
        }
    }
}

impl ScramCredentials for PasswordAuth {
    fn scram_credential(&self, user: &str) -> Option<ScramCredential> {
        match self.users.get(user) {
            Some(Stored::Scram(c)) => Some(c.clone()),
            _ => None,
        }
    }

    fn mock_credential(&self, user: &str) -> ScramCredential {
        let iterations = match &self.dummy {
            Some(Stored::Scram(c)) => c.iterations,
            _ => scram::DEFAULT_ITERATIONS,
        };
        let salt = scram::hmac_sha256(&self.mock_key, user.as_bytes())[..16].to_vec();
        ScramCredential {
            salt,
            iterations,
            stored_key: scram::hmac_sha256(&self.mock_key, b"stored key"),
            server_key: scram::hmac_sha256(&self.mock_key, b"server key"),
        }
    }
}

/// A credential of the same kind and cost as `like`, for a random password.
fn dummy_like(like: &Stored) -> Result<Stored, PasswordFileError> {
    let dummy = |e: String| PasswordFileError::Dummy(e);
    match like {
        Stored::Scram(c) => ScramCredential::new(b"dummy password", c.iterations)
            .map(Stored::Scram)
            .map_err(|e| dummy(e.to_string())),
        Stored::Argon2(hash) => {
            let parsed = PasswordHash::new(hash).map_err(|e| dummy(e.to_string()))?;
            let params = argon2::Params::try_from(&parsed).map_err(|e| dummy(e.to_string()))?;
            let algorithm =
                argon2::Algorithm::try_from(parsed.algorithm).map_err(|e| dummy(e.to_string()))?;
            let version = match parsed.version {
                Some(v) => argon2::Version::try_from(v).map_err(|e| dummy(e.to_string()))?,
                None => argon2::Version::default(),
            };
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::new(algorithm, version, params)
                .hash_password(b"dummy password", &salt)
                .map(|h| Stored::Argon2(h.to_string()))
                .map_err(|e| dummy(e.to_string()))
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

    fn file(tag: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sb-auth-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("passwd");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    fn creds<'a>(u: &'a str, p: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            client_id: "c",
            username: Some(u),
            password: p,
            cert_user: None,
        }
    }

    #[test]
    fn password_file_accepts_right_and_rejects_wrong_password() {
        let hash = hash_password("s3cret").expect("hash");
        let scram = ScramCredential::new(b"pencil", 4096).expect("scram");
        let (dir, path) = file(
            "ok",
            &format!(
                "# devices\nsensor1:{hash}\nsensor2:{}\n",
                scram.to_phc_like()
            ),
        );
        let auth = PasswordAuth::load(false, &path).expect("load");
        let ok = auth
            .authenticate(&creds("sensor1", Some(b"s3cret")))
            .expect("right password");
        assert_eq!(ok.client_id, "c");
        assert!(
            auth.authenticate(&creds("sensor2", Some(b"pencil")))
                .is_ok()
        );
        for (u, p) in [
            ("sensor1", Some(&b"nope"[..])),
            ("sensor2", Some(b"s3cret")),
            ("ghost", Some(b"s3cret")),
            ("sensor1", None),
            ("ghost", None),
        ] {
            assert_eq!(
                auth.authenticate(&creds(u, p)),
                Err(ReasonCode::BadUserNameOrPassword),
                "{u} {p:?}"
            );
        }
        assert!(
            auth.dummy.is_some(),
            "unknown users are checked against a dummy"
        );
        assert!(auth.scram_credential("sensor2").is_some());
        assert_eq!(
            auth.mock_credential("ghost").salt,
            auth.mock_credential("ghost").salt,
            "stable fake salts"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_password_file_is_an_error() {
        for (tag, text) in [
            ("bad1", "sensor1 no-colon\n"),
            ("bad2", "sensor1:$scram-sha-256$4096$x\n"),
        ] {
            let (dir, path) = file(tag, text);
            assert!(matches!(
                PasswordAuth::load(false, &path),
                Err(PasswordFileError::Syntax { line: 1, .. })
            ));
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
