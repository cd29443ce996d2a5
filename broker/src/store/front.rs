//! The writer front-end shared by the redb and PostgreSQL stores: a [`Store::write`] call
//! becomes one [`Job`] on the writer's channel, counted in the [`Backlog`] until the writer
//! has committed it, so that [`Store::congested`] can say when the writer falls behind.
//!
//! [`Store::write`]: super::Store::write
//! [`Store::congested`]: super::Store::congested

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Applied, BACKLOG_BYTES, BACKLOG_OPS, BATCH_BYTES, BATCH_OPS, Done, Op, StoreError};

/// One transaction waiting for the writer.
pub(crate) struct Job {
    pub ops: Vec<Op>,
    pub done: Option<Done>,
    /// The ops' weight in bytes (`Op::weight`).
    pub weight: usize,
}

/// Ops and bytes handed to the writer and not yet committed.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    ops: AtomicUsize,
    bytes: AtomicUsize,
}

impl Backlog {
    /// Hands `ops` to the writer through `send` (`None`: the store is closed; `send`
    /// gives the job back when the writer has stopped). Every failure reaches `done`.
    pub fn submit(
        &self,
        ops: Vec<Op>,
        done: Option<Done>,
        send: Option<impl FnOnce(Job) -> Result<(), Job>>,
    ) {
        if ops.is_empty() {
            if let Some(d) = done {
                let _ = d.send(Ok(Default::default()));
            }
            return;
        }
        let Some(send) = send else {
            if let Some(d) = done {
                let _ = d.send(Err(StoreError::Io("store closed".into())));
            }
            return;
        };
        let weight: usize = ops.iter().map(Op::weight).sum();
        let n = ops.len();
        self.ops.fetch_add(n, Ordering::Relaxed);
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        if let Err(job) = send(Job { ops, done, weight }) {
            self.committed(n, weight);
            if let Some(d) = job.done {
                let _ = d.send(Err(StoreError::Io("store writer stopped".into())));
            }
        }
    }

    /// The writer is done with `ops` ops of `bytes` bytes (committed or failed).
    pub fn committed(&self, ops: usize, bytes: usize) {
        self.ops.fetch_sub(ops, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether the writer is behind by more than [`BACKLOG_OPS`] or [`BACKLOG_BYTES`].
    pub fn congested(&self) -> bool {
        self.ops.load(Ordering::Relaxed) > BACKLOG_OPS
            || self.bytes.load(Ordering::Relaxed) > BACKLOG_BYTES
    }
}

/// Tells each job of a batch how it ended: its own results, or the batch's error.
pub(crate) fn answer(jobs: Vec<Job>, result: Result<Vec<Applied>, StoreError>) {
    match result {
        Ok(applied) => {
            for (job, a) in jobs.into_iter().zip(applied) {
                if let Some(d) = job.done {
                    let _ = d.send(Ok(a));
                }
            }
        }
        Err(e) => {
            for job in jobs {
                if let Some(d) = job.done {
                    let _ = d.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A writer's next batch: `first`, then whatever `next` has waiting, up to [`BATCH_OPS`]
/// ops and about [`BATCH_BYTES`] bytes. Returns the jobs with their op and byte counts.
pub(crate) fn gather(
    first: Job,
    mut next: impl FnMut() -> Option<Job>,
) -> (Vec<Job>, usize, usize) {
    let (mut n, mut bytes) = (first.ops.len(), first.weight);
    let mut jobs = vec![first];
    while n < BATCH_OPS && bytes < BATCH_BYTES {
        let Some(j) = next() else { break };
        n += j.ops.len();
        bytes += j.weight;
        jobs.push(j);
    }
    (jobs, n, bytes)
}
