//! Login attempts per source address: a token bucket each, exponential back-off after
//! failures, and a global bucket on top. Sans-IO: every call takes `now`.
//!
//! IPv6 addresses are grouped by /64 (one subscriber usually owns a whole /64). The table
//! is bounded: when full, idle entries are dropped; if none is idle, new addresses are
//! refused until some are (fail closed under a distributed flood).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AuthLimits;

/// Why an attempt may not proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address is over its rate or backing off after failures.
    Address,
    /// All addresses together are over the global rate, or the table is full.
    Global,
}

#[derive(Debug, Clone)]
struct Entry {
    tokens: f64,
    refilled: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    last_failure: Option<Instant>,
}

/// The per-address and global limits.
#[derive(Debug)]
pub struct RateLimiter {
    limits: AuthLimits,
    table: HashMap<IpAddr, Entry>,
    global_tokens: f64,
    global_refilled: Instant,
}

impl RateLimiter {
    pub fn new(limits: AuthLimits, now: Instant) -> RateLimiter {
        RateLimiter {
            global_tokens: f64::from(limits.global_burst),
            global_refilled: now,
            table: HashMap::new(),
            limits,
        }
    }

    /// Takes one attempt's tokens for `addr`, or says why not.
    pub fn admit(&mut self, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        let l = &self.limits;
        refill(
            &mut self.global_tokens,
            &mut self.global_refilled,
            l.global_rate,
            l.global_burst,
            now,
        );
        let key = key(addr);
        if !self.table.contains_key(&key) && self.table.len() >= l.max_tracked_addresses {
            self.sweep(now);
            if self.table.len() >= self.limits.max_tracked_addresses {
                return Err(Refusal::Global);
            }
        }
        let l = &self.limits;
        let e = self.table.entry(key).or_insert_with(|| Entry {
            tokens: f64::from(l.per_address_burst),
            refilled: now,
            failures: 0,
            blocked_until: None,
            last_failure: None,
        });
        if e.blocked_until.is_some_and(|t| now < t) {
            return Err(Refusal::Address);
        }
        refill(
            &mut e.tokens,
            &mut e.refilled,
            l.per_address_rate,
            l.per_address_burst,
            now,
        );
        if e.tokens < 1.0 {
            return Err(Refusal::Address);
        }
        if self.global_tokens < 1.0 {
            return Err(Refusal::Global);
        }
        e.tokens -= 1.0;
        self.global_tokens -= 1.0;
        Ok(())
    }

