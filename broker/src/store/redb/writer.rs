//! The writer thread: group commit through the write-ahead log, checkpoints, recovery.
//!
//! The thread takes every job waiting in its channel as one batch. A batch is logged and
//! synced in the [`Wal`], then applied in a non-durable redb transaction, then
//! acknowledged. Every [`CHECKPOINT_EVERY`], when the log passes
//! [`wal::CHECKPOINT_BYTES`], for a batch too big for the log, and for a storage probe, the
//! batch is committed durably instead (a checkpoint), and the log starts over. When nothing
//! arrives for [`CHECKPOINT_EVERY`] after a logged batch, an empty checkpoint follows, so
//! that an idle broker's file is complete on its own.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{Database, ReadableDatabase};

use super::wal::{self, Wal, codec};
use super::{META, Shared, WAL_LSN_KEY, apply, io};
use crate::store::front::Job;
use crate::store::{Applied, Op, StoreError};

/// How long logged batches wait for a checkpoint at most.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// The LSN of the store's last commit (0 for a store that never had one).
fn committed_lsn(db: &Database) -> Result<u64, StoreError> {
    let r = db.begin_read().map_err(io)?;
    let meta = r.open_table(META).map_err(io)?;
    let v = meta.get(WAL_LSN_KEY).map_err(io)?;
    match v {
        None => Ok(0),
        Some(v) => v
            .value()
            .parse()
            .map_err(|_| StoreError::Io(format!("corrupt log position {:?}", v.value()))),
    }
}

/// Replays the log's records after the store's last durable commit onto `db`, in one
/// durable commit, and starts the log over. Returns the LSN the next batch takes.
pub(super) fn recover(db: &Database, wal: &mut Wal) -> Result<u64, StoreError> {
    let done = committed_lsn(db)?;
    let records = wal.records().map_err(io)?;
    let pending: Vec<_> = records.into_iter().filter(|(l, _)| *l > done).collect();
    let Some(&(first, _)) = pending.first() else {
        wal.restart();
        return Ok(done + 1);
    };
    if first != done + 1 {
        return Err(StoreError::Io(format!(
            "{} continues at record {first} but the data file stops at {done}: they do not belong together",
            wal.path().display()
        )));
    }
    let mut jobs = Vec::with_capacity(pending.len());
    let mut last = done;
    for (lsn, raw) in &pending {
        let ops = codec::decode(raw).ok_or_else(|| {
            StoreError::Io(format!(
                "{}: record {lsn} is intact but unreadable (written by another version?)",
                wal.path().display()
            ))
        })?;
        jobs.push(Job {
            ops,
            done: None,
            weight: 0,
        });
        last = *lsn;
    }
    apply::apply(db, &jobs, true, last)?;
    tracing::info!(
        records = pending.len(),
        from = first,
        to = last,
        "replayed the write-ahead log"
    );
    wal.restart();
    Ok(last + 1)
}

/// Why a batch failed, and whether redb's handle is still usable.
struct Failed {
    error: StoreError,
    /// redb refuses every later transaction on a handle that saw an I/O error.
    reopen: bool,
}

/// The writer's state.
pub(super) struct Writer {
    pub db: Arc<RwLock<Option<Database>>>,
    pub shared: Arc<Shared>,
    pub wal: Wal,
    /// The LSN the next batch takes.
    pub lsn: u64,
    pub path: std::path::PathBuf,
}

impl Writer {
    /// Runs until the channel closes, then checkpoints what is logged.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut checkpointed = Instant::now();
        loop {
            let first = if self.wal.used() > 0 {
                let wait = CHECKPOINT_EVERY.saturating_sub(checkpointed.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(j) => j,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Failed or not, the next try is a period away (a full disk is not
                        // retried in a loop).
                        if let Err(e) = self.checkpoint() {
                            tracing::warn!(error = %e, "checkpoint failed; retrying later");
                        }
                        checkpointed = Instant::now();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            let (jobs, n, bytes) = crate::store::front::gather(first, || rx.try_recv().ok());
            let durable = checkpointed.elapsed() >= CHECKPOINT_EVERY
                || self.wal.used() >= wal::CHECKPOINT_BYTES
                || jobs
                    .iter()
                    .any(|j| j.ops.iter().any(|o| matches!(o, Op::Probe)));
            let result = self.commit(&jobs, durable);
            if let Ok((true, _)) = &result {
                checkpointed = Instant::now();
            }
            self.shared.backlog.committed(n, bytes);
            self.finish(jobs, n, result.map(|(_, r)| r));
        }
        if self.wal.used() > 0
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "final checkpoint failed: the write-ahead log replays on the next start");
        }
    }

    /// Logs and applies one batch (`durable`: as a checkpoint, without the log). Returns
    /// whether it was a checkpoint, the jobs' results and the change in stored bytes.
    fn commit(
        &mut self,
        jobs: &[Job],
        mut durable: bool,
    ) -> Result<(bool, (Vec<Applied>, i64)), StoreError> {
        let outcome = {
            let db = self.db.clone();
            let guard = db.read();
            match guard.as_ref() {
                None => Err(Failed {
                    error: StoreError::Io("data file closed after an I/O error".into()),
                    reopen: true,
                }),
                Some(d) => self.log_and_apply(d, jobs, &mut durable),
            }
        };
        match outcome {
            Ok(r) => {
                self.lsn += 1;
                if durable {
                    self.wal.restart();
                }
                Ok((durable, r))
            }
            Err(Failed { error, reopen }) => {
                if reopen {
                    self.reopen();
                }
                Err(error)
            }
        }
    }

