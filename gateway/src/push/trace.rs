//! Memory of one worker: the per-job trace that answers "why did this push not arrive"
//! ([`Trace`], the last [`TRACE_LEN`] decisions, `POST /v1/push/trace`) and the job ids seen
//! lately ([`Recent`], idempotency of at-least-once delivery). Both bounded.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;

/// Trace entries kept per instance.
pub const TRACE_LEN: usize = 2048;
/// Job ids remembered for idempotency.
pub const RECENT_JOBS: usize = 16_384;

/// One decision about one recipient's device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceEntry {
    pub time_ms: u64,
    pub tenant: u64,
    pub job: String,
    pub user: String,
    /// Empty when the user has no token.
    pub vendor: String,
    /// `sent`, `no_token`, `no_credentials`, `token_removed`, `provider_error`,
    /// `credentials_unavailable`, `tokens_unavailable`, `quiet_hours`.
    pub outcome: &'static str,
    /// The provider's reason, when it gave one; "quiet hours: ..." when quiet hours
    /// changed the delivery.
    pub detail: String,
}

/// The latest decisions, oldest forgotten first.
#[derive(Default)]
pub struct Trace(Mutex<VecDeque<TraceEntry>>);

impl Trace {
    pub fn push(&self, e: TraceEntry) {
        let mut t = self.0.lock();
        if t.len() >= TRACE_LEN {
            t.pop_front();
        }
        t.push_back(e);
    }

    /// The latest entries of `tenant` (of `user` if not empty), newest first.
    pub fn latest(&self, tenant: u64, user: &str, limit: usize) -> Vec<TraceEntry> {
        self.0
            .lock()
            .iter()
            .rev()
            .filter(|e| e.tenant == tenant && (user.is_empty() || e.user == user))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Job ids seen lately, oldest forgotten first.
#[derive(Default)]
pub struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// False when `id` was seen.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_JOBS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded_and_deduplicate() {
        let mut r = Recent::default();
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        for i in 0..RECENT_JOBS {
            r.insert(&i.to_string());
        }
        assert!(r.set.len() <= RECENT_JOBS);
        assert!(r.insert("a"), "forgotten once old");
    }

    #[test]
    fn the_trace_is_bounded_and_newest_first() {
        let t = Trace::default();
        for i in 0..TRACE_LEN + 10 {
            t.push(TraceEntry {
                time_ms: i as u64,
                tenant: 1,
                job: i.to_string(),
                user: "u".into(),
                vendor: String::new(),
                outcome: "sent",
                detail: String::new(),
            });
        }
        let all = t.latest(1, "", usize::MAX);
        assert_eq!(all.len(), TRACE_LEN);
        assert_eq!(all[0].job, (TRACE_LEN + 9).to_string());
        assert!(t.latest(2, "", 10).is_empty());
    }
}
