//! The app server's side of chatrooms: `$im/admin/room/{op}` (JSON), the idle clean-up
//! timer, and life-cycle events for the app server on `$im/events/{tenant}/room`.
//!
//! Ops (every one names `tenant` and, but for `list`, `room`): `create {..settings}`,
//! `destroy`, `info`, `list {after?, limit?}`, `members {after?, limit?}`,
//! `gag|block {accounts, duration_secs}`, `ungag|unblock {accounts}`, `blocked` (the
//! blocks still running: `{users: [{account, until_ms}]}`),
//! `whitelist_add|whitelist_remove {accounts}`, `pause`, `resume`,
//! `send {from?, text | custom_type + data, priority?: "high"|"low", client_msg_id?}`.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::QoS;
use switchboard_proto::im::{self, ConvType, room_event};

use super::{MAX_LIST, MAX_ROOMS, Priority, Room, RoomState, Settings, check_room_id, new_event};
use crate::im::keys::ConvId;
use crate::im::{ImError, ImService, now_ms};
use crate::message::Message;

/// Topic prefix of the app server's room life-cycle events (`$im/events/{tenant}/room`).
pub const ROOM_EVENTS_PREFIX: &str = "$im/events/";
/// Longest gag or block: 30 days.
const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Accounts per gag/block/whitelist request.
const MAX_ACCOUNTS: usize = 100;

#[derive(Deserialize)]
struct Target {
    tenant: u64,
    room: String,
}

#[derive(Deserialize)]
struct Create {
    tenant: u64,
    room: String,
    #[serde(flatten)]
    settings: Settings,
}

#[derive(Deserialize)]
struct Page {
    tenant: u64,
    room: Option<String>,
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: usize,
    /// `list`: text the room id or name contains (case-insensitive).
    #[serde(default)]
    q: String,
}

#[derive(Deserialize)]
struct Accounts {
    tenant: u64,
    room: String,
    accounts: Vec<String>,
    #[serde(default)]
    duration_secs: u64,
}

#[derive(Deserialize)]
struct Send {
    tenant: u64,
    room: String,
    #[serde(default)]
    from: String,
    text: Option<String>,
    custom_type: Option<String>,
    #[serde(default)]
    data: String,
    priority: Option<String>,
    #[serde(default)]
    client_msg_id: String,
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

impl ImService {
    pub(super) fn room_admin_op(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        match op {
            "create" => {
                let r: Create = parse(payload)?;
                self.tenant(r.tenant)?;
                check_room_id(&r.room)?;
                r.settings.check()?;
                let room = self.create_room(r.tenant, &r.room, r.settings)?;
                let st = room.state.lock();
                Ok(json!({ "room": room.id, "created_ms": st.created_ms }))
            }
            "destroy" => {
                let r: Target = parse(payload)?;
                let room = self.room(r.tenant, &r.room)?;
                self.destroy_room(&room, "app");
                Ok(json!({}))
            }
            "info" => {
                let r: Target = parse(payload)?;
                let room = self.room(r.tenant, &r.room)?;
                let st = room.state.lock();
                let i = st.info(&room.id);
                Ok(json!({
                    "room": i.id, "name": i.name, "member_count": i.member_count,
                    "paused": i.paused, "history": i.history, "last_seq": i.last_seq,
                    "created_ms": i.created_ms, "dropped": st.dropped,
                }))
            }
            "list" => {
                let r: Page = parse(payload)?;
                let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
                let rooms = self.rooms.list(r.tenant, &r.after, &r.q, limit + 1);
                let more = rooms.len() > limit;
                let rooms: Vec<Value> = rooms
                    .iter()
                    .take(limit)
                    .map(|room| {
                        let st = room.state.lock();
                        json!({ "room": room.id, "name": st.settings.name, "member_count": st.members.len() })
                    })
                    .collect();
                let next = if more {
                    rooms
                        .last()
                        .and_then(|r| r["room"].as_str())
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    String::new()
                };
                Ok(json!({ "rooms": rooms, "next": next }))
            }
            "members" => {
                let r: Page = parse(payload)?;
                let id = r.room.unwrap_or_default();
                let page = self.room_members(r.tenant, &id, &r.after, r.limit)?;
                let members: Vec<Value> = page
                    .members
                    .iter()
                    .map(|m| {
                        json!({ "account": m.account, "joined_ms": m.joined_ms, "devices": m.devices,
                                "gagged": m.gagged, "whitelisted": m.whitelisted })
                    })
                    .collect();
                Ok(json!({ "members": members, "total": page.total, "next": page.next }))
            }
            "blocked" => {
                // Blocked users are no longer members: their list is its own.
                let r: Target = parse(payload)?;
                let room = self.room(r.tenant, &r.room)?;
                let now = now_ms();
                let st = room.state.lock();
                let users: Vec<Value> = st
                    .blocks
                    .iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(a, until)| json!({ "account": a, "until_ms": until }))
                    .collect();
                Ok(json!({ "users": users }))
            }
            "gagged" => {
                // Gags still running (whitelisted members are never gagged), members or not.
                let r: Target = parse(payload)?;
                let room = self.room(r.tenant, &r.room)?;
                let now = now_ms();
                let st = room.state.lock();
                let users: Vec<Value> = st
                    .gags
                    .keys()
                    .filter_map(|a| st.gagged(a, now).map(|until| (a, until)))
                    .map(|(a, until)| json!({ "account": a, "until_ms": until }))
                    .collect();
                Ok(json!({ "users": users }))
            }
            "gag" | "ungag" | "block" | "unblock" | "whitelist_add" | "whitelist_remove" => {
                let r: Accounts = parse(payload)?;
                self.room_lists(op, r)
            }
            "pause" | "resume" => {
                let r: Target = parse(payload)?;
                let room = self.room(r.tenant, &r.room)?;
                let mut st = room.state.lock();
                let paused = op == "pause";
                let stale = if st.paused != paused {
                    st.paused = paused;
                    let kind = if paused {
                        room_event::Kind::Paused
                    } else {
                        room_event::Kind::Resumed
                    };
                    st.tell(new_event(kind, &room.id), None)
                } else {
                    Vec::new()
                };
                drop(st);
                self.drop_stale(&room, stale);
                Ok(json!({ "paused": paused }))
            }
            // Sending awaits the room's owner node in a cluster: see `room_admin_send`.
            _ => Err(ImError::NotFound(format!("no such request: room/{op}"))),
        }
    }

