//! The statements of one group commit: the ops of every job, turned into as few SQL
//! statements as their order allows.
//!
//! The hot MQTT ops (a QoS 1/2 copy queued for a persistent session, its sent state, its
//! acknowledgement, and the incoming QoS 2 state) come by thousands per commit. One
//! statement per op costs the server a bind and an execute each, which made the store
//! about ten times slower than redb; here they are gathered per kind into one multi-row
//! statement each (`UNNEST` of array parameters: one statement whatever the number of
//! rows):
//! - message bodies (`mqtt_payloads`, each body once per commit: content-addressed),
//! - queue rows inserted (`mqtt_queue`), sent states updated, queue rows deleted,
//! - incoming QoS 2 ids awaiting PUBREL, inserted and deleted.
//!
//! Correctness: ops on one key are merged in memory in their order (a copy queued and
//! acknowledged in the same commit is one delete, a sent state after a queue insert is
//! folded into the insert, ...), so that each key is in at most one pending batch and
//! the batches can run in any order (bodies first, for the foreign key). Ops that touch
//! those tables by a wider key (a session delete) or that would need the batches in
//! another order (a key queued again after its delete) first flush the pending batches;
//! every other op (IM tables, retained, sessions) is one statement in place, as before.

use std::collections::{HashMap, HashSet};

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::pg_err;
use super::sql::{Stmts, big, number_of};
use crate::store::codec::Sent;
use crate::store::{Op, StoreError};

pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// What to do with a statement's rows.
#[derive(Clone, Copy)]
pub(super) enum Want {
    Nothing,
    /// Counter value (column 0) → the job's results.
    Counter,
    /// (seq, duplicate) → the job's results.
    Appended,
    /// Sum of column 0 (bytes) leaves the store.
    Freed,
}

/// One statement of the pipeline.
pub(super) struct Call<'a> {
    pub stmt: &'a Statement,
    pub params: Params,
    pub job: usize,
    pub want: Want,
}

/// The multi-row statements, prepared once per writer connection.
pub(super) struct BatchStmts {
    payloads: Statement,
    enqueue: Statement,
    mark_sent: Statement,
    dequeue: Statement,
    await_rel: Statement,
    released: Statement,
}

// Touching an existing body keeps a concurrent clean-up (another node's) from deleting it
// under this transaction.
const PAYLOADS: &str = "INSERT INTO mqtt_payloads (id, body, stored_at) \
     SELECT u.id, u.body, $3 FROM UNNEST(CAST($1 AS BYTEA[]), CAST($2 AS BYTEA[])) AS u (id, body) \
     ON CONFLICT (id) DO UPDATE SET stored_at = EXCLUDED.stored_at";
const ENQUEUE: &str = "INSERT INTO mqtt_queue (uid, seq, qos, retain, sent, pkid, sub_ids, payload, size) \
     SELECT * FROM UNNEST(CAST($1 AS BIGINT[]), CAST($2 AS BIGINT[]), CAST($3 AS SMALLINT[]), \
     CAST($4 AS BOOLEAN[]), CAST($5 AS SMALLINT[]), CAST($6 AS INTEGER[]), CAST($7 AS BYTEA[]), \
     CAST($8 AS BYTEA[]), CAST($9 AS INTEGER[])) \
     ON CONFLICT (uid, seq) DO UPDATE SET qos = EXCLUDED.qos, retain = EXCLUDED.retain, \
     sent = EXCLUDED.sent, pkid = EXCLUDED.pkid, sub_ids = EXCLUDED.sub_ids, \
     payload = EXCLUDED.payload, size = EXCLUDED.size";
const MARK_SENT: &str = "UPDATE mqtt_queue SET sent = u.sent, pkid = u.pkid \
     FROM UNNEST(CAST($1 AS BIGINT[]), CAST($2 AS BIGINT[]), CAST($3 AS SMALLINT[]), \
     CAST($4 AS INTEGER[])) AS u (uid, seq, sent, pkid) \
     WHERE mqtt_queue.uid = u.uid AND mqtt_queue.seq = u.seq";
const DEQUEUE: &str = "DELETE FROM mqtt_queue WHERE (uid, seq) IN \
     (SELECT * FROM UNNEST(CAST($1 AS BIGINT[]), CAST($2 AS BIGINT[]))) RETURNING size";
