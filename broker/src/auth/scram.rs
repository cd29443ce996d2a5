//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as a pure, sans-IO mechanism: byte messages in,
//! byte messages out, no sockets and no clock. The connection (MQTT 5 AUTH packets) drives
//! [`ScramServer`]; tests and the SDK drive [`ScramClient`].
//!
//! Channel binding is not supported (gs2 header `n,,` or `y,,`), nor an authorisation
//! identity different from the user name; user names and passwords are used as UTF-8
//! without SASLprep (the same bytes for ASCII).
//!
//! The server stores no password: a credential is `StoredKey = H(ClientKey)` and
//! `ServerKey`, with the salt and iteration count. For an unknown user the server answers
//! with a stable fake salt and fails at the proof, exactly as for a wrong password.

use std::num::NonZeroU32;
use std::sync::Arc;

use base64ct::{Base64, Encoding};
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use subtle::ConstantTimeEq;

/// Iterations for new credentials (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Upper bound on the iteration count a client accepts from a server (a hostile server
/// could otherwise make the client spin).
const MAX_ITERATIONS: u32 = 10_000_000;
/// Password-file prefix of a SCRAM credential.
pub const PREFIX: &str = "$scram-sha-256$";

/// Why an exchange failed. `InvalidProof` covers unknown users and wrong passwords alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBindingNotSupported,
    #[error("an authorisation identity is not supported")]
    AuthzidNotSupported,
    #[error("the nonce does not continue the exchange")]
    NonceMismatch,
    #[error("invalid proof")]
    InvalidProof,
    #[error("the server's signature is wrong")]
    InvalidServerSignature,
    #[error("the server refused: {0}")]
    ServerError(String),
    #[error("message out of order")]
    OutOfOrder,
}

impl ScramError {
    /// The `server-error` value (RFC 5802 §7) a server sends for this error.
    pub fn server_error_value(&self) -> &'static str {
        match self {
            ScramError::ChannelBindingNotSupported => "channel-binding-not-supported",
            ScramError::AuthzidNotSupported => "other-error",
            ScramError::InvalidProof | ScramError::NonceMismatch => "invalid-proof",
            _ => "other-error",
        }
    }
}