    /// The app server's `send`: a message from the app server to a room.
    pub(super) async fn room_admin_send(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Send = parse(payload)?;
        let room = self.room(r.tenant, &r.room)?;
        let body = match (r.text, r.custom_type) {
            (Some(t), None) if !t.is_empty() => im::content::Body::Text(im::Text { text: t }),
            (None, Some(ty)) if !ty.is_empty() => im::content::Body::Custom(im::Custom {
                r#type: ty,
                data: Bytes::from(r.data.into_bytes()),
            }),
            _ => {
                return Err(ImError::BadRequest(
                    "give either a non-empty text or a custom_type".into(),
                ));
            }
        };
        let priority = match r.priority.as_deref() {
            None => None,
            Some("high") => Some(Priority::High),
            Some("low") => Some(Priority::Low),
            Some(other) => {
                return Err(ImError::BadRequest(format!(
                    "priority is \"high\" or \"low\", not {other:?}"
                )));
            }
        };
        if r.from.len() > 64 || r.client_msg_id.len() > 64 {
            return Err(ImError::BadRequest(
                "from and client_msg_id: at most 64 bytes".into(),
            ));
        }
        let msg = im::Message {
            conversation: ConvId::Chatroom(room.id.clone()).to_string(),
            conv_type: ConvType::Chatroom as i32,
            from: r.from,
            to: room.id.clone(),
            client_msg_id: r.client_msg_id,
            content: Some(im::Content { body: Some(body) }),
            ..im::Message::default()
        };
        let sent = self.room_post(&room, msg, None, priority).await?;
        Ok(json!({ "seq": sent.seq, "server_time_ms": sent.server_time_ms }))
    }

    fn create_room(&self, tid: u64, id: &str, settings: Settings) -> Result<Arc<Room>, ImError> {
        if self.rooms.count.load(std::sync::atomic::Ordering::Relaxed) >= MAX_ROOMS {
            return Err(ImError::Conflict(format!("at most {MAX_ROOMS} rooms")));
        }
        let idle = settings.idle_ms;
        let room = Arc::new(Room {
            tid,
            id: id.to_owned(),
            state: parking_lot::Mutex::new(RoomState {
                settings,
                created_ms: now_ms(),
                seq: 0,
                ring: Default::default(),
                conns: Default::default(),
                members: Default::default(),
                gags: Default::default(),
                blocks: Default::default(),
                whitelist: Default::default(),
                paused: false,
                gone: false,
                idle_gen: 0,
                window: (0, 0),
                dropped: 0,
                remote: Default::default(),
            }),
            replica: super::cluster::applying(),
            origin: self.room_origin(),
        });
        {
            let mut shard = self.rooms.shard(tid, id).write();
            if shard.contains_key(&(tid, id.to_owned())) {
                return Err(ImError::Conflict(format!("room {id} exists")));
            }
            shard.insert((tid, id.to_owned()), room.clone());
        }
        self.rooms
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if room.replica {
            return Ok(room);
        }
        self.room_service_event(tid, new_event(room_event::Kind::Created, id));
        // Nobody in it yet: it goes if nobody comes.
        self.schedule_idle(&room, 0, idle);
        Ok(room)
    }

