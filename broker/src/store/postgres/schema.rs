//! The schema, as numbered migrations run at start.
//!
//! Each migration runs in its own transaction that first inserts its number into
//! `sb_migrations`: when several nodes start at once, the second one waits on that row and
//! then sees a unique violation, which means "already applied" (no advisory locks, which
//! CockroachDB lacks). A database whose newest migration is newer than this binary knows is
//! refused rather than written with an old layout.
//!
//! Only portable types are used (BIGINT, INTEGER, SMALLINT, BOOLEAN, BYTEA, TEXT): client
//! ids and topics are BYTEA too, so no text encoding or NUL rule of the database can fail
//! a commit. Everything here runs on PostgreSQL, CockroachDB and YugabyteDB (see
//! docs/cluster.md for the YugabyteDB sharding note).

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::pg_err;
use crate::store::{StoreError, Table};

/// Migration numbers and names; the statements come from [`statements`].
const MIGRATIONS: [(i32, &str); 2] = [
    (1, "initial: MQTT state, payloads, IM tables and logs"),
    (
        2,
        "cluster sessions: client-id registry, node leases, id incarnations",
    ),
];

/// The statements of migration `version`.
fn statements(version: i32) -> Vec<String> {
    match version {
        1 => {
            let mut s: Vec<String> = [
                "CREATE TABLE IF NOT EXISTS sb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS mqtt_sessions (client_id BYTEA PRIMARY KEY, \
                 uid BIGINT NOT NULL, record BYTEA NOT NULL)",
                // Message bodies, stored once and referenced by every queue row that
                // delivers them (content-addressed: id = SHA-256 of the body).
                "CREATE TABLE IF NOT EXISTS mqtt_payloads (id BYTEA PRIMARY KEY, \
                 body BYTEA NOT NULL, stored_at BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS mqtt_queue (uid BIGINT NOT NULL, seq BIGINT NOT NULL, \
                 qos SMALLINT NOT NULL, retain BOOLEAN NOT NULL, sent SMALLINT NOT NULL, \
                 pkid INTEGER NOT NULL, sub_ids BYTEA NOT NULL, \
                 payload BYTEA NOT NULL REFERENCES mqtt_payloads (id), size INTEGER NOT NULL, \
                 PRIMARY KEY (uid, seq))",
                "CREATE INDEX IF NOT EXISTS mqtt_queue_payload ON mqtt_queue (payload)",
                "CREATE TABLE IF NOT EXISTS mqtt_retained (topic BYTEA PRIMARY KEY, \
                 message BYTEA NOT NULL)",
                "CREATE TABLE IF NOT EXISTS mqtt_awaiting_rel (client_id BYTEA NOT NULL, \
                 pkid INTEGER NOT NULL, PRIMARY KEY (client_id, pkid))",
                "CREATE TABLE IF NOT EXISTS im_log (log BYTEA NOT NULL, seq BIGINT NOT NULL, \
                 value BYTEA NOT NULL, PRIMARY KEY (log, seq))",
                "CREATE TABLE IF NOT EXISTS im_log_head (log BYTEA PRIMARY KEY, \
                 last BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS im_idem (log BYTEA NOT NULL, idem BYTEA NOT NULL, \
                 seq BIGINT NOT NULL, PRIMARY KEY (log, idem))",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect();
            // IM tables: byte records; `num` holds the value of counters and positions
            // (written by Increment, Max, SetToLogHead) so that SQL can do the arithmetic.
            for t in Table::ALL {
                s.push(format!(
                    "CREATE TABLE IF NOT EXISTS {} (key BYTEA PRIMARY KEY, value BYTEA, num BIGINT)",
                    t.name()
                ));
            }
            s
        }
        // Cluster mode (`cluster::registry`): which node holds each session, node leases,
        // and a counter that gives every node start its own range of session ids.
        2 => [
            "CREATE TABLE IF NOT EXISTS sb_registry (client_id BYTEA PRIMARY KEY, \
             node TEXT NOT NULL, epoch BIGINT NOT NULL, holder TEXT, owner TEXT NOT NULL, \
             live BOOLEAN NOT NULL, will BYTEA, will_delay BIGINT NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS sb_registry_holder ON sb_registry (holder)",
            "CREATE TABLE IF NOT EXISTS sb_nodes (node TEXT PRIMARY KEY, \
             expires_at BIGINT NOT NULL, addr TEXT, reaped_by TEXT)",
            "CREATE TABLE IF NOT EXISTS sb_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            // Session ids already in use stay below the first incarnation's range.
            "INSERT INTO sb_counters (name, value) \
             SELECT 'incarnation', COALESCE(MAX(uid), 0) / 4294967296 + 1 FROM mqtt_sessions \
             ON CONFLICT (name) DO NOTHING",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        _ => Vec::new(),
    }
}

/// The newest migration this binary knows.
pub(super) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the database's schema up to [`latest`]; returns the migrations it applied.
pub(super) async fn migrate(client: &Client, url: &str) -> Result<Vec<i32>, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sb_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(pg_err)?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM sb_migrations", &[])
        .await
        .map_err(pg_err)?
        .iter()
        .filter_map(|r| r.try_get::<_, i32>(0).ok())
        .collect();
    if let Some(newest) = applied.iter().max()
        && *newest > latest()
    {
        return Err(StoreError::Foreign {
            path: redact(url),
            reason: format!(
                "schema version {newest} is newer than this binary knows ({})",
                latest()
            ),
        });
    }
    let mut done = Vec::new();
    for (version, name) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        client.batch_execute("BEGIN").await.map_err(pg_err)?;
        let claimed = client
            .execute(
                "INSERT INTO sb_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[&version, &name, &(crate::store::unix_now() as i64)],
            )
            .await;
        match claimed {
            Ok(_) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // Another node applied it meanwhile.
                client.batch_execute("ROLLBACK").await.map_err(pg_err)?;
                continue;
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(pg_err(e));
            }
        }
        for sql in statements(version) {
            if let Err(e) = client.batch_execute(&sql).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(StoreError::Io(format!("migration {version} ({name}): {e}")));
            }
        }
        client.batch_execute("COMMIT").await.map_err(pg_err)?;
        tracing::info!(version, name, "PostgreSQL store: migration applied");
        done.push(version);
    }
    Ok(done)
}

/// The URL without its password, for messages and logs.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://sb:secret@db:5432/x"),
            "postgres://sb:***@db:5432/x"
        );
        assert_eq!(redact("postgres://sb@db/x"), "postgres://sb@db/x");
        assert_eq!(redact("host=db user=sb"), "host=db user=sb");
    }

    #[test]
    fn every_table_of_the_trait_is_created() {
        let sql = statements(1).join("\n");
        for t in Table::ALL {
            assert!(
                sql.contains(&format!("EXISTS {} (", t.name())),
                "{}",
                t.name()
            );
        }
        assert_eq!(statements(latest() + 1), Vec::<String>::new());
    }
}
