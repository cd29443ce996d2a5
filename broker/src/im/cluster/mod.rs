//! The IM service's per-node memory kept right across cluster nodes (`docs/cluster.md`,
//! "IM in a cluster").
//!
//! The store (PostgreSQL in cluster mode) is the truth; each node keeps caches in front of
//! it and a view of which users are online. Without cluster mode none of this runs: the
//! service never creates an [`ImCluster`] and every hook is one `OnceLock` check.
//!
//! In cluster mode each node publishes small JSON notes on NATS subjects
//! `{prefix}.im.{kind}` and subscribes to `{prefix}.im.>`:
//! - `presence`: the full list of a user's devices on the sending node (empty: none), sent
//!   under the online lock whenever it changes (connect, disconnect, background, features),
//!   so the notes of one user leave in the order of the changes. Each node keeps the other
//!   nodes' lists: a user online on any node is online (events are published, no push job
//!   goes out while a device is in the foreground anywhere).
//! - `hello` (a node started: its old entries are dropped and every node announces its
//!   online users again) and `alive` (every third of the lease): a node not heard from for a
//!   lease is taken for dead and its devices are dropped; `resync` (a node's NATS link came
//!   back: every node announces its online users again), `kick` (disconnect a device).
//! - invalidations, published after the commit that changed the state, evicting on every
//!   other node: `unread` (users whose unread total changed), `group` (a group's record or
//!   members), `personal` (members' read positions / do-not-disturb in a cached group),
//!   `tenant`, `moderation`.
//! - `room_admin`, `room_msg`, `room_count`: chatroom changes, messages numbered by the
//!   room's owner node, member counts (`im/chatroom/cluster.rs`: every node keeps a copy of
//!   every room and hands messages to its own members; [`rooms`]: forwarding to the owner).
//! - `busy`: a user's call on the sending node changed (see [`calls`]: calls are owned by
//!   one node, and requests about them are forwarded there). A fill that read the store before an eviction and finishes
//!   after it is not cached: each kind has a generation bumped by the eviction, and a fill
//!   caches only if the generation it started with is still current.
//!
//! Files: this one (notes, the remote devices, figures), [`tasks`] (the service's side:
//! start, announcements, applying notes; the publisher, reader and heartbeat tasks),
//! [`calls`] (call requests forwarded to the call's node, busy users elsewhere).
//!
//! Notes go through one bounded queue (8,192) to one publisher task; when it is full a note
//! is dropped and counted (`switchboard_im_cluster_notes_dropped_total`): a cache on another
//! node may then stay stale until its next change.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::BrokerState;

mod calls;
mod rooms;
mod tasks;

/// Notes waiting to be published.
const QUEUE: usize = 8192;

/// One device of a user on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RemoteDevice {
    pub client_id: String,
    pub platform: String,
    pub background: bool,
    pub inline_unread: bool,
}

/// A user's devices on other nodes: node → devices.
type NodeDevices = HashMap<String, Vec<RemoteDevice>>;

/// What nodes tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Note {
    Presence {
        node: String,
        tid: u64,
        uid: u64,
        devices: Vec<RemoteDevice>,
    },
    Hello {
        node: String,
    },
    /// The sender's NATS link came back: announce your online users again (notes may have
    /// been lost, and the sender may have dropped yours after a silent lease).
    Resync {
        node: String,
    },
    Alive {
        node: String,
    },
    Unread {
        node: String,
        tid: u64,
        uids: Vec<u64>,
    },
    Group {
        node: String,
        tid: u64,
        gid: String,
    },
    Personal {
        node: String,
        tid: u64,
        gid: String,
        uids: Vec<u64>,
    },
    Tenant {
        node: String,
        tid: u64,
    },
    Moderation {
        node: String,
        tid: u64,
    },
    /// Disconnect this device if it is connected to you (its `kicked` notice went to the
    /// user's inbox already).
    Kick {
        node: String,
        tid: u64,
        client_id: String,
    },
    /// The app server's change `op` (JSON `body`) of a chatroom, applied on every node.
    RoomAdmin {
        node: String,
        op: String,
        body: String,
    },
    /// A message posted to chatroom `room` on the sending node (base64 protobuf `msg`).
    RoomMsg {
        node: String,
        tid: u64,
        room: String,
        msg: String,
        high: bool,
    },
    /// Chatroom `room` has `count` member users on the sending node.
    RoomCount {
        node: String,
        tid: u64,
        room: String,
        count: u64,
    },
    /// User `uid` is in (or rung for) call `call` owned by the sender ("": no longer).
    Busy {
        node: String,
        tid: u64,
        uid: u64,
        call: String,
    },
}

