//! An in-memory [`Store`]: every transaction is applied at once, under one lock, and is
//! "durable" immediately. For unit tests of the pipeline and the IM service, and as the
//! second implementation that keeps the trait honest (cluster mode adds PostgreSQL).
//!
//! It can be told to fail commits ([`MemoryStore::set_failing`]) so tests can check that
//! nothing is acknowledged that was not stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::codec::{SessionRecord, StoredDelivery};
use super::{
    Applied, Done, LogEntry, Op, OpResult, Record, Snapshot, Store, StoreError, StoreStats, Table,
};

#[derive(Debug, Default)]
struct State {
    sessions: BTreeMap<String, SessionRecord>,
    queues: BTreeMap<(u64, u64), StoredDelivery>,
    retained: BTreeMap<String, Vec<u8>>,
    awaiting_rel: BTreeMap<(String, u16), ()>,
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
    logs: BTreeMap<(Vec<u8>, u64), Vec<u8>>,
    heads: HashMap<Vec<u8>, u64>,
    idem: HashMap<(Vec<u8>, Vec<u8>), u64>,
}

/// A store that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    failing: AtomicBool,
    commits: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following commit fail (true) or succeed again (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Number of retained messages stored.
    pub fn retained_len(&self) -> usize {
        self.state.lock().retained.len()
    }

    /// Number of queued deliveries stored for session `uid`.
    pub fn queue_len(&self, uid: u64) -> usize {
        self.state
            .lock()
            .queues
            .range((uid, 0)..=(uid, u64::MAX))
            .count()
    }

    fn apply(s: &mut State, ops: Vec<Op>) -> Applied {
        let mut results = Vec::new();
        for op in ops {
            match op {
                Op::PutSession { client_id, record } => {
                    s.sessions.insert(client_id, record);
                }
                Op::DeleteSession { client_id, uid } => {
                    // A newer session under the same client id keeps its rows.
                    if s.sessions.get(&client_id).is_none_or(|r| r.uid == uid) {
                        s.sessions.remove(&client_id);
                        s.awaiting_rel.retain(|(c, _), _| *c != client_id);
                    }
                    s.queues.retain(|(u, _), _| *u != uid);
                }
                Op::Enqueue { uid, seq, delivery } => {
                    s.queues.insert((uid, seq), delivery);
                }
                Op::Dequeue { uid, seq } => {
                    s.queues.remove(&(uid, seq));
                }
                Op::MarkSent { uid, seq, sent } => {
                    if let Some(d) = s.queues.get_mut(&(uid, seq)) {
                        d.sent = sent;
                    }
                }
                Op::PutRetained { topic, message } => {
                    s.retained.insert(topic, message);
                }
                Op::DeleteRetained { topic } => {
                    s.retained.remove(&topic);
                }
                Op::AwaitRel { client_id, pkid } => {
                    s.awaiting_rel.insert((client_id, pkid), ());
                }
                Op::Released { client_id, pkid } => {
                    s.awaiting_rel.remove(&(client_id, pkid));
                }
                Op::Probe | Op::Barrier => {}
                Op::Put { table, key, value } => {
                    s.tables.insert((table, key), value);
                }
                Op::Delete { table, key } => {
                    s.tables.remove(&(table, key));
                }
                Op::Increment { table, key, by } => {
                    let old = s
                        .tables
                        .get(&(table, key.clone()))
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                        .map_or(0, u64::from_be_bytes);
                    let new = old.saturating_add(by);
                    s.tables.insert((table, key), new.to_be_bytes().to_vec());
                    results.push(OpResult::Counter(new));
                }
                Op::Append { log, idem, value } | Op::AppendRecent { log, idem, value } => {
                    if let Some(seq) = idem
                        .as_ref()
                        .and_then(|i| s.idem.get(&(log.clone(), i.clone())))
                    {
                        results.push(OpResult::Appended {
                            seq: *seq,
                            duplicate: true,
                        });
                        continue;
                    }
                    let head = s.heads.entry(log.clone()).or_insert(0);
                    *head += 1;
                    let seq = *head;
                    if let Some(i) = idem {
                        s.idem.insert((log.clone(), i), seq);
                    }
                    s.logs.insert((log, seq), value);
                    results.push(OpResult::Appended {
                        seq,
                        duplicate: false,
                    });
                }
                Op::ReplaceEntry { log, seq, value } => {
                    if let Some(v) = s.logs.get_mut(&(log, seq)) {
                        *v = value;
                    }
                }
                Op::SetToLogHead { table, key, log } => {
                    let h = s.heads.get(&log).copied().unwrap_or(0);
                    s.tables.insert((table, key), h.to_be_bytes().to_vec());
                }
                Op::Max { table, key, value } => {
                    let old = s
                        .tables
                        .get(&(table, key.clone()))
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                        .map_or(0, u64::from_be_bytes);
                    if old < value {
                        s.tables.insert((table, key), value.to_be_bytes().to_vec());
                    }
                }
                Op::TrimLog { log, below } => {
                    s.logs.retain(|(l, seq), _| *l != log || *seq >= below);
                }
            }
        }
        Applied { results }
    }
}