const AWAIT_REL: &str = "INSERT INTO mqtt_awaiting_rel (client_id, pkid) \
     SELECT * FROM UNNEST(CAST($1 AS BYTEA[]), CAST($2 AS INTEGER[])) \
     ON CONFLICT (client_id, pkid) DO NOTHING";
const RELEASED: &str = "DELETE FROM mqtt_awaiting_rel WHERE (client_id, pkid) IN \
     (SELECT * FROM UNNEST(CAST($1 AS BYTEA[]), CAST($2 AS INTEGER[])))";

impl BatchStmts {
    pub async fn prepare(c: &Client) -> Result<BatchStmts, StoreError> {
        let texts = [PAYLOADS, ENQUEUE, MARK_SENT, DEQUEUE, AWAIT_REL, RELEASED];
        let p = try_join_all(texts.iter().map(|t| c.prepare(t)))
            .await
            .map_err(pg_err)?;
        let mut it = p.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| StoreError::Io("statement count mismatch".into()))
        };
        Ok(BatchStmts {
            payloads: next()?,
            enqueue: next()?,
            mark_sent: next()?,
            dequeue: next()?,
            await_rel: next()?,
            released: next()?,
        })
    }
}

/// One queue row to insert.
struct EnqRow {
    uid: i64,
    seq: i64,
    qos: i16,
    retain: bool,
    sent: i16,
    pkid: i32,
    sub_ids: Vec<u8>,
    payload: Vec<u8>,
    size: i32,
}

/// Where a queue key stands among the pending batches.
#[derive(Clone, Copy)]
enum QSlot {
    Enqueued(usize),
    Marked(usize),
    Dequeued,
}

/// Where an awaiting-PUBREL key stands.
#[derive(Clone, Copy)]
enum RSlot {
    Awaiting(usize),
    Released,
}

/// The pending multi-row batches.
#[derive(Default)]
struct Pending {
    bodies_ids: Vec<Vec<u8>>,
    bodies: Vec<Vec<u8>>,
    enq: Vec<Option<EnqRow>>,
    marks: Vec<Option<(i64, i64, i16, i32)>>,
    deqs: Vec<(i64, i64)>,
    queue: HashMap<(u64, u64), QSlot>,
    awaits: Vec<Option<(Vec<u8>, i32)>>,
    releases: Vec<(Vec<u8>, i32)>,
    rel: HashMap<(Vec<u8>, u16), RSlot>,
    /// Ops gathered since the last flush.
    rows: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.bodies.is_empty()
            && self.enq.is_empty()
            && self.marks.is_empty()
            && self.deqs.is_empty()
            && self.awaits.is_empty()
            && self.releases.is_empty()
    }

    /// Emits the pending batches (bodies first: queue rows reference them).
    fn flush<'a>(&mut self, b: &'a BatchStmts, now: i64, job: usize, out: &mut Vec<Call<'a>>) {
        if self.is_empty() {
            return;
        }
        let p = std::mem::take(self);
        if !p.bodies.is_empty() {
            out.push(Call {
                stmt: &b.payloads,
                params: vec![Box::new(p.bodies_ids), Box::new(p.bodies), Box::new(now)],
                job,
                want: Want::Nothing,
            });
        }
        let enq: Vec<EnqRow> = p.enq.into_iter().flatten().collect();
        if !enq.is_empty() {
            let mut cols = (
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
                Vec::with_capacity(enq.len()),
            );
            for r in enq {
                cols.0.push(r.uid);
                cols.1.push(r.seq);
                cols.2.push(r.qos);
                cols.3.push(r.retain);
                cols.4.push(r.sent);
                cols.5.push(r.pkid);
                cols.6.push(r.sub_ids);
                cols.7.push(r.payload);
                cols.8.push(r.size);
            }
            out.push(Call {
                stmt: &b.enqueue,
                params: vec![
                    Box::new(cols.0),
                    Box::new(cols.1),
                    Box::new(cols.2),
                    Box::new(cols.3),
                    Box::new(cols.4),
                    Box::new(cols.5),
                    Box::new(cols.6),
                    Box::new(cols.7),
                    Box::new(cols.8),
                ],
                job,
                want: Want::Nothing,
            });
        }
        let marks: Vec<_> = p.marks.into_iter().flatten().collect();
        if !marks.is_empty() {
            let (mut u, mut s, mut st, mut pk) = (vec![], vec![], vec![], vec![]);
            for (a, b2, c, d) in marks {
                u.push(a);
                s.push(b2);
                st.push(c);
                pk.push(d);
            }
            out.push(Call {
                stmt: &b.mark_sent,
                params: vec![Box::new(u), Box::new(s), Box::new(st), Box::new(pk)],
                job,
                want: Want::Nothing,
            });
        }
        if !p.deqs.is_empty() {
            let (u, s): (Vec<i64>, Vec<i64>) = p.deqs.into_iter().unzip();
            out.push(Call {
                stmt: &b.dequeue,
                params: vec![Box::new(u), Box::new(s)],
                job,
                want: Want::Freed,
            });
        }
        let awaits: Vec<_> = p.awaits.into_iter().flatten().collect();
        if !awaits.is_empty() {
            let (c, k): (Vec<Vec<u8>>, Vec<i32>) = awaits.into_iter().unzip();
            out.push(Call {
                stmt: &b.await_rel,
                params: vec![Box::new(c), Box::new(k)],
                job,
                want: Want::Nothing,
            });
        }
        if !p.releases.is_empty() {
            let (c, k): (Vec<Vec<u8>>, Vec<i32>) = p.releases.into_iter().unzip();
            out.push(Call {
                stmt: &b.released,
                params: vec![Box::new(c), Box::new(k)],
                job,
                want: Want::Nothing,
            });
        }
    }
}

