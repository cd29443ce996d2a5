//! The contract every [`Store`] keeps, as plain functions that panic on a breach. The
//! memory and redb stores run it in their unit tests; the PostgreSQL store runs it in
//! `tests/tests/store_pg.rs` against a real server (this module is public with the
//! `conformance` feature for that). [`all`] runs every case on an empty store;
//! [`after_reopen`] checks what must survive closing and opening it again.

use bytes::Bytes;
use switchboard_proto::QoS;

use super::codec::{Sent, SessionRecord, StoredDelivery};
use super::{Applied, Op, OpResult, RECENT_APPENDS, Store, Table};

/// Every case, on an empty store.
pub fn all(s: &dyn Store) {
    im(s);
    recent_appends(s);
    mqtt(s);
    barrier(s);
    concurrent(s);
}

/// [`Op::Barrier`]: its answer comes once everything queued before it is committed (a
/// connection holds output behind one, see `Delivery::handed`).
pub fn barrier(s: &dyn Store) {
    s.write(
        vec![Op::Put {
            table: Table::UserConvs,
            key: b"before-empty".to_vec(),
            value: b"1".to_vec(),
        }],
        None,
    );
    let applied = commit(s, vec![Op::Barrier]);
    assert!(applied.results.is_empty(), "{:?}", applied.results);
    assert_eq!(
        s.get(Table::UserConvs, b"before-empty").expect("get"),
        Some(b"1".to_vec()),
        "the write queued before the barrier is committed when it answers"
    );
}

/// Runs a transaction and returns its results.
pub fn commit(s: &dyn Store, ops: Vec<Op>) -> Applied {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.write(ops, Some(tx));
    rx.blocking_recv().expect("writer answers").expect("commit")
}

fn recent(log: &[u8], key: &str) -> Op {
    Op::AppendRecent {
        log: log.to_vec(),
        idem: Some(key.as_bytes().to_vec()),
        value: key.as_bytes().to_vec(),
    }
}

fn appended(seq: u64, duplicate: bool) -> OpResult {
    OpResult::Appended { seq, duplicate }
}

/// [`Op::AppendRecent`]: one numbering with [`Op::Append`] in the same log, resends of
/// the latest [`RECENT_APPENDS`] keys recognised (in the same commit too), never a seq
/// given twice.
pub fn recent_appends(s: &dyn Store) {
    let log = b"conv-r".to_vec();
    let plain = |idem: Option<&str>| Op::Append {
        log: log.clone(),
        idem: idem.map(|i| i.as_bytes().to_vec()),
        value: b"plain".to_vec(),
    };
    let a = commit(s, vec![plain(None), recent(&log, "k0"), recent(&log, "k0")]);
    assert_eq!(
        a.results,
        [appended(1, false), appended(2, false), appended(2, true)]
    );
    let b = commit(s, vec![recent(&log, "k0"), recent(&log, "k1")]);
    assert_eq!(b.results, [appended(2, true), appended(3, false)]);
    // An indexed append in between keeps the numbering and the recent keys.
    let c = commit(s, vec![plain(Some("p1")), recent(&log, "k1")]);
    assert_eq!(c.results, [appended(4, false), appended(3, true)]);
    for i in 0..RECENT_APPENDS {
        commit(s, vec![recent(&log, &format!("n{i}"))]);
    }
    let head = 4 + RECENT_APPENDS as u64;
    assert_eq!(s.log_last(&log).expect("read"), head);
    let last = commit(s, vec![recent(&log, &format!("n{}", RECENT_APPENDS - 1))]);
    assert_eq!(last.results, [appended(head, true)]);
    // Older than the window: recognised or appended anew, but never under a used seq.
    let old = commit(s, vec![recent(&log, "k0"), plain(Some("p1"))]);
    match old.results.first() {
        Some(OpResult::Appended {
            seq: 2,
            duplicate: true,
        }) => assert_eq!(s.log_last(&log).expect("read"), head),
        Some(OpResult::Appended {
            seq,
            duplicate: false,
        }) => assert_eq!(*seq, head + 1),
        other => panic!("unexpected result {other:?}"),
    }
    assert_eq!(old.results.get(1), Some(&appended(4, true)));
    let entries = s.log_range(&log, 1, u64::MAX, 1000, false).expect("range");
    let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=s.log_last(&log).expect("read")).collect();
    assert_eq!(seqs, expected, "one entry per seq, no gaps");
}

