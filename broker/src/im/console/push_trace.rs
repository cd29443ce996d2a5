//! The push trace of every push worker, kept by the broker so that the console shows what
//! happened to a user's pushes whichever gateway sent them: `console/push_trace/add
//! {entries}` (a worker reports a batch of its decisions) and `console/push_trace/list
//! {tenant, user?, limit?}` (newest first). A ring of [`TRACE_LEN`] entries in memory
//! (the oldest leaves first; a broker restart forgets it), with each text field cut to a
//! bound, so a worker cannot make it grow.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::{ImError, ImService};

/// Entries kept, for every tenant together.
pub const TRACE_LEN: usize = 8192;
/// Most entries in one `add` and one `list`.
pub const MAX_BATCH: usize = 500;
const MAX_LIST: usize = 200;

/// One decision of a push worker about one recipient's device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushTraceEntry {
    pub time_ms: u64,
    pub tenant: u64,
    pub job: String,
    pub user: String,
    pub vendor: String,
    /// `sent`, `no_token`, `token_removed`, `provider_error`, `quiet_hours`, ...
    pub outcome: String,
    pub detail: String,
    /// The message pushed (empty / 0 for jobs that are not about one message).
    pub conversation: String,
    pub seq: u64,
}

impl PushTraceEntry {
    /// Cuts every text to its bound.
    fn bounded(mut self) -> Self {
        let cut = |s: &mut String, n: usize| {
            if s.len() > n {
                let mut end = n;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
        };
        cut(&mut self.job, 128);
        cut(&mut self.user, 64);
        cut(&mut self.vendor, 32);
        cut(&mut self.outcome, 32);
        cut(&mut self.detail, 256);
        cut(&mut self.conversation, 160);
        self
    }
}

/// The ring.
#[derive(Debug, Default)]
pub struct PushTrace(Mutex<VecDeque<PushTraceEntry>>);

impl PushTrace {
    fn add(&self, entries: Vec<PushTraceEntry>) {
        let mut r = self.0.lock();
        for e in entries {
            if r.len() >= TRACE_LEN {
                r.pop_front();
            }
            r.push_back(e.bounded());
        }
    }

    /// The latest entries of `tenant` (of `user` when not empty), newest first.
    pub fn latest(&self, tenant: u64, user: &str, limit: usize) -> Vec<PushTraceEntry> {
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

#[derive(Deserialize)]
struct Add {
    entries: Vec<PushTraceEntry>,
}

#[derive(Deserialize)]
struct List {
    tenant: u64,
    #[serde(default)]
    user: String,
    limit: Option<usize>,
}

impl ImService {
    pub(super) fn console_push_trace(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        match op {
            "add" => {
                let r: Add = super::parse(payload)?;
                if r.entries.len() > MAX_BATCH {
                    return Err(ImError::BadRequest(format!(
                        "more than {MAX_BATCH} trace entries in one request"
                    )));
                }
                let n = r.entries.len();
                self.console.push_trace.add(r.entries);
                Ok(json!({ "added": n }))
            }
            "list" => {
                let r: List = super::parse(payload)?;
                let limit = r.limit.unwrap_or(50).clamp(1, MAX_LIST);
                Ok(json!({ "entries": self.console.push_trace.latest(r.tenant, &r.user, limit) }))
            }
            other => Err(ImError::NotFound(format!(
                "no such request: console/push_trace/{other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_lists_newest_first_per_user() {
        let t = PushTrace::default();
        let e = |i: u64, user: &str| PushTraceEntry {
            time_ms: i,
            tenant: 1,
            user: user.into(),
            detail: "x".repeat(1000),
            ..PushTraceEntry::default()
        };
        t.add(
            (0..TRACE_LEN as u64 + 10)
                .map(|i| e(i, if i % 2 == 0 { "a" } else { "b" }))
                .collect(),
        );
        assert_eq!(t.0.lock().len(), TRACE_LEN);
        let a = t.latest(1, "a", 3);
        let times: Vec<u64> = a.iter().map(|e| e.time_ms).collect();
        let last = TRACE_LEN as u64 + 8;
        assert_eq!(times, [last, last - 2, last - 4]);
        assert!(a[0].detail.len() <= 256, "texts are cut");
        assert!(t.latest(2, "", 10).is_empty(), "other tenants see nothing");
    }
}
