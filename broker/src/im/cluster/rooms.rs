//! Chatrooms across nodes, the link's side (`im/chatroom/cluster.rs` has the rooms' side):
//! messages forwarded to a room's owner node for numbering, and the coalesced member
//! counts each node tells the others.
//!
//! A forwarded message is a NATS request to the owner's subject `{prefix}.imroom.{tag}`:
//! the JSON [`Head`], a newline, then the checked message's protobuf bytes. The answer is
//! `0` followed by the `SendResponse` protobuf bytes, or `1` followed by a JSON failure
//! (as for forwarded call requests).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use switchboard_proto::im;

use super::calls::{answer_bytes, error_of, node_tag};
use super::{ImCluster, Note};
use crate::BrokerState;
use crate::im::{ImError, ImService};

/// How long a forwarded message waits for the owner's answer.
const FORWARD_WAIT: Duration = Duration::from_secs(10);
/// How often changed member counts go out.
const COUNT_EVERY: Duration = Duration::from_millis(100);
/// Every this many count rounds, the counts of every room with members here go out again
/// (a note lost on the way is repaired).
const REFRESH_ROUNDS: u32 = 20;
/// Rooms whose count changed, at most (more: the refresh catches up).
const MAX_DIRTY: usize = 100_000;

/// A forwarded message's header.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    tid: u64,
    room: String,
    high: bool,
}

impl ImCluster {
    /// This node's id.
    pub(in crate::im) fn node(&self) -> &str {
        &self.node
    }

    /// This node and the nodes heard from within a lease.
    pub(in crate::im) fn live_nodes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.seen.lock().keys().cloned().collect();
        out.push(self.node.clone());
        out
    }

    pub(super) fn rooms_subject(&self, node: &str) -> String {
        format!("{}.imroom.{}", self.prefix, node_tag(node))
    }

    /// Room `id`'s member count here changed (sent within [`COUNT_EVERY`]).
    pub(in crate::im) fn room_dirty(&self, tid: u64, id: &str) {
        let mut dirty = self.dirty_rooms.lock();
        if dirty.len() < MAX_DIRTY {
            dirty.insert((tid, id.to_owned()));
        }
    }

    /// Asks `owner` to number the checked message `msg` of room `room`: its answer, or
    /// `None` when `owner` has no responder (it is gone).
    pub(in crate::im) async fn forward_room_msg(
        &self,
        owner: &str,
        tid: u64,
        room: &str,
        msg: &[u8],
        high: bool,
    ) -> Option<Result<im::SendResponse, ImError>> {
        let head = Head {
            tid,
            room: room.to_owned(),
            high,
        };
        let head = match serde_json::to_vec(&head) {
            Ok(h) => h,
            Err(e) => return Some(Err(ImError::Internal(format!("room forward: {e}")))),
        };
        let mut body = BytesMut::with_capacity(head.len() + 1 + msg.len());
        body.put_slice(&head);
        body.put_u8(b'\n');
        body.put_slice(msg);
        let asked = tokio::time::timeout(
            FORWARD_WAIT,
            self.client
                .request(self.rooms_subject(owner), body.freeze()),
        )
        .await;
        let answer = match asked {
            Ok(Ok(m)) => m,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return None,
            Ok(Err(e)) => {
                return Some(Err(ImError::Unavailable(format!(
                    "room {room}: its owner node {owner} did not answer: {e}"
                ))));
            }
            Err(_) => {
                return Some(Err(ImError::Unavailable(format!(
                    "room {room}: its owner node {owner} did not answer in time"
                ))));
            }
        };
        Some(match answer.payload.split_first() {
            Some((0, rest)) => im::SendResponse::decode(rest)
                .map_err(|e| ImError::Internal(format!("room forward answer: {e}"))),
            Some((1, rest)) => Err(serde_json::from_slice(rest)
                .map(error_of)
                .unwrap_or_else(|e| ImError::Internal(format!("room forward answer: {e}")))),
            _ => Err(ImError::Internal("room forward: empty answer".into())),
        })
    }
}

impl ImService {
    /// Answers one forwarded room message (called by the forwarded-request server, `tasks::serve_forwarded`).
    pub(super) fn serve_room(&self, body: &[u8]) -> Bytes {
        let answer = match body.iter().position(|b| *b == b'\n') {
            Some(at) => match serde_json::from_slice::<Head>(&body[..at]) {
                Ok(h) => self.room_number_forwarded(h.tid, &h.room, &body[at + 1..], h.high),
                Err(e) => Err(ImError::BadRequest(format!("room forward header: {e}"))),
            },
            None => Err(ImError::BadRequest("room forward: no header".into())),
        };
        let answer = answer.map(|r| r.encode_to_vec());
        answer_bytes(answer.as_deref())
    }
}

/// Sends the member counts of the rooms whose count changed here, and every
/// [`REFRESH_ROUNDS`] those of every room with members here.
pub(super) async fn send_counts(
    service: std::sync::Weak<ImService>,
    c: Arc<ImCluster>,
    broker: Arc<BrokerState>,
) {
    let mut round = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COUNT_EVERY) => {}
            _ = broker.shutdown.cancelled() => break,
        }
        let Some(service) = service.upgrade() else {
            break;
        };
        round = round.wrapping_add(1);
        let mut rooms: HashSet<(u64, String)> = std::mem::take(&mut *c.dirty_rooms.lock());
        if round.is_multiple_of(REFRESH_ROUNDS) {
            rooms.extend(service.rooms_with_members());
        }
        for (tid, room) in rooms {
            // A room gone here is gone everywhere (its destruction is replicated).
            if let Some(count) = service.room_local_count(tid, &room) {
                c.send(&Note::RoomCount {
                    node: c.node.clone(),
                    tid,
                    room,
                    count,
                });
            }
        }
    }
}