impl Note {
    fn kind(&self) -> &'static str {
        match self {
            Note::Presence { .. } => "presence",
            Note::Hello { .. } => "hello",
            Note::Resync { .. } => "resync",
            Note::Alive { .. } => "alive",
            Note::Unread { .. } => "unread",
            Note::Group { .. } => "group",
            Note::Personal { .. } => "personal",
            Note::Tenant { .. } => "tenant",
            Note::Moderation { .. } => "moderation",
            Note::Kick { .. } => "kick",
            Note::Busy { .. } => "busy",
            Note::RoomAdmin { .. } => "room_admin",
            Note::RoomMsg { .. } => "room_msg",
            Note::RoomCount { .. } => "room_count",
        }
    }

    fn node(&self) -> &str {
        match self {
            Note::Presence { node, .. }
            | Note::Hello { node }
            | Note::Resync { node }
            | Note::Alive { node }
            | Note::Unread { node, .. }
            | Note::Group { node, .. }
            | Note::Personal { node, .. }
            | Note::Tenant { node, .. }
            | Note::Moderation { node, .. }
            | Note::Kick { node, .. }
            | Note::Busy { node, .. }
            | Note::RoomAdmin { node, .. }
            | Note::RoomMsg { node, .. }
            | Note::RoomCount { node, .. } => node,
        }
    }
}

/// Figures for `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
    unread_evictions: AtomicU64,
    group_evictions: AtomicU64,
    personal_evictions: AtomicU64,
    other_evictions: AtomicU64,
    dead_nodes: AtomicU64,
    push_jobs: AtomicU64,
}

/// This node's IM link to the other nodes.
pub struct ImCluster {
    node: String,
    prefix: String,
    lease: Duration,
    client: async_nats::Client,
    out: mpsc::Sender<(String, Bytes)>,
    out_rx: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    /// Devices of users on other nodes: (tenant, uid) → node → devices.
    remote: Mutex<HashMap<(u64, u64), NodeDevices>>,
    /// Users in calls owned by other nodes: (tenant, uid) → (node, call id).
    busy: Mutex<HashMap<(u64, u64), (String, String)>>,
    /// When each other node was last heard from.
    seen: Mutex<HashMap<String, Instant>>,
    /// Chatrooms whose member count here changed since the last `room_count` notes.
    dirty_rooms: Mutex<std::collections::HashSet<(u64, String)>>,
    /// Generations of the caches, bumped by evictions from other nodes.
    pub(super) unread_gen: AtomicU64,
    pub(super) personal_gen: AtomicU64,
    pub(super) tenant_gen: AtomicU64,
    pub(super) moderation_gen: AtomicU64,
    stats: Stats,
}

impl std::fmt::Debug for ImCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImCluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// How a user is reached through their devices on other nodes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteReach {
    pub foreground: bool,
    pub inline_unread: bool,
}

impl ImCluster {
    fn new(broker: &BrokerState, c: &crate::cluster::Cluster) -> ImCluster {
        let (out, rx) = mpsc::channel(QUEUE);
        ImCluster {
            node: c.node().to_owned(),
            prefix: broker.config.cluster.subject_prefix.clone(),
            lease: Duration::from_secs(broker.config.cluster.lease_secs.max(1)),
            client: c.nats().clone(),
            out,
            out_rx: Mutex::new(Some(rx)),
            remote: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            dirty_rooms: Mutex::default(),
            unread_gen: AtomicU64::new(0),
            personal_gen: AtomicU64::new(0),
            tenant_gen: AtomicU64::new(0),
            moderation_gen: AtomicU64::new(0),
            stats: Stats::default(),
        }
    }

