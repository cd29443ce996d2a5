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
                    s.sessions.remove(&client_id);
                    s.queues.retain(|(u, _), _| *u != uid);
                    s.awaiting_rel.retain(|(c, _), _| *c != client_id);
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
                Op::Probe => {}
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
                Op::Append { log, idem, value } => {
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
pub(crate) mod tests {
    use super::*;

    /// Runs a transaction and returns its results.
    fn commit(s: &dyn Store, ops: Vec<Op>) -> Applied {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.write(ops, Some(tx));
        rx.blocking_recv().expect("writer answers").expect("commit")
    }

    /// The contract every store keeps; run against the memory store here and against redb
    /// in `redb`'s tests.
    pub(crate) fn contract(s: &dyn Store) {
        let log = b"conv-1".to_vec();
        let a = commit(
            s,
            vec![
                Op::Append {
                    log: log.clone(),
                    idem: Some(b"m1".to_vec()),
                    value: b"hello".to_vec(),
                },
                Op::Append {
                    log: log.clone(),
                    idem: None,
                    value: b"world".to_vec(),
                },
                Op::Increment {
                    table: Table::Counters,
                    key: b"uid".to_vec(),
                    by: 1,
                },
            ],
        );
        assert_eq!(
            a.results,
            [
                OpResult::Appended {
                    seq: 1,
                    duplicate: false
                },
                OpResult::Appended {
                    seq: 2,
                    duplicate: false
                },
                OpResult::Counter(1),
            ]
        );
        // A resend with the same idempotency key adds nothing.
        let again = commit(
            s,
            vec![Op::Append {
                log: log.clone(),
                idem: Some(b"m1".to_vec()),
                value: b"hello".to_vec(),
            }],
        );
        assert_eq!(
            again.results,
            [OpResult::Appended {
                seq: 1,
                duplicate: true
            }]
        );
        assert_eq!(s.log_last(&log).expect("read"), 2);
        commit(
            s,
            vec![
                Op::SetToLogHead {
                    table: Table::Cursors,
                    key: b"read".to_vec(),
                    log: log.clone(),
                },
                Op::Max {
                    table: Table::Cursors,
                    key: b"max".to_vec(),
                    value: 5,
                },
                Op::Max {
                    table: Table::Cursors,
                    key: b"max".to_vec(),
                    value: 3,
                },
            ],
        );
        assert_eq!(
            s.get(Table::Cursors, b"read").expect("get"),
            Some(2u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            s.get(Table::Cursors, b"max").expect("get"),
            Some(5u64.to_be_bytes().to_vec()),
            "Max never lowers"
        );
        let fwd = s.log_range(&log, 1, u64::MAX, 10, false).expect("read");
        assert_eq!(fwd, [(1, b"hello".to_vec()), (2, b"world".to_vec())]);
        let back = s.log_range(&log, 1, 2, 1, true).expect("read");
        assert_eq!(back, [(2, b"world".to_vec())]);
        commit(
            s,
            vec![
                Op::ReplaceEntry {
                    log: log.clone(),
                    seq: 1,
                    value: b"recalled".to_vec(),
                },
                Op::TrimLog {
                    log: log.clone(),
                    below: 2,
                },
            ],
        );
        assert_eq!(
            s.log_range(&log, 0, 9, 10, false).expect("read"),
            [(2, b"world".to_vec())]
        );
        // Numbering goes on after a trim.
        let next = commit(
            s,
            vec![Op::Append {
                log,
                idem: None,
                value: b"!".to_vec(),
            }],
        );
        assert_eq!(
            next.results,
            [OpResult::Appended {
                seq: 3,
                duplicate: false
            }]
        );
        // Tables: put, prefix scan with a cursor, delete.
        let puts = (1u8..=4)
            .map(|i| Op::Put {
                table: Table::UserConvs,
                key: vec![7, i],
                value: vec![i],
            })
            .chain([Op::Put {
                table: Table::UserConvs,
                key: vec![8, 1],
                value: vec![0],
            }])
            .collect();
        commit(s, puts);
        let page = s.scan(Table::UserConvs, &[7], None, 2).expect("scan");
        assert_eq!(page, [(vec![7, 1], vec![1]), (vec![7, 2], vec![2])]);
        let next = s
            .scan(Table::UserConvs, &[7], Some(&[7, 2]), 10)
            .expect("scan");
        assert_eq!(next, [(vec![7, 3], vec![3]), (vec![7, 4], vec![4])]);
        commit(
            s,
            vec![Op::Delete {
                table: Table::UserConvs,
                key: vec![7, 1],
            }],
        );
        assert_eq!(s.get(Table::UserConvs, &[7, 1]).expect("get"), None);
        assert_eq!(
            s.get(Table::UserConvs, &[7, 2]).expect("get"),
            Some(vec![2])
        );
        assert_eq!(s.get(Table::Users, &[7, 2]).expect("get"), None);
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::new());
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
