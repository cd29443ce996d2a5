//! Every statement the store runs, prepared once per connection.
//!
//! Each [`Op`](crate::store::Op) is one statement (two for a retained replace, three for
//! a session delete; the hot MQTT queue ops are multi-row statements, see `plan`) whose data dependencies stay on the server: counters and positions
//! are computed by `ON CONFLICT DO UPDATE`, and an IM append takes its sequence number
//! with `UPDATE ... SET last = last + 1 RETURNING` inside the same statement that inserts
//! the entry. That is what lets the writer send a whole group commit without waiting for
//! any answer in between (see `writer`).

use futures_util::future::try_join_all;
use tokio_postgres::{Client, Statement};

use super::pg_err;
use crate::store::{StoreError, Table};

/// Statements of one IM table.
pub(super) struct TableStmts {
    pub get: Statement,
    pub put: Statement,
    pub delete: Statement,
    pub increment: Statement,
    pub max: Statement,
    pub set_to_head: Statement,
    /// Scans: lower bound inclusive (`>=`) or exclusive (`>`), with or without an upper
    /// bound (the prefix's successor; none when the prefix is all 0xFF).
    pub scan_ge_lt: Statement,
    pub scan_ge: Statement,
    pub scan_gt_lt: Statement,
    pub scan_gt: Statement,
}

/// Every prepared statement of a connection.
pub(super) struct Stmts {
    pub tables: Vec<TableStmts>,
    pub put_session: Statement,
    pub delete_rel_if_ours: Statement,
    pub delete_session: Statement,
    pub delete_queue: Statement,
    pub delete_retained: Statement,
    pub put_retained: Statement,
    pub probe: Statement,
    pub gc_payloads: Statement,
    pub append: Statement,
    pub replace_entry: Statement,
    pub trim_log: Statement,
    pub log_asc: Statement,
    pub log_desc: Statement,
    pub log_last: Statement,
    pub load_sessions: Statement,
    pub load_queue: Statement,
    pub load_retained: Statement,
    pub load_rel: Statement,
}

/// The IM append: the idempotency check, the sequence number and the insert in one
/// statement. Result: one row (seq, duplicate).
const APPEND: &str = "WITH prior AS (
    SELECT seq FROM im_idem WHERE log = CAST($1 AS BYTEA) AND idem = CAST($2 AS BYTEA)
), head AS (
    INSERT INTO im_log_head (log, last)
    SELECT CAST($1 AS BYTEA), 1 WHERE NOT EXISTS (SELECT 1 FROM prior)
    ON CONFLICT (log) DO UPDATE SET last = im_log_head.last + 1
    RETURNING last
), entry AS (
    INSERT INTO im_log (log, seq, value) SELECT CAST($1 AS BYTEA), last, CAST($3 AS BYTEA) FROM head
), mark AS (
    INSERT INTO im_idem (log, idem, seq)
    SELECT CAST($1 AS BYTEA), CAST($2 AS BYTEA), last FROM head WHERE CAST($2 AS BYTEA) IS NOT NULL
)
SELECT last AS seq, FALSE AS duplicate FROM head
UNION ALL SELECT seq, TRUE FROM prior";

