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
//! - A message sent through any node is numbered and distributed there, then relayed
//!   (`room_msg` notes); the other nodes add it to their last-N ring and hand it to their
//!   own members with the same priority. The ring on each node thus holds the room's
//!   messages from every node (a joiner anywhere gets the cluster's last N).
//! - Only the origin reports the room's life-cycle to the app server and runs the idle
//!   clean-up. Rooms stay ephemeral: nothing is written to PostgreSQL.
//!
//! Limits, documented: seqs come from the sending node's counter, raised to the highest
//! seq seen from others, so messages sent through two nodes within a note's flight time
//! can share a seq; the member list, `member_count`, `max_members` and join/leave notices
//! count the members of the node asked; the idle clean-up sees the origin's members only;
//! the budget (`budget_per_sec`) applies per sending node; a relay note dropped by the
//! bounded note queue (counted) is a message members on other nodes do not get, like a
//! low-priority message skipped for load.

use std::cell::Cell;

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im;

use super::{Priority, Room};
use crate::im::ImService;

thread_local! {
    /// Set while this thread applies another node's room change (not to be sent back).
    static APPLYING: Cell<bool> = const { Cell::new(false) };
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
    APPLYING.with(Cell::get)
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
    pub(in crate::im) fn room_admin_apply(&self, op: &str, payload: &[u8]) {
        if !REPLICATED.contains(&op) && op != "destroy" {
            return;
        }
        APPLYING.with(|a| a.set(true));
        let r = self.room_admin_op(op, payload);
        APPLYING.with(|a| a.set(false));
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