    fn log_and_apply(
        &mut self,
        d: &Database,
        jobs: &[Job],
        durable: &mut bool,
    ) -> Result<(Vec<Applied>, i64), Failed> {
        let mut logged = false;
        if !*durable {
            let mut raw = Vec::with_capacity(jobs.iter().map(|j| j.weight + 16).sum());
            codec::encode(jobs.iter().flat_map(|j| j.ops.iter()), &mut raw);
            if self.wal.fits(raw.len()) {
                self.wal.append(self.lsn, &raw).map_err(|e| Failed {
                    error: StoreError::Io(format!("{}: {e}", self.wal.path().display())),
                    reopen: false,
                })?;
                logged = true;
            } else {
                *durable = true;
            }
        }
        apply::apply(d, jobs, *durable, self.lsn).map_err(|error| {
            if logged {
                self.wal.retract();
            }
            Failed {
                error,
                reopen: true,
            }
        })
    }

    /// A durable commit of nothing: what is logged becomes part of the data file.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.commit(&[], true).map(|_| ())
    }

    /// Closes redb's handle after an I/O error and opens the file again, replaying the log
    /// (the handle's non-durable commits are gone with it); retried on the next batch until
    /// the disk lets it succeed.
    fn reopen(&mut self) {
        let mut guard = self.db.write();
        *guard = None;
        match Database::create(&self.path) {
            Ok(d) => match recover(&d, &mut self.wal) {
                Ok(lsn) => {
                    self.lsn = lsn;
                    *guard = Some(d);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot replay the write-ahead log; will retry")
                }
            },
            Err(e) => tracing::error!(error = %e, "cannot reopen the data file; will retry"),
        }
    }

    /// Counts the batch and answers its jobs.
    fn finish(&self, jobs: Vec<Job>, n: usize, result: Result<(Vec<Applied>, i64), StoreError>) {
        let shared = &self.shared;
        match &result {
            Ok((_, delta)) => {
                if *delta >= 0 {
                    shared.bytes.fetch_add(*delta as u64, Ordering::Relaxed);
                } else {
                    let _ = shared
                        .bytes
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                            Some(b.saturating_sub(delta.unsigned_abs()))
                        });
                }
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
        crate::store::front::answer(jobs, result.map(|(applied, _)| applied));
    }
}

/// Opens the log beside `data` and replays it onto `db`; returns it with the next LSN.
pub(super) fn open_log(db: &Database, data: &Path) -> Result<(Wal, u64), StoreError> {
    let path = wal::path_for(data);
    let mut wal =
        Wal::open(&path).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
    let lsn = recover(db, &mut wal)?;
    Ok((wal, lsn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use crate::store::{Store, Table};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-writer-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir.join("t.redb")
    }

    fn put(key: &str) -> Op {
        Op::Put {
            table: Table::UserMeta,
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    /// The state a crash leaves: batches logged (and acknowledged) after the last durable
    /// commit, their non-durable commits gone with the process.
    fn logged_but_not_in_redb(path: &Path, records: &[(u64, Vec<Op>)]) {
        // One logged batch (LSN 1), then the clean close's checkpoint (LSN 2).
        let s = RedbStore::open(path, 0).expect("create");
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.write(vec![put("first")], Some(tx));
        rx.blocking_recv().expect("answer").expect("committed");
        drop(s);
        let mut wal = Wal::open(&wal::path_for(path)).expect("log");
        for (lsn, ops) in records {
            let mut raw = Vec::new();
            codec::encode(ops.iter(), &mut raw);
            wal.append(*lsn, &raw).expect("append");
        }
    }

    #[test]
    fn a_restart_replays_what_was_logged_after_the_checkpoint() {
        let path = tmp("replay");
        // The data file's checkpoint is LSN 2: records 3 and 4 follow it; a stale record 2
        // before them is skipped.
        logged_but_not_in_redb(
            &path,
            &[
                (2, vec![put("stale")]),
                (3, vec![put("a"), put("b")]),
                (4, vec![put("c")]),
            ],
        );
        let s = RedbStore::open(&path, 0).expect("reopen replays");
        for k in ["first", "a", "b", "c"] {
            assert!(
                s.get(Table::UserMeta, k.as_bytes())
                    .expect("read")
                    .is_some(),
                "{k} was acknowledged and must be there"
            );
        }
        assert!(
            s.get(Table::UserMeta, b"stale").expect("read").is_none(),
            "a record at or below the checkpoint is never applied again"
        );
        drop(s);
        // Replayed once: the log started over, a second restart finds nothing to do.
        let s = RedbStore::open(&path, 0).expect("reopen");
        assert!(s.get(Table::UserMeta, b"c").expect("read").is_some());
        drop(s);
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn a_log_that_does_not_continue_the_data_file_is_refused() {
        let path = tmp("gap");
        logged_but_not_in_redb(&path, &[(40, vec![put("x")])]);
        let err = RedbStore::open(&path, 0).expect_err("a gap must not be papered over");
        assert!(err.to_string().contains("do not belong together"), "{err}");
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }

    #[test]
    fn logged_commits_are_visible_at_once_and_checkpointed_on_close() {
        let path = tmp("visible");
        let s = RedbStore::open(&path, 0).expect("open");
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.write(vec![put("k")], Some(tx));
        rx.blocking_recv().expect("answer").expect("committed");
        assert!(s.get(Table::UserMeta, b"k").expect("read").is_some());
        drop(s);
        // The clean close checkpointed: the log holds nothing newer than the data file.
        let wal = Wal::open(&wal::path_for(&path)).expect("log");
        let db = Database::open(&path).expect("data file");
        let done = committed_lsn(&db).expect("lsn");
        assert!(
            wal.records().expect("read").iter().all(|(l, _)| *l <= done),
            "records after the checkpoint remain"
        );
        std::fs::remove_dir_all(path.parent().expect("dir")).ok();
    }
}
