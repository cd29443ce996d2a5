//! Authentication of the native API.
//!
//! App servers sign each request: headers `App-Key`, `Nonce`, `Timestamp` (Unix seconds)
//! and `Signature` = hex HMAC-SHA256, keyed with the tenant's app secret, of nonce +
//! timestamp + body. Timestamps more than five minutes off are refused, and so is a nonce
//! seen before within that window (a replayed request). Account-level calls carry the
//! developer account's `Account-Id` and `Account-Token` instead.
//!
//! The gateway keeps no state of record: app secrets are looked up from the broker and
//! cached for a minute. Nonces are checked twice: first in this instance's bounded
//! in-memory window (cheap), then by the broker, which every instance shares: the nonce
//! travels with the call's service requests (`request_id::set_signed`) and the broker
//! refuses one another call already used (docs/gateway.md).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use parking_lot::Mutex;
use ring::hmac;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::service::{ServiceClient, ServiceError};

/// Accepted clock difference.
pub const WINDOW_SECS: u64 = 300;
/// How long an app secret is cached.
const SECRET_TTL: Duration = Duration::from_secs(60);
/// Most app keys cached.
const MAX_CACHED_TENANTS: usize = 10_000;
/// Most nonces remembered; beyond, signed requests are refused (503) until older ones
/// leave the window.
const MAX_NONCES: usize = 1_000_000;

/// A tenant as the gateway needs it.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub id: u64,
    pub secret: String,
    pub buin: u64,
    /// The seeds' dialects are on for this tenant.
    pub compat: bool,
    /// Calls per second allowed (per gateway instance); 0: no limit.
    pub rate: u32,
}

/// A token bucket: `rate` calls per second, bursts of up to `rate`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// App secrets and recent nonces.
#[derive(Default)]
pub struct Authenticator {
    tenants: Mutex<HashMap<String, (TenantAuth, Instant)>>,
    nonces: Mutex<Nonces>,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

#[derive(Default)]
struct Nonces {
    seen: HashSet<(u64, String)>,
    /// (expiry, key) in insertion order: entries leave from the front.
    order: VecDeque<(u64, (u64, String))>,
}

pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature of a request (what app servers compute).
pub fn signature(secret: &str, nonce: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(nonce.as_bytes());
    ctx.update(timestamp.as_bytes());
    ctx.update(body);
    hex(ctx.sign().as_ref())
}

impl Authenticator {
    /// The tenant of `app_key` (cached).
    pub async fn tenant(
        &self,
        service: &ServiceClient,
        app_key: &str,
    ) -> Result<TenantAuth, ApiError> {
        if let Some((t, at)) = self.tenants.lock().get(app_key)
            && at.elapsed() < SECRET_TTL
        {
            return Ok(t.clone());
        }
        let v = match service
            .call("tenant_auth", &json!({ "app_key": app_key }))
            .await
        {
            Ok(v) => v,
            Err(ServiceError::Api { code: 404, .. }) => return Err(ApiError::unknown_app_key()),
            Err(e) => return Err(e.into()),
        };
        let t = TenantAuth {
            id: v["tenant_id"].as_u64().unwrap_or_default(),
            secret: v["app_secret"].as_str().unwrap_or_default().to_owned(),
            buin: v["buin"].as_u64().unwrap_or_default(),
            compat: v["compat_apis"].as_bool().unwrap_or(true),
            rate: v["api_rate_per_sec"].as_u64().unwrap_or_default() as u32,
        };
        let mut cache = self.tenants.lock();
        if cache.len() >= MAX_CACHED_TENANTS {
            cache.clear();
        }
        cache.insert(app_key.to_owned(), (t.clone(), Instant::now()));
        Ok(t)
    }

    /// Drops `app_key` from the cache (its secret or settings changed on this gateway;
    /// other gateways see the change when their entry expires).
    pub fn forget(&self, app_key: &str) {
        self.tenants.lock().remove(app_key);
    }

