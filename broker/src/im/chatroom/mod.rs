//! Chatrooms (IM part 2, seed 003: live streaming): ephemeral rooms with in-memory
//! membership, the last N messages for newcomers, gags, blocks, a whitelist, message
//! priorities, paused distribution, clean-up when idle, and high fan-out.
//!
//! Rooms are not durable, by design: they live in [`Rooms`] (sharded by room), their
//! messages are never stored (a ring of the last N per room serves joiners), and a broker
//! restart forgets them (the app server creates them again). Membership belongs to one
//! device connection and ends with it (`room_disconnected`, called by presence).
//!
//! Delivery: a message is encoded once; each member device gets a delivery that shares
//! those bytes, pushed straight to its session queue (no routing lookup), in seq order
//! (pushes happen under the room's lock). Low-priority messages go at QoS 0 and are
//! skipped for a device whose queue already holds `congestion` deliveries, and dropped
//! for the whole room once it is over its `budget_per_sec`; high-priority ones (whitelisted
//! senders, the room's `high_priority_types`, app-server messages marked high) go at QoS 1
//! and push queued QoS 0 deliveries out of a full queue rather than being dropped.
//!
//! Files: this one (state, client requests, sending, delivery), [`admin`] (the app
//! server's JSON requests, timers, life-cycle events), [`cluster`] (rooms on every node of
//! a cluster).

mod admin;
mod cluster;
mod members;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use serde_json::Value;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, ConvType, room_event};

use super::error::ok;
use super::keys::ConvId;
use super::messaging::check_message;
use super::{ImError, ImLogin, ImService, now_ms};
use crate::mailbox::{Mailbox, Pushed};
use crate::message::{Delivery, Message};
use crate::namespace::inbox_topic;

/// Lock shards of the room map (a power of two).
const SHARDS: usize = 16;
/// Rooms over all tenants; creating more answers 409.
const MAX_ROOMS: usize = 100_000;
/// Longest room id.
const MAX_ROOM_ID: usize = 128;
/// Entries in a room's gag list, block list and whitelist (each).
const MAX_LIST: usize = 10_000;
/// Members per page of the member list.
const MAX_PAGE: usize = 200;

/// Settings of one room (the app server's `create`; defaults in brackets).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub(super) struct Settings {
    pub name: String,
    /// Recent messages kept for joiners, N [50, at most 1,000].
    pub history: u32,
    /// How long the room lives with nobody in it [3,600,000 ms; at least 10].
    pub idle_ms: u64,
    /// Distinct users at most [100,000; at most 1,000,000].
    pub max_members: usize,
    /// Content types that are high priority besides whitelisted senders: "text", "image",
    /// "custom:{type}"... (see `type_name`).
    pub high_priority_types: Vec<String>,
    /// Messages per second the room distributes before low-priority ones are dropped
    /// [0: no budget].
    pub budget_per_sec: u32,
    /// A device whose queue holds this many deliveries gets no low-priority messages
    /// until it catches up [256].
    pub congestion: usize,
    /// Members are told who joins and leaves [false: large rooms would drown in it].
    pub notify_members: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: String::new(),
            history: 50,
            idle_ms: 3_600_000,
            max_members: 100_000,
            high_priority_types: Vec::new(),
            budget_per_sec: 0,
            congestion: 256,
            notify_members: false,
        }
    }
}

impl Settings {
    fn check(&self) -> Result<(), ImError> {
        let bad = |m: &str| Err(ImError::BadRequest(m.into()));
        if self.history > 1000 {
            return bad("history is at most 1000");
        }
        if self.idle_ms < 10 {
            return bad("idle_ms is at least 10");
        }
        if self.max_members == 0 || self.max_members > 1_000_000 {
            return bad("max_members is 1..=1000000");
        }
        if self.congestion == 0 {
            return bad("congestion is at least 1");
        }
        if self.high_priority_types.len() > 64 || self.name.len() > 256 {
            return bad("at most 64 high_priority_types and a name of 256 bytes");
        }
        Ok(())
    }
}

/// Rooms by (tenant, room id).
type RoomMap = HashMap<(u64, String), Arc<Room>>;

/// The chatrooms of every tenant (in memory: chatrooms are not stored).
#[derive(Debug)]
pub struct Rooms {
    shards: Vec<RwLock<RoomMap>>,
    count: AtomicUsize,
    /// Connection id → the rooms that device is in (for its disconnection).
    by_conn: Mutex<HashMap<u64, Vec<Arc<Room>>>>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            count: AtomicUsize::new(0),
            by_conn: Mutex::default(),
        }
    }
}

