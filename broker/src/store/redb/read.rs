//! Reads: the MQTT snapshot at start, and IM records and logs on demand. Every read runs in
//! its own read transaction, so it sees committed data only.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable};

use super::{
    AWAITING_REL, IM_LOG, IM_LOG_HEAD, IM_LOG_TAIL, QUEUE, RETAINED, SESSIONS, im_table, io, tail,
};
use crate::store::codec::{SessionRecord, StoredDelivery};
use crate::store::{LogEntry, Record, Snapshot, StoreError, Table};

/// The MQTT side of the file, and the bytes of stored messages in it.
pub(super) fn load(r: &ReadTransaction) -> Result<(Snapshot, u64), StoreError> {
    let mut snap = Snapshot::default();
    let mut bytes = 0u64;
    for row in r.open_table(SESSIONS).map_err(io)?.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let record: SessionRecord = serde_json::from_slice(v.value())
            .map_err(|e| StoreError::Io(format!("corrupt session record {:?}: {e}", k.value())))?;
        snap.max_uid = snap.max_uid.max(record.uid);
        snap.sessions.push((k.value().to_owned(), record));
    }
    for row in r.open_table(QUEUE).map_err(io)?.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let (uid, seq) = k.value();
        bytes += v.value().len() as u64;
        let d = StoredDelivery::decode(v.value())
            .ok_or_else(|| StoreError::Io(format!("corrupt queue record ({uid}, {seq})")))?;
        snap.max_seq = snap.max_seq.max(seq);
        snap.queues.entry(uid).or_default().push((seq, d));
    }
    for row in r.open_table(RETAINED).map_err(io)?.iter().map_err(io)? {
        let (_, v) = row.map_err(io)?;
        bytes += v.value().len() as u64;
        snap.retained.push(v.value().to_vec());
    }
    let mut rel: HashMap<String, Vec<u16>> = HashMap::new();
    for row in r.open_table(AWAITING_REL).map_err(io)?.iter().map_err(io)? {
        let (k, _) = row.map_err(io)?;
        let (client, pkid) = k.value();
        rel.entry(client.to_owned()).or_default().push(pkid);
    }
    snap.awaiting_rel = rel;
    Ok((snap, bytes))
}

pub(super) fn get(
    r: &ReadTransaction,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let t = r.open_table(im_table(table)).map_err(io)?;
    Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
}

type BytesTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Several keys in one read transaction, each table opened once: opening a table looks
/// it up in redb's table tree and decodes its definition, which cost more (CPU and
/// allocations) than the point read itself.
pub(super) fn get_many(
    r: &ReadTransaction,
    keys: &[(Table, &[u8])],
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let mut open: Vec<(Table, BytesTable)> = Vec::new();
    let mut out = Vec::with_capacity(keys.len());
    for (table, key) in keys {
        let i = match open.iter().position(|(t, _)| t == table) {
            Some(i) => i,
            None => {
                open.push((*table, r.open_table(im_table(*table)).map_err(io)?));
                open.len() - 1
            }
        };
        let value = open[i].1.get(*key).map_err(io)?;
        out.push(value.map(|v| v.value().to_vec()));
    }
    Ok(out)
}

pub(super) fn scan(
    r: &ReadTransaction,
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Record>, StoreError> {
    let t = r.open_table(im_table(table)).map_err(io)?;
    let start = after.unwrap_or(prefix);
    let mut out = Vec::new();
    for row in t.range(start..).map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let k = k.value();
        if !k.starts_with(prefix) || out.len() >= limit {
            break;
        }
        if after.is_some_and(|a| a == k) {
            continue;
        }
        out.push((k.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

pub(super) fn log_range(
    r: &ReadTransaction,
    log: &[u8],
    from: u64,
    to: u64,
    limit: usize,
    backwards: bool,
) -> Result<Vec<LogEntry>, StoreError> {
    if from > to || limit == 0 {
        return Ok(Vec::new());
    }
    let t = r.open_table(IM_LOG).map_err(io)?;
    let range = t.range((log, from)..=(log, to)).map_err(io)?;
    let rows: Box<dyn Iterator<Item = _>> = if backwards {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    for row in rows.take(limit) {
        let (k, v) = row.map_err(io)?;
        out.push((k.value().1, v.value().to_vec()));
    }
    Ok(out)
}

pub(super) fn log_last(r: &ReadTransaction, log: &[u8]) -> Result<u64, StoreError> {
    let tails = r.open_table(IM_LOG_TAIL).map_err(io)?;
    if let Some(v) = tails.get(log).map_err(io)? {
        return Ok(tail::head(v.value()));
    }
    let t = r.open_table(IM_LOG_HEAD).map_err(io)?;
    Ok(t.get(log).map_err(io)?.map_or(0, |v| v.value()))
}
