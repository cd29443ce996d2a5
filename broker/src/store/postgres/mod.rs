//! The PostgreSQL implementation of [`Store`], for cluster mode (`cluster.postgres_url`):
//! several broker nodes share one durable state.
//!
//! It mirrors the redb store: one writer takes every transaction waiting in its channel and
//! applies them all in one database transaction (group commit), then signals each waiter
//! with its results; reads (IM records and logs, the snapshot at start) go through a small
//! pool of other connections. The difference is the network: the writer sends a whole
//! group commit as one pipeline (`BEGIN`, one statement per op, `COMMIT`) without waiting
//! for any answer in between, because every data dependency (IM sequence numbers,
//! counters, read positions) is resolved by the SQL itself.
//!
//! Failure semantics: a commit that fails or times out, or whose connection breaks, is
//! reported as failed to every waiter (never acknowledged: the outcome of a commit whose
//! answer was lost is unknown, and MQTT resends and IM idempotency keys make a retry
//! safe); [`Store::healthy`] is false from then on, and the writer reconnects with
//! back-off (100 ms doubling to 5 s) and proves the link with a commit before it reports
//! healthy again. Meanwhile writes fail at once instead of queueing behind a dead link.
//!
//! The store runs its own small tokio runtime (two threads), so its calls work from any
//! thread: the trait's reads are synchronous, and a caller on the broker's runtime blocks
//! on a channel (never on another runtime) while a pool connection answers.
//!
//! Files: this one (opening, the [`Store`] impl), `schema` (migrations), `sql` (prepared
//! statements), `plan` (a commit's ops as multi-row statements), `writer` (group commit and reconnection), `read` (pool and reads),
//! `metrics` (the link's Prometheus figures).

mod metrics;
mod plan;
mod read;
mod schema;
mod sql;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::front::{Backlog, Job};
use super::{Done, LogEntry, Op, Record, Scope, Snapshot, Store, StoreError, StoreStats, Table};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one group commit may take before it counts as failed (and the connection is
/// dropped: its outcome is unknown, so nobody is acknowledged).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections at most (the writer has its own).
pub const READ_POOL: usize = 4;
/// How long the store waits at close for the writer to commit what is queued.
const CLOSE_WAIT: Duration = Duration::from_secs(15);

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    // The driver's Display says little ("db error"); the server's message is in the source.
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => StoreError::Io(format!("PostgreSQL: {e}")),
    }
}

/// State shared by the store, its writer and its readers.
struct Shared {
    config: tokio_postgres::Config,
    /// The URL with its password masked, for logs and errors.
    display: String,
    healthy: AtomicBool,
    commits: AtomicU64,
    ops: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    budget: u64,
    backlog: Backlog,
    link: metrics::LinkMetrics,
    /// Multi-row statements per op kind in group commits (see `plan`).
    multi_row: bool,
}

impl Shared {
    fn add_bytes(&self, delta: i64) {
        if delta >= 0 {
            self.bytes.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(delta.unsigned_abs()))
                });
        }
    }
}

/// Opens a connection with the store's settings; its driver task runs on the current
/// (the store's) runtime.
async fn connect(shared: &Shared) -> Result<tokio_postgres::Client, StoreError> {
    let attempt = shared.config.connect(tokio_postgres::NoTls);
    let (client, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            shared.link.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(pg_err(e));
        }
        Err(_) => {
            shared.link.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Io(format!(
                "PostgreSQL at {} did not answer within {CONNECT_TIMEOUT:?}",
                shared.display
            )));
        }
    };
    shared.link.connects.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// PostgreSQL-backed store.
