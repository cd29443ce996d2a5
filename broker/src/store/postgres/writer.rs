//! The writer: group commit over one connection, reconnection with back-off, and the
//! clean-up of message bodies no queue references any more.
//!
//! A group commit is one pipeline: `BEGIN`, one statement per op (in op order), `COMMIT`,
//! all sent before the first answer is read, so a commit costs one round trip plus the
//! server's work and its WAL flush, however many publishes it carries. The commit counts
//! only if every statement and the `COMMIT` succeeded (after a failed statement the server
//! answers `COMMIT` with a rollback, which is why the statements' answers are checked).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Row};

use super::metrics::LinkMetrics;
use super::plan::{BatchStmts, Want, calls};
use super::sql::{Stmts, big};
use super::{COMMIT_TIMEOUT, Job, Shared, connect, pg_err};
use crate::store::{Applied, OpResult, StoreError};

/// First wait before reconnecting; doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often unreferenced message bodies are cleaned up, and how many at a time.
const GC_EVERY: Duration = Duration::from_secs(5);
const GC_BATCH: i64 = 10_000;
/// Bodies younger than this are left alone (another node may be about to reference one).
const GC_GRACE_SECS: u64 = 60;

/// The writer's connection and its statements.
pub(super) struct Link {
    client: Client,
    stmts: Stmts,
    batch: BatchStmts,
    /// Multi-row statements per op kind (false: one statement per op, for comparison).
    multi_row: bool,
}

impl Link {
    pub async fn new(client: Client, multi_row: bool) -> Result<Link, StoreError> {
        let stmts = Stmts::prepare(&client).await?;
        let batch = BatchStmts::prepare(&client).await?;
        Ok(Link {
            client,
            stmts,
            batch,
            multi_row,
        })
    }
}

type RowsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// The writer task: runs until the store is dropped and the channel drained.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Job>, link: Link) {
    let mut link = Some(link);
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = Instant::now();
    let mut next_gc = Instant::now() + GC_EVERY;
    shared.link.up.store(1, Ordering::Relaxed);
    loop {
        // While the link is down, reconnect on schedule even if nothing is written.
        let first = if link.is_none() {
            let wait = retry_at.saturating_duration_since(Instant::now());
            tokio::select! {
                j = rx.recv() => j,
                () = tokio::time::sleep(wait) => {
                    reconnect(&shared, &mut link, &mut backoff, &mut retry_at).await;
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(first) = first else { break };
        let (jobs, n, bytes) = crate::store::front::gather(first, || rx.try_recv().ok());
        if link.is_none() && Instant::now() >= retry_at {
            reconnect(&shared, &mut link, &mut backoff, &mut retry_at).await;
        }
        let started = Instant::now();
        let mut timed_out = false;
        let result = match &link {
            Some(l) => {
                match tokio::time::timeout(COMMIT_TIMEOUT, apply(l, &jobs, Some(&shared.link)))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        timed_out = true;
                        Err(StoreError::Io(format!(
                            "PostgreSQL commit did not finish within {COMMIT_TIMEOUT:?}"
                        )))
                    }
                }
            }
            None => Err(StoreError::Io(format!(
                "PostgreSQL at {} unreachable; reconnecting",
                shared.display
            ))),
        };
        shared.backlog.committed(n, bytes);
        match &result {
            Ok((_, delta)) => {
                shared.link.observe_commit(started.elapsed());
                shared.add_bytes(*delta);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.ops.fetch_add(n as u64, Ordering::Relaxed);
                if !shared.healthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!(url = %shared.display, "PostgreSQL store recovered: commits succeed again");
                }
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if link.is_some() {
                    shared.link.commit_failures.fetch_add(1, Ordering::Relaxed);
                }
                if shared.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, url = %shared.display, "STORAGE FAILURE: PostgreSQL commit failed; QoS 1/2 publishes are refused until it recovers");
                }
                // A broken or stuck connection is dropped (its last commit's outcome is
                // unknown); the next one is opened after a back-off.
                if timed_out || link.as_ref().is_some_and(|l| l.client.is_closed()) {
                    drop_link(&shared, &mut link, &mut retry_at, backoff);
                }
            }
        }
        crate::store::front::answer(jobs, result.map(|(applied, _)| applied));
        if Instant::now() >= next_gc {
            next_gc = Instant::now() + GC_EVERY;
            if let Some(l) = &link {
                collect_garbage(l).await;
            }
        }
    }
    shared.link.up.store(0, Ordering::Relaxed);
}

fn drop_link(shared: &Shared, link: &mut Option<Link>, retry_at: &mut Instant, wait: Duration) {
    if link.take().is_some() {
        shared.link.up.store(0, Ordering::Relaxed);
        *retry_at = Instant::now() + wait;
    }
}