impl Stmts {
    /// Prepares everything (the prepares are pipelined: one round trip, about).
    pub async fn prepare(c: &Client) -> Result<Stmts, StoreError> {
        let mut texts: Vec<String> = Vec::new();
        for t in Table::ALL {
            let n = t.name();
            let cols = "SELECT key, value, num FROM";
            texts.extend([
                format!("SELECT value, num FROM {n} WHERE key = $1"),
                format!(
                    "INSERT INTO {n} (key, value, num) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, num = EXCLUDED.num"
                ),
                format!("DELETE FROM {n} WHERE key = $1"),
                format!(
                    "INSERT INTO {n} (key, value, num) VALUES ($1, NULL, $2) \
                     ON CONFLICT (key) DO UPDATE SET num = COALESCE({n}.num, 0) + EXCLUDED.num, \
                     value = NULL RETURNING num"
                ),
                format!(
                    "INSERT INTO {n} (key, value, num) VALUES ($1, NULL, $2) \
                     ON CONFLICT (key) DO UPDATE SET num = EXCLUDED.num, value = NULL \
                     WHERE COALESCE({n}.num, 0) < EXCLUDED.num"
                ),
                format!(
                    "INSERT INTO {n} (key, value, num) VALUES ($1, NULL, \
                     COALESCE((SELECT last FROM im_log_head WHERE log = $2), 0)) \
                     ON CONFLICT (key) DO UPDATE SET num = EXCLUDED.num, value = NULL"
                ),
                format!("{cols} {n} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"),
                format!("{cols} {n} WHERE key >= $1 ORDER BY key LIMIT $2"),
                format!("{cols} {n} WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3"),
                format!("{cols} {n} WHERE key > $1 ORDER BY key LIMIT $2"),
            ]);
        }
        let fixed = [
            "INSERT INTO mqtt_sessions (client_id, uid, record) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id) DO UPDATE SET uid = EXCLUDED.uid, record = EXCLUDED.record",
            // Session `uid`'s QoS 2 state goes only if no newer session holds the client id.
            "DELETE FROM mqtt_awaiting_rel WHERE client_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM mqtt_sessions s WHERE s.client_id = $1 AND s.uid <> $2)",
            "DELETE FROM mqtt_sessions WHERE client_id = $1 AND uid = $2",
            "DELETE FROM mqtt_queue WHERE uid = $1 RETURNING size",
            "DELETE FROM mqtt_retained WHERE topic = $1 RETURNING octet_length(message)",
            "INSERT INTO mqtt_retained (topic, message) VALUES ($1, $2)",
            "INSERT INTO sb_meta (key, value) VALUES ('probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            "DELETE FROM mqtt_payloads WHERE id IN (SELECT p.id FROM mqtt_payloads p \
             WHERE p.stored_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM mqtt_queue q WHERE q.payload = p.id) LIMIT $2)",
            APPEND,
            "UPDATE im_log SET value = $3 WHERE log = $1 AND seq = $2",
            "DELETE FROM im_log WHERE log = $1 AND seq < $2",
            "SELECT seq, value FROM im_log WHERE log = $1 AND seq >= $2 AND seq <= $3 \
             ORDER BY seq ASC LIMIT $4",
            "SELECT seq, value FROM im_log WHERE log = $1 AND seq >= $2 AND seq <= $3 \
             ORDER BY seq DESC LIMIT $4",
            "SELECT last FROM im_log_head WHERE log = $1",
            "SELECT client_id, record FROM mqtt_sessions",
            "SELECT q.uid, q.seq, q.qos, q.retain, q.sent, q.pkid, q.sub_ids, p.body \
             FROM mqtt_queue q JOIN mqtt_payloads p ON p.id = q.payload ORDER BY q.uid, q.seq",
            "SELECT message FROM mqtt_retained",
            "SELECT client_id, pkid FROM mqtt_awaiting_rel ORDER BY client_id, pkid",
        ];
        texts.extend(fixed.iter().map(|s| (*s).to_owned()));
        let prepared = try_join_all(texts.iter().map(|t| c.prepare(t)))
            .await
            .map_err(pg_err)?;
        let mut it = prepared.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| StoreError::Io("statement count mismatch".into()))
        };
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for _ in Table::ALL {
            tables.push(TableStmts {
                get: next()?,
                put: next()?,
                delete: next()?,
                increment: next()?,
                max: next()?,
                set_to_head: next()?,
                scan_ge_lt: next()?,
                scan_ge: next()?,
                scan_gt_lt: next()?,
                scan_gt: next()?,
            });
        }
        Ok(Stmts {
            tables,
            put_session: next()?,
            delete_rel_if_ours: next()?,
            delete_session: next()?,
            delete_queue: next()?,
            delete_retained: next()?,
            put_retained: next()?,
            probe: next()?,
            gc_payloads: next()?,
            append: next()?,
            replace_entry: next()?,
            trim_log: next()?,
            log_asc: next()?,
            log_desc: next()?,
            log_last: next()?,
            load_sessions: next()?,
            load_queue: next()?,
            load_retained: next()?,
            load_rel: next()?,
        })
    }

    /// The statements of IM table `t`.
    pub fn table(&self, t: Table) -> Result<&TableStmts, StoreError> {
        Table::ALL
            .iter()
            .position(|x| *x == t)
            .and_then(|i| self.tables.get(i))
            .ok_or_else(|| StoreError::Io(format!("no statements for {}", t.name())))
    }
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is
/// none (an empty prefix, or one of only 0xFF bytes).
pub(super) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// A u64 as BIGINT (values past i64::MAX are clamped: no sequence number, counter or
/// position gets there).
pub(super) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value as stored in an IM table: its bytes, and its number when it is an 8-byte
/// big-endian one (so that Increment and Max continue from it).
pub(super) fn number_of(value: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(value)
        .ok()
        .and_then(|b| i64::try_from(u64::from_be_bytes(b)).ok())
}

/// A record's value from its columns: the bytes, or the number big-endian.
pub(super) fn value_of(value: Option<Vec<u8>>, num: Option<i64>) -> Vec<u8> {
    match (value, num) {
        (Some(v), _) => v,
        (None, Some(n)) => (n.max(0) as u64).to_be_bytes().to_vec(),
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successors() {
        assert_eq!(successor(&[7]), Some(vec![8]));
        assert_eq!(successor(&[7, 0xFF]), Some(vec![8]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
        assert_eq!(successor(&[]), None);
    }

    #[test]
    fn numbers_round_trip_through_columns() {
        let v = 42u64.to_be_bytes();
        assert_eq!(number_of(&v), Some(42));
        assert_eq!(number_of(b"abc"), None);
        assert_eq!(value_of(None, Some(42)), v.to_vec());
        assert_eq!(value_of(Some(b"x".to_vec()), None), b"x".to_vec());
    }
}