impl Rooms {
    fn shard(&self, tid: u64, id: &str) -> &RwLock<RoomMap> {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::default().hash_one((tid, id)) as usize;
        &self.shards[h % SHARDS]
    }

    fn get(&self, tid: u64, id: &str) -> Option<Arc<Room>> {
        self.shard(tid, id)
            .read()
            .get(&(tid, id.to_owned()))
            .cloned()
    }

    /// Rooms of tenant `tid` (ids after `after`, id or name containing `q`, at most
    /// `limit`, sorted).
    fn list(&self, tid: u64, after: &str, q: &str, limit: usize) -> Vec<Arc<Room>> {
        let q = q.to_lowercase();
        let matches = |r: &Room| {
            q.is_empty()
                || r.id.to_lowercase().contains(&q)
                || r.state.lock().settings.name.to_lowercase().contains(&q)
        };
        let mut out: Vec<Arc<Room>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .values()
                    .filter(|r| r.tid == tid && r.id.as_str() > after)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        // Names are read under each room's own lock, after the shard locks are released.
        out.retain(|r| matches(r));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.truncate(limit);
        out
    }
}

/// One room.
#[derive(Debug)]
pub(super) struct Room {
    tid: u64,
    id: String,
    state: Mutex<RoomState>,
    /// Cluster mode: a copy of a room created through another node ([`cluster`]).
    replica: bool,
    /// Cluster mode: the node the room was created through ("" without cluster mode).
    origin: String,
}

/// A member device.
#[derive(Debug)]
struct Conn {
    account: String,
    mailbox: Arc<Mailbox>,
    /// The user's inbox topic (what the device sees as `$im/inbox`).
    topic: String,
}

/// A member user (one or more devices).
#[derive(Debug)]
struct Member {
    joined_ms: u64,
    devices: u32,
}

#[derive(Debug)]
struct RoomState {
    settings: Settings,
    created_ms: u64,
    seq: u64,
    ring: VecDeque<im::Message>,
    conns: HashMap<u64, Conn>,
    members: BTreeMap<String, Member>,
    /// Account → until (Unix ms).
    gags: HashMap<String, u64>,
    blocks: HashMap<String, u64>,
    whitelist: HashSet<String>,
    paused: bool,
    /// Destroyed: requests in flight see it gone.
    gone: bool,
    /// Bumped whenever the room gains a member: a pending idle clean-up checks it.
    idle_gen: u64,
    /// Current second (Unix) and messages distributed in it (budget).
    window: (u64, u32),
    /// Deliveries skipped or dropped for load since creation.
    dropped: u64,
    /// Cluster mode: member users on other nodes, by node (non-zero counts only).
    remote: HashMap<String, u64>,
}

/// How a message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    Low,
    High,
}

impl RoomState {
    fn info(&self, id: &str) -> im::RoomInfo {
        im::RoomInfo {
            id: id.to_owned(),
            name: self.settings.name.clone(),
            member_count: self.total(),
            paused: self.paused,
            history: self.settings.history,
            last_seq: self.seq,
            created_ms: self.created_ms,
        }
    }

    /// Member users on every node (a user with devices on two nodes counts twice).
    fn total(&self) -> u64 {
        self.members.len() as u64 + self.remote.values().sum::<u64>()
    }

    fn gagged(&self, account: &str, now: u64) -> Option<u64> {
        if self.whitelist.contains(account) {
            return None;
        }
        self.gags.get(account).copied().filter(|u| *u > now)
    }

    /// Removes device `conn`; true if its user has no device left in the room.
    fn remove_conn(&mut self, conn: u64) -> Option<(String, bool)> {
        let c = self.conns.remove(&conn)?;
        let gone = match self.members.get_mut(&c.account) {
            Some(m) if m.devices > 1 => {
                m.devices -= 1;
                false
            }
            _ => {
                self.members.remove(&c.account);
                true
            }
        };
        Some((c.account, gone))
    }

    /// Pushes `payload` (an encoded `Event`) to every member device, or to the devices of
    /// `only`. Returns the devices whose connection is gone (to be removed).
    fn distribute(&mut self, payload: &Bytes, priority: Priority, only: Option<&str>) -> Vec<u64> {
        let mut stale = Vec::new();
        let qos = match priority {
            Priority::Low => QoS::AtMostOnce,
            Priority::High => QoS::AtLeastOnce,
        };
        let mut dropped = 0;
        for (id, c) in &self.conns {
            if only.is_some_and(|a| a != c.account) {
                continue;
            }
            if !c.mailbox.is_online() {
                stale.push(*id);
                continue;
            }
            if priority == Priority::Low && c.mailbox.len() >= self.settings.congestion {
                dropped += 1;
                continue;
            }
            let msg = Message {
                topic: c.topic.clone(),
                payload: payload.clone(),
                qos,
                retain: false,
                properties: None,
                expires_at: None,
                origin: 0,
            };
            let d = Delivery::new(Arc::new(msg), qos);
            let pushed = match priority {
                Priority::Low => c.mailbox.push(d),
                Priority::High => c.mailbox.push_before_qos0(d),
            };
            if pushed != Pushed::Queued {
                dropped += 1;
            }
        }
        self.dropped += dropped;
        stale
    }