pub struct PgStore {
    /// `None` once closing: dropping the sender stops the writer after it drained.
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Signalled by the writer when it has stopped.
    stopped: Mutex<Option<std_mpsc::Receiver<()>>>,
    shared: Arc<Shared>,
    pool: Arc<read::Pool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shared.display)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or the
    /// `key=value` form), runs the migrations, and starts the writer. `budget` caps the
    /// bytes of stored messages (0: none). Works from any thread, inside a runtime or not.
    pub fn open(url: &str, budget: u64) -> Result<PgStore, StoreError> {
        // One statement per op instead of the multi-row batches: only to measure the
        // difference (`bench --cluster-store`).
        let multi_row = std::env::var_os("SWITCHBOARD_PG_STATEMENT_PER_OP").is_none();
        Self::open_with(url, budget, multi_row)
    }

    /// [`PgStore::open`], choosing whether group commits use multi-row statements per op
    /// kind (`true`, the default) or one statement per op (for comparison and tests).
    pub fn open_with(url: &str, budget: u64, multi_row: bool) -> Result<PgStore, StoreError> {
        let display = schema::redact(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Io(format!("invalid PostgreSQL URL {display}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("switchboard");
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the store's runtime: {e}")))?;
        let shared = Arc::new(Shared {
            config,
            display,
            healthy: AtomicBool::new(true),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            budget,
            backlog: Backlog::default(),
            link: metrics::LinkMetrics::default(),
            multi_row,
        });
        // Connect and migrate before accepting anything: a broker must not start on a
        // database it cannot use.
        let sh = shared.clone();
        let link = run_on(&rt, async move {
            let client = connect(&sh).await?;
            let applied = schema::migrate(&client, &sh.display).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, url = %sh.display, "PostgreSQL schema migrated");
            }
            writer::Link::new(client, sh.multi_row).await
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let sh = shared.clone();
        rt.spawn(async move {
            writer::run(sh, rx, link).await;
            let _ = stop_tx.send(());
        });
        let pool = Arc::new(read::Pool::new(shared.clone()));
        tracing::info!(url = %shared.display, "PostgreSQL store opened");
        Ok(PgStore {
            tx: Mutex::new(Some(tx)),
            stopped: Mutex::new(Some(stop_rx)),
            shared,
            pool,
            rt: Some(rt),
        })
    }

    /// Labels the PostgreSQL link's metrics with this cluster node's name (`node`, as on
    /// the cluster's own metrics). Only the first call counts.
    pub fn with_node_label(self, node: &str) -> PgStore {
        let node = node.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = self.shared.link.node_label.set(format!("node=\"{node}\""));
        self
    }

    /// Runs `fut` on the store's runtime and waits for it (see [`run_on`]).
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.rt {
            Some(rt) => run_on(rt, fut),
            None => Err(StoreError::Io("store closed".into())),
        }
    }
}

/// Runs `fut` on `rt` and blocks the calling thread on a plain channel until it is done:
/// safe from inside another runtime, where `block_on` would panic.
fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std_mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(StoreError::Io("store runtime stopped".into())))
}

impl Drop for PgStore {
    /// Commits what is queued (for at most [`CLOSE_WAIT`]), then closes the connections.
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(rx) = self.stopped.lock().take()
            && rx.recv_timeout(CLOSE_WAIT).is_err()
        {
            tracing::warn!("PostgreSQL store: writer did not finish within {CLOSE_WAIT:?}");
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn write(&self, ops: Vec<Op>, done: Option<Done>) {
        let guard = self.tx.lock();
        let send = guard
            .as_ref()
            .map(|tx| |job| tx.send(job).map_err(|mpsc::error::SendError(job)| job));
        self.shared.backlog.submit(ops, done, send);
    }

    fn congested(&self) -> bool {
        self.shared.backlog.congested()
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let pool = self.pool.clone();
        let (snap, bytes) = self.run(async move { pool.load().await })?;
        self.shared.bytes.store(bytes, Ordering::Relaxed);
        Ok(snap)
    }

    fn load_scoped(&self, scope: &Scope) -> Result<Snapshot, StoreError> {
        let (pool, scope) = (self.pool.clone(), scope.clone());
        self.run(async move { pool.load_scoped(scope).await })
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (pool, key) = (self.pool.clone(), key.to_vec());
        self.run(async move { pool.get(table, key).await })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let pool = self.pool.clone();
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.run(async move { pool.scan(table, prefix, after, limit).await })
    }

    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let (pool, log) = (self.pool.clone(), log.to_vec());
        self.run(async move { pool.log_range(log, from, to, limit, backwards).await })
    }

    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError> {
        let (pool, log) = (self.pool.clone(), log.to_vec());
        self.run(async move { pool.log_last(log).await })
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

    fn write_metrics(&self, out: &mut String) {
        self.shared.link.write(out, &self.pool);
    }
}
