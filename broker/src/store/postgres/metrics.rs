//! The PostgreSQL link's figures on `/metrics`: commit latency (a histogram), failed
//! commits, connection attempts and failures, whether the writer's link is up, and the read
//! pool (open, busy, reads, failed reads). In cluster mode every figure carries the
//! `node` label, like the cluster's own metrics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::READ_POOL;
use super::read::Pool;

/// Upper bounds of the commit latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub(super) struct LinkMetrics {
    /// Commits per bucket (not cumulative; summed when written).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
    /// Commits that failed on a live link (not those refused while it was down).
    pub commit_failures: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub reconnects: AtomicU64,
    /// 1 while the writer has a connection.
    pub up: AtomicU64,
    /// SQL statements sent in group commits (BEGIN/COMMIT not counted).
    pub statements: AtomicU64,
    /// Ops that went into multi-row statements.
    pub batched_ops: AtomicU64,
    /// `node="..."` (escaped) once the store is told its cluster node name.
    pub node_label: std::sync::OnceLock<String>,
}

impl LinkMetrics {
    pub fn observe_commit(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the Prometheus text.
    pub fn write(&self, out: &mut String, pool: &Pool) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // `{node="n"}` alone, or `node="n",` before another label.
        let (alone, first) = match self.node_label.get() {
            Some(l) => (format!("{{{l}}}"), format!("{l},")),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "# HELP switchboard_pg_commit_seconds PostgreSQL group commit latency.\n\
             # TYPE switchboard_pg_commit_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += get(&self.buckets[i]);
            let _ = writeln!(
                out,
                "switchboard_pg_commit_seconds_bucket{{{first}le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += get(&self.buckets[BUCKETS.len()]);
        let _ = writeln!(
            out,
            "switchboard_pg_commit_seconds_bucket{{{first}le=\"+Inf\"}} {cumulative}\n\
             switchboard_pg_commit_seconds_sum{alone} {}\n\
             switchboard_pg_commit_seconds_count{alone} {}",
            get(&self.sum_us) as f64 / 1e6,
            get(&self.count)
        );
        for (name, help, kind, v) in [
            (
                "switchboard_pg_commit_failures_total",
                "Group commits that failed on a live PostgreSQL link.",
                "counter",
                get(&self.commit_failures),
            ),
            (
                "switchboard_pg_connects_total",
                "Connections opened to PostgreSQL (writer and read pool).",
                "counter",
                get(&self.connects),
            ),
            (
                "switchboard_pg_connect_failures_total",
                "Failed connection attempts to PostgreSQL.",
                "counter",
                get(&self.connect_failures),
            ),
            (
                "switchboard_pg_reconnects_total",
                "Times the writer got its link back after losing it.",
                "counter",
                get(&self.reconnects),
            ),
            (
                "switchboard_pg_statements_total",
                "SQL statements sent in group commits (multi-row ones count once).",
                "counter",
                get(&self.statements),
            ),
            (
                "switchboard_pg_batched_ops_total",
                "Store ops written through multi-row statements.",
                "counter",
                get(&self.batched_ops),
            ),
            (
                "switchboard_pg_link_up",
                "1 while the writer is connected to PostgreSQL.",
                "gauge",
                get(&self.up),
            ),
            (
                "switchboard_pg_pool_size",
                "Read connections at most.",
                "gauge",
                READ_POOL as u64,
            ),
            (
                "switchboard_pg_pool_open",
                "Read connections open.",
                "gauge",
                pool.open.load(Ordering::Relaxed) as u64,
            ),
            (
                "switchboard_pg_pool_in_use",
                "Read connections running a query.",
                "gauge",
                pool.in_use.load(Ordering::Relaxed) as u64,
            ),
            (
                "switchboard_pg_reads_total",
                "Reads through the pool.",
                "counter",
                get(&pool.reads),
            ),
            (
                "switchboard_pg_read_failures_total",
                "Reads that failed or timed out.",
                "counter",
                get(&pool.failures),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{alone} {v}"
            );
        }
    }
}
