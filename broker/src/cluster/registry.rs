//! The cluster's client-id → node registry and node leases, in the shared PostgreSQL
//! database (tables of migration 2, `store/postgres/schema.rs`).
//!
//! One row per client id (`sb_registry`): `node` is the latest node that claimed the
//! session, `epoch` counts claims, `holder` is the node that has the session's state in
//! memory (none: everything is in the store), `owner` the identity that created it (hijack
//! check, cluster-wide), `live` whether a session exists, `will` the will of the connection
//! holding it (durable, so that a survivor can publish it if the holder dies).
//!
//! A CONNECT claims the row (compare-and-swap: `epoch + 1`, refused if another owner's
//! session is live), asks the holder to let go, waits until `holder` is empty (or the
//! holder's lease has expired), then holds it with a second compare-and-swap on the epoch
//! it got: of two racing CONNECTs only the later claim can hold, the other is refused.
//!
//! `sb_nodes` holds one lease per node, renewed every third of `cluster.lease_secs`; a
//! survivor that wins the compare-and-swap on an expired node's row adopts its sessions.
//! Every statement is portable SQL (no advisory locks, sequences or LISTEN/NOTIFY).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

/// How long one registry statement may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Rows adopted from a dead node per statement.
pub const ADOPT_BATCH: i64 = 500;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("session registry: PostgreSQL: {0}")]
    Db(String),
    #[error("session registry: PostgreSQL did not answer within {TIMEOUT:?}")]
    Timeout,
}

/// Figures of the registry and the lease, for `/metrics`.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub claims: AtomicU64,
    pub claims_waited: AtomicU64,
    pub claims_lost: AtomicU64,
    pub claims_refused: AtomicU64,
    pub sessions_loaded: AtomicU64,
    pub releases: AtomicU64,
    pub errors: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub lease_failures: AtomicU64,
    pub nodes_reaped: AtomicU64,
    pub sessions_adopted: AtomicU64,
    pub wills_fired: AtomicU64,
    /// Last statement's round trip, microseconds.
    pub last_rtt_us: AtomicU64,
}

/// A claim's outcome.
#[derive(Debug, Clone)]
pub struct Claim {
    pub epoch: i64,
    pub holder: Option<String>,
}

/// A row's current state, for a claimer waiting on the holder.
#[derive(Debug, Clone)]
pub struct RowState {
    pub epoch: i64,
    pub holder: Option<String>,
    /// The holder has no lease, or it expired.
    pub holder_dead: bool,
}

/// A row taken over from a dead node (or from this node's previous run).
#[derive(Debug, Clone)]
pub struct Adopted {
    pub client_id: String,
    pub epoch: i64,
    /// Encoded will of the connection that held it, and its delay (seconds).
    pub will: Option<(Vec<u8>, u32)>,
    pub live: bool,
}