/// IM tables and logs: appends with sequence numbers and idempotency keys, counters,
/// positions, ranges, replace and trim, prefix scans with a cursor.
pub fn im(s: &dyn Store) {
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
    // Several keys of several tables in one read, interleaved, missing ones included:
    // each answer in the place of its key.
    commit(
        s,
        vec![Op::Put {
            table: Table::Cursors,
            key: vec![7, 2],
            value: vec![9],
        }],
    );
    let many = s
        .get_many(&[
            (Table::UserConvs, &[7, 2]),
            (Table::Cursors, &[7, 2]),
            (Table::UserConvs, &[7, 1]),
            (Table::Users, &[7, 2]),
            (Table::UserConvs, &[7, 3]),
            (Table::Cursors, &[7, 3]),
        ])
        .expect("get_many");
    assert_eq!(
        many,
        [
            Some(vec![2]),
            Some(vec![9]),
            None,
            None,
            Some(vec![3]),
            None
        ]
    );
}

fn delivery(body: &'static [u8], sent: Sent) -> StoredDelivery {
    StoredDelivery {
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![3, 70_000],
        message: Bytes::from_static(body),
        sent,
    }
}

fn session(uid: u64) -> SessionRecord {
    SessionRecord {
        uid,
        expiry: 600,
        subs: Vec::new(),
        disconnected_at: Some(1),
        will: None,
        owner: Some("alice".into()),
    }
}

/// The MQTT side: sessions, queues (one body shared by several queues), sent marks,
/// retained messages, QoS 2 state, session deletes that spare a newer session, and what
/// [`Store::load`] returns.
pub fn mqtt(s: &dyn Store) {
    let enqueue = |uid, seq| Op::Enqueue {
        uid,
        seq,
        delivery: delivery(b"shared body", Sent::Queued),
    };
    commit(
        s,
        vec![
            Op::PutSession {
                client_id: "a".into(),
                record: session(1),
            },
            Op::PutSession {
                client_id: "b".into(),
                record: session(2),
            },
            enqueue(1, 1),
            enqueue(1, 2),
            enqueue(1, 3),
            enqueue(2, 4),
            Op::MarkSent {
                uid: 1,
                seq: 2,
                sent: Sent::Published(7),
            },
            Op::AwaitRel {
                client_id: "a".into(),
                pkid: 5,
            },
            Op::AwaitRel {
                client_id: "a".into(),
                pkid: 6,
            },
            Op::PutRetained {
                topic: "t/1".into(),
                message: b"old".to_vec(),
            },
            Op::PutRetained {
                topic: "t/2".into(),
                message: b"two".to_vec(),
            },
        ],
    );
    commit(
        s,
        vec![
            Op::Dequeue { uid: 1, seq: 1 },
            Op::Released {
                client_id: "a".into(),
                pkid: 6,
            },
            Op::PutRetained {
                topic: "t/1".into(),
                message: b"new".to_vec(),
            },
            Op::DeleteRetained {
                topic: "t/2".into(),
            },
            // Enqueued and acknowledged in one commit; a mark for a gone delivery is
            // nothing.
            enqueue(2, 5),
            Op::Dequeue { uid: 2, seq: 5 },
            Op::MarkSent {
                uid: 2,
                seq: 5,
                sent: Sent::Released(9),
            },
            Op::Probe,
        ],
    );
    let snap = s.load().expect("load");
    let mut ids: Vec<&str> = snap.sessions.iter().map(|(c, _)| c.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        snap.sessions.iter().find(|(c, _)| c == "a").map(|x| &x.1),
        Some(&session(1)),
        "session record round-trips"
    );
    assert_eq!(
        snap.queues.get(&1).expect("queue of 1"),
        &vec![
            (2, delivery(b"shared body", Sent::Published(7))),
            (3, delivery(b"shared body", Sent::Queued)),
        ]
    );
    assert_eq!(
        snap.queues.get(&2).expect("queue of 2"),
        &vec![(4, delivery(b"shared body", Sent::Queued))]
    );
    assert_eq!(snap.max_seq, 4);
    assert_eq!(snap.max_uid, 2);
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.retained[0], b"new");
    assert_eq!(snap.awaiting_rel.get("a"), Some(&vec![5]));
    // One session by its key (cluster mode loads a session another node parked).
    let one = s
        .load_scoped(&super::Scope {
            client_id: Some("a".into()),
            ..Default::default()
        })
        .expect("scoped load");
    assert_eq!(one.sessions, vec![("a".to_owned(), session(1))]);
    assert_eq!(one.queues.len(), 1);
    assert_eq!(one.queues.get(&1).map(Vec::len), Some(2));
    assert_eq!(one.awaiting_rel.get("a"), Some(&vec![5]));
    assert!(one.retained.is_empty());

    // A delete for an older session of the same client id spares the newer one's record
    // and QoS 2 state, but removes the old session's queue.
    commit(
        s,
        vec![
            Op::Enqueue {
                uid: 9,
                seq: 10,
                delivery: delivery(b"old session", Sent::Queued),
            },
            Op::DeleteSession {
                client_id: "a".into(),
                uid: 9,
            },
        ],
    );
    let snap = s.load().expect("load");
    assert!(snap.sessions.iter().any(|(c, _)| c == "a"));
    assert!(!snap.queues.contains_key(&9));
    assert_eq!(snap.awaiting_rel.get("a"), Some(&vec![5]));
    commit(
        s,
        vec![Op::DeleteSession {
            client_id: "a".into(),
            uid: 1,
        }],
    );
    let snap = s.load().expect("load");
    assert_eq!(snap.sessions.len(), 1);
    assert!(!snap.queues.contains_key(&1));
    assert!(!snap.awaiting_rel.contains_key("a"));
    assert_eq!(snap.queues.get(&2).map(Vec::len), Some(1));
}

