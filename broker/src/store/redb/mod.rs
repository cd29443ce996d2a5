//! The redb implementation of [`Store`]: one file and its write-ahead log, one writer
//! thread, group commit.
//!
//! The writer thread takes every op waiting in its channel, logs them all in one record of
//! the write-ahead log with one `fdatasync`, applies them in one redb transaction and
//! acknowledges them. Publishes that arrive while a commit is in flight share the next one:
//! under load the number of syncs per message falls towards zero instead of being one per
//! message. redb writes its pages durably every few seconds (a checkpoint), once however
//! many commits touched them; after a crash the log replays what came after.
//!
//! Files: this one (opening, the [`Store`] impl), `writer` (the writer thread, checkpoints,
//! recovery), `wal` (the log file and its record format), `apply` (ops inside a write
//! transaction), `read` (read transactions) and `tail` (a log's tail record).

mod apply;
mod read;
mod tail;
mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use parking_lot::RwLock;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
};

use super::front::{Backlog, Job};
use super::{Done, LogEntry, Op, Record, Snapshot, Store, StoreError, StoreStats, Table};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("queue");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const AWAITING_REL: TableDefinition<(&str, u16), ()> = TableDefinition::new("awaiting_rel");
/// IM logs: (log, seq) → entry; the last sequence number of each log; idempotency keys.
const IM_LOG: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("im_log");
const IM_LOG_HEAD: TableDefinition<&[u8], u64> = TableDefinition::new("im_log_head");
const IM_IDEM: TableDefinition<&[u8], u64> = TableDefinition::new("im_idem");
/// A log's tail record (from format 4): its last sequence number, then the hashed
/// idempotency keys of its latest [`Op::AppendRecent`]s with their seqs (`tail` module).
/// Where a log has one, it replaces the log's `im_log_head` row.
const IM_LOG_TAIL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("im_log_tail");

/// The definition of an IM table.
fn im_table(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

const FORMAT_KEY: &str = "format";
/// The LSN of the write-ahead log record the last commit applied (decimal).
const WAL_LSN_KEY: &str = "wal_lsn";
const FORMAT: &str = "switchboard-store/5";
/// Older formats this version opens (and upgrades: 3 and 4 only added tables, 5 the
/// write-ahead log; an older binary must not open a format 4 file, which keeps log heads
/// where it does not look, nor a format 5 file, whose latest commits may be in the log).
const FORMATS_READ: [&str; 4] = [
    "switchboard-store/2",
    "switchboard-store/3",
    "switchboard-store/4",
    FORMAT,
];

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
    /// Ops and bytes handed to the writer and not yet committed.
    backlog: Backlog,
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
                    Some(f) if FORMATS_READ.contains(&f.as_str()) => {
                        meta.insert(FORMAT_KEY, FORMAT).map_err(io)?;
                    }
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
                w.open_table(IM_LOG).map_err(io)?;
                w.open_table(IM_LOG_HEAD).map_err(io)?;
                w.open_table(IM_IDEM).map_err(io)?;
                w.open_table(IM_LOG_TAIL).map_err(io)?;
                for t in Table::ALL {
                    w.open_table(im_table(t)).map_err(io)?;
                }
            }
            w.commit().map_err(io)?;
        }
        let (wal, lsn) = writer::open_log(&db, path)?;
        let db = Arc::new(RwLock::new(Some(db)));
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            budget,
            backlog: Backlog::default(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let w = writer::Writer {
            db: db.clone(),
            shared: shared.clone(),
            wal,
            lsn,
            path: path.to_owned(),
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io)?;
        Ok(RedbStore {
            tx: parking_lot::Mutex::new(Some(tx)),
            writer: Some(handle),
            shared,
            db,
            path: path.to_owned(),
        })
    }

    /// Runs `f` in a read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.db.read();
        let db = guard
            .as_ref()
            .ok_or_else(|| StoreError::Io("data file closed after an I/O error".into()))?;
        let r = db.begin_read().map_err(io)?;
        f(&r)
    }

    /// Compacts the file (offline use: no broker may be running on it). The write-ahead log
    /// is replayed and checkpointed first.
    pub fn compact(path: &Path) -> Result<bool, StoreError> {
        drop(RedbStore::open(path, 0)?);
        let mut db = Database::open(path).map_err(io)?;
        db.compact().map_err(io)
    }
}

/// An existing file whose tables are not ours.
fn has_foreign_tables(w: &redb::WriteTransaction) -> Result<bool, StoreError> {
    let ours = [
        "meta",
        "sessions",
        "queue",
        "retained",
        "awaiting_rel",
        "im_log",
        "im_log_head",
        "im_idem",
        "im_log_tail",
    ];
    let tables = w.list_tables().map_err(io)?;
    Ok(tables
        .into_iter()
        .any(|t| !ours.contains(&t.name()) && !Table::ALL.iter().any(|x| x.name() == t.name())))
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
        let guard = self.tx.lock();
        let send = guard
            .as_ref()
            .map(|tx| |job| tx.send(job).map_err(|mpsc::SendError(job)| job));
        self.shared.backlog.submit(ops, done, send);
    }

    fn congested(&self) -> bool {
        self.shared.backlog.congested()
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|r| read::get(r, table, key))
    }

    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.read(|r| read::get_many(r, keys))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.read(|r| read::scan(r, table, prefix, after, limit))
    }

    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.read(|r| read::log_range(r, log, from, to, limit, backwards))
    }

    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError> {
        self.read(|r| read::log_last(r, log))
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let snap = self.read(read::load)?;
        self.shared.bytes.store(snap.1, Ordering::Relaxed);
        Ok(snap.0)
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    fn over_budget(&self, extra: u64) -> bool {
        self.shared.budget > 0
            && self.shared.bytes.load(Ordering::Relaxed) + extra > self.shared.budget
    }

    fn disk_bytes(&self) -> Option<u64> {
        let log = std::fs::metadata(wal::path_for(&self.path)).map_or(0, |m| m.len());
        std::fs::metadata(&self.path).ok().map(|m| m.len() + log)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_store_keeps_the_contract_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("sb-redb-contract-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("t.redb");
        {
            let s = RedbStore::open(&path, 0).expect("open");
            crate::store::conformance::all(&s);
        }
        let s = RedbStore::open(&path, 0).expect("reopen");
        crate::store::conformance::after_reopen(&s);
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }
}