    /// Ends a room: its members are told and out, the app server hears why.
    pub(super) fn destroy_room(&self, room: &Arc<Room>, reason: &str) {
        let removed = self
            .rooms
            .shard(room.tid, &room.id)
            .write()
            .remove(&(room.tid, room.id.clone()));
        if removed.is_some() {
            self.rooms
                .count
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut st = room.state.lock();
        if st.gone {
            return;
        }
        st.gone = true;
        let mut ev = new_event(room_event::Kind::Destroyed, &room.id);
        ev.reason = reason.to_owned();
        st.tell(ev.clone(), None);
        let conns: Vec<u64> = st.conns.keys().copied().collect();
        st.conns.clear();
        st.members.clear();
        st.ring.clear();
        drop(st);
        for c in conns {
            self.forget_conn_room(c, room);
        }
        tracing::info!(tenant = room.tid, room = %room.id, reason, "chatroom destroyed");
        self.room_destroyed_replicate(room);
        if self.room_owned_here(room) {
            self.room_service_event(room.tid, ev);
        }
    }

    /// Destroys `room` after `after_ms` if nobody joined since (generation `generation`).
    /// In a cluster only the room's owner node runs it, and the room must be empty on
    /// every node.
    pub(super) fn schedule_idle(&self, room: &Arc<Room>, generation: u64, after_ms: u64) {
        if !self.room_owned_here(room) {
            return;
        }
        let Some(b) = self.broker() else { return };
        let Some(service) = b.im.clone() else { return };
        let (room, shutdown) = (room.clone(), b.shutdown.clone());
        b.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(after_ms)) => {}
                _ = shutdown.cancelled() => return,
            }
            let idle = {
                let st = room.state.lock();
                !st.gone && st.conns.is_empty() && st.remote.is_empty() && st.idle_gen == generation
            };
            if idle {
                service.destroy_room(&room, "idle");
            }
        });
    }

    /// Publishes a life-cycle event for the app server.
    fn room_service_event(&self, tid: u64, mut ev: im::RoomEvent) {
        let Some(b) = self.broker() else { return };
        ev.tenant = tid;
        let payload = im::Event {
            kind: Some(im::event::Kind::Room(ev)),
            unread_after: None,
        }
        .encode_to_vec();
        b.publish_detached(Arc::new(Message {
            topic: format!("{ROOM_EVENTS_PREFIX}{tid}/room"),
            payload: Bytes::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: 0,
        }));
    }

    /// Gags, blocks and the whitelist.
    fn room_lists(&self, op: &str, r: Accounts) -> Result<Value, ImError> {
        let room = self.room(r.tenant, &r.room)?;
        if r.accounts.is_empty() || r.accounts.len() > MAX_ACCOUNTS {
            return Err(ImError::BadRequest(format!("1..={MAX_ACCOUNTS} accounts")));
        }
        for a in &r.accounts {
            if self.user(r.tenant, a)?.is_none() {
                return Err(ImError::NotFound(format!("user {a}")));
            }
        }
        let timed = matches!(op, "gag" | "block");
        if timed && !(1..=MAX_DURATION_SECS).contains(&r.duration_secs) {
            return Err(ImError::BadRequest(format!(
                "duration_secs is 1..={MAX_DURATION_SECS}"
            )));
        }
        let now = now_ms();
        let until = now + r.duration_secs * 1000;
        let mut st = room.state.lock();
        // Expired entries go first, so that the bound counts live ones.
        st.gags.retain(|_, u| *u > now);
        st.blocks.retain(|_, u| *u > now);
        let full = |len: usize| len + r.accounts.len() > MAX_LIST;
        let mut stale = Vec::new();
        let mut removed = Vec::new();
        match op {
            "gag" | "block" if full(st.gags.len().max(st.blocks.len())) => {
                return Err(ImError::Conflict(format!("at most {MAX_LIST} entries")));
            }
            "whitelist_add" if full(st.whitelist.len()) => {
                return Err(ImError::Conflict(format!("at most {MAX_LIST} entries")));
            }
            "gag" => {
                for a in &r.accounts {
                    st.gags.insert(a.clone(), until);
                    let mut ev = new_event(room_event::Kind::Gagged, &room.id);
                    ev.targets = vec![a.clone()];
                    ev.until_ms = until;
                    stale.extend(st.tell(ev, Some(a)));
                }
            }
            "ungag" => {
                for a in &r.accounts {
                    if st.gags.remove(a).is_some() {
                        let mut ev = new_event(room_event::Kind::Ungagged, &room.id);
                        ev.targets = vec![a.clone()];
                        stale.extend(st.tell(ev, Some(a)));
                    }
                }
            }
            "block" => {
                for a in &r.accounts {
                    st.blocks.insert(a.clone(), until);
                    let mut ev = new_event(room_event::Kind::Blocked, &room.id);
                    ev.targets = vec![a.clone()];
                    ev.until_ms = until;
                    stale.extend(st.tell(ev, Some(a)));
                    let conns: Vec<u64> = st
                        .conns
                        .iter()
                        .filter(|(_, c)| &c.account == a)
                        .map(|(id, _)| *id)
                        .collect();
                    removed.extend(conns);
                }
            }
            "unblock" => {
                for a in &r.accounts {
                    st.blocks.remove(a);
                }
            }
            "whitelist_add" => st.whitelist.extend(r.accounts.iter().cloned()),
            _ => {
                for a in &r.accounts {
                    st.whitelist.remove(a);
                }
            }
        }
        drop(st);
        // Blocked devices are out at once (the event was queued before).
        removed.extend(stale);
        self.drop_stale(&room, removed);
        Ok(json!({}))
    }
}