/// One reconnection attempt; on success the link is proven with a commit before the store
/// reports healthy again.
async fn reconnect(
    shared: &Shared,
    link: &mut Option<Link>,
    backoff: &mut Duration,
    retry_at: &mut Instant,
) {
    let attempt = async {
        let l = Link::new(connect(shared).await?, shared.multi_row).await?;
        apply(&l, &[], None).await?;
        Ok::<_, StoreError>(l)
    };
    match attempt.await {
        Ok(l) => {
            *link = Some(l);
            *backoff = BACKOFF_MIN;
            shared.link.up.store(1, Ordering::Relaxed);
            shared.link.reconnects.fetch_add(1, Ordering::Relaxed);
            if !shared.healthy.swap(true, Ordering::Relaxed) {
                tracing::warn!(url = %shared.display, "PostgreSQL store recovered: reconnected");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, url = %shared.display, retry_in = ?*backoff, "PostgreSQL reconnect failed");
            *retry_at = Instant::now() + *backoff;
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Removes message bodies that no queue row references any more (bounded per run). A
/// failure (e.g. another node referenced one meanwhile) is harmless: the next run retries.
async fn collect_garbage(l: &Link) {
    let before = big(crate::store::unix_now().saturating_sub(GC_GRACE_SECS));
    match l
        .client
        .execute(&l.stmts.gc_payloads, &[&before, &GC_BATCH])
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(n, "PostgreSQL store: unreferenced message bodies removed"),
        Err(e) => tracing::debug!(error = %pg_err(e), "PostgreSQL store: body clean-up deferred"),
    }
}

/// Applies every job in one transaction, pipelined. Returns each job's results and the
/// change in stored message bytes.
pub(super) async fn apply(
    l: &Link,
    jobs: &[Job],
    m: Option<&LinkMetrics>,
) -> Result<(Vec<Applied>, i64), StoreError> {
    let (calls, mut delta, batched) = calls(&l.stmts, &l.batch, jobs, l.multi_row)?;
    if let Some(m) = m {
        m.statements
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        m.batched_ops.fetch_add(batched as u64, Ordering::Relaxed);
    }
    let c = &l.client;
    let mut futures: Vec<RowsFuture<'_>> = Vec::with_capacity(calls.len() + 2);
    futures.push(Box::pin(async move {
        c.batch_execute("BEGIN").await.map(|()| Vec::new())
    }));
    let mut wants = Vec::with_capacity(calls.len());
    for call in calls {
        wants.push((call.job, call.want));
        let (stmt, params) = (call.stmt, call.params);
        futures.push(Box::pin(async move {
            c.query_raw(stmt, params).await?.try_collect().await
        }));
    }
    futures.push(Box::pin(async move {
        c.batch_execute("COMMIT").await.map(|()| Vec::new())
    }));
    // Requests leave in the order their futures are first polled: poll each once, in
    // order, so the whole pipeline is on the wire before the first answer is awaited.
    let mut slots: Vec<Result<Result<Vec<Row>, tokio_postgres::Error>, RowsFuture<'_>>> =
        Vec::with_capacity(futures.len());
    {
        let mut cx = Context::from_waker(Waker::noop());
        for mut f in futures {
            slots.push(match f.as_mut().poll(&mut cx) {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => Err(f),
            });
        }
    }
    let mut answers = Vec::with_capacity(slots.len());
    for slot in slots {
        answers.push(match slot {
            Ok(r) => r,
            Err(f) => f.await,
        });
    }
    let mut applied: Vec<Applied> = (0..jobs.len()).map(|_| Applied::default()).collect();
    let mut first_error = None;
    let mut rows_of = answers.into_iter();
    if let Some(Err(e)) = rows_of.next() {
        first_error = Some(pg_err(e));
    }
    for (job, want) in wants {
        let rows = match rows_of.next() {
            Some(Ok(rows)) => rows,
            Some(Err(e)) => {
                first_error.get_or_insert(pg_err(e));
                continue;
            }
            None => {
                first_error.get_or_insert(StoreError::Io("missing answer".into()));
                continue;
            }
        };
        let results = &mut applied[job].results;
        match want {
            Want::Nothing => {}
            Want::Freed => {
                for r in &rows {
                    delta -= r.try_get::<_, Option<i32>>(0).ok().flatten().unwrap_or(0) as i64;
                }
            }
            Want::Counter => {
                let n: i64 = rows
                    .first()
                    .and_then(|r| r.try_get(0).ok())
                    .ok_or_else(|| StoreError::Io("increment returned no value".into()))?;
                results.push(OpResult::Counter(n.max(0) as u64));
            }
            Want::Appended => {
                let row = rows
                    .first()
                    .ok_or_else(|| StoreError::Io("append returned no row".into()))?;
                let seq: i64 = row.try_get(0).map_err(pg_err)?;
                let duplicate: bool = row.try_get(1).map_err(pg_err)?;
                results.push(OpResult::Appended {
                    seq: seq.max(0) as u64,
                    duplicate,
                });
            }
        }
    }
    match rows_of.next() {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            first_error.get_or_insert(pg_err(e));
        }
        None => {
            first_error.get_or_insert(StoreError::Io("missing COMMIT answer".into()));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((applied, delta)),
    }
}
