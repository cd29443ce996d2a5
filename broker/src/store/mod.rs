//! Durable state behind a trait, so a cluster can swap redb for a distributed engine.
//!
//! This module owns every durable write of the broker. A write is a transaction: a list of
//! [`Op`]s handed to [`Store::write`], applied together in one commit. Implementations
//! commit many transactions at once (many publishes, one fsync) and signal each waiter with
//! the results of its ops ([`Applied`]) once they are durable; the broker acknowledges a
//! QoS 1/2 publish or an IM send only after that signal.
//!
//! Two kinds of state live here:
//! - the MQTT side (sessions, queues, retained messages, QoS 2 state), read once at start
//!   with [`Store::load`];
//! - IM tables ([`Table`]: keyed byte records the IM service lays out) and IM logs
//!   (per-conversation message logs whose sequence numbers [`Op::Append`] assigns inside
//!   the same transaction as the insert), read on demand with [`Store::get`],
//!   [`Store::scan`] and [`Store::log_range`].
//!
//! Bounds: every write is accepted (acks, dequeues and session records must never be
//! lost), but the backlog waiting for the writer is counted; while it is above
//! [`BACKLOG_OPS`] or [`BACKLOG_BYTES`], [`Store::congested`] says so and the publish path
//! refuses new QoS 1/2 work (0x97), which bounds the backlog by what is already in flight.
//! A commit takes at most [`BATCH_OPS`] ops and about [`BATCH_BYTES`] bytes.
//!
//! Implementations: [`redb::RedbStore`] (one file, the default), [`postgres::PgStore`]
//! (cluster mode, `cluster.postgres_url`) and [`memory::MemoryStore`] (tests). All three
//! keep the same contract (`conformance`, run against each).

pub mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod front;
pub mod memory;
pub mod postgres;
pub mod redb;

use std::collections::HashMap;

use tokio::sync::oneshot;

pub use codec::{Sent, SessionRecord, StoredDelivery, SubEntry, unix_now};

/// One durable change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Creates or replaces a session record.
    PutSession {
        client_id: String,
        record: SessionRecord,
    },
    /// Removes session `uid`'s queue and, if the record under `client_id` is still that
    /// session's, the record and the incoming QoS 2 state (a newer session under the same
    /// client id keeps its rows).
    DeleteSession {
        client_id: String,
        uid: u64,
    },
    /// Adds a delivery to session `uid`'s queue.
    Enqueue {
        uid: u64,
        seq: u64,
        delivery: StoredDelivery,
    },
    /// Removes a delivery once the client acknowledged it (or it expired).
    Dequeue {
        uid: u64,
        seq: u64,
    },
    /// Records how far a delivery's outgoing flow got.
    MarkSent {
        uid: u64,
        seq: u64,
        sent: codec::Sent,
    },
    /// Stores a retained message (encoded with [`codec::encode_message`]).
    PutRetained {
        topic: String,
        message: Vec<u8>,
    },
    DeleteRetained {
        topic: String,
    },
    /// An incoming QoS 2 packet identifier now awaits PUBREL.
    AwaitRel {
        client_id: String,
        pkid: u16,
    },
    /// PUBREL arrived for it.
    Released {
        client_id: String,
        pkid: u16,
    },
    /// Writes nothing of value: a commit attempted to learn whether storage works again
    /// (the redb store makes it a durable commit of its data file).
    Probe,
    /// Writes nothing: its answer says that everything queued before it is committed (a
    /// connection's output held behind earlier writes, see `Delivery::handed`). Unlike an
    /// empty write, which is answered at once, it goes through the writer.
    Barrier,
    /// Creates or replaces a record of an IM table.
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes a record of an IM table (nothing if absent).
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    /// Adds `by` to the big-endian u64 counter at `key` (0 if absent); result: the new value.
    Increment {
        table: Table,
        key: Vec<u8>,
        by: u64,
    },
    /// Appends `value` to log `log` under the next sequence number (last + 1, from 1).
    /// With `idem`, an append whose idempotency key was seen before adds nothing and
    /// returns the sequence number of the first one. Result: [`OpResult::Appended`].
    Append {
        log: Vec<u8>,
        idem: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    /// [`Op::Append`] whose idempotency key need only be recognised while its first append
    /// is among the log's last [`RECENT_APPENDS`] appends (a resend arriving later may be
    /// stored again). A store may recognise more: memory and PostgreSQL treat it as
    /// `Append`; redb keeps the recent keys in the log's tail record and writes no index
    /// entry, which saves a B-tree leaf and branch page per message.
    AppendRecent {
        log: Vec<u8>,
        idem: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    /// Replaces the entry `seq` of log `log` if it exists (recall, edits).
    ReplaceEntry {
        log: Vec<u8>,
        seq: u64,
        value: Vec<u8>,
    },
    /// Removes the entries of `log` below `seq` (retention); the sequence numbering goes on.
    TrimLog {
        log: Vec<u8>,
        below: u64,
    },
    /// Sets the big-endian u64 at `key` to log `log`'s last sequence number, as it is at
    /// this point of the transaction (a read position that follows an append in the same
    /// commit).
    SetToLogHead {
        table: Table,
        key: Vec<u8>,
        log: Vec<u8>,
    },
    /// Raises the big-endian u64 at `key` to `value` if it is lower (positions only move
    /// forward, whatever order concurrent writers commit in).
    Max {
        table: Table,
        key: Vec<u8>,
        value: u64,
    },
}

/// IM tables. Keys and values are bytes the IM service lays out (big-endian numbers first,
/// so that prefix scans walk one tenant's or one user's records in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Developer accounts.
    Accounts,
    /// Tenants by id; the app-key index.
    Tenants,
    TenantKeys,
    /// Users by (tenant, account); the numeric uid index.
    Users,
    UserIds,
    /// Per user and conversation: read position, flags.
    UserConvs,
    /// Per conversation: type, members (1:1), last activity.
    Convs,
    /// Revoked tokens, devices, push tokens and other small per-user records.
    UserMeta,
    /// Counters (id allocation).
    Counters,
    /// Per user and conversation: read, delivered and mention positions (u64).
    Cursors,
    /// Groups (IM part 2): group records, by (tenant, group id).
    Groups,
    /// Group members by (tenant, group id, uid), and the per-user index of groups.
    GroupMembers,
    /// Contacts, blacklists, profiles, presence settings.
    Social,
    /// Bans, mutes, sensitive words, rate-limit settings.
    Moderation,
    /// The organisation directory: departments, their members, member details.
    Org,
    /// Workbench apps: records by app id, the appkey index, per-tenant lists.
    Apps,
    /// Web console users and their sessions (`im/console`).
    Console,
}

