//! Reads over a small pool of connections: the MQTT snapshot at start, IM records and logs
//! on demand. Each read is one statement outside any explicit transaction, so it sees
//! committed data only.
//!
//! Bounds: at most [`READ_POOL`] connections, a read waits at most [`READ_TIMEOUT`] (for a
//! connection and for its answer). After a failed connection attempt, reads fail at once
//! for a second instead of each waiting for the connect timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_postgres::Client;

use super::sql::{Stmts, big, successor, value_of};
use super::{READ_POOL, READ_TIMEOUT, Shared, connect, pg_err};
use crate::store::codec::{Sent, SessionRecord, StoredDelivery};
use crate::store::{LogEntry, Record, Scope, Snapshot, StoreError, Table};

/// How long reads fail fast after a failed connection attempt.
const FAIL_FAST: Duration = Duration::from_secs(1);
/// How long the snapshot at start may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) struct Conn {
    client: Client,
    stmts: Stmts,
}

/// The read connections.
pub(super) struct Pool {
    shared: Arc<Shared>,
    idle: Mutex<Vec<Arc<Conn>>>,
    permits: Semaphore,
    down_until: Mutex<Option<Instant>>,
    pub open: AtomicUsize,
    pub in_use: AtomicUsize,
    pub reads: AtomicU64,
    pub failures: AtomicU64,
}