    /// Checks a signed request; returns its tenant.
    pub async fn verify(
        &self,
        service: &ServiceClient,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<TenantAuth, ApiError> {
        let (Some(app_key), Some(nonce), Some(ts), Some(sig)) = (
            header(headers, "app-key"),
            header(headers, "nonce"),
            header(headers, "timestamp"),
            header(headers, "signature"),
        ) else {
            return Err(ApiError::missing_auth(
                "headers App-Key, Nonce, Timestamp and Signature are required",
            ));
        };
        if nonce.is_empty() || nonce.len() > 128 {
            return Err(ApiError::missing_auth("Nonce must be 1..=128 bytes"));
        }
        let t: u64 = ts
            .parse()
            .map_err(|_| ApiError::missing_auth("Timestamp must be Unix seconds"))?;
        let now = unix_now();
        if t.abs_diff(now) > WINDOW_SECS {
            return Err(ApiError::stale_timestamp());
        }
        let tenant = self.tenant(service, app_key).await?;
        let expected = signature(&tenant.secret, nonce, ts, body);
        let given = sig.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            tracing::info!(app_key, "gateway: signature mismatch");
            return Err(ApiError::bad_signature());
        }
        self.remember_nonce(tenant.id, nonce, now)?;
        // Other gateway instances' nonces: checked by the broker with this call's first
        // service request.
        crate::request_id::set_signed(tenant.id, t + WINDOW_SECS, nonce);
        Ok(tenant)
    }

    /// Records a nonce; refuses one seen within the window.
    pub(crate) fn remember_nonce(
        &self,
        tenant: u64,
        nonce: &str,
        now: u64,
    ) -> Result<(), ApiError> {
        let mut n = self.nonces.lock();
        while n.order.front().is_some_and(|(exp, _)| *exp <= now) {
            if let Some((_, k)) = n.order.pop_front() {
                n.seen.remove(&k);
            }
        }
        let key = (tenant, nonce.to_owned());
        if n.seen.contains(&key) {
            return Err(ApiError::nonce_reused());
        }
        if n.seen.len() >= MAX_NONCES {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                50301,
                "too many signed requests in the replay window; retry later",
            ));
        }
        n.seen.insert(key.clone());
        // A nonce must be remembered as long as its timestamp could still be accepted.
        n.order.push_back((now + 2 * WINDOW_SECS, key));
        Ok(())
    }

    /// Takes one call from the tenant's rate budget; 429 with the seconds to wait if empty.
    pub fn admit(&self, tenant: u64, rate: u32) -> Result<(), ApiError> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_CACHED_TENANTS && !buckets.contains_key(&tenant) {
            // Full buckets carry no information: forget them.
            buckets.retain(|_, b| b.tokens < rate);
        }
        let b = buckets.entry(tenant).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
        Err(ApiError::rate_limited(wait))
    }

    /// Checks developer-account credentials (`Account-Id`, `Account-Token`); returns the
    /// account id.
    pub async fn account(
        &self,
        service: &ServiceClient,
        headers: &HeaderMap,
    ) -> Result<String, ApiError> {
        let (Some(id), Some(token)) = (
            header(headers, "account-id"),
            header(headers, "account-token"),
        ) else {
            return Err(ApiError::missing_auth(
                "headers Account-Id and Account-Token are required",
            ));
        };
        match service
            .call("account_auth", &json!({ "account": id, "token": token }))
            .await
        {
            Ok(_) => Ok(id.to_owned()),
            Err(ServiceError::Api { code: 401, .. }) => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                40105,
                "unknown account or wrong token",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_of_nonce_timestamp_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", "what do ya ", "want for nothing?", b"");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_nonce_is_refused_the_second_time_within_the_window() {
        let a = Authenticator::default();
        assert!(a.remember_nonce(1, "n1", 1000).is_ok());
        assert_eq!(
            a.remember_nonce(1, "n1", 1001).map_err(|e| e.code),
            Err(40104)
        );
        // Another tenant's nonce space is its own.
        assert!(a.remember_nonce(2, "n1", 1001).is_ok());
        // After the window the entry is gone.
        assert!(
            a.remember_nonce(1, "n1", 1000 + 2 * WINDOW_SECS + 1)
                .is_ok()
        );
    }
}
