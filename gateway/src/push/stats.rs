//! The worker's counters ([`PushStats`]): jobs, sends, retries, removed tokens, deliveries
//! given up or skipped by vendor and reason, and the delivery latency; as JSON and in the
//! Prometheus text format (`GET /metrics` of the gateway).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};

/// Why a device or user got no push (the `reason` label of
/// `switchboard_push_failures_total`). A closed set, so the label map stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The user has no device token.
    NoToken,
    /// The tenant has no credentials for the token's vendor.
    NoCredentials,
    /// The provider said the token is dead (removed).
    DeadToken,
    /// The provider refused, or retries ran out.
    ProviderError,
    /// The tenant's credentials or the user's tokens could not be read.
    BrokerUnavailable,
    /// Held back by the user's quiet hours (mode `suppress`).
    QuietHours,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::NoCredentials => "no_credentials",
            Reason::DeadToken => "dead_token",
            Reason::ProviderError => "provider_error",
            Reason::BrokerUnavailable => "broker_unavailable",
            Reason::QuietHours => "quiet_hours",
        }
    }
}

/// Counters of one worker.
#[derive(Debug, Default)]
pub struct PushStats {
    pub jobs: AtomicU64,
    pub duplicates: AtomicU64,
    pub sent: AtomicU64,
    /// Of `sent`, delivered silently (quiet hours).
    pub sent_silent: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub tokens_removed: AtomicU64,
    /// Recipients with no token, or no credentials for the token's vendor.
    pub undeliverable: AtomicU64,
    /// Time from taking a device's delivery to the provider's final answer (retries
    /// included): sum in microseconds and count.
    pub latency_us: AtomicU64,
    pub latency_n: AtomicU64,
    /// The same times per bucket of [`LATENCY_BUCKETS`] (not cumulative; the last one is
    /// +Inf).
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// No push, by (vendor, reason); vendor empty when none was involved.
    failures: Mutex<BTreeMap<(String, Reason), u64>>,
}

/// Upper bounds of the push latency histogram's buckets, in seconds: a provider answers
/// in tens of milliseconds, retries with back-off take seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// Largest vendor name counted (longer ones are truncated: labels stay bounded).
const MAX_VENDOR: usize = 16;

impl PushStats {
    /// Counts one recipient or device that got no push.
    pub fn fail(&self, vendor: &str, why: Reason) {
        let vendor: String = vendor.chars().take(MAX_VENDOR).collect();
        *self.failures.lock().entry((vendor, why)).or_default() += 1;
    }

    /// Records one delivery's time, from taking it to the provider's final answer.
    pub fn observe_latency(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency_n.fetch_add(1, Ordering::Relaxed);
    }

    /// The count for (vendor, reason).
    pub fn failures(&self, vendor: &str, why: Reason) -> u64 {
        self.failures
            .lock()
            .get(&(vendor.to_owned(), why))
            .copied()
            .unwrap_or(0)
    }

    /// The counters as JSON.
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by_reason: Vec<Value> = self
            .failures
            .lock()
            .iter()
            .map(|((v, r), n)| json!({"vendor": v, "reason": r.as_str(), "count": n}))
            .collect();
        json!({
            "jobs": g(&self.jobs), "duplicates": g(&self.duplicates), "sent": g(&self.sent),
            "sent_silent": g(&self.sent_silent),
            "failed": g(&self.failed), "retried": g(&self.retried),
            "tokens_removed": g(&self.tokens_removed), "undeliverable": g(&self.undeliverable),
            "failures": by_reason,
        })
    }

    /// The counters in the Prometheus text format (`/metrics` of the gateway).
    pub fn prometheus(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, help, v) in [
            ("jobs", "Push jobs taken", g(&self.jobs)),
            (
                "duplicate_jobs",
                "Push jobs skipped as already seen",
                g(&self.duplicates),
            ),
            (
                "sent",
                "Notifications accepted by a provider",
                g(&self.sent),
            ),
            (
                "sent_silent",
                "Notifications accepted by a provider, delivered silently (quiet hours)",
                g(&self.sent_silent),
            ),
            (
                "failed",
                "Deliveries given up (provider error, or broker unreachable)",
                g(&self.failed),
            ),
            ("retried", "Provider attempts retried", g(&self.retried)),
            (
                "tokens_removed",
                "Dead device tokens removed",
                g(&self.tokens_removed),
            ),
            (
                "undeliverable",
                "Recipients or devices with no token or no credentials",
                g(&self.undeliverable),
            ),
        ] {
            let _ = write!(
                out,
                "# HELP switchboard_push_{name}_total {help}.\n# TYPE switchboard_push_{name}_total counter\nswitchboard_push_{name}_total {v}\n"
            );
        }
        out.push_str("# HELP switchboard_push_failures_total Recipients or devices that got no push, by vendor and reason.\n# TYPE switchboard_push_failures_total counter\n");
        for ((vendor, reason), n) in self.failures.lock().iter() {
            let vendor: String = vendor
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let _ = writeln!(
                out,
                "switchboard_push_failures_total{{vendor=\"{vendor}\",reason=\"{}\"}} {n}",
                reason.as_str()
            );
        }
        out.push_str("# HELP switchboard_push_latency_seconds Delivery time per device, retries included.\n# TYPE switchboard_push_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += g(&self.latency_buckets[i]);
            let _ = writeln!(
                out,
                "switchboard_push_latency_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += g(&self.latency_buckets[LATENCY_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "switchboard_push_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             switchboard_push_latency_seconds_sum {}\n\
             switchboard_push_latency_seconds_count {}",
            g(&self.latency_us) as f64 / 1e6,
            g(&self.latency_n)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_labelled_by_vendor_and_reason() {
        let s = PushStats::default();
        s.fail("apns", Reason::DeadToken);
        s.fail("apns", Reason::DeadToken);
        s.fail("", Reason::NoToken);
        let text = s.prometheus();
        assert!(
            text.contains(
                "switchboard_push_failures_total{vendor=\"apns\",reason=\"dead_token\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("reason=\"no_token\"} 1\n"), "{text}");
        assert_eq!(s.failures("apns", Reason::DeadToken), 2);
    }

    #[test]
    fn latency_histogram_is_cumulative_and_ends_at_inf() {
        let s = PushStats::default();
        s.observe_latency(std::time::Duration::from_millis(20));
        s.observe_latency(std::time::Duration::from_millis(20));
        s.observe_latency(std::time::Duration::from_secs(3));
        s.observe_latency(std::time::Duration::from_secs(100));
        let text = s.prometheus();
        for line in [
            "switchboard_push_latency_seconds_bucket{le=\"0.01\"} 0\n",
            "switchboard_push_latency_seconds_bucket{le=\"0.025\"} 2\n",
            "switchboard_push_latency_seconds_bucket{le=\"2.5\"} 2\n",
            "switchboard_push_latency_seconds_bucket{le=\"10\"} 3\n",
            "switchboard_push_latency_seconds_bucket{le=\"+Inf\"} 4\n",
            "switchboard_push_latency_seconds_count 4\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
