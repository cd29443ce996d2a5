//! Durable state behind a trait, so a cluster can swap redb for a distributed engine.
//!
//! Writes are [`Op`]s handed to [`Store::write`]; the implementation commits them in groups
//! (many publishes, one fsync) and signals each waiter once its ops are durable. The broker
//! acknowledges a QoS 1/2 publish only after that signal. Reads happen once, at start, with
//! [`Store::load`].

pub mod codec;
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
    /// Removes a session with its queue and incoming QoS 2 state.
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
    /// Writes nothing of value: a commit attempted to learn whether storage works again.
    Probe,
}

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

/// Signalled when a write is durable.
pub type Done = oneshot::Sender<Result<(), StoreError>>;

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

/// Counters for `$SYS`, metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub commits: u64,
    pub ops: u64,
    pub failed_commits: u64,
    /// Approximate bytes of queued deliveries and retained messages.
    pub bytes: u64,
}

/// Durable storage of sessions, queues, retained messages and QoS 2 state.
pub trait Store: Send + Sync + 'static {
    /// Queues `ops` for the next group commit; `done` (if any) fires once they are durable.
    /// Never blocks: the backlog is bounded by the protocol's inflight windows, since every
    /// op comes from a packet the broker has not yet acknowledged or a delivery in flight.
    fn write(&self, ops: Vec<Op>, done: Option<Done>);
    /// Reads everything (at start).
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// False after a failed commit, until a commit succeeds again.
    fn healthy(&self) -> bool;
    /// True if `extra` more bytes would exceed the disk budget.
    fn over_budget(&self, extra: u64) -> bool;
    fn stats(&self) -> StoreStats;
}
