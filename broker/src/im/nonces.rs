//! Replay protection for the REST gateway's signed calls, shared by every gateway instance
//! connected to this broker node.
//!
//! App servers sign each REST call with a nonce; a gateway instance refuses a nonce it has
//! seen, but it sees only its own requests. So each service request of a signed call
//! carries the user property `signed-nonce` = `{tenant} {until} {call} {nonce}`: the
//! tenant, the Unix second until which the gateway would still accept the request's
//! timestamp, a random id the gateway drew for this HTTP request (32 hex digits), and the
//! nonce (last: it may contain spaces). The broker remembers (tenant, nonce) → call in a
//! bounded window and refuses a nonce already seen under another call id with
//! [`ImError::Replayed`] (code 440); several requests of one call share its id and pass.
//!
//! Bounds: an entry lives until `until` + [`CLOCK_SLACK`] (clocks of gateways and broker
//! may differ by that much), never longer than [`MAX_KEEP`]; at most
//! [`MAX_PER_TENANT`] entries per tenant and [`MAX_TOTAL`] in all. When full, new signed
//! calls are refused (503) rather than old nonces forgotten. Entries hold a 128-bit hash
//! of the nonce, not the nonce.
//!
//! The window is per broker node: in cluster mode, a replay sent through gateways
//! connected to different nodes is caught only by the timestamp window.
//!
//! [`NonceWindow`] is sans-IO (the caller passes `now`); [`ImService::check_signed`]
//! reads the clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest;

use super::{ImError, ImService};

/// The MQTT 5 user property carrying a signed call's nonce.
pub const SIGNED_NONCE_PROPERTY: &str = "signed-nonce";
/// Seconds an entry outlives the gateway's own deadline (clock differences).
pub const CLOCK_SLACK: u64 = 60;
/// Longest an entry is kept (seconds): twice the gateway's ±300 s window, plus slack.
pub const MAX_KEEP: u64 = 600 + CLOCK_SLACK;
/// Most nonces remembered for one tenant.
pub const MAX_PER_TENANT: usize = 500_000;
/// Most nonces remembered in all.
pub const MAX_TOTAL: usize = 1_000_000;

/// A signed call as the gateway describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCall {
    pub tenant: u64,
    /// Unix second until which the gateway would accept the request's timestamp.
    pub until: u64,
    /// The gateway's id of the HTTP request.
    pub call: u128,
    /// 128-bit hash of the tenant and nonce.
    key: u128,
}

