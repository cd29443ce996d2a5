//! Applying a batch of transactions in one redb write transaction.

use std::collections::HashMap;

use redb::{Database, ReadableTable, WriteTransaction};

use super::{
    AWAITING_REL, IM_IDEM, IM_LOG, IM_LOG_HEAD, IM_LOG_TAIL, Job, META, QUEUE, RETAINED, SESSIONS,
    WAL_LSN_KEY, im_table, io, tail,
};
use crate::store::codec::{SessionRecord, StoredDelivery};
use crate::store::{Applied, Op, OpResult, StoreError, Table};

type BytesTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type LogTable<'t> = redb::Table<'t, (&'static [u8], u64), &'static [u8]>;

/// IM tables, opened on first use so that MQTT-only commits do not pay for them.
struct Im<'t> {
    w: &'t WriteTransaction,
    tables: HashMap<Table, BytesTable<'t>>,
    log: Option<LogTable<'t>>,
    head: Option<redb::Table<'t, &'static [u8], u64>>,
    idem: Option<redb::Table<'t, &'static [u8], u64>>,
    tail: Option<BytesTable<'t>>,
}

impl<'t> Im<'t> {
    fn table(&mut self, t: Table) -> Result<&mut BytesTable<'t>, StoreError> {
        if !self.tables.contains_key(&t) {
            let opened = self.w.open_table(im_table(t)).map_err(io)?;
            self.tables.insert(t, opened);
        }
        self.tables
            .get_mut(&t)
            .ok_or_else(|| StoreError::Io("table vanished".into()))
    }

    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.table(t)?.insert(key, value).map_err(io)?;
        Ok(())
    }

    /// The u64 at `key` (0 if absent).
    fn number(&mut self, t: Table, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .table(t)?
            .get(key)
            .map_err(io)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_number(&mut self, t: Table, key: &[u8], n: u64) -> Result<(), StoreError> {
        self.table(t)?
            .insert(key, n.to_be_bytes().as_slice())
            .map_err(io)?;
        Ok(())
    }

    /// The log's last sequence number: from its tail record if it has one (format 4),
    /// else from its `im_log_head` row.
    fn head(&mut self, log: &[u8]) -> Result<u64, StoreError> {
        match self.tail_record(log)? {
            Some(r) => Ok(tail::head(&r)),
            None => self.old_head(log),
        }
    }

    fn old_head(&mut self, log: &[u8]) -> Result<u64, StoreError> {
        let head = match &mut self.head {
            Some(t) => t,
            None => self
                .head
                .insert(self.w.open_table(IM_LOG_HEAD).map_err(io)?),
        };
        Ok(head.get(log).map_err(io)?.map_or(0, |v| v.value()))
    }

    fn tails(&mut self) -> Result<&mut BytesTable<'t>, StoreError> {
        if self.tail.is_none() {
            self.tail = Some(self.w.open_table(IM_LOG_TAIL).map_err(io)?);
        }
        self.tail
            .as_mut()
            .ok_or_else(|| StoreError::Io("tail table vanished".into()))
    }

    fn tail_record(&mut self, log: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tails()?
            .get(log)
            .map_err(io)?
            .map(|v| v.value().to_vec()))
    }

    fn increment(&mut self, t: Table, key: &[u8], by: u64) -> Result<u64, StoreError> {
        let table = self.table(t)?;
        let old = table
            .get(key)
            .map_err(io)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        let new = old.saturating_add(by);
        table
            .insert(key, new.to_be_bytes().as_slice())
            .map_err(io)?;
        Ok(new)
    }

    /// [`Op::Append`] (`recent` false: the key goes in the `im_idem` index) or
    /// [`Op::AppendRecent`] (`recent`: the key is checked against and kept in the log's
    /// tail record only).
    fn append(
        &mut self,
        log: &[u8],
        idem: Option<&[u8]>,
        value: &[u8],
        recent: bool,
    ) -> Result<OpResult, StoreError> {
        let record = self.tail_record(log)?;
        let duplicate = |seq| {
            Ok(OpResult::Appended {
                seq,
                duplicate: true,
            })
        };
        let idem_key = idem.filter(|_| !recent).map(|i| idem_key(log, i));
        if let Some(k) = &idem_key {
            let t = match &mut self.idem {
                Some(t) => t,
                None => self.idem.insert(self.w.open_table(IM_IDEM).map_err(io)?),
            };
            if let Some(seq) = t.get(k.as_slice()).map_err(io)? {
                return duplicate(seq.value());
            }
        }
        let recent_key = idem.filter(|_| recent).map(tail::hash);
        if let (Some(h), Some(r)) = (recent_key, &record)
            && let Some(seq) = tail::find(r, h)
        {
            return duplicate(seq);
        }
        let seq = match &record {
            Some(r) => tail::head(r),
            None => self.old_head(log)?,
        } + 1;
        if recent || record.is_some() {
            // Once a log has a tail record, its head lives there.
            let new = tail::with_append(record.as_deref(), seq, recent_key.map(|h| (h, seq)));
            self.tails()?.insert(log, new.as_slice()).map_err(io)?;
        } else {
            let head = match &mut self.head {
                Some(t) => t,
                None => self
                    .head
                    .insert(self.w.open_table(IM_LOG_HEAD).map_err(io)?),
            };
            head.insert(log, seq).map_err(io)?;
        }
        self.log()?.insert((log, seq), value).map_err(io)?;
        if let (Some(k), Some(t)) = (&idem_key, &mut self.idem) {
            t.insert(k.as_slice(), seq).map_err(io)?;
        }
        Ok(OpResult::Appended {
            seq,
            duplicate: false,
        })
    }

    fn log(&mut self) -> Result<&mut LogTable<'t>, StoreError> {
        if self.log.is_none() {
            self.log = Some(self.w.open_table(IM_LOG).map_err(io)?);
        }
        self.log
            .as_mut()
            .ok_or_else(|| StoreError::Io("log table vanished".into()))
    }
}

