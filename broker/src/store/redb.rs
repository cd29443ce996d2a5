//! The redb implementation of [`Store`]: one file, one writer thread, group commit.
//!
//! The writer thread takes every op waiting in its channel, applies them all in one write
//! transaction and commits it with an fsync. Publishes that arrive while a commit is in
//! flight therefore share the next one: under load the number of fsyncs per message falls
//! towards zero instead of being one per message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::codec::{SessionRecord, StoredDelivery};
use super::{Done, Op, Snapshot, Store, StoreError, StoreStats};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("queue");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const AWAITING_REL: TableDefinition<(&str, u16), ()> = TableDefinition::new("awaiting_rel");

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "switchboard-store/2";
/// Ops applied in one transaction at most; the rest wait for the next commit.
const MAX_BATCH: usize = 50_000;

type Job = (Vec<Op>, Option<Done>);

/// redb-backed store.
pub struct RedbStore {
    /// `None` once dropping: closing the channel stops the writer.
    tx: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    /// Shared with the writer, which reopens the file after an I/O error (redb refuses
    /// every later transaction on a handle that saw one).
    db: Arc<RwLock<Option<Database>>>,
    path: PathBuf,
}

struct Shared {
    healthy: AtomicBool,
    commits: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    budget: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the data file at `path`. A file that is not ours, or is corrupt,
    /// is an error: it is never wiped. `budget` caps the bytes of stored messages (0: none).
    pub fn open(path: &Path, budget: u64) -> Result<RedbStore, StoreError> {
        let foreign = |reason: String| StoreError::Foreign {
            path: path.display().to_string(),
            reason,
        };
        let existed = path.exists();
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => {
                StoreError::Io(format!("{} is in use by another process", path.display()))
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                StoreError::Io(format!("{}: {e}", path.display()))
            }
            other => foreign(other.to_string()),
        })?;
        {
            let w = db.begin_write().map_err(io)?;
            {
                let mut meta = w.open_table(META).map_err(io)?;
                let format = meta
                    .get(FORMAT_KEY)
                    .map_err(io)?
                    .map(|v| v.value().to_owned());
                match format {
                    Some(f) if f == FORMAT => {}
                    Some(f) => return Err(foreign(format!("format {f:?}, expected {FORMAT:?}"))),
                    None if existed && has_foreign_tables(&w)? => {
                        return Err(foreign("no Switchboard format marker".into()));
                    }
                    None => {
                        meta.insert(FORMAT_KEY, FORMAT).map_err(io)?;
                    }
                }
                w.open_table(SESSIONS).map_err(io)?;
                w.open_table(QUEUE).map_err(io)?;
                w.open_table(RETAINED).map_err(io)?;
                w.open_table(AWAITING_REL).map_err(io)?;
            }
            w.commit().map_err(io)?;
        }
        let db = Arc::new(RwLock::new(Some(db)));
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            budget,
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let (db2, sh2, p2) = (db.clone(), shared.clone(), path.to_owned());
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(db2, sh2, rx, p2))
            .map_err(io)?;
        Ok(RedbStore {
            tx: parking_lot::Mutex::new(Some(tx)),
            writer: Some(handle),
            shared,
            db,
            path: path.to_owned(),
        })
    }

    /// Compacts the file (offline use: no broker may be running on it).
    pub fn compact(path: &Path) -> Result<bool, StoreError> {
        let mut db = Database::open(path).map_err(io)?;
        db.compact().map_err(io)
    }
}

/// An existing file whose tables are not ours.
fn has_foreign_tables(w: &redb::WriteTransaction) -> Result<bool, StoreError> {
    let ours = ["meta", "sessions", "queue", "retained", "awaiting_rel"];
    let tables = w.list_tables().map_err(io)?;
    Ok(tables.into_iter().any(|t| !ours.contains(&t.name())))
}