impl SignedCall {
    /// Parses the `signed-nonce` property.
    pub fn parse(v: &str) -> Result<SignedCall, ImError> {
        let bad = || ImError::BadRequest(format!("malformed {SIGNED_NONCE_PROPERTY} property"));
        let mut it = v.splitn(4, ' ');
        let (Some(tenant), Some(until), Some(call), Some(nonce)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        let tenant: u64 = tenant.parse().map_err(|_| bad())?;
        let until: u64 = until.parse().map_err(|_| bad())?;
        if call.len() != 32 || nonce.is_empty() || nonce.len() > 256 {
            return Err(bad());
        }
        let call = u128::from_str_radix(call, 16).map_err(|_| bad())?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&tenant.to_be_bytes());
        ctx.update(nonce.as_bytes());
        let d = ctx.finish();
        let mut k = [0u8; 16];
        k.copy_from_slice(d.as_ref().get(..16).ok_or_else(bad)?);
        Ok(SignedCall {
            tenant,
            until,
            call,
            key: u128::from_be_bytes(k),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tenant: u64,
    call: u128,
}

/// Recently seen nonces (sans-IO).
#[derive(Debug)]
pub struct NonceWindow {
    seen: HashMap<u128, Entry>,
    /// (expiry, key), earliest first.
    expiry: BinaryHeap<Reverse<(u64, u128)>>,
    per_tenant: HashMap<u64, usize>,
    max_per_tenant: usize,
    max_total: usize,
}

impl Default for NonceWindow {
    fn default() -> Self {
        NonceWindow::with_limits(MAX_PER_TENANT, MAX_TOTAL)
    }
}

impl NonceWindow {
    /// A window holding at most `per_tenant` nonces of one tenant and `total` in all.
    pub fn with_limits(per_tenant: usize, total: usize) -> NonceWindow {
        NonceWindow {
            seen: HashMap::new(),
            expiry: BinaryHeap::new(),
            per_tenant: HashMap::new(),
            max_per_tenant: per_tenant,
            max_total: total,
        }
    }

    /// Records `c` at `now` (Unix seconds); refuses a nonce seen under another call.
    pub fn check(&mut self, c: &SignedCall, now: u64) -> Result<(), ImError> {
        self.expire(now);
        if let Some(e) = self.seen.get(&c.key) {
            if e.call == c.call {
                return Ok(());
            }
            return Err(ImError::Replayed(
                "the signed request's nonce was already used".into(),
            ));
        }
        let count = self.per_tenant.get(&c.tenant).copied().unwrap_or(0);
        if count >= self.max_per_tenant || self.seen.len() >= self.max_total {
            tracing::warn!(
                tenant = c.tenant,
                count,
                total = self.seen.len(),
                "signed calls refused: the replay window is full"
            );
            return Err(ImError::Unavailable(
                "too many signed requests in the replay window; retry later".into(),
            ));
        }
        let expires = c.until.min(now + MAX_KEEP - CLOCK_SLACK) + CLOCK_SLACK;
        self.seen.insert(
            c.key,
            Entry {
                tenant: c.tenant,
                call: c.call,
            },
        );
        self.expiry.push(Reverse((expires, c.key)));
        *self.per_tenant.entry(c.tenant).or_default() += 1;
        Ok(())
    }

    /// Forgets entries whose time is over.
    fn expire(&mut self, now: u64) {
        while let Some(Reverse((at, key))) = self.expiry.peek().copied() {
            if at > now {
                break;
            }
            self.expiry.pop();
            if let Some(e) = self.seen.remove(&key)
                && let Some(n) = self.per_tenant.get_mut(&e.tenant)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_tenant.remove(&e.tenant);
                }
            }
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl ImService {
    /// Checks the `signed-nonce` property of a service request, if it has one.
    pub fn check_signed(&self, property: Option<&str>) -> Result<(), ImError> {
        let Some(v) = property else {
            return Ok(());
        };
        let c = SignedCall::parse(v)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.nonces.lock().check(&c, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tenant: u64, until: u64, call: u128, nonce: &str) -> SignedCall {
        let v = format!("{tenant} {until} {call:032x} {nonce}");
        match SignedCall::parse(&v) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_nonce_passes_for_its_own_call_and_is_refused_for_another() {
        let mut w = NonceWindow::default();
        assert!(w.check(&call(1, 1300, 7, "n 1"), 1000).is_ok());
        // The same call's second request.
        assert!(w.check(&call(1, 1300, 7, "n 1"), 1001).is_ok());
        // A replay (another HTTP request).
        assert_eq!(
            w.check(&call(1, 1300, 8, "n 1"), 1002)
                .map_err(|e| e.code()),
            Err(440)
        );
        // Another tenant's nonces are its own.
        assert!(w.check(&call(2, 1300, 8, "n 1"), 1002).is_ok());
        // Kept until `until` + slack, then forgotten.
        assert!(
            w.check(&call(1, 1300, 9, "n 1"), 1300 + CLOCK_SLACK - 1)
                .is_err()
        );
        assert!(
            w.check(&call(1, 1300, 9, "n 1"), 1300 + CLOCK_SLACK)
                .is_ok()
        );
    }

    #[test]
    fn a_far_deadline_is_capped() {
        let mut w = NonceWindow::default();
        assert!(w.check(&call(1, u64::MAX / 2, 1, "x"), 1000).is_ok());
        assert!(w.check(&call(1, 0, 2, "y"), 1000 + MAX_KEEP).is_ok());
        assert_eq!(w.len(), 1, "the capped entry left after {MAX_KEEP} s");
    }

    #[test]
    fn a_full_window_refuses_new_nonces_until_old_ones_expire() {
        let mut w = NonceWindow::with_limits(2, 3);
        assert!(w.check(&call(1, 1100, 1, "a"), 1000).is_ok());
        assert!(w.check(&call(1, 1200, 2, "b"), 1000).is_ok());
        // Tenant 1 is full; what it holds is still refused as a replay, not forgotten.
        assert_eq!(
            w.check(&call(1, 1200, 3, "c"), 1000).map_err(|e| e.code()),
            Err(503)
        );
        assert_eq!(
            w.check(&call(1, 1200, 3, "a"), 1000).map_err(|e| e.code()),
            Err(440)
        );
        assert!(w.check(&call(2, 1200, 4, "a"), 1000).is_ok());
        // All full.
        assert_eq!(
            w.check(&call(3, 1200, 5, "a"), 1000).map_err(|e| e.code()),
            Err(503)
        );
        // "a" of tenant 1 expires: room again.
        assert!(w.check(&call(1, 1200, 3, "c"), 1100 + CLOCK_SLACK).is_ok());
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn malformed_properties_are_bad_requests() {
        for v in [
            "",
            "1 2 3",
            "x 2 00000000000000000000000000000001 n",
            "1 2 zz n",
        ] {
            assert_eq!(
                SignedCall::parse(v).map_err(|e| e.code()),
                Err(400),
                "{v:?}"
            );
        }
    }
}