impl Pool {
    pub fn new(shared: Arc<Shared>) -> Pool {
        Pool {
            shared,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(READ_POOL),
            down_until: Mutex::new(None),
            open: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Runs `f` with a pooled connection, within `limit`.
    async fn with<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + limit;
        let r = tokio::time::timeout_at(deadline, async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| StoreError::Io("read pool closed".into()))?;
            let conn = self.checkout().await?;
            self.in_use.fetch_add(1, Ordering::Relaxed);
            let mut lease = Lease {
                pool: self,
                conn: Some(conn.clone()),
                finished: false,
            };
            let r = f(conn).await;
            lease.finished = true;
            r
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Io(format!(
                "PostgreSQL read did not finish within {limit:?}"
            )))
        });
        if r.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// An idle live connection, or a new one.
    async fn checkout(&self) -> Result<Arc<Conn>, StoreError> {
        loop {
            let Some(c) = self.idle.lock().pop() else {
                break;
            };
            if !c.client.is_closed() {
                return Ok(c);
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(until) = *self.down_until.lock()
            && Instant::now() < until
        {
            return Err(StoreError::Io(format!(
                "PostgreSQL at {} unreachable",
                self.shared.display
            )));
        }
        let attempt = async {
            let client = connect(&self.shared).await?;
            let stmts = Stmts::prepare(&client).await?;
            Ok::<_, StoreError>(Conn { client, stmts })
        };
        match attempt.await {
            Ok(c) => {
                self.open.fetch_add(1, Ordering::Relaxed);
                *self.down_until.lock() = None;
                Ok(Arc::new(c))
            }
            Err(e) => {
                *self.down_until.lock() = Some(Instant::now() + FAIL_FAST);
                Err(e)
            }
        }
    }

    pub async fn get(&self, table: Table, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(READ_TIMEOUT, |c| async move {
            let row = c
                .client
                .query_opt(&c.stmts.table(table)?.get, &[&key])
                .await
                .map_err(pg_err)?;
            Ok(match row {
                Some(r) => Some(value_of(
                    r.try_get(0).map_err(pg_err)?,
                    r.try_get(1).map_err(pg_err)?,
                )),
                None => None,
            })
        })
        .await
    }

    pub async fn scan(
        &self,
        table: Table,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with(READ_TIMEOUT, |c| async move {
            let t = c.stmts.table(table)?;
            let limit = big(limit as u64);
            // Start after `after` when it lies inside the prefix's range, else at the prefix.
            let (lower, exclusive) = match after {
                Some(a) if a.as_slice() >= prefix.as_slice() => (a, true),
                _ => (prefix.clone(), false),
            };
            let rows = match (successor(&prefix), exclusive) {
                (Some(upper), false) => {
                    c.client
                        .query(&t.scan_ge_lt, &[&lower, &upper, &limit])
                        .await
                }
                (None, false) => c.client.query(&t.scan_ge, &[&lower, &limit]).await,
                (Some(upper), true) => {
                    c.client
                        .query(&t.scan_gt_lt, &[&lower, &upper, &limit])
                        .await
                }
                (None, true) => c.client.query(&t.scan_gt, &[&lower, &limit]).await,
            }
            .map_err(pg_err)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<_, Vec<u8>>(0).map_err(pg_err)?,
                        value_of(r.try_get(1).map_err(pg_err)?, r.try_get(2).map_err(pg_err)?),
                    ))
                })
                .collect()
        })
        .await
    }

    pub async fn log_range(
        &self,
        log: Vec<u8>,
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.with(READ_TIMEOUT, |c| async move {
            let stmt = if backwards {
                &c.stmts.log_desc
            } else {
                &c.stmts.log_asc
            };
            let rows = c
                .client
                .query(stmt, &[&log, &big(from), &big(to), &big(limit as u64)])
                .await
                .map_err(pg_err)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<_, i64>(0).map_err(pg_err)?.max(0) as u64,
                        r.try_get::<_, Vec<u8>>(1).map_err(pg_err)?,
                    ))
                })
                .collect()
        })
        .await
    }

    pub async fn log_last(&self, log: Vec<u8>) -> Result<u64, StoreError> {
        self.with(READ_TIMEOUT, |c| async move {
            let row = c
                .client
                .query_opt(&c.stmts.log_last, &[&log])
                .await
                .map_err(pg_err)?;
            Ok(match row {
                Some(r) => r.try_get::<_, i64>(0).map_err(pg_err)?.max(0) as u64,
                None => 0,
            })
        })
        .await
    }

    /// The MQTT side, and the bytes of stored messages in it.
    pub async fn load(&self) -> Result<(Snapshot, u64), StoreError> {
        self.with(LOAD_TIMEOUT, |c| async move {
            let mut snap = Snapshot::default();
            let mut bytes = 0u64;
            let q = |s| c.client.query(s, &[]);
            for r in q(&c.stmts.load_sessions).await.map_err(pg_err)? {
                let id: Vec<u8> = r.try_get(0).map_err(pg_err)?;
                let id = String::from_utf8(id)
                    .map_err(|_| StoreError::Io("corrupt session key (not UTF-8)".into()))?;
                let raw: Vec<u8> = r.try_get(1).map_err(pg_err)?;
                let record: SessionRecord = serde_json::from_slice(&raw)
                    .map_err(|e| StoreError::Io(format!("corrupt session record {id:?}: {e}")))?;
                snap.max_uid = snap.max_uid.max(record.uid);
                snap.sessions.push((id, record));
            }
            for r in q(&c.stmts.load_queue).await.map_err(pg_err)? {
                let uid = r.try_get::<_, i64>(0).map_err(pg_err)?.max(0) as u64;
                let seq = r.try_get::<_, i64>(1).map_err(pg_err)?.max(0) as u64;
                let d = delivery(&r)
                    .ok_or_else(|| StoreError::Io(format!("corrupt queue row ({uid}, {seq})")))?;
                bytes += d.encode().len() as u64;
                snap.max_seq = snap.max_seq.max(seq);
                snap.queues.entry(uid).or_default().push((seq, d));
            }
            for r in q(&c.stmts.load_retained).await.map_err(pg_err)? {
                let m: Vec<u8> = r.try_get(0).map_err(pg_err)?;
                bytes += m.len() as u64;
                snap.retained.push(m);
            }
            let mut rel: HashMap<String, Vec<u16>> = HashMap::new();
            for r in q(&c.stmts.load_rel).await.map_err(pg_err)? {
                let id: Vec<u8> = r.try_get(0).map_err(pg_err)?;
                let pkid: i32 = r.try_get(1).map_err(pg_err)?;
                if let (Ok(id), Ok(pkid)) = (String::from_utf8(id), u16::try_from(pkid)) {
                    rel.entry(id).or_default().push(pkid);
                }
            }
            snap.awaiting_rel = rel;
            Ok((snap, bytes))
        })
        .await
    }
}