impl Table {
    /// Every table, for implementations that create them up front.
    pub const ALL: [Table; 17] = [
        Table::Accounts,
        Table::Tenants,
        Table::TenantKeys,
        Table::Users,
        Table::UserIds,
        Table::UserConvs,
        Table::Convs,
        Table::UserMeta,
        Table::Counters,
        Table::Cursors,
        Table::Groups,
        Table::GroupMembers,
        Table::Social,
        Table::Moderation,
        Table::Org,
        Table::Apps,
        Table::Console,
    ];

    /// The table's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::Accounts => "im_accounts",
            Table::Tenants => "im_tenants",
            Table::TenantKeys => "im_tenant_keys",
            Table::Users => "im_users",
            Table::UserIds => "im_user_ids",
            Table::UserConvs => "im_user_convs",
            Table::Convs => "im_convs",
            Table::UserMeta => "im_user_meta",
            Table::Counters => "im_counters",
            Table::Cursors => "im_cursors",
            Table::Groups => "im_groups",
            Table::GroupMembers => "im_group_members",
            Table::Social => "im_social",
            Table::Moderation => "im_moderation",
            Table::Org => "im_org",
            Table::Apps => "im_apps",
            Table::Console => "im_console",
        }
    }
}

impl Op {
    /// Approximate bytes the op carries (for the backlog and batch bounds).
    pub fn weight(&self) -> usize {
        32 + match self {
            Op::PutSession { client_id, record } => client_id.len() + record.subs.len() * 32,
            Op::DeleteSession { client_id, .. } => client_id.len(),
            Op::Enqueue { delivery, .. } => delivery.message.len(),
            Op::PutRetained { topic, message } => topic.len() + message.len(),
            Op::DeleteRetained { topic } => topic.len(),
            Op::AwaitRel { client_id, .. } | Op::Released { client_id, .. } => client_id.len(),
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } | Op::Increment { key, .. } => key.len(),
            Op::Append { log, idem, value } | Op::AppendRecent { log, idem, value } => {
                log.len() + idem.as_ref().map_or(0, Vec::len) + value.len()
            }
            Op::ReplaceEntry { log, value, .. } => log.len() + value.len(),
            Op::TrimLog { log, .. } => log.len(),
            Op::SetToLogHead { key, log, .. } => key.len() + log.len(),
            Op::Max { key, .. } => key.len(),
            Op::Dequeue { .. } | Op::MarkSent { .. } | Op::Probe | Op::Barrier => 0,
        }
    }
}

/// The result of one op that has one ([`Op::Increment`], [`Op::Append`]), in op order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// The counter's new value.
    Counter(u64),
    /// The entry's sequence number; `duplicate` if the idempotency key was seen before.
    Appended { seq: u64, duplicate: bool },
}

/// A record of an IM table: key and value.
pub type Record = (Vec<u8>, Vec<u8>);
/// An entry of an IM log: sequence number and value.
pub type LogEntry = (u64, Vec<u8>);

/// What a committed transaction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub results: Vec<OpResult>,
}