impl Store for MemoryStore {
    fn write(&self, ops: Vec<Op>, done: Option<Done>) {
        let n = ops.len() as u64;
        let result = if self.failing.load(Ordering::Relaxed) {
            self.failed.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::Io(
                "commit failed (MemoryStore told to fail)".into(),
            ))
        } else {
            let applied = Self::apply(&mut self.state.lock(), ops);
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.ops.fetch_add(n, Ordering::Relaxed);
            Ok(applied)
        };
        if let Some(d) = done {
            let _ = d.send(result);
        }
    }

    fn congested(&self) -> bool {
        false
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let s = self.state.lock();
        let mut snap = Snapshot::default();
        for (id, rec) in &s.sessions {
            snap.max_uid = snap.max_uid.max(rec.uid);
            snap.sessions.push((id.clone(), rec.clone()));
        }
        for ((uid, seq), d) in &s.queues {
            snap.max_seq = snap.max_seq.max(*seq);
            snap.queues.entry(*uid).or_default().push((*seq, d.clone()));
        }
        snap.retained = s.retained.values().cloned().collect();
        for (client, pkid) in s.awaiting_rel.keys() {
            snap.awaiting_rel
                .entry(client.clone())
                .or_default()
                .push(*pkid);
        }
        Ok(snap)
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .state
            .lock()
            .tables
            .get(&(table, key.to_vec()))
            .cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let s = self.state.lock();
        let start = (table, after.unwrap_or(prefix).to_vec());
        Ok(s.tables
            .range(start..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| a != k.as_slice()))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let s = self.state.lock();
        let range = s.logs.range((log.to_vec(), from)..=(log.to_vec(), to));
        let pick = |((_, seq), v): (&(Vec<u8>, u64), &Vec<u8>)| (*seq, v.clone());
        Ok(if backwards {
            range.rev().take(limit).map(pick).collect()
        } else {
            range.take(limit).map(pick).collect()
        })
    }

    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError> {
        Ok(self.state.lock().heads.get(log).copied().unwrap_or(0))
    }

    fn healthy(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    fn over_budget(&self, _extra: u64) -> bool {
        false
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            failed_commits: self.failed.load(Ordering::Relaxed),
            bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_the_contract() {
        let s = MemoryStore::new();
        crate::store::conformance::all(&s);
    }

    #[test]
    fn failing_commit_reports_an_error_and_applies_nothing() {
        let s = MemoryStore::new();
        s.set_failing(true);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        s.write(
            vec![Op::Put {
                table: Table::Users,
                key: vec![1],
                value: vec![1],
            }],
            Some(tx),
        );
        assert!(matches!(rx.try_recv(), Ok(Err(StoreError::Io(_)))));
        assert!(!s.healthy());
        s.set_failing(false);
        assert_eq!(s.get(Table::Users, &[1]).expect("get"), None);
    }
}
