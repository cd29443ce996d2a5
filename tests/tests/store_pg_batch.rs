//! The PostgreSQL store's multi-row group commits against the memory store: the same
//! random mix of queue ops (a copy queued, its sent state, its acknowledgement, the same
//! key queued again, whole sessions deleted, incoming QoS 2 ids awaiting and released) on
//! a small key space, in transactions that the writer folds into one commit, must leave
//! exactly what the memory store (one op at a time) leaves. Run with multi-row statements
//! (the default) and with one statement per op.

use std::collections::BTreeMap;

use bytes::Bytes;
use switchboard_broker::store::memory::MemoryStore;
use switchboard_broker::store::postgres::PgStore;
use switchboard_broker::store::{
    Op, Sent, SessionRecord, Snapshot, Store, StoredDelivery, conformance,
};
use switchboard_proto::QoS;
use switchboard_tests::postgres::Postgres;

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const BODIES: [&[u8]; 3] = [b"first body", b"second body", b"third"];

fn random_op(r: &mut Rng) -> Op {
    let uid = 1 + r.below(3);
    let seq = 1 + r.below(6);
    let client = ["a", "b", "c"][(uid - 1) as usize].to_owned();
    let sent = match r.below(3) {
        0 => Sent::Queued,
        1 => Sent::Published(1 + r.below(100) as u16),
        _ => Sent::Released(1 + r.below(100) as u16),
    };
    match r.below(20) {
        0..=6 => Op::Enqueue {
            uid,
            seq,
            delivery: StoredDelivery {
                qos: if r.below(2) == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                },
                retain: r.below(2) == 0,
                sub_ids: (0..r.below(3)).map(|i| i as u32 + 1).collect(),
                message: Bytes::from_static(BODIES[r.below(3) as usize]),
                sent,
            },
        },
        7..=9 => Op::MarkSent { uid, seq, sent },
        10..=13 => Op::Dequeue { uid, seq },
        14..=15 => Op::AwaitRel {
            client_id: client,
            pkid: 1 + r.below(4) as u16,
        },
        16..=17 => Op::Released {
            client_id: client,
            pkid: 1 + r.below(4) as u16,
        },
        18 => Op::DeleteSession {
            client_id: client,
            uid,
        },
        _ => Op::PutSession {
            client_id: client,
            record: SessionRecord {
                uid,
                expiry: 600,
                subs: Vec::new(),
                disconnected_at: Some(1),
                will: None,
                owner: None,
            },
        },
    }
}

/// What a snapshot holds, comparable.
type Queues = BTreeMap<u64, Vec<(u64, String)>>;

fn comparable(s: &Snapshot) -> (Queues, BTreeMap<String, Vec<u16>>, Vec<String>) {
    let queues = s
        .queues
        .iter()
        .filter(|(_, q)| !q.is_empty())
        .map(|(uid, q)| {
            let rows = q
                .iter()
                .map(|(seq, d)| {
                    (
                        *seq,
                        format!(
                            "{:?} {} {:?} {:?} {:?}",
                            d.qos, d.retain, d.sub_ids, d.message, d.sent
                        ),
                    )
                })
                .collect();
            (*uid, rows)
        })
        .collect();
    let rel = s
        .awaiting_rel
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(c, v)| {
            let mut v = v.clone();
            v.sort_unstable();
            (c.clone(), v)
        })
        .collect();
    let mut sessions: Vec<String> = s
        .sessions
        .iter()
        .map(|(c, r)| format!("{c}:{}", r.uid))
        .collect();
    sessions.sort();
    (queues, rel, sessions)
}

fn differential(multi_row: bool, db: &str, pg: &Postgres) {
    let url = pg.create_db(db);
    let p = PgStore::open_with(&url, 0, multi_row).expect("PostgreSQL store opens");
    let m = MemoryStore::new();
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(multi_row));
    for round in 0..40 {
        // Several transactions written without waiting: the writer takes them into one
        // group commit; the last one is waited for.
        let txs: Vec<Vec<Op>> = (0..5)
            .map(|_| (0..1 + r.below(12)).map(|_| random_op(&mut r)).collect())
            .collect();
        for ops in &txs {
            conformance::commit(&m, ops.clone());
        }
        let (last, rest) = txs.split_last().expect("five transactions");
        for ops in rest {
            p.write(ops.clone(), None);
        }
        conformance::commit(&p, last.clone());
        let (a, b) = (
            comparable(&m.load().expect("memory loads")),
            comparable(&p.load().expect("PostgreSQL loads")),
        );
        assert_eq!(a, b, "round {round}: PostgreSQL differs from memory");
    }
    let mut metrics = String::new();
    p.write_metrics(&mut metrics);
    let batched = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_pg_batched_ops_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("batched ops metric");
    assert!(batched > 0, "{metrics}");
}

#[test]
fn multi_row_commits_leave_what_one_op_at_a_time_leaves() {
    let Some(pg) = Postgres::start() else { return };
    differential(true, "batched", &pg);
    // Then the comparison mode (one statement per op), on a fresh database.
    differential(false, "per_op", &pg);
}
