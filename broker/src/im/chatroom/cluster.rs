//! Chatrooms in a cluster (`docs/cluster.md`, "Calls and chatrooms"). Without cluster
//! mode none of this runs.
//!
//! Every node keeps a copy of every room; members are connections, so each node holds its
//! own. The node the app server created a room through is its *origin*: the others hold
//! *replicas*.
//! - The app server's changes (`create`, `destroy`, gags, blocks, the whitelist, pause and
//!   resume), through whatever node, are applied there and then on every other node
//!   (`room_admin` notes, in order per sending node). A room destroyed by its idle clean-up
//!   is destroyed everywhere the same way.
//! - Seqs: one node numbers a room's messages, its *owner*: the origin while it is alive,
//!   else the live node with the smallest id (every node computes the same from the
//!   nodes it hears from). A message sent through another node is checked there (member,
//!   gag, priority) and forwarded to the owner as a NATS request (`{prefix}.imroom.{tag}`);
//!   the owner applies the room's budget, numbers it, hands it to its own members and
//!   relays it (`room_msg` notes, one ordered stream from the owner), and answers the seq.
//!   The other nodes, the sender's included, add relayed messages to their last-N ring
//!   and hand them to their members: every member sees one seq order, with no seq twice.
//!   An owner that has no responder on NATS (it died) is skipped and the next candidate
//!   asked, so sending goes on through a dead owner at once; the new owner numbers on from
//!   the highest seq it has seen.
//! - Counts: each node tells the others how many member users a room has on it
//!   (`room_count` notes, coalesced: at most one per room every 100 ms, plus a refresh of
//!   every non-empty room every 2 s). `member_count`, `total`, join/leave notices and the
//!   `max_members` check use the sum over the live nodes.
//! - Only the owner reports the room's life-cycle to the app server and runs the idle
//!   clean-up, which destroys the room only when it is empty on every node. Rooms stay
//!   ephemeral: nothing is written to PostgreSQL.
//!
//! Limits, documented: the member *list* is the members on the node asked; a user with
//! devices on two nodes counts twice; joins through different nodes within a count note's
//! delay (~100 ms plus flight) can overshoot `max_members` by the joins of that window;
//! when an owner dies, the messages it numbered but had not yet relayed are lost, and its
//! successor may reuse their seqs; a restarted origin's rooms (it has forgotten them) are
//! numbered by the next node but cleaned up by none; a relay note dropped by the bounded note queue
//! (counted) is a message members on other nodes do not get, like a low-priority message
//! skipped for load.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im;

use super::{Priority, Room};
use crate::im::{ImError, ImService};