    /// Queues `note` for the other nodes (dropped and counted when the queue is full).
    fn send(&self, note: &Note) {
        let subject = format!("{}.im.{}", self.prefix, note.kind());
        let body = match serde_json::to_vec(note) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an IM cluster note");
                return;
            }
        };
        if self.out.try_send((subject, body)).is_err() {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "IM cluster note queue full: a note was not sent (another node's cache may stay stale)"
                );
            }
        }
    }

    /// Tells the other nodes the user's devices here (`devices` empty: none).
    pub(super) fn announce(&self, tid: u64, uid: u64, devices: Vec<RemoteDevice>) {
        self.send(&Note::Presence {
            node: self.node.clone(),
            tid,
            uid,
            devices,
        });
    }

    /// The users' unread totals changed.
    pub(super) fn unread_changed(&self, tid: u64, uids: Vec<u64>) {
        if !uids.is_empty() {
            self.send(&Note::Unread {
                node: self.node.clone(),
                tid,
                uids,
            });
        }
    }

    /// Group `gid`'s record or members changed.
    pub(super) fn group_changed(&self, tid: u64, gid: &str) {
        self.send(&Note::Group {
            node: self.node.clone(),
            tid,
            gid: gid.to_owned(),
        });
    }

    /// Members' read positions or do-not-disturb in group `gid` changed.
    pub(super) fn personal_changed(&self, tid: u64, gid: &str, uids: Vec<u64>) {
        self.send(&Note::Personal {
            node: self.node.clone(),
            tid,
            gid: gid.to_owned(),
            uids,
        });
    }

    /// Tenant `tid`'s record changed.
    pub(super) fn tenant_changed(&self, tid: u64) {
        self.send(&Note::Tenant {
            node: self.node.clone(),
            tid,
        });
    }

    /// Tenant `tid`'s moderation settings changed.
    pub(super) fn moderation_changed(&self, tid: u64) {
        self.send(&Note::Moderation {
            node: self.node.clone(),
            tid,
        });
    }

    /// Device `client_id` of tenant `tid` is signed out: disconnected on whatever node.
    pub(super) fn kick(&self, tid: u64, client_id: &str) {
        self.send(&Note::Kick {
            node: self.node.clone(),
            tid,
            client_id: client_id.to_owned(),
        });
    }

    /// The app server's chatroom change `op` succeeded here: the other nodes apply it.
    pub(in crate::im) fn room_admin(&self, op: &str, body: &[u8]) {
        self.send(&Note::RoomAdmin {
            node: self.node.clone(),
            op: op.to_owned(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }

    /// A message was posted to chatroom `room` here (`msg`: its protobuf).
    pub(in crate::im) fn room_msg(&self, tid: u64, room: &str, msg: &[u8], high: bool) {
        use base64ct::Encoding as _;
        self.send(&Note::RoomMsg {
            node: self.node.clone(),
            tid,
            room: room.to_owned(),
            msg: base64ct::Base64::encode_string(msg),
            high,
        });
    }

    /// A push job was handed to the push worker (counted for `/metrics`).
    pub(super) fn push_job(&self, n: u64) {
        self.stats.push_jobs.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the user has a device on another node, and how it is reached.
    pub(super) fn remote(&self, tid: u64, uid: u64) -> Option<RemoteReach> {
        let remote = self.remote.lock();
        let nodes = remote.get(&(tid, uid))?;
        let mut devices = nodes.values().flatten().peekable();
        devices.peek()?;
        let mut r = RemoteReach {
            foreground: false,
            inline_unread: true,
        };
        for d in devices {
            r.foreground |= !d.background;
            r.inline_unread &= d.inline_unread;
        }
        Some(r)
    }

    /// Client ids and platforms of the user's devices on other nodes.
    pub(super) fn remote_devices(&self, tid: u64, uid: u64) -> Vec<(String, String)> {
        self.remote
            .lock()
            .get(&(tid, uid))
            .map(|nodes| {
                nodes
                    .values()
                    .flatten()
                    .map(|d| (d.client_id.clone(), d.platform.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every device of `node`.
    fn drop_node(&self, node: &str) {
        self.remote.lock().retain(|_, nodes| {
            nodes.remove(node);
            !nodes.is_empty()
        });
        self.busy.lock().retain(|_, (n, _)| n != node);
    }

    /// Appends the figures to a Prometheus text page.
    pub fn render_metrics(&self, out: &mut String) {
        let s = &self.stats;
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let remote_users = self.remote.lock().len() as u64;
        let busy_users = self.busy.lock().len() as u64;
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "notes_sent_total",
                "IM cluster notes published.",
                "counter",
                g(&s.sent),
            ),
            (
                "notes_received_total",
                "IM cluster notes from other nodes applied.",
                "counter",
                g(&s.received),
            ),
            (
                "notes_dropped_total",
                "IM cluster notes dropped: the queue was full.",
                "counter",
                g(&s.dropped),
            ),
            (
                "notes_malformed_total",
                "IM cluster notes that did not decode.",
                "counter",
                g(&s.malformed),
            ),
            (
                "unread_evictions_total",
                "Unread totals evicted on another node's note.",
                "counter",
                g(&s.unread_evictions),
            ),
            (
                "group_evictions_total",
                "Groups evicted on another node's note.",
                "counter",
                g(&s.group_evictions),
            ),
            (
                "personal_evictions_total",
                "Group members' read positions evicted on another node's note.",
                "counter",
                g(&s.personal_evictions),
            ),
            (
                "other_evictions_total",
                "Tenant and moderation settings evicted on another node's note.",
                "counter",
                g(&s.other_evictions),
            ),
            (
                "dead_nodes_total",
                "Nodes whose devices were dropped after a silent lease.",
                "counter",
                g(&s.dead_nodes),
            ),
            (
                "push_jobs_total",
                "Push jobs (1:1 jobs and group batches) handed to the push worker by this node.",
                "counter",
                g(&s.push_jobs),
            ),
            (
                "remote_users",
                "Users with a device on another node.",
                "gauge",
                remote_users,
            ),
            (
                "remote_busy_users",
                "Users in calls owned by other nodes.",
                "gauge",
                busy_users,
            ),
            (
                "lease_seconds",
                "How long a silent node's devices are kept.",
                "gauge",
                self.lease.as_secs(),
            ),
        ];
        let node = self.node.replace('\\', "\\\\").replace('"', "\\\"");
        for (name, help, kind, v) in rows {
            let _ = writeln!(
                out,
                "# HELP switchboard_im_cluster_{name} {help}\n# TYPE switchboard_im_cluster_{name} {kind}\nswitchboard_im_cluster_{name}{{node=\"{node}\"}} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_name_their_subject() {
        let notes = [
            Note::Presence {
                node: "n1".into(),
                tid: 7,
                uid: 9,
                devices: vec![RemoteDevice {
                    client_id: "c".into(),
                    platform: "phone".into(),
                    background: true,
                    inline_unread: false,
                }],
            },
            Note::Group {
                node: "n1".into(),
                tid: 7,
                gid: "g.1".into(),
            },
            Note::Unread {
                node: "n2".into(),
                tid: 1,
                uids: vec![1, 2],
            },
        ];
        for n in notes {
            let bytes = serde_json::to_vec(&n).expect("encodes");
            let back: Note = serde_json::from_slice(&bytes).expect("decodes");
            assert_eq!(back.kind(), n.kind());
            assert_eq!(back.node(), n.node());
        }
        assert!(serde_json::from_slice::<Note>(b"{\"k\":\"nope\"}").is_err());
    }
}