/// Many writers at once, as group commit sees them: every transaction gets its own
/// results, sequence numbers and counter values are handed out exactly once.
pub fn concurrent(s: &dyn Store) {
    const THREADS: usize = 4;
    const EACH: usize = 50;
    let results: Vec<Vec<Applied>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    // Several transactions in flight per thread, so commits carry many.
                    let waits: Vec<_> = (0..EACH)
                        .map(|_| {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            s.write(
                                vec![
                                    Op::Append {
                                        log: b"busy".to_vec(),
                                        idem: None,
                                        value: b"m".to_vec(),
                                    },
                                    Op::Increment {
                                        table: Table::Counters,
                                        key: b"busy".to_vec(),
                                        by: 1,
                                    },
                                ],
                                Some(tx),
                            );
                            rx
                        })
                        .collect();
                    waits
                        .into_iter()
                        .map(|rx| rx.blocking_recv().expect("answer").expect("commit"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let (mut seqs, mut counts) = (Vec::new(), Vec::new());
    for a in results.iter().flatten() {
        match a.results.as_slice() {
            [
                OpResult::Appended {
                    seq,
                    duplicate: false,
                },
                OpResult::Counter(n),
            ] => {
                seqs.push(*seq);
                counts.push(*n);
            }
            other => panic!("unexpected results {other:?}"),
        }
    }
    seqs.sort_unstable();
    counts.sort_unstable();
    let want: Vec<u64> = (1..=(THREADS * EACH) as u64).collect();
    assert_eq!(seqs, want, "every append got its own sequence number");
    assert_eq!(counts, want, "every increment its own value");
    assert_eq!(s.log_last(b"busy").expect("read"), (THREADS * EACH) as u64);
}

/// What [`all`] left must still be there after the store was closed and opened again.
pub fn after_reopen(s: &dyn Store) {
    assert_eq!(s.log_last(b"conv-1").expect("read"), 3);
    // The recent keys survive a restart with the head.
    let head = s.log_last(b"conv-r").expect("read");
    assert!(head >= 4 + RECENT_APPENDS as u64);
    let last = commit(
        s,
        vec![recent(b"conv-r", &format!("n{}", RECENT_APPENDS - 1))],
    );
    assert_eq!(last.results, [appended(4 + RECENT_APPENDS as u64, true)]);
    assert_eq!(
        s.get(Table::Counters, b"uid").expect("get"),
        Some(1u64.to_be_bytes().to_vec())
    );
    let snap = s.load().expect("load");
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.retained, [b"new".to_vec()]);
    assert_eq!(
        snap.queues.get(&2).expect("queue of 2"),
        &vec![(4, delivery(b"shared body", Sent::Queued))]
    );
}