/// The statements for `jobs`, and the change in stored message bytes they add (the
/// deletes' answers subtract theirs), and how many ops went into multi-row statements.
pub(super) fn calls<'a>(
    s: &'a Stmts,
    b: &'a BatchStmts,
    jobs: &[crate::store::postgres::Job],
    multi_row: bool,
) -> Result<(Vec<Call<'a>>, i64, usize), StoreError> {
    let mut out = Vec::new();
    let mut added: i64 = 0;
    let mut bodies: HashSet<Vec<u8>> = HashSet::new();
    let now = big(crate::store::unix_now());
    let mut p = Pending::default();
    let mut folded = 0usize;
    for (job, j) in jobs.iter().enumerate() {
        for op in &j.ops {
            let mut push = |stmt: &'a Statement, params: Params, want: Want| {
                out.push(Call {
                    stmt,
                    params,
                    job,
                    want,
                });
            };
            if !is_batched(op) {
                single(s, op, now, &mut added, &mut push)?;
                continue;
            }
            match op {
                Op::Enqueue { uid, seq, delivery } => {
                    let key = (*uid, *seq);
                    if matches!(p.queue.get(&key), Some(QSlot::Dequeued)) {
                        folded += p.rows;
                        p.flush(b, now, job, &mut out);
                        bodies.clear();
                    }
                    let body = delivery.message.to_vec();
                    let id = ring::digest::digest(&ring::digest::SHA256, &body)
                        .as_ref()
                        .to_vec();
                    let size = delivery.encode().len() as i32;
                    added += i64::from(size);
                    if bodies.insert(id.clone()) {
                        p.bodies_ids.push(id.clone());
                        p.bodies.push(body);
                    }
                    let (sent, pkid) = sent_columns(delivery.sent);
                    let row = EnqRow {
                        uid: big(*uid),
                        seq: big(*seq),
                        qos: delivery.qos as i16,
                        retain: delivery.retain,
                        sent,
                        pkid,
                        sub_ids: delivery
                            .sub_ids
                            .iter()
                            .flat_map(|i| i.to_be_bytes())
                            .collect(),
                        payload: id,
                        size,
                    };
                    match p.queue.get(&key).copied() {
                        Some(QSlot::Enqueued(i)) => {
                            if let Some(old) = p.enq.get_mut(i).and_then(Option::take) {
                                added -= i64::from(old.size);
                            }
                            p.enq[i] = Some(row);
                        }
                        other => {
                            if let Some(QSlot::Marked(i)) = other {
                                // The insert's upsert sets the sent state itself.
                                p.marks[i] = None;
                            }
                            p.queue.insert(key, QSlot::Enqueued(p.enq.len()));
                            p.enq.push(Some(row));
                        }
                    }
                    p.rows += 1;
                }
                Op::MarkSent { uid, seq, sent } => {
                    let key = (*uid, *seq);
                    let (st, pk) = sent_columns(*sent);
                    match p.queue.get(&key).copied() {
                        Some(QSlot::Enqueued(i)) => {
                            if let Some(Some(r)) = p.enq.get_mut(i) {
                                r.sent = st;
                                r.pkid = pk;
                            }
                        }
                        Some(QSlot::Marked(i)) => {
                            p.marks[i] = Some((big(*uid), big(*seq), st, pk));
                        }
                        // Updating a deleted row changes nothing.
                        Some(QSlot::Dequeued) => {}
                        None => {
                            p.queue.insert(key, QSlot::Marked(p.marks.len()));
                            p.marks.push(Some((big(*uid), big(*seq), st, pk)));
                        }
                    }
                    p.rows += 1;
                }
                Op::Dequeue { uid, seq } => {
                    let key = (*uid, *seq);
                    match p.queue.get(&key).copied() {
                        Some(QSlot::Dequeued) => {}
                        other => {
                            match other {
                                Some(QSlot::Enqueued(i)) => {
                                    // Queued and acknowledged in one commit: the row
                                    // never lands (the delete below still removes an
                                    // older row under the same key, if any).
                                    if let Some(old) = p.enq.get_mut(i).and_then(Option::take) {
                                        added -= i64::from(old.size);
                                    }
                                }
                                Some(QSlot::Marked(i)) => p.marks[i] = None,
                                _ => {}
                            }
                            p.queue.insert(key, QSlot::Dequeued);
                            p.deqs.push((big(*uid), big(*seq)));
                        }
                    }
                    p.rows += 1;
                }
                Op::AwaitRel { client_id, pkid } => {
                    let key = (client_id.as_bytes().to_vec(), *pkid);
                    match p.rel.get(&key).copied() {
                        Some(RSlot::Awaiting(_)) => {}
                        Some(RSlot::Released) => {
                            folded += p.rows;
                            p.flush(b, now, job, &mut out);
                            bodies.clear();
                            p.rel.insert(key.clone(), RSlot::Awaiting(p.awaits.len()));
                            p.awaits.push(Some((key.0, i32::from(key.1))));
                        }
                        None => {
                            p.rel.insert(key.clone(), RSlot::Awaiting(p.awaits.len()));
                            p.awaits.push(Some((key.0, i32::from(key.1))));
                        }
                    }
                    p.rows += 1;
                }
                Op::Released { client_id, pkid } => {
                    let key = (client_id.as_bytes().to_vec(), *pkid);
                    match p.rel.get(&key).copied() {
                        Some(RSlot::Released) => {}
                        other => {
                            if let Some(RSlot::Awaiting(i)) = other {
                                p.awaits[i] = None;
                            }
                            p.rel.insert(key.clone(), RSlot::Released);
                            p.releases.push((key.0, i32::from(key.1)));
                        }
                    }
                    p.rows += 1;
                }
                Op::DeleteSession { client_id, uid } => {
                    // Deletes by client id and by uid: whatever is pending goes first.
                    folded += p.rows;
                    p.flush(b, now, job, &mut out);
                    bodies.clear();
                    let id = client_id.as_bytes().to_vec();
                    let calls: [(&'a Statement, Params, Want); 3] = [
                        (
                            &s.delete_rel_if_ours,
                            vec![Box::new(id.clone()), Box::new(big(*uid))],
                            Want::Nothing,
                        ),
                        (
                            &s.delete_session,
                            vec![Box::new(id), Box::new(big(*uid))],
                            Want::Nothing,
                        ),
                        (&s.delete_queue, vec![Box::new(big(*uid))], Want::Freed),
                    ];
                    for (stmt, params, want) in calls {
                        out.push(Call {
                            stmt,
                            params,
                            job,
                            want,
                        });
                    }
                }
                _ => {}
            }
            if !multi_row {
                // One statement per op, as before the batches (for comparison).
                folded += p.rows;
                p.flush(b, now, job, &mut out);
                bodies.clear();
            }
        }
    }
    folded += p.rows;
    p.flush(b, now, jobs.len().saturating_sub(1), &mut out);
    Ok((out, added, folded))
}