/// What the server keeps for one user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives a credential from a password with a fresh random 16-byte salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<ScramCredential, ScramError> {
        let mut salt = vec![0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| ScramError::Malformed("no randomness"))?;
        Self::with_salt(password, salt, iterations)
    }

    /// Derives a credential from a password and a given salt.
    pub fn with_salt(
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let salted = salted_password(password, &salt, iterations)?;
        let client_key = hmac_sha256(&salted, b"Client Key");
        Ok(ScramCredential {
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
            iterations,
        })
    }

    /// True if `password` is this credential's password (constant time in the result).
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let Ok(salted) = salted_password(password, &self.salt, self.iterations) else {
            return false;
        };
        let stored = sha256(&hmac_sha256(&salted, b"Client Key"));
        stored.ct_eq(&self.stored_key).into()
    }

    /// `$scram-sha-256$ITER$SALT$STOREDKEY$SERVERKEY` (base64), for a password file.
    pub fn to_phc_like(&self) -> String {
        format!(
            "{PREFIX}{}${}${}${}",
            self.iterations,
            Base64::encode_string(&self.salt),
            Base64::encode_string(&self.stored_key),
            Base64::encode_string(&self.server_key)
        )
    }

    /// Parses [`ScramCredential::to_phc_like`]'s format.
    pub fn parse(s: &str) -> Option<ScramCredential> {
        let mut parts = s.strip_prefix(PREFIX)?.split('$');
        let iterations: u32 = parts.next()?.parse().ok()?;
        let salt = Base64::decode_vec(parts.next()?).ok()?;
        let stored_key = Base64::decode_vec(parts.next()?).ok()?.try_into().ok()?;
        let server_key = Base64::decode_vec(parts.next()?).ok()?.try_into().ok()?;
        if parts.next().is_some() || iterations == 0 || salt.is_empty() {
            return None;
        }
        Some(ScramCredential {
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }
}

/// Where the server finds credentials.
pub trait ScramCredentials: Send + Sync {
    /// The credential of `user`, if it has one.
    fn scram_credential(&self, user: &str) -> Option<ScramCredential>;
    /// A credential for a user that does not exist: the same for every call with the same
    /// user, so that salts do not reveal which users exist, and matching no password.
    fn mock_credential(&self, user: &str) -> ScramCredential;
}

enum ServerState {
    Initial,
    SentFirst {
        user: String,
        known: bool,
        cred: Box<ScramCredential>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        /// `c=` the client must send: base64 of its gs2 header.
        binding: &'static str,
    },
    Done,
}

/// The server side of one exchange: [`ScramServer::start`], then [`ScramServer::finish`].
pub struct ScramServer {
    creds: Arc<dyn ScramCredentials>,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    /// A server exchange with a random nonce.
    pub fn new(creds: Arc<dyn ScramCredentials>) -> Result<ScramServer, ScramError> {
        Ok(Self::with_nonce(creds, &random_nonce()?))
    }

    /// A server exchange with a given nonce part (tests: known-answer vectors).
    pub fn with_nonce(creds: Arc<dyn ScramCredentials>, server_nonce: &str) -> ScramServer {
        ScramServer {
            creds,
            server_nonce: server_nonce.to_owned(),
            state: ServerState::Initial,
        }
    }

    /// client-first-message → server-first-message.
    pub fn start(&mut self, client_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ServerState::Done;
        let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (bare, binding) = match msg.as_bytes() {
            [b'n', b',', ..] => (&msg[2..], "biws"),
            [b'y', b',', ..] => (&msg[2..], "eSws"),
            [b'p', b'=', ..] => return Err(ScramError::ChannelBindingNotSupported),
            _ => return Err(ScramError::Malformed("gs2 header")),
        };
        let bare = bare
            .strip_prefix(',')
            .ok_or(ScramError::AuthzidNotSupported)?;
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or(ScramError::Malformed("user name"))?;
        let user = decode_saslname(user)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("nonce"))?;
        let (cred, known) = match self.creds.scram_credential(&user) {
            Some(c) => (Box::new(c), true),
            None => (Box::new(self.creds.mock_credential(&user)), false),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            Base64::encode_string(&cred.salt),
            cred.iterations
        );
        self.state = ServerState::SentFirst {
            user,
            known,
            cred,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            binding,
        };
        Ok(server_first.into_bytes())
    }

    /// client-final-message → (server-final-message, user name); on `Err`, send
    /// `e={err.server_error_value()}` if the transport has room for it.
    pub fn finish(&mut self, client_final: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ServerState::SentFirst {
            user,
            known,
            cred,
            client_first_bare,
            server_first,
            nonce,
            binding: expected_binding,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding"))?;
        if binding != expected_binding {
            return Err(ScramError::ChannelBindingNotSupported);
        }
        let got_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if got_nonce != nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof: [u8; 32] = Base64::decode_vec(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&cred.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let ok: bool = sha256(&client_key).ct_eq(&cred.stored_key).into();
        if !(ok && known) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&cred.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", Base64::encode_string(&server_signature));
        Ok((server_final.into_bytes(), user))
    }
}

/// The client side of one exchange.
pub struct ScramClient {
    user: String,
    password: Vec<u8>,
    nonce: String,
    client_first_bare: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// A client exchange with a random nonce.
    pub fn new(user: &str, password: &[u8]) -> Result<ScramClient, ScramError> {
        Ok(Self::with_nonce(user, password, &random_nonce()?))
    }

    /// A client exchange with a given nonce (tests: known-answer vectors).
    pub fn with_nonce(user: &str, password: &[u8], nonce: &str) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", encode_saslname(user));
        ScramClient {
            user: user.to_owned(),
            password: password.to_vec(),
            nonce: nonce.to_owned(),
            client_first_bare,
            expected_server_signature: None,
        }
    }

    /// The client-first-message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// server-first-message → client-final-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let mut fields = msg.split(',');
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .and_then(|s| Base64::decode_vec(s).ok())
            .ok_or(ScramError::Malformed("salt"))?;
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed("iteration count"))?;
        let salted = salted_password(&self.password, &salt, iterations)?;
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_sha256(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac_sha256(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", Base64::encode_string(&proof)).into_bytes())
    }

    /// Checks the server-final-message: the server, too, knew the credential.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let expected = self
            .expected_server_signature
            .ok_or(ScramError::OutOfOrder)?;
        let got = msg
            .strip_prefix("v=")
            .and_then(|v| Base64::decode_vec(v).ok())
            .ok_or(ScramError::Malformed("verifier"))?;
        if bool::from(got.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Result<[u8; 32], ScramError> {
    let iterations = NonZeroU32::new(iterations).ok_or(ScramError::Malformed("iteration count"))?;
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out,
    );
    Ok(out)
}

/// HMAC-SHA-256.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// 18 random bytes as base64: printable, no `,`.
fn random_nonce() -> Result<String, ScramError> {
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ScramError::Malformed("no randomness"))?;
    Ok(Base64::encode_string(&bytes))
}

fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i..i + 3)
            .ok_or(ScramError::Malformed("saslname"))?;
        out.push(match code {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(ScramError::Malformed("saslname")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(ScramCredential);

    impl ScramCredentials for One {
        fn scram_credential(&self, user: &str) -> Option<ScramCredential> {
            (user == "user").then(|| self.0.clone())
        }
        fn mock_credential(&self, user: &str) -> ScramCredential {
            ScramCredential {
                salt: sha256(user.as_bytes())[..16].to_vec(),
                iterations: 4096,
                stored_key: sha256(b"mock"),
                server_key: sha256(b"mock server"),
            }
        }
    }

    // RFC 7677 §3.
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let salt = Base64::decode_vec(SALT).expect("salt");
        ScramCredential::with_salt(b"pencil", salt, 4096).expect("derive")
    }

    #[test]
    fn rfc7677_known_answer_server() {
        let mut s = ScramServer::with_nonce(Arc::new(One(rfc_credential())), SERVER_NONCE);
        let first = s.start(CLIENT_FIRST.as_bytes()).expect("start");
        assert_eq!(first, SERVER_FIRST.as_bytes());
        let (last, user) = s.finish(CLIENT_FINAL.as_bytes()).expect("finish");
        assert_eq!(last, SERVER_FINAL.as_bytes());
        assert_eq!(user, "user");
    }

    #[test]
    fn rfc7677_known_answer_client() {
        let mut c = ScramClient::with_nonce("user", b"pencil", CLIENT_NONCE);
        assert_eq!(c.client_first(), CLIENT_FIRST.as_bytes());
        let fin = c.client_final(SERVER_FIRST.as_bytes()).expect("final");
        assert_eq!(fin, CLIENT_FINAL.as_bytes());
        c.verify_server(SERVER_FINAL.as_bytes())
            .expect("server proves itself");
        assert_eq!(
            c.verify_server(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::InvalidServerSignature)
        );
    }

    #[test]
    fn wrong_proof_and_unknown_user_are_refused_alike() {
        let creds = Arc::new(One(rfc_credential()));
        for (user, password) in [("user", &b"pencils"[..]), ("ghost", b"pencil")] {
            let mut c = ScramClient::new(user, password).expect("client");
            let mut s = ScramServer::new(creds.clone()).expect("server");
            let first = s
                .start(&c.client_first())
                .expect("start never reveals users");
            let fin = c.client_final(&first).expect("client final");
            assert_eq!(s.finish(&fin), Err(ScramError::InvalidProof), "{user}");
        }
        // A tampered proof for the right password fails too.
        let mut s = ScramServer::with_nonce(creds, SERVER_NONCE);
        s.start(CLIENT_FIRST.as_bytes()).expect("start");
        let bad = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(s.finish(bad.as_bytes()), Err(ScramError::InvalidProof));
    }

    #[test]
    fn round_trip_and_password_file_format() {
        let cred = ScramCredential::new(b"s3cret", 4096).expect("derive");
        let line = cred.to_phc_like();
        assert_eq!(ScramCredential::parse(&line), Some(cred.clone()));
        assert!(cred.verify_password(b"s3cret"));
        assert!(!cred.verify_password(b"s3cre"));
        assert_eq!(ScramCredential::parse("$scram-sha-256$x$a$b$c"), None);
        let mut s = ScramServer::new(Arc::new(One(cred))).expect("server");
        let mut c = ScramClient::new("user", b"s3cret").expect("client");
        let first = s.start(&c.client_first()).expect("start");
        let fin = c.client_final(&first).expect("final");
        let (last, user) = s.finish(&fin).expect("accepted");
        c.verify_server(&last).expect("server verified");
        assert_eq!(user, "user");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let creds = Arc::new(One(rfc_credential()));
        for m in [
            &b""[..],
            b"n",
            b"x,,n=user,r=a",
            b"p=tls-unique,,n=user,r=a",
            b"n,a=admin,n=user,r=a",
            b"n,,n=,r=a",
            b"n,,n=us=9er,r=a",
            b"n,,n=user",
            b"\xff\xfe",
        ] {
            let mut s = ScramServer::new(creds.clone()).expect("server");
            assert!(s.start(m).is_err(), "{m:?}");
        }
        let mut s = ScramServer::with_nonce(creds, SERVER_NONCE);
        s.start(CLIENT_FIRST.as_bytes()).expect("start");
        assert_eq!(
            s.finish(b"c=biws,r=other,p=AAAA"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            s.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
    }
}