    /// Tells the room's devices (or `only`'s) about `event`.
    fn tell(&mut self, event: im::RoomEvent, only: Option<&str>) -> Vec<u64> {
        let payload = Bytes::from(
            im::Event {
                kind: Some(im::event::Kind::Room(event)),
                unread_after: None,
            }
            .encode_to_vec(),
        );
        self.distribute(&payload, Priority::High, only)
    }
}

/// The type name of a content, as `high_priority_types` names it.
fn type_name(c: Option<&im::Content>) -> String {
    use im::content::Body;
    match c.and_then(|c| c.body.as_ref()) {
        Some(Body::Text(_)) => "text".into(),
        Some(Body::Emoji(_)) => "emoji".into(),
        Some(Body::Image(_)) => "image".into(),
        Some(Body::Voice(_)) => "voice".into(),
        Some(Body::Video(_)) => "video".into(),
        Some(Body::File(_)) => "file".into(),
        Some(Body::Location(_)) => "location".into(),
        Some(Body::Rich(_)) => "rich".into(),
        Some(Body::Notice(_)) => "notice".into(),
        Some(Body::CallLog(_)) => "call_log".into(),
        Some(Body::Custom(c)) => format!("custom:{}", c.r#type),
        None => String::new(),
    }
}

fn check_room_id(id: &str) -> Result<(), ImError> {
    if id.is_empty() || id.len() > MAX_ROOM_ID || id.chars().any(char::is_control) {
        return Err(ImError::BadRequest(format!(
            "room id must be 1..={MAX_ROOM_ID} bytes without control characters"
        )));
    }
    Ok(())
}

fn new_event(kind: room_event::Kind, room: &str) -> im::RoomEvent {
    im::RoomEvent {
        kind: kind as i32,
        room: room.to_owned(),
        ..im::RoomEvent::default()
    }
}

impl ImService {
    /// A client's chatroom request `$im/req/room/{op}`.
    pub(super) async fn room_request(
        &self,
        login: &ImLogin,
        client_id: &str,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        fn decode<T: prost::Message + Default>(p: &[u8]) -> Result<T, ImError> {
            T::decode(p).map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))
        }
        Ok(match op {
            "join" => self
                .room_join(login, client_id, decode(payload)?)?
                .encode_to_vec(),
            "leave" => {
                let req: im::RoomRequest = decode(payload)?;
                self.room_leave(login, client_id, &req.room)?;
                im::Ack { status: ok() }.encode_to_vec()
            }
            "info" => {
                let req: im::RoomRequest = decode(payload)?;
                let room = self.room(login.tenant, &req.room)?;
                let st = room.state.lock();
                im::RoomInfoResponse {
                    status: ok(),
                    room: Some(st.info(&room.id)),
                }
                .encode_to_vec()
            }
            "members" => {
                let req: im::RoomMembersRequest = decode(payload)?;
                if !self.in_room(login, &req.room) {
                    return Err(ImError::Forbidden(format!("not in room {}", req.room)));
                }
                self.room_members(login.tenant, &req.room, &req.after, req.limit as usize)?
                    .encode_to_vec()
            }
            _ => return Err(ImError::NotFound(format!("no such request: room/{op}"))),
        })
    }

    /// The app server's chatroom request `$im/admin/room/{op}` (JSON).
    pub(super) async fn room_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        if op == "send" {
            return self.room_admin_send(payload).await;
        }
        let r = self.room_admin_op(op, payload)?;
        self.room_admin_replicate(op, payload);
        Ok(r)
    }

    fn room(&self, tid: u64, id: &str) -> Result<Arc<Room>, ImError> {
        check_room_id(id)?;
        self.rooms
            .get(tid, id)
            .ok_or_else(|| ImError::NotFound(format!("room {id}")))
    }

    /// A message to a chatroom.
    pub(super) async fn send_room(
        &self,
        login: &ImLogin,
        req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        let tenant = self.tenant(login.tenant)?;
        check_message(&req, tenant.policy.max_message_bytes)?;
        let room = self.room(login.tenant, &req.to)?;
        let conv = ConvId::Chatroom(room.id.clone());
        let mut req = req;
        self.check_send(login, &conv, None, &mut req)?;
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Chatroom as i32,
            from: login.account.clone(),
            to: room.id.clone(),
            client_msg_id: req.client_msg_id,
            content: req.content,
            mentions: req.mentions,
            mention_all: req.mention_all,
            ..im::Message::default()
        };
        self.room_post(&room, msg, Some(&login.account), None).await
    }

    /// Adds `msg` to the room and hands it to its members. `sender`: the sending member
    /// (checked: in the room, not gagged); `priority`: forced (app server) or derived. In
    /// a cluster the room's owner node numbers it ([`cluster`]).
    async fn room_post(
        &self,
        room: &Arc<Room>,
        msg: im::Message,
        sender: Option<&str>,
        priority: Option<Priority>,
    ) -> Result<im::SendResponse, ImError> {
        let priority = self.room_check(room, &msg, sender, priority)?;
        if let Some(numbered) = self.room_forward(room, &msg, priority).await {
            return numbered;
        }
        self.room_number(room, msg, priority)
    }

    /// Checks the sender (`None`: the app server) and decides the message's priority.
    fn room_check(
        &self,
        room: &Room,
        msg: &im::Message,
        sender: Option<&str>,
        priority: Option<Priority>,
    ) -> Result<Priority, ImError> {
        let now = now_ms();
        let st = room.state.lock();
        if st.gone {
            return Err(ImError::NotFound(format!("room {}", room.id)));
        }
        let mut high = false;
        if let Some(account) = sender {
            if !st.members.contains_key(account) {
                return Err(ImError::Forbidden(format!("not in room {}", room.id)));
            }
            if let Some(until) = st.gagged(account, now) {
                return Err(ImError::Muted(format!(
                    "gagged in room {} until {until} (Unix ms)",
                    room.id
                )));
            }
            high = st.whitelist.contains(account);
        }
        Ok(priority.unwrap_or_else(|| {
            let t = type_name(msg.content.as_ref());
            if high || st.settings.high_priority_types.contains(&t) {
                Priority::High
            } else {
                Priority::Low
            }
        }))
    }

    /// Numbers a checked message, keeps it for joiners and hands it to the members here
    /// (and, in a cluster, on the other nodes).
    fn room_number(
        &self,
        room: &Arc<Room>,
        mut msg: im::Message,
        priority: Priority,
    ) -> Result<im::SendResponse, ImError> {
        let now = now_ms();
        let mut st = room.state.lock();
        if st.gone {
            return Err(ImError::NotFound(format!("room {}", room.id)));
        }
        let conversation = msg.conversation.clone();
        // The room's budget: low-priority messages beyond it are dropped (seq 0).
        let budget = st.settings.budget_per_sec;
        let second = now / 1000;
        if st.window.0 != second {
            st.window = (second, 0);
        }
        if budget > 0 && st.window.1 >= budget && priority == Priority::Low {
            st.dropped += st.conns.len() as u64;
            return Ok(im::SendResponse {
                status: ok(),
                conversation,
                seq: 0,
                server_time_ms: now,
                duplicate: false,
            });
        }
        st.window.1 += 1;
        st.seq += 1;
        msg.seq = st.seq;
        msg.server_time_ms = now;
        let history = st.settings.history as usize;
        if history > 0 {
            if st.ring.len() >= history {
                st.ring.pop_front();
            }
            st.ring.push_back(msg.clone());
        }
        let seq = msg.seq;
        // Relayed under the room's lock, so the notes leave in seq order.
        self.room_relay(room, &msg, priority);
        let mut stale = Vec::new();
        if !st.paused {
            let payload = Bytes::from(
                im::Event {
                    kind: Some(im::event::Kind::Message(msg)),
                    unread_after: None,
                }
                .encode_to_vec(),
            );
            stale = st.distribute(&payload, priority, None);
        }
        drop(st);
        self.drop_stale(room, stale);
        Ok(im::SendResponse {
            status: ok(),
            conversation,
            seq,
            server_time_ms: now,
            duplicate: false,
        })
    }

    /// Whether the device's user is in chatroom `room`.
    pub(super) fn in_room(&self, login: &ImLogin, room: &str) -> bool {
        self.rooms
            .get(login.tenant, room)
            .is_some_and(|r| r.state.lock().members.contains_key(&login.account))
    }

    /// An IM connection ended: its chatroom memberships end with it.
    pub(super) fn room_disconnected(&self, _login: &ImLogin, conn_id: u64) {
        let rooms = self.rooms.by_conn.lock().remove(&conn_id);
        for room in rooms.into_iter().flatten() {
            self.leave_conn(&room, conn_id);
        }
    }
}