/// The one statement (two for a retained replace) of an op that is not batched.
fn single<'a>(
    s: &'a Stmts,
    op: &Op,
    now: i64,
    added: &mut i64,
    push: &mut impl FnMut(&'a Statement, Params, Want),
) -> Result<(), StoreError> {
    match op {
        Op::PutSession { client_id, record } => {
            let json = serde_json::to_vec(record)
                .map_err(|e| StoreError::Io(format!("session record: {e}")))?;
            push(
                &s.put_session,
                vec![
                    Box::new(client_id.as_bytes().to_vec()),
                    Box::new(big(record.uid)),
                    Box::new(json),
                ],
                Want::Nothing,
            );
        }
        Op::PutRetained { topic, message } => {
            let t = topic.as_bytes().to_vec();
            push(&s.delete_retained, vec![Box::new(t.clone())], Want::Freed);
            *added += message.len() as i64;
            push(
                &s.put_retained,
                vec![Box::new(t), Box::new(message.clone())],
                Want::Nothing,
            );
        }
        Op::DeleteRetained { topic } => push(
            &s.delete_retained,
            vec![Box::new(topic.as_bytes().to_vec())],
            Want::Freed,
        ),
        Op::Probe => push(&s.probe, vec![Box::new(now.to_string())], Want::Nothing),
        Op::Barrier => {}
        Op::Put { table, key, value } => push(
            &s.table(*table)?.put,
            vec![
                Box::new(key.clone()),
                Box::new(value.clone()),
                Box::new(number_of(value)),
            ],
            Want::Nothing,
        ),
        Op::Delete { table, key } => push(
            &s.table(*table)?.delete,
            vec![Box::new(key.clone())],
            Want::Nothing,
        ),
        Op::Increment { table, key, by } => push(
            &s.table(*table)?.increment,
            vec![Box::new(key.clone()), Box::new(big(*by))],
            Want::Counter,
        ),
        // PostgreSQL indexes every key: recognising more than the recent ones is allowed.
        Op::Append { log, idem, value } | Op::AppendRecent { log, idem, value } => push(
            &s.append,
            vec![
                Box::new(log.clone()),
                Box::new(idem.clone()),
                Box::new(value.clone()),
            ],
            Want::Appended,
        ),
        Op::ReplaceEntry { log, seq, value } => push(
            &s.replace_entry,
            vec![
                Box::new(log.clone()),
                Box::new(big(*seq)),
                Box::new(value.clone()),
            ],
            Want::Nothing,
        ),
        Op::TrimLog { log, below } => {
            if *below > 1 {
                push(
                    &s.trim_log,
                    vec![Box::new(log.clone()), Box::new(big(*below))],
                    Want::Nothing,
                );
            }
        }
        Op::SetToLogHead { table, key, log } => push(
            &s.table(*table)?.set_to_head,
            vec![Box::new(key.clone()), Box::new(log.clone())],
            Want::Nothing,
        ),
        Op::Max { table, key, value } => push(
            &s.table(*table)?.max,
            vec![Box::new(key.clone()), Box::new(big(*value))],
            Want::Nothing,
        ),
        // Batched in `calls`.
        Op::Enqueue { .. }
        | Op::Dequeue { .. }
        | Op::MarkSent { .. }
        | Op::AwaitRel { .. }
        | Op::Released { .. }
        | Op::DeleteSession { .. } => {}
    }
    Ok(())
}

/// Whether `op` goes through the multi-row batches (or orders them: a session delete).
fn is_batched(op: &Op) -> bool {
    matches!(
        op,
        Op::Enqueue { .. }
            | Op::Dequeue { .. }
            | Op::MarkSent { .. }
            | Op::AwaitRel { .. }
            | Op::Released { .. }
            | Op::DeleteSession { .. }
    )
}

fn sent_columns(sent: Sent) -> (i16, i32) {
    match sent {
        Sent::Queued => (0, 0),
        Sent::Published(p) => (1, i32::from(p)),
        Sent::Released(p) => (2, i32::from(p)),
    }
}