    /// Records an attempt's outcome: beyond `free_failures` consecutive failures, a failure
    /// blocks the address for `failure_backoff_ms × 2^(failures − free_failures − 1)`, at
    /// most `max_backoff_secs`; a success forgets the failures.
    pub fn record(&mut self, addr: IpAddr, success: bool, now: Instant) {
        let l = &self.limits;
        let Some(e) = self.table.get_mut(&key(addr)) else {
            return;
        };
        if success {
            e.failures = 0;
            e.blocked_until = None;
            return;
        }
        let max = Duration::from_secs(l.max_backoff_secs);
        // Failures long ago no longer count.
        if e.last_failure
            .is_some_and(|t| now.duration_since(t) > max * 2)
        {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = Some(now);
        let Some(counted) = e.failures.checked_sub(l.free_failures.saturating_add(1)) else {
            return;
        };
        let backoff = Duration::from_millis(l.failure_backoff_ms)
            .saturating_mul(1u32 << counted.min(20))
            .min(max);
        e.blocked_until = Some(now + backoff);
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Drops entries that carry no state: bucket full again, not blocked, failures old.
    fn sweep(&mut self, now: Instant) {
        let l = &self.limits;
        let max = Duration::from_secs(l.max_backoff_secs);
        self.table.retain(|_, e| {
            let mut tokens = e.tokens;
            let mut at = e.refilled;
            refill(
                &mut tokens,
                &mut at,
                l.per_address_rate,
                l.per_address_burst,
                now,
            );
            let full = tokens >= f64::from(l.per_address_burst);
            let blocked = e.blocked_until.is_some_and(|t| now < t);
            let recent = e
                .last_failure
                .is_some_and(|t| now.duration_since(t) <= max * 2);
            !(full && !blocked && !recent)
        });
    }
}

fn refill(tokens: &mut f64, at: &mut Instant, rate: f64, burst: u32, now: Instant) {
    let dt = now.saturating_duration_since(*at).as_secs_f64();
    *tokens = (*tokens + dt * rate).min(f64::from(burst));
    *at = now;
}

/// IPv4 addresses as they are, IPv6 by /64 (IPv4-mapped ones as IPv4).
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthLimits {
        AuthLimits {
            per_address_rate: 1.0,
            per_address_burst: 3,
            free_failures: 0,
            failure_backoff_ms: 100,
            max_backoff_secs: 10,
            global_rate: 100.0,
            global_burst: 100,
            max_tracked_addresses: 2,
            ..AuthLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn first_failures_are_free() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(
            AuthLimits {
                free_failures: 2,
                per_address_burst: 100,
                ..limits()
            },
            t0,
        );
        let a = ip("10.0.0.1");
        for _ in 0..2 {
            assert_eq!(r.admit(a, t0), Ok(()));
            r.record(a, false, t0);
        }
        assert_eq!(r.admit(a, t0), Ok(()));
        r.record(a, false, t0);
        assert_eq!(r.admit(a, t0), Err(Refusal::Address));
    }

    #[test]
    fn bucket_refills_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits(), t0);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(r.admit(a, t0), Ok(()));
        }
        assert_eq!(r.admit(a, t0), Err(Refusal::Address));
        assert_eq!(r.admit(ip("10.0.0.2"), t0), Ok(()), "others unaffected");
        assert_eq!(r.admit(a, t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn failures_back_off_exponentially_and_success_resets() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(
            AuthLimits {
                per_address_burst: 100,
                ..limits()
            },
            t0,
        );
        let a = ip("10.0.0.1");
        let mut now = t0;
        for expected_ms in [100, 200, 400, 800] {
            assert_eq!(r.admit(a, now), Ok(()));
            r.record(a, false, now);
            let d = Duration::from_millis(expected_ms);
            assert_eq!(
                r.admit(a, now + d - Duration::from_millis(1)),
                Err(Refusal::Address)
            );
            now += d;
        }
        assert_eq!(r.admit(a, now), Ok(()));
        r.record(a, true, now);
        assert_eq!(r.admit(a, now), Ok(()), "success clears the back-off");
        for _ in 0..30 {
            r.record(a, false, now);
        }
        assert_eq!(
            r.admit(a, now + Duration::from_secs(9)),
            Err(Refusal::Address)
        );
        assert_eq!(r.admit(a, now + Duration::from_secs(10)), Ok(()), "capped");
    }

    #[test]
    fn table_is_bounded_and_ipv6_grouped_by_prefix() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(limits(), t0);
        assert_eq!(r.admit(ip("2001:db8::1"), t0), Ok(()));
        assert_eq!(r.admit(ip("2001:db8::2"), t0), Ok(()));
        assert_eq!(r.len(), 1);
        assert_eq!(r.admit(ip("10.0.0.1"), t0), Ok(()));
        assert_eq!(r.admit(ip("10.0.0.2"), t0), Err(Refusal::Global));
        // Once the buckets are full again, idle entries make room.
        assert_eq!(r.admit(ip("10.0.0.2"), t0 + Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn global_bucket_caps_all_addresses() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(
            AuthLimits {
                global_burst: 2,
                global_rate: 1.0,
                max_tracked_addresses: 100,
                ..limits()
            },
            t0,
        );
        assert_eq!(r.admit(ip("10.0.0.1"), t0), Ok(()));
        assert_eq!(r.admit(ip("10.0.0.2"), t0), Ok(()));
        assert_eq!(r.admit(ip("10.0.0.3"), t0), Err(Refusal::Global));
    }
}