impl Pool {
    /// The sessions of one node (as the registry says) or one client id, with their queues
    /// and QoS 2 state, and the retained messages if asked (cluster mode).
    pub async fn load_scoped(&self, scope: Scope) -> Result<Snapshot, StoreError> {
        self.with(LOAD_TIMEOUT, |c| async move {
            let mut snap = Snapshot::default();
            // $1: the session key or the holder; the keys and uids in scope as subqueries.
            let (param, keys) = match (&scope.client_id, &scope.holder) {
                (Some(id), _) => (id.as_bytes().to_vec(), "SELECT CAST($1 AS BYTEA)"),
                (None, Some(node)) => (
                    node.as_bytes().to_vec(),
                    "SELECT client_id FROM sb_registry \
                     WHERE holder = convert_from(CAST($1 AS BYTEA), 'UTF8')",
                ),
                (None, None) => return Ok(snap),
            };
            let sessions =
                format!("SELECT client_id, record FROM mqtt_sessions WHERE client_id IN ({keys})");
            let uids = format!("SELECT uid FROM mqtt_sessions WHERE client_id IN ({keys})");
            let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&param];
            let cl = &c.client;
            for r in cl.query(sessions.as_str(), &p).await.map_err(pg_err)? {
                let id: Vec<u8> = r.try_get(0).map_err(pg_err)?;
                let Ok(id) = String::from_utf8(id) else { continue };
                let raw: Vec<u8> = r.try_get(1).map_err(pg_err)?;
                match serde_json::from_slice::<SessionRecord>(&raw) {
                    Ok(record) => {
                        snap.max_uid = snap.max_uid.max(record.uid);
                        snap.sessions.push((id, record));
                    }
                    Err(e) => tracing::warn!(client_id = %id, error = %e, "skipping a corrupt session record"),
                }
            }
            let queue = format!(
                "SELECT q.uid, q.seq, q.qos, q.retain, q.sent, q.pkid, q.sub_ids, p.body \
                 FROM mqtt_queue q JOIN mqtt_payloads p ON p.id = q.payload \
                 WHERE q.uid IN ({uids}) ORDER BY q.uid, q.seq"
            );
            for r in cl.query(queue.as_str(), &p).await.map_err(pg_err)? {
                let uid = r.try_get::<_, i64>(0).map_err(pg_err)?.max(0) as u64;
                let seq = r.try_get::<_, i64>(1).map_err(pg_err)?.max(0) as u64;
                let d = delivery(&r)
                    .ok_or_else(|| StoreError::Io(format!("corrupt queue row ({uid}, {seq})")))?;
                snap.max_seq = snap.max_seq.max(seq);
                snap.queues.entry(uid).or_default().push((seq, d));
            }
            let rel = format!(
                "SELECT client_id, pkid FROM mqtt_awaiting_rel WHERE client_id IN ({keys}) \
                 ORDER BY client_id, pkid"
            );
            for r in cl.query(rel.as_str(), &p).await.map_err(pg_err)? {
                let id: Vec<u8> = r.try_get(0).map_err(pg_err)?;
                let pkid: i32 = r.try_get(1).map_err(pg_err)?;
                if let (Ok(id), Ok(pkid)) = (String::from_utf8(id), u16::try_from(pkid)) {
                    snap.awaiting_rel.entry(id).or_default().push(pkid);
                }
            }
            if scope.retained {
                for r in cl.query(&c.stmts.load_retained, &[]).await.map_err(pg_err)? {
                    snap.retained.push(r.try_get(0).map_err(pg_err)?);
                }
            }
            Ok(snap)
        })
        .await
    }
}

/// A connection in use. Back to the pool when its read finished on a live connection;
/// dropped otherwise (a read cut off by its timeout may have left the connection stuck).
struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Arc<Conn>>,
    finished: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.conn.take() {
            if self.finished && !c.client.is_closed() {
                self.pool.idle.lock().push(c);
            } else {
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// A queue row (uid, seq, qos, retain, sent, pkid, sub_ids, body) as a delivery.
fn delivery(r: &tokio_postgres::Row) -> Option<StoredDelivery> {
    let qos: i16 = r.try_get(2).ok()?;
    let retain: bool = r.try_get(3).ok()?;
    let sent: i16 = r.try_get(4).ok()?;
    let pkid = u16::try_from(r.try_get::<_, i32>(5).ok()?).ok()?;
    let ids: Vec<u8> = r.try_get(6).ok()?;
    let body: Vec<u8> = r.try_get(7).ok()?;
    let sent = match (sent, pkid) {
        (0, _) => Sent::Queued,
        (1, p) if p != 0 => Sent::Published(p),
        (2, p) if p != 0 => Sent::Released(p),
        _ => return None,
    };
    if !ids.len().is_multiple_of(4) {
        return None;
    }
    Some(StoredDelivery {
        qos: switchboard_proto::QoS::from_u8(u8::try_from(qos).ok()?)?,
        retain,
        sub_ids: ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        message: bytes::Bytes::from(body),
        sent,
    })
}