/// Backlog of ops waiting for the writer above which [`Store::congested`] is true.
pub const BACKLOG_OPS: usize = 200_000;
/// Backlog bytes above which [`Store::congested`] is true.
pub const BACKLOG_BYTES: usize = 64 << 20;
/// Ops applied in one commit at most; the rest wait for the next one.
pub const BATCH_OPS: usize = 50_000;
/// How many of a log's latest [`Op::AppendRecent`] idempotency keys a resend is checked
/// against, at least.
pub const RECENT_APPENDS: usize = 32;
/// Bytes applied in one commit, about (a transaction is never split).
pub const BATCH_BYTES: usize = 16 << 20;

/// Why a write or load failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Io(String),
    #[error("{path} is not a Switchboard data file ({reason}); refusing to touch it")]
    Foreign { path: String, reason: String },
    #[error("disk budget of {budget} bytes exhausted")]
    Budget { budget: u64 },
}

/// Signalled when a write is durable, with the results of its ops.
pub type Done = oneshot::Sender<Result<Applied, StoreError>>;

/// The receiving end of a [`Done`].
pub type Durable = oneshot::Receiver<Result<Applied, StoreError>>;

/// Everything on disk, read at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<(String, SessionRecord)>,
    /// Queued deliveries per session uid, in sequence order.
    pub queues: HashMap<u64, Vec<(u64, StoredDelivery)>>,
    /// Encoded retained messages.
    pub retained: Vec<Vec<u8>>,
    /// Incoming QoS 2 identifiers awaiting PUBREL, per client.
    pub awaiting_rel: HashMap<String, Vec<u16>>,
    /// Highest delivery sequence number in use.
    pub max_seq: u64,
    /// Highest session uid in use.
    pub max_uid: u64,
}

/// Which part of the MQTT side [`Store::load_scoped`] reads.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The sessions the session registry says node `holder` holds.
    pub holder: Option<String>,
    /// The one session stored under this key (wins over `holder`).
    pub client_id: Option<String>,
    /// Retained messages too.
    pub retained: bool,
}

/// Counters for `$SYS`, metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub commits: u64,
    pub ops: u64,
    pub failed_commits: u64,
    /// Approximate bytes of queued deliveries and retained messages.
    pub bytes: u64,
}

/// Durable storage of sessions, queues, retained messages, QoS 2 state and IM records.
pub trait Store: Send + Sync + 'static {
    /// Queues the transaction `ops` for the next group commit; `done` (if any) fires once
    /// it is durable. Never blocks; see [`Store::congested`] for the bound. Writes are
    /// applied in the order they are queued: when one is durable, so is every earlier one
    /// (unless that one failed, which only its own `done` says: a caller that stopped
    /// listening to it does not hear of the failure).
    fn write(&self, ops: Vec<Op>, done: Option<Done>);
    /// True while the backlog of writes is above its bound: refuse new work.
    fn congested(&self) -> bool;
    /// Reads the MQTT side (at start).
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Reads part of the MQTT side (cluster mode, where one database holds every node's
    /// sessions): see [`Scope`]. The default filters [`Store::load`]; a store shared by
    /// several nodes answers from its session registry instead.
    fn load_scoped(&self, scope: &Scope) -> Result<Snapshot, StoreError> {
        let mut snap = self.load()?;
        if let Some(id) = &scope.client_id {
            snap.sessions.retain(|(c, _)| c == id);
        } else if scope.holder.is_some() {
            // No registry here: every session counts as this node's.
        }
        let uids: std::collections::HashSet<u64> =
            snap.sessions.iter().map(|(_, r)| r.uid).collect();
        snap.queues.retain(|uid, _| uids.contains(uid));
        let ids: std::collections::HashSet<&String> =
            snap.sessions.iter().map(|(c, _)| c).collect();
        snap.awaiting_rel.retain(|c, _| ids.contains(c));
        if !scope.retained {
            snap.retained.clear();
        }
        Ok(snap)
    }
    /// One IM record.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Several IM records, as one consistent read where the store can (one read
    /// transaction instead of one per record: the hot paths read a handful per message).
    fn get_many(&self, keys: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|(t, k)| self.get(*t, k)).collect()
    }
    /// Up to `limit` records of `table` whose key starts with `prefix`, in key order,
    /// starting after `after` (a full key) if given.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// Up to `limit` entries of `log` with sequence numbers in `from..=to`, ascending, or
    /// descending with `backwards` (then starting at `to`).
    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// The highest sequence number log `log` has used (0 for an empty log).
    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError>;
    /// False after a failed commit, until a commit succeeds again.
    fn healthy(&self) -> bool;
    /// True if `extra` more bytes would exceed the disk budget.
    fn over_budget(&self, extra: u64) -> bool;
    fn stats(&self) -> StoreStats;
    /// Bytes the store takes on disk (redb: its data file), if it knows.
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
    /// Appends the implementation's own Prometheus lines (e.g. its database link) to `out`.
    fn write_metrics(&self, _out: &mut String) {}
}