fn writer(
    db: Arc<RwLock<Option<Database>>>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Job>,
    path: PathBuf,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].0.len();
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.0.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let result = match db.read().as_ref() {
            Some(d) => apply(d, &shared, &jobs),
            None => Err(StoreError::Io("data file closed after an I/O error".into())),
        };
        if result.is_err() {
            // The handle is unusable after an I/O error: close it and open the file again,
            // so that the next commit can succeed once the disk has room.
            let mut guard = db.write();
            *guard = None;
            match Database::create(&path) {
                Ok(d) => *guard = Some(d),
                Err(e) => tracing::error!(error = %e, "cannot reopen the data file; will retry"),
            }
        }
        match &result {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.ops.fetch_add(n as u64, Ordering::Relaxed);
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!("storage recovered: commits succeed again");
                }
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if shared.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "STORAGE FAILURE: commit failed; QoS 1/2 publishes are refused until it recovers");
                }
            }
        }
        for (_, done) in jobs {
            if let Some(d) = done {
                let _ = d.send(result.clone());
            }
        }
    }
}

fn apply(db: &Database, shared: &Shared, jobs: &[Job]) -> Result<(), StoreError> {
    let w = db.begin_write().map_err(io)?;
    let mut delta: i64 = 0;
    {
        let mut sessions = w.open_table(SESSIONS).map_err(io)?;
        let mut queue = w.open_table(QUEUE).map_err(io)?;
        let mut retained = w.open_table(RETAINED).map_err(io)?;
        let mut rel = w.open_table(AWAITING_REL).map_err(io)?;
        for op in jobs.iter().flat_map(|(ops, _)| ops) {
            match op {
                Op::PutSession { client_id, record } => {
                    let json = serde_json::to_vec(record).map_err(io)?;
                    sessions
                        .insert(client_id.as_str(), json.as_slice())
                        .map_err(io)?;
                }
                Op::DeleteSession { client_id, uid } => {
                    sessions.remove(client_id.as_str()).map_err(io)?;
                    let mut freed = 0i64;
                    queue
                        .retain_in((*uid, 0)..=(*uid, u64::MAX), |_, v| {
                            freed += v.len() as i64;
                            false
                        })
                        .map_err(io)?;
                    delta -= freed;
                    rel.retain_in(
                        (client_id.as_str(), 0)..=(client_id.as_str(), u16::MAX),
                        |_, _| false,
                    )
                    .map_err(io)?;
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
                Op::Probe => {
                    let mut meta = w.open_table(META).map_err(io)?;
                    meta.insert("probe", "ok").map_err(io)?;
                }
            }
        }
    }
    w.commit().map_err(io)?;
    if delta >= 0 {
        shared.bytes.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        let _ = shared
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(delta.unsigned_abs()))
            });
    }
    Ok(())
}

impl Drop for RedbStore {
    /// Commits what is queued, then closes the file.
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Store for RedbStore {
    fn write(&self, ops: Vec<Op>, done: Option<Done>) {
        if ops.is_empty() {
            if let Some(d) = done {
                let _ = d.send(Ok(()));
            }
            return;
        }
        let guard = self.tx.lock();
        let Some(tx) = guard.as_ref() else {
            if let Some(d) = done {
                let _ = d.send(Err(StoreError::Io("store closed".into())));
            }
            return;
        };
        if let Err(mpsc::SendError((_, Some(d)))) = tx.send((ops, done)) {
            let _ = d.send(Err(StoreError::Io("store writer stopped".into())));
        }
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let guard = self.db.read();
        let db = guard
            .as_ref()
            .ok_or_else(|| StoreError::Io("data file closed".into()))?;
        let r = db.begin_read().map_err(io)?;
        let mut snap = Snapshot::default();
        let mut bytes = 0u64;
        for row in r.open_table(SESSIONS).map_err(io)?.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let record: SessionRecord = serde_json::from_slice(v.value()).map_err(|e| {
                StoreError::Io(format!("corrupt session record {:?}: {e}", k.value()))
            })?;
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
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        Ok(snap)
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    fn over_budget(&self, extra: u64) -> bool {
        self.shared.budget > 0
            && self.shared.bytes.load(Ordering::Relaxed) + extra > self.shared.budget
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            ops: self.shared.ops.load(Ordering::Relaxed),
            failed_commits: self.shared.failed.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }
}
