//! Login tokens: what an app server fetches for its user and the user's device presents as
//! the MQTT password.
//!
//! Format: `sb1.{claims}.{mac}`, both parts base64url without padding; `claims` is JSON
//! ([`Claims`]: tenant, uid, account, device, expiry, epoch, token id) and `mac` is
//! HMAC-SHA256 over `sb1.{claims}` with the tenant's token key. A token is revoked one by
//! one (its id is recorded until it expires) or all at once (the user's epoch moves on).

use base64ct::{Base64UrlUnpadded, Encoding};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Prefix that marks a password as a Switchboard token.
pub const PREFIX: &str = "sb1.";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Tenant id.
    pub t: u64,
    /// User uid.
    pub u: u64,
    /// User account.
    pub a: String,
    /// Device platform the token is for ("phone", "pc", "web", "pad", or "" for any).
    #[serde(default)]
    pub d: String,
    /// Expiry, Unix seconds.
    pub e: u64,
    /// The user's token epoch when issued.
    pub n: u64,
    /// Token id (for revoking this token alone).
    pub i: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Signs `claims` with `key`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let head = format!("{PREFIX}{}", Base64UrlUnpadded::encode_string(&json));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), head.as_bytes());
    format!("{head}.{}", Base64UrlUnpadded::encode_string(tag.as_ref()))
}

/// Reads the claims without checking the signature (to find the tenant's key).
pub fn peek(token: &str) -> Result<Claims, TokenError> {
    let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (claims, _) = body.split_once('.').ok_or(TokenError::Malformed)?;
    let json = Base64UrlUnpadded::decode_vec(claims).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// Checks the signature with `key` and the expiry against `now` (Unix seconds).
pub fn verify(key: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    let claims = peek(token)?;
    let (head, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mac = Base64UrlUnpadded::decode_vec(mac).map_err(|_| TokenError::Malformed)?;
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        head.as_bytes(),
        &mac,
    )
    .map_err(|_| TokenError::BadSignature)?;
    if claims.e <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(e: u64) -> Claims {
        Claims {
            t: 1,
            u: 2,
            a: "alice".into(),
            d: "phone".into(),
            e,
            n: 0,
            i: "x1".into(),
        }
    }

    #[test]
    fn signed_tokens_verify_and_tampering_is_caught() {
        let t = sign(b"k", &claims(100));
        assert!(t.starts_with(PREFIX));
        assert_eq!(verify(b"k", &t, 50), Ok(claims(100)));
        assert_eq!(verify(b"other", &t, 50), Err(TokenError::BadSignature));
        assert_eq!(verify(b"k", &t, 100), Err(TokenError::Expired));
        // Claims swapped in from another token: the MAC no longer matches.
        let other = sign(b"k", &claims(999));
        let (_, mac) = t.rsplit_once('.').expect("mac");
        let (head, _) = other.rsplit_once('.').expect("head");
        assert_eq!(
            verify(b"k", &format!("{head}.{mac}"), 50),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "sb1.", "sb1.x.y", "hello", "sb1.!!!.x"] {
            assert!(verify(b"k", junk, 0).is_err(), "{junk}");
        }
    }
}