thread_local! {
    /// The node whose room change this thread applies (not to be sent back).
    static APPLYING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The app server's ops that change a room and are applied on every node.
const REPLICATED: &[&str] = &[
    "create",
    "gag",
    "ungag",
    "block",
    "unblock",
    "whitelist_add",
    "whitelist_remove",
    "pause",
    "resume",
];

/// Whether this thread is applying another node's change (rooms made now are replicas).
pub(super) fn applying() -> bool {
    APPLYING.with(|a| a.borrow().is_some())
}

impl ImService {
    /// The app server's `op` succeeded here: the other nodes apply it too.
    pub(super) fn room_admin_replicate(&self, op: &str, payload: &[u8]) {
        let Some(c) = self.cluster() else { return };
        if applying() || !REPLICATED.contains(&op) {
            return;
        }
        c.room_admin(op, payload);
    }

    /// `room` was destroyed here (by the app server or the origin's idle clean-up): the
    /// other nodes destroy their copies.
    pub(super) fn room_destroyed_replicate(&self, room: &Room) {
        let Some(c) = self.cluster() else { return };
        if applying() {
            return;
        }
        let body = serde_json::json!({ "tenant": room.tid, "room": room.id });
        c.room_admin("destroy", body.to_string().as_bytes());
    }

    /// Applies another node's room change `op` (errors, such as a room that exists, are
    /// expected when the nodes already agree: logged at debug).
    pub(in crate::im) fn room_admin_apply(&self, node: &str, op: &str, payload: &[u8]) {
        if !REPLICATED.contains(&op) && op != "destroy" {
            return;
        }
        APPLYING.with(|a| *a.borrow_mut() = Some(node.to_owned()));
        let r = self.room_admin_op(op, payload);
        APPLYING.with(|a| *a.borrow_mut() = None);
        if let Err(e) = r {
            tracing::debug!(op, error = %e, "another node's room change not applied here");
        }
    }

    /// A message was posted to `room` here: the other nodes hand it to their members.
    pub(super) fn room_relay(&self, room: &Room, msg: &im::Message, priority: Priority) {
        let Some(c) = self.cluster() else { return };
        c.room_msg(
            room.tid,
            &room.id,
            &msg.encode_to_vec(),
            priority == Priority::High,
        );
    }

    /// Another node's message to room `id`: into the ring, and to this node's members.
    pub(in crate::im) fn room_relayed(&self, tid: u64, id: &str, msg: &[u8], high: bool) {
        let Some(room) = self.rooms.get(tid, id) else {
            return;
        };
        let Ok(msg) = im::Message::decode(msg) else {
            tracing::debug!(room = id, "malformed relayed room message ignored");
            return;
        };
        let priority = if high { Priority::High } else { Priority::Low };
        let stale = {
            let mut st = room.state.lock();
            if st.gone {
                return;
            }
            st.seq = st.seq.max(msg.seq);
            let history = st.settings.history as usize;
            if history > 0 {
                if st.ring.len() >= history {
                    st.ring.pop_front();
                }
                st.ring.push_back(msg.clone());
            }
            if st.paused {
                Vec::new()
            } else {
                let payload = Bytes::from(
                    im::Event {
                        kind: Some(im::event::Kind::Message(msg)),
                        unread_after: None,
                    }
                    .encode_to_vec(),
                );
                st.distribute(&payload, priority, None)
            }
        };
        self.drop_stale(&room, stale);
    }
}

impl ImService {
    /// The origin of a room created now: the node whose change is applied, else this one.
    pub(super) fn room_origin(&self) -> String {
        APPLYING
            .with(|a| a.borrow().clone())
            .or_else(|| self.cluster().map(|c| c.node().to_owned()))
            .unwrap_or_default()
    }

    /// The node that numbers `room`'s messages when it is not this one (nodes in
    /// `exclude` are taken for dead); `None`: this node (always without cluster mode).
    fn room_owner(&self, room: &Room, exclude: &[String]) -> Option<String> {
        let c = self.cluster()?;
        let live: Vec<String> = c
            .live_nodes()
            .into_iter()
            .filter(|n| !exclude.contains(n))
            .collect();
        let owner = if live.contains(&room.origin) {
            room.origin.clone()
        } else {
            live.into_iter().min()?
        };
        (owner != c.node()).then_some(owner)
    }

    /// Whether this node numbers `room`'s messages, reports its life-cycle and cleans it
    /// up (always without cluster mode).
    pub(super) fn room_owned_here(&self, room: &Room) -> bool {
        self.room_owner(room, &[]).is_none()
    }

    /// Has `room`'s owner number the checked `msg` when that is another node: its answer;
    /// `None`: number it here.
    pub(super) async fn room_forward(
        &self,
        room: &Room,
        msg: &im::Message,
        priority: Priority,
    ) -> Option<Result<im::SendResponse, ImError>> {
        let c = self.cluster()?;
        let body = msg.encode_to_vec();
        let mut dead = Vec::new();
        loop {
            let owner = self.room_owner(room, &dead)?;
            match c
                .forward_room_msg(
                    &owner,
                    room.tid,
                    &room.id,
                    &body,
                    priority == Priority::High,
                )
                .await
            {
                // A restarted owner has forgotten the room (rooms live in memory): skipped
                // like a dead one.
                Some(Err(ImError::NotFound(_))) | None => {
                    tracing::debug!(room = %room.id, owner, "room owner gone or without the room: the next node numbers");
                    dead.push(owner);
                }
                Some(answer) => return Some(answer),
            }
        }
    }

    /// Another node forwarded a checked message to room `id` for this node to number.
    pub(in crate::im) fn room_number_forwarded(
        &self,
        tid: u64,
        id: &str,
        msg: &[u8],
        high: bool,
    ) -> Result<im::SendResponse, ImError> {
        let room = self.room(tid, id)?;
        let msg = im::Message::decode(msg)
            .map_err(|e| ImError::BadRequest(format!("forwarded room message: {e}")))?;
        let priority = if high { Priority::High } else { Priority::Low };
        self.room_number(&room, msg, priority)
    }

    /// The member users of `room` on this node changed: the other nodes hear the count.
    pub(super) fn room_count_changed(&self, room: &Room) {
        if let Some(c) = self.cluster() {
            c.room_dirty(room.tid, &room.id);
        }
    }

    /// The member users of room `id` on this node (`None`: no such room).
    pub(in crate::im) fn room_local_count(&self, tid: u64, id: &str) -> Option<u64> {
        let room = self.rooms.get(tid, id)?;
        let st = room.state.lock();
        (!st.gone).then_some(st.members.len() as u64)
    }

    /// Rooms with members on this node (for the counts' periodic refresh).
    pub(in crate::im) fn rooms_with_members(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for shard in &self.rooms.shards {
            let rooms: Vec<Arc<Room>> = shard.read().values().cloned().collect();
            for r in rooms {
                if !r.state.lock().members.is_empty() {
                    out.push((r.tid, r.id.clone()));
                }
            }
        }
        out
    }

    /// Node `node` has `count` member users in room `id`.
    pub(in crate::im) fn room_count_apply(&self, node: &str, tid: u64, id: &str, count: u64) {
        let Some(room) = self.rooms.get(tid, id) else {
            return;
        };
        self.room_set_remote(&room, node, count);
    }

    /// Records `node`'s count in `room`; starts the idle clean-up when that emptied it.
    fn room_set_remote(&self, room: &Arc<Room>, node: &str, count: u64) {
        let mut st = room.state.lock();
        if st.gone {
            return;
        }
        let before = st.remote.get(node).copied().unwrap_or(0);
        if count == 0 {
            st.remote.remove(node);
        } else {
            st.remote.insert(node.to_owned(), count);
            if before == 0 {
                // Not empty any more: a pending clean-up must not fire.
                st.idle_gen += 1;
            }
        }
        let idle = (before > 0 && st.remote.is_empty() && st.conns.is_empty())
            .then_some((st.idle_gen, st.settings.idle_ms));
        drop(st);
        if let Some((generation, after)) = idle {
            self.schedule_idle(room, generation, after);
        }
    }

    /// Node `node` is gone (dead or restarted): its members leave every room's count, and
    /// rooms it owned that are empty everywhere get their clean-up here.
    pub(in crate::im) fn rooms_forget_node(&self, node: &str) {
        for shard in &self.rooms.shards {
            let rooms: Vec<Arc<Room>> = shard.read().values().cloned().collect();
            for r in rooms {
                self.room_set_remote(&r, node, 0);
                if r.origin == node {
                    let st = r.state.lock();
                    let idle = (!st.gone && st.conns.is_empty() && st.remote.is_empty())
                        .then_some((st.idle_gen, st.settings.idle_ms));
                    drop(st);
                    if let Some((generation, after)) = idle {
                        self.schedule_idle(&r, generation, after);
                    }
                }
            }
        }
    }
}