/// Idempotency keys are scoped to their log: length-prefixed log, then the key.
fn idem_key(log: &[u8], idem: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + log.len() + idem.len());
    k.extend_from_slice(&(log.len() as u16).to_be_bytes());
    k.extend_from_slice(log);
    k.extend_from_slice(idem);
    k
}

/// Applies every job in one transaction and commits it, durably (a checkpoint) or not (the
/// batch is in the write-ahead log already), recording `lsn` as the batch's log sequence
/// number. Returns each job's results and the change in stored message bytes.
pub(super) fn apply(
    db: &Database,
    jobs: &[Job],
    durable: bool,
    lsn: u64,
) -> Result<(Vec<Applied>, i64), StoreError> {
    let mut w = db.begin_write().map_err(io)?;
    if !durable {
        w.set_durability(redb::Durability::None).map_err(io)?;
    }
    {
        let mut meta = w.open_table(META).map_err(io)?;
        meta.insert(WAL_LSN_KEY, lsn.to_string().as_str())
            .map_err(io)?;
    }
    let mut delta: i64 = 0;
    let mut applied = Vec::with_capacity(jobs.len());
    {
        let mut sessions = w.open_table(SESSIONS).map_err(io)?;
        let mut queue = w.open_table(QUEUE).map_err(io)?;
        let mut retained = w.open_table(RETAINED).map_err(io)?;
        let mut rel = w.open_table(AWAITING_REL).map_err(io)?;
        let mut im = Im {
            w: &w,
            tables: HashMap::new(),
            log: None,
            head: None,
            idem: None,
            tail: None,
        };
        for job in jobs {
            let mut results = Vec::new();
            for op in &job.ops {
                match op {
                    Op::PutSession { client_id, record } => {
                        let json = serde_json::to_vec(record).map_err(io)?;
                        sessions
                            .insert(client_id.as_str(), json.as_slice())
                            .map_err(io)?;
                    }
                    Op::DeleteSession { client_id, uid } => {
                        // A newer session under the same client id keeps its record and
                        // its QoS 2 state: only the rows of session `uid` go.
                        let current = sessions
                            .get(client_id.as_str())
                            .map_err(io)?
                            .and_then(|v| serde_json::from_slice::<SessionRecord>(v.value()).ok())
                            .map(|r| r.uid);
                        let ours = current.is_none_or(|u| u == *uid);
                        if ours {
                            sessions.remove(client_id.as_str()).map_err(io)?;
                        }
                        let mut freed = 0i64;
                        queue
                            .retain_in((*uid, 0)..=(*uid, u64::MAX), |_, v| {
                                freed += v.len() as i64;
                                false
                            })
                            .map_err(io)?;
                        delta -= freed;
                        if ours {
                            rel.retain_in(
                                (client_id.as_str(), 0)..=(client_id.as_str(), u16::MAX),
                                |_, _| false,
                            )
                            .map_err(io)?;
                        }
                    }
                    Op::Enqueue { uid, seq, delivery } => {
                        let bytes = delivery.encode();
                        delta += bytes.len() as i64;
                        queue.insert((*uid, *seq), bytes.as_slice()).map_err(io)?;
                    }
                    Op::MarkSent { uid, seq, sent } => {
                        let updated = queue
                            .get((*uid, *seq))
                            .map_err(io)?
                            .and_then(|v| StoredDelivery::decode(v.value()))
                            .map(|mut d| {
                                d.sent = *sent;
                                d.encode()
                            });
                        // Gone already (acknowledged in the same batch): nothing to mark.
                        if let Some(bytes) = updated {
                            queue.insert((*uid, *seq), bytes.as_slice()).map_err(io)?;
                        }
                    }
                    Op::Dequeue { uid, seq } => {
                        if let Some(old) = queue.remove((*uid, *seq)).map_err(io)? {
                            delta -= old.value().len() as i64;
                        }
                    }
                    Op::PutRetained { topic, message } => {
                        delta += message.len() as i64;
                        if let Some(old) = retained
                            .insert(topic.as_str(), message.as_slice())
                            .map_err(io)?
                        {
                            delta -= old.value().len() as i64;
                        }
                    }
                    Op::DeleteRetained { topic } => {
                        if let Some(old) = retained.remove(topic.as_str()).map_err(io)? {
                            delta -= old.value().len() as i64;
                        }
                    }
                    Op::AwaitRel { client_id, pkid } => {
                        rel.insert((client_id.as_str(), *pkid), ()).map_err(io)?;
                    }
                    Op::Released { client_id, pkid } => {
                        rel.remove((client_id.as_str(), *pkid)).map_err(io)?;
                    }
                    Op::Barrier => {}
                    Op::Probe => {
                        let mut meta = w.open_table(META).map_err(io)?;
                        meta.insert("probe", "ok").map_err(io)?;
                    }
                    Op::Put { table, key, value } => im.put(*table, key, value)?,
                    Op::Delete { table, key } => {
                        im.table(*table)?.remove(key.as_slice()).map_err(io)?;
                    }
                    Op::Increment { table, key, by } => {
                        results.push(OpResult::Counter(im.increment(*table, key, *by)?));
                    }
                    Op::Append { log, idem, value } => {
                        results.push(im.append(log, idem.as_deref(), value, false)?);
                    }
                    Op::AppendRecent { log, idem, value } => {
                        results.push(im.append(log, idem.as_deref(), value, true)?);
                    }
                    Op::ReplaceEntry { log, seq, value } => {
                        let t = im.log()?;
                        let exists = t.get((log.as_slice(), *seq)).map_err(io)?.is_some();
                        if exists {
                            t.insert((log.as_slice(), *seq), value.as_slice())
                                .map_err(io)?;
                        }
                    }
                    Op::SetToLogHead { table, key, log } => {
                        let h = im.head(log)?;
                        im.set_number(*table, key, h)?;
                    }
                    Op::Max { table, key, value } => {
                        if im.number(*table, key)? < *value {
                            im.set_number(*table, key, *value)?;
                        }
                    }
                    Op::TrimLog { log, below } => {
                        if *below > 1 {
                            im.log()?
                                .retain_in((log.as_slice(), 0)..(log.as_slice(), *below), |_, _| {
                                    false
                                })
                                .map_err(io)?;
                        }
                    }
                }
            }
            applied.push(Applied { results });
        }
    }
    w.commit().map_err(io)?;
    Ok((applied, delta))
}
