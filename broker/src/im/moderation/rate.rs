//! Per-user send rate limits: a token bucket per user, refilled at the tenant's rate up
//! to its burst. Only users that sent recently have a bucket: a bucket that has refilled to
//! the full burst is the same as none, so sweeps (run when the map has doubled since the
//! last one) drop them. Memory is bounded by the number of users who sent within one
//! refill period of their bucket; time is passed in (`now`), so the logic is tested with a
//! virtual clock.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A tenant's limit: `messages` per `per_secs` seconds, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub messages: u32,
    pub per_secs: u32,
    pub burst: u32,
}

impl Rate {
    /// Tokens added per second.
    fn per_sec(self) -> f64 {
        f64::from(self.messages) / f64::from(self.per_secs.max(1))
    }

    /// Whether the limit is valid (messages and burst ≥ 1, a period of at least a second).
    pub fn valid(self) -> bool {
        self.messages >= 1 && self.per_secs >= 1 && self.burst >= 1
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn refilled(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * self.rate.per_sec()).min(f64::from(self.rate.burst))
    }
}

/// The buckets of the users who sent recently.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    buckets: HashMap<(u64, u64), Bucket>,
    /// Sweep when the map grows past this.
    sweep_at: usize,
}

/// The smallest map that is swept.
const MIN_SWEEP: usize = 1024;

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            inner: Mutex::new(Inner {
                buckets: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }
}

impl Limiter {
    /// Takes one token from user `uid`'s bucket; false if it is empty.
    pub fn take(&self, tid: u64, uid: u64, rate: Rate, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        let bucket = inner.buckets.entry((tid, uid)).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
            rate,
        });
        if bucket.rate != rate {
            // The tenant changed its limit: keep what is left, within the new burst.
            bucket.tokens = bucket.tokens.min(f64::from(rate.burst));
            bucket.rate = rate;
        }
        let tokens = bucket.refilled(now);
        let allowed = tokens >= 1.0;
        bucket.tokens = if allowed { tokens - 1.0 } else { tokens };
        bucket.at = now;
        if inner.buckets.len() > inner.sweep_at {
            inner
                .buckets
                .retain(|_, b| b.refilled(now) < f64::from(b.rate.burst));
            inner.sweep_at = (inner.buckets.len() * 2).max(MIN_SWEEP);
        }
        allowed
    }

    /// Buckets held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().buckets.len()
    }

    /// True when no user has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_refusal_then_refill() {
        let l = Limiter::default();
        let rate = Rate {
            messages: 1,
            per_secs: 2,
            burst: 3,
        };
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.take(1, 1, rate, t0)));
        assert!(!l.take(1, 1, rate, t0));
        assert!(!l.take(1, 1, rate, t0 + Duration::from_secs(1)));
        assert!(l.take(1, 1, rate, t0 + Duration::from_secs(3)));
        // Another user has its own bucket.
        assert!(l.take(1, 2, rate, t0));
    }

    #[test]
    fn idle_buckets_are_dropped_by_sweeps() {
        let l = Limiter::default();
        let rate = Rate {
            messages: 10,
            per_secs: 1,
            burst: 10,
        };
        let t0 = Instant::now();
        for uid in 0..MIN_SWEEP as u64 {
            l.take(1, uid, rate, t0);
        }
        assert_eq!(l.len(), MIN_SWEEP);
        // A second later every bucket is full again: the next sweep drops them all but the
        // one that just sent.
        l.take(1, u64::MAX, rate, t0 + Duration::from_secs(1));
        assert_eq!(l.len(), 1);
    }
}