/// The registry link of this node.
pub struct Registry {
    config: tokio_postgres::Config,
    node: String,
    lease: Duration,
    client: Mutex<Option<Arc<Client>>>,
    /// Epoch of each session this node holds.
    epochs: Mutex<HashMap<String, i64>>,
    pub stats: RegistryStats,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn db(e: tokio_postgres::Error) -> RegistryError {
    match e.as_db_error() {
        Some(d) => RegistryError::Db(format!("{} ({})", d.message(), d.code().code())),
        None => RegistryError::Db(e.to_string()),
    }
}

impl Registry {
    /// Parses `url`; connects on first use.
    pub fn new(url: &str, node: &str, lease: Duration) -> Result<Registry, RegistryError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| RegistryError::Db(format!("invalid URL: {e}")))?;
        Ok(Registry {
            config,
            node: node.to_owned(),
            lease,
            client: Mutex::new(None),
            epochs: Mutex::new(HashMap::new()),
            stats: RegistryStats::default(),
        })
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    async fn client(&self) -> Result<Arc<Client>, RegistryError> {
        if let Some(c) = self.client.lock().as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (client, conn) =
            tokio::time::timeout(TIMEOUT, self.config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| RegistryError::Timeout)?
                .map_err(db)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "registry connection ended");
            }
        });
        let client = Arc::new(client);
        *self.client.lock() = Some(client.clone());
        Ok(client)
    }

    /// Runs one statement; rows back.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, RegistryError> {
        let started = std::time::Instant::now();
        let r = async {
            let c = self.client().await?;
            tokio::time::timeout(TIMEOUT, c.query(sql, params))
                .await
                .map_err(|_| RegistryError::Timeout)?
                .map_err(db)
        }
        .await;
        self.stats
            .last_rtt_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if r.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            // A broken connection is replaced on the next call.
            let mut client = self.client.lock();
            if client.as_ref().is_some_and(|c| c.is_closed()) {
                *client = None;
            }
        }
        r
    }

    /// Takes the next number of the incarnation counter: each node start gets its own
    /// range of ids (`incarnation << 32`), so session ids are unique in the shared store.
    pub async fn incarnation(&self) -> Result<u64, RegistryError> {
        let rows = self
            .query(
                "INSERT INTO sb_counters (name, value) VALUES ('incarnation', 1) \
                 ON CONFLICT (name) DO UPDATE SET value = sb_counters.value + 1 RETURNING value",
                &[],
            )
            .await?;
        let v: i64 = rows
            .first()
            .and_then(|r| r.try_get(0).ok())
            .ok_or_else(|| RegistryError::Db("no incarnation returned".into()))?;
        Ok(v.max(1) as u64)
    }

    /// Claims `client_id` for this node: `None` if a live session of another owner holds
    /// it (hijack, 0x85).
    pub async fn claim(
        &self,
        client_id: &str,
        owner: Option<&str>,
    ) -> Result<Option<Claim>, RegistryError> {
        self.stats.claims.fetch_add(1, Ordering::Relaxed);
        let owner = owner.unwrap_or("");
        let rows = self
            .query(
                "INSERT INTO sb_registry (client_id, node, epoch, holder, owner, live) \
                 VALUES ($1, $2, 1, NULL, $3, TRUE) \
                 ON CONFLICT (client_id) DO UPDATE SET node = EXCLUDED.node, \
                 epoch = sb_registry.epoch + 1, owner = EXCLUDED.owner, live = TRUE \
                 WHERE NOT sb_registry.live OR sb_registry.owner = EXCLUDED.owner \
                 RETURNING epoch, holder",
                &[&client_id.as_bytes(), &self.node, &owner],
            )
            .await?;
        Ok(rows.first().and_then(|r| {
            Some(Claim {
                epoch: r.try_get(0).ok()?,
                holder: r.try_get(1).ok()?,
            })
        }))
    }

    /// The row of `client_id` now.
    pub async fn row(&self, client_id: &str) -> Result<Option<RowState>, RegistryError> {
        let rows = self
            .query(
                "SELECT r.epoch, r.holder, COALESCE(n.expires_at < $2, TRUE) \
                 FROM sb_registry r LEFT JOIN sb_nodes n ON n.node = r.holder \
                 WHERE r.client_id = $1",
                &[&client_id.as_bytes(), &now_ms()],
            )
            .await?;
        Ok(rows.first().and_then(|r| {
            Some(RowState {
                epoch: r.try_get(0).ok()?,
                holder: r.try_get(1).ok()?,
                holder_dead: r.try_get(2).ok()?,
            })
        }))
    }

    /// Holds `client_id` at `epoch` if nobody else holds it (or `dead`, a holder whose
    /// lease expired, does): `None` if a later claim came first, else the will that the
    /// dead holder's connection left (its delay in seconds).
    pub async fn hold(
        &self,
        client_id: &str,
        epoch: i64,
        dead: Option<&str>,
    ) -> Result<Option<Option<(Vec<u8>, u32)>>, RegistryError> {
        let rows = self
            .query(
                "WITH old AS (SELECT client_id, will, will_delay, holder FROM sb_registry \
                 WHERE client_id = $1 FOR UPDATE) \
                 UPDATE sb_registry r SET holder = $2, will = NULL FROM old \
                 WHERE r.client_id = old.client_id AND r.epoch = $3 \
                 AND (r.holder IS NULL OR r.holder = $2 OR r.holder = $4) \
                 RETURNING old.will, old.will_delay, old.holder",
                &[&client_id.as_bytes(), &self.node, &epoch, &dead],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        self.epochs.lock().insert(client_id.to_owned(), epoch);
        let will: Option<Vec<u8>> = r.try_get(0).ok().flatten();
        let delay: i64 = r.try_get(1).unwrap_or(0);
        let old: Option<String> = r.try_get(2).ok().flatten();
        // Only a dead holder's will is an orphan; this node's own is its connection's.
        let orphan = match (old.as_deref(), dead) {
            (Some(o), Some(d)) if o == d => will,
            _ => None,
        };
        Ok(Some(
            orphan.map(|w| (w, delay.clamp(0, i64::from(u32::MAX)) as u32)),
        ))
    }

    /// Appends the registry's and the lease's figures (label `node`) to a Prometheus page.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        let node = self.node.replace('\\', "\\\\").replace('"', "\\\"");
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 14] = [
            (
                "registry_claims_total",
                "Client-id claims made by CONNECTs here.",
                "counter",
                g(&s.claims),
            ),
            (
                "registry_claims_waited_total",
                "Claims that waited for another node to let go.",
                "counter",
                g(&s.claims_waited),
            ),
            (
                "registry_claims_lost_total",
                "Claims overtaken by a later CONNECT elsewhere (0x89).",
                "counter",
                g(&s.claims_lost),
            ),
            (
                "registry_claims_refused_total",
                "Claims refused: client id owned by another identity (0x85).",
                "counter",
                g(&s.claims_refused),
            ),
            (
                "registry_sessions_loaded_total",
                "Sessions loaded from the shared store on CONNECT.",
                "counter",
                g(&s.sessions_loaded),
            ),
            (
                "registry_releases_total",
                "Sessions handed to another node.",
                "counter",
                g(&s.releases),
            ),
            (
                "registry_errors_total",
                "Registry statements that failed.",
                "counter",
                g(&s.errors),
            ),
            (
                "registry_rtt_microseconds",
                "Round trip of the last registry statement.",
                "gauge",
                g(&s.last_rtt_us),
            ),
            (
                "registry_held_sessions",
                "Sessions this node holds in the registry.",
                "gauge",
                self.epochs.lock().len() as u64,
            ),
            (
                "lease_renewals_total",
                "Lease renewals.",
                "counter",
                g(&s.lease_renewals),
            ),
            (
                "lease_failures_total",
                "Lease renewals that failed.",
                "counter",
                g(&s.lease_failures),
            ),
            (
                "nodes_reaped_total",
                "Expired nodes whose sessions this node adopted.",
                "counter",
                g(&s.nodes_reaped),
            ),
            (
                "sessions_adopted_total",
                "Sessions adopted from expired nodes (or this node's previous run).",
                "counter",
                g(&s.sessions_adopted),
            ),
            (
                "orphan_wills_fired_total",
                "Wills of connections that died with their node, published here.",
                "counter",
                g(&s.wills_fired),
            ),
        ];
        for (name, help, kind, value) in rows {
            let _ = writeln!(
                out,
                "# HELP switchboard_cluster_{name} {help}\n# TYPE switchboard_cluster_{name} {kind}\nswitchboard_cluster_{name}{{node=\"{node}\"}} {value}"
            );
        }
    }

    /// Forgets every session this node held (it fenced itself off: see `handover::lease`).
    pub fn forget_all(&self) -> Vec<String> {
        self.epochs.lock().drain().map(|(id, _)| id).collect()
    }

    /// The epoch at which this node holds `client_id`, if it does.
    pub fn epoch_of(&self, client_id: &str) -> Option<i64> {
        self.epochs.lock().get(client_id).copied()
    }

    /// Records the will of the connection holding `client_id` here at `epoch` (or clears
    /// it); nothing if the row moved on.
    pub async fn set_will(
        &self,
        client_id: &str,
        epoch: i64,
        will: Option<(Vec<u8>, u32)>,
    ) -> Result<(), RegistryError> {
        let (body, delay) = match will {
            Some((b, d)) => (Some(b), i64::from(d)),
            None => (None, 0),
        };
        self.query(
            "UPDATE sb_registry SET will = $4, will_delay = $5 \
             WHERE client_id = $1 AND holder = $2 AND epoch = $3",
            &[&client_id.as_bytes(), &self.node, &epoch, &body, &delay],
        )
        .await?;
        Ok(())
    }

    /// This node lets go of `client_id` (its state is in the store).
    pub async fn release(&self, client_id: &str) -> Result<(), RegistryError> {
        self.epochs.lock().remove(client_id);
        self.stats.releases.fetch_add(1, Ordering::Relaxed);
        self.query(
            "UPDATE sb_registry SET holder = NULL, will = NULL \
             WHERE client_id = $1 AND holder = $2",
            &[&client_id.as_bytes(), &self.node],
        )
        .await?;
        Ok(())
    }

    /// Graceful shutdown, after every session here was parked and committed: lets go of
    /// every row this node holds (their state is all in the store, so a CONNECT elsewhere
    /// holds them at once instead of waiting for the lease) and gives up the lease (the
    /// node is no longer offered as a redirection target, and nobody reaps it). Returns
    /// the rows released.
    pub async fn leave(&self) -> Result<u64, RegistryError> {
        let held = self.epochs.lock().drain().count() as u64;
        let rows = self
            .query(
                "UPDATE sb_registry SET holder = NULL, will = NULL WHERE holder = $1 \
                 RETURNING client_id",
                &[&self.node],
            )
            .await?;
        self.stats
            .releases
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.query(
            "UPDATE sb_nodes SET expires_at = 0, reaped_by = $1 WHERE node = $1",
            &[&self.node],
        )
        .await?;
        tracing::info!(
            node = %self.node,
            held,
            released = rows.len(),
            "left the cluster: sessions released, lease given up"
        );
        Ok(rows.len() as u64)
    }

    /// The session of `client_id` held here at `epoch` has ended (no session any more).
    pub async fn end(&self, client_id: &str, epoch: i64) -> Result<(), RegistryError> {
        {
            let mut epochs = self.epochs.lock();
            if epochs.get(client_id) == Some(&epoch) {
                epochs.remove(client_id);
            }
        }
        self.query(
            "UPDATE sb_registry SET live = FALSE, holder = NULL, will = NULL \
             WHERE client_id = $1 AND holder = $2 AND epoch = $3",
            &[&client_id.as_bytes(), &self.node, &epoch],
        )
        .await?;
        Ok(())
    }

    /// Renews this node's lease; `addr`: where clients reach it (for redirection).
    pub async fn renew(&self, addr: Option<&str>) -> Result<(), RegistryError> {
        let until = now_ms() + self.lease.as_millis() as i64;
        let r = self
            .query(
                "INSERT INTO sb_nodes (node, expires_at, addr, reaped_by) VALUES ($1, $2, $3, NULL) \
                 ON CONFLICT (node) DO UPDATE SET expires_at = $2, addr = $3, reaped_by = NULL",
                &[&self.node, &until, &addr],
            )
            .await;
        match &r {
            Ok(_) => self.stats.lease_renewals.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.lease_failures.fetch_add(1, Ordering::Relaxed),
        };
        r.map(|_| ())
    }

    /// Nodes whose lease expired and that this node won (compare-and-swap on their row).
    pub async fn reap(&self) -> Result<Vec<String>, RegistryError> {
        let rows = self
            .query(
                "UPDATE sb_nodes SET reaped_by = $1 \
                 WHERE expires_at < $2 AND reaped_by IS NULL AND node <> $1 RETURNING node",
                &[&self.node, &now_ms()],
            )
            .await?;
        let nodes: Vec<String> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        self.stats
            .nodes_reaped
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        Ok(nodes)
    }

    /// Addresses of the other nodes whose lease is current.
    pub async fn peers(&self) -> Result<Vec<String>, RegistryError> {
        let rows = self
            .query(
                "SELECT addr FROM sb_nodes WHERE node <> $1 AND expires_at >= $2 \
                 AND addr IS NOT NULL ORDER BY node",
                &[&self.node, &now_ms()],
            )
            .await?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Takes over up to [`ADOPT_BATCH`] sessions that `from` holds and nobody has claimed
    /// since (`from` may be this node, after a restart), with their wills.
    pub async fn adopt(&self, from: &str) -> Result<Vec<Adopted>, RegistryError> {
        let rows = self
            .query(
                "WITH old AS (SELECT client_id, will, will_delay FROM sb_registry \
                 WHERE holder = $2 AND node = $2 LIMIT $3 FOR UPDATE) \
                 UPDATE sb_registry r SET holder = $1, node = $1, epoch = r.epoch + 1, will = NULL \
                 FROM old WHERE r.client_id = old.client_id \
                 RETURNING r.client_id, r.epoch, old.will, old.will_delay, r.live",
                &[&self.node, &from, &ADOPT_BATCH],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (Ok(id), Ok(epoch), Ok(will), Ok(delay), Ok(live)) = (
                r.try_get::<_, Vec<u8>>(0),
                r.try_get::<_, i64>(1),
                r.try_get::<_, Option<Vec<u8>>>(2),
                r.try_get::<_, i64>(3),
                r.try_get::<_, bool>(4),
            ) else {
                continue;
            };
            let Ok(client_id) = String::from_utf8(id) else {
                continue;
            };
            self.epochs.lock().insert(client_id.clone(), epoch);
            out.push(Adopted {
                client_id,
                epoch,
                will: will.map(|w| (w, delay.clamp(0, i64::from(u32::MAX)) as u32)),
                live,
            });
        }
        self.stats
            .sessions_adopted
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }
}
