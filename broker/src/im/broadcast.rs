//! Broadcast and system messages to many users (IM part 2): to every user of a tenant, to
//! a department and its sub-departments, to a list. `docs/im/broadcast.md` is the contract.
//!
//! A broadcast to everyone or to a department is one append to a shared log (`b:all`,
//! `b:d{dept}`), never a write per user: the store grows by one message whatever the number
//! of readers. Each user reads the broadcast logs that apply to them (`b:all`, and those of
//! their departments and the departments above them) as conversations of their list:
//! virtual rows added by `sync`, whose history starts at the log head when the user was
//! created or joined the department (`UserRecord::bcast_from`); read positions are written
//! to `Cursors` only when the user reads. Online users get the message event at once (a
//! fan-out over the online users of the tenant only); offline users find it at their next
//! sync and get push notifications from a background stream of [`im::BroadcastPush`]
//! chunks ([`PUSH_CHUNK`] users each, at most one chunk per [`PUSH_INTERVAL`]).
//!
//! A broadcast to a list of users (at most [`MAX_LIST`]) is a system notice to each
//! (`s:{uid}`), idempotent per user with the same client message id.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::QoS;
use switchboard_proto::im::{self, ConvType, event::Kind};

use super::keys::{self, ConvId};
use super::records::{UserConvRecord, UserRecord};
use super::{ImError, ImLogin, ImService, now_ms, random_hex};
use crate::BrokerState;
use crate::message::Message;
use crate::store::{Op, OpResult, Table};

/// Users one list broadcast may name.
pub const MAX_LIST: usize = 1000;
/// Users per push chunk.
pub const PUSH_CHUNK: usize = 1000;
/// Pause between push chunks (at most 20,000 users a second per broadcast).
pub const PUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Broadcast text, bytes at most.
const MAX_TEXT: usize = 16 * 1024;

/// Who a broadcast goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    All,
    /// A department and its sub-departments.
    Dept(u64),
}

impl Audience {
    fn scope(&self) -> String {
        match self {
            Audience::All => "all".into(),
            Audience::Dept(d) => format!("d{d}"),
        }
    }
}

#[derive(Deserialize)]
struct Send {
    tenant: u64,
    dept: Option<u64>,
    #[serde(default)]
    text: String,
    /// Any content (JSON form, `im::json`) instead of `text`.
    content: Option<Value>,
    client_msg_id: Option<String>,
    /// Shown as the sender (default: the system, "").
    #[serde(default)]
    from: String,
}

#[derive(Deserialize)]
struct ToList {
    tenant: u64,
    to: Vec<String>,
    text: String,
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
struct Recall {
    tenant: u64,
    conversation: String,
    seq: u64,
}

fn text_content(text: String) -> Result<im::Content, ImError> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(ImError::BadRequest(format!(
            "text must be 1..={MAX_TEXT} bytes"
        )));
    }
    Ok(im::Content {
        body: Some(im::content::Body::Text(im::Text { text })),
    })
}

impl ImService {
    /// The app server's request `$im/admin/broadcast/{op}` (JSON).
    pub(super) async fn broadcast_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        fn de<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
            serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
        }
        Ok(match op {
            "all" | "dept" => {
                let r: Send = de(payload)?;
                let audience = match (op, r.dept) {
                    ("all", _) => Audience::All,
                    (_, Some(d)) => Audience::Dept(d),
                    (_, None) => return Err(ImError::BadRequest("dept is required".into())),
                };
                let id = match r.client_msg_id {
                    Some(id) => id,
                    None => random_hex(8)?,
                };
                let content = match r.content {
                    Some(c) => super::json::content_from_json(&c)?,
                    None => text_content(r.text)?,
                };
                let (conv, seq, duplicate) = self
                    .broadcast(r.tenant, audience, &r.from, &id, content)
                    .await?;
                json!({ "conversation": conv.to_string(), "seq": seq, "duplicate": duplicate })
            }
            "users" => {
                let r: ToList = de(payload)?;
                if r.to.is_empty() || r.to.len() > MAX_LIST {
                    return Err(ImError::BadRequest(format!(
                        "to lists 1..={MAX_LIST} users"
                    )));
                }
                let content = text_content(r.text)?;
                let id = match r.client_msg_id {
                    Some(id) => id,
                    None => random_hex(8)?,
                };
                let mut sent = Vec::new();
                let mut missing = Vec::new();
                for account in &r.to {
                    match self
                        .send_system(r.tenant, account, None, &id, content.clone())
                        .await
                    {
                        Ok((conv, seq)) => {
                            sent.push(json!({ "user_id": account, "conversation": conv.to_string(), "seq": seq }));
                        }
                        Err(ImError::NotFound(_)) => missing.push(account.clone()),
                        Err(e) => return Err(e),
                    }
                }
                json!({ "sent": sent, "not_found": missing })
            }
            "recall" => {
                let r: Recall = de(payload)?;
                self.recall_broadcast(r.tenant, &r.conversation, r.seq)
                    .await?;
                json!({})
            }
            other => {
                return Err(ImError::NotFound(format!(
                    "no such request: broadcast/{other}"
                )));
            }
        })
    }

    /// Appends a broadcast to the audience's log and tells its online users; offline ones
    /// get push chunks in the background. Returns the conversation, the seq and whether it
    /// was a resend (same `client_msg_id`).
    pub async fn broadcast(
        &self,
        tid: u64,
        audience: Audience,
        from: &str,
        client_msg_id: &str,
        content: im::Content,
    ) -> Result<(ConvId, u64, bool), ImError> {
        self.tenant(tid)?;
        if client_msg_id.is_empty() || client_msg_id.len() > 64 {
            return Err(ImError::BadRequest(
                "client_msg_id must be 1..=64 bytes".into(),
            ));
        }
        if let Audience::Dept(d) = audience {
            self.existing_dept(tid, d)?;
        }
        let conv = ConvId::Broadcast(audience.scope());
        let log = keys::log(tid, &conv);
        let mut msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Broadcast as i32,
            from: from.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            content: Some(content),
            server_time_ms: now_ms(),
            ..im::Message::default()
        };
        let lock = self.conv_lock(tid, &conv).lock().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.write(
            vec![Op::Append {
                log: log.clone(),
                idem: Some(keys::idem(0, client_msg_id)),
                value: msg.encode_to_vec(),
            }],
            Some(tx),
        );
        let (previous, turn) = self.next_turn(tid, &conv);
        drop(lock);
        let applied = rx
            .await
            .map_err(|_| ImError::Unavailable("store writer stopped".into()))??;
        let Some(OpResult::Appended { seq, duplicate }) = applied.results.first().copied() else {
            return Err(ImError::Internal("append returned no seq".into()));
        };
        if duplicate {
            return Ok((conv, seq, true));
        }
        msg.seq = seq;
        if let Some(b) = self.broker() {
            let task_broker = b.clone();
            b.tasks.spawn(async move {
                if let Some(p) = previous {
                    let _ = p.await; // the previous broadcast's events go first
                }
                let Some(im) = task_broker.im.clone() else {
                    return;
                };
                if let Err(e) = im.broadcast_fan_out(tid, &audience, &msg) {
                    tracing::warn!(tenant = tid, error = %e, "broadcast fan-out failed");
                }
                drop(turn);
                if let Err(e) = im.push_stream(&task_broker, tid, &audience, &msg).await {
                    tracing::warn!(tenant = tid, error = %e, "broadcast push stream stopped");
                }
            });
        }
        Ok((conv, seq, false))
    }

    /// Whether user `uid` (its record `u`) is in the audience; `depts`: the audience's
    /// departments (its subtree) for a department broadcast.
    fn in_audience(u: &UserRecord, depts: Option<&HashSet<u64>>) -> bool {
        match depts {
            None => true,
            Some(set) => u.depts.iter().any(|d| set.contains(d)),
        }
    }

    fn audience_depts(&self, tid: u64, a: &Audience) -> Result<Option<HashSet<u64>>, ImError> {
        Ok(match a {
            Audience::All => None,
            Audience::Dept(d) => Some(self.subtree(tid, *d)?.into_iter().collect()),
        })
    }

    /// The message event, then the new unread counts, to every online user of the
    /// audience.
    fn broadcast_fan_out(
        &self,
        tid: u64,
        audience: &Audience,
        msg: &im::Message,
    ) -> Result<(), ImError> {
        let depts = self.audience_depts(tid, audience)?;
        let scope = audience.scope();
        let conv = ConvId::Broadcast(scope.clone());
        let Some(b) = self.broker() else {
            return Ok(());
        };
        let payload = super::inbox::message_event(msg);
        let conv_name = conv.to_string();
        for uid in self.online_users(tid) {
            let Some(u) = self.user_by_uid(tid, uid)? else {
                continue;
            };
            if !Self::in_audience(&u, depts.as_ref()) {
                continue;
            }
            // The user's row: stored once they changed a flag, else virtual.
            let row = match self.user_conv(tid, uid, &conv)? {
                Some(r) => r,
                None => self.broadcast_row(tid, &u, &scope)?,
            };
            let Some(reach) = self.reach(tid, uid, Some(u64::from(!row.muted))) else {
                continue;
            };
            let read_seq = row.read_seq.max(row.min_seq);
            let at = super::inbox::At {
                conv: &conv,
                name: &conv_name,
                seq: msg.seq,
            };
            self.deliver_counted(&b, tid, uid, at, read_seq, &reach, &payload);
        }
        Ok(())
    }

    /// Push chunks for the audience's users without a foreground device, at a bounded
    /// rate; stops when the broker shuts down.
    async fn push_stream(
        &self,
        b: &Arc<BrokerState>,
        tid: u64,
        audience: &Audience,
        msg: &im::Message,
    ) -> Result<(), ImError> {
        let topic = push_topic(tid);
        if !has_subscriber(b, &topic) {
            // No push worker listens (not even a persistent session): nothing to stream.
            return Ok(());
        }
        let hide = self.tenant(tid)?.policy.hide_preview;
        let mut chunk = im::BroadcastPush {
            tenant: tid,
            conversation: msg.conversation.clone(),
            seq: msg.seq,
            title: if msg.from.is_empty() {
                "System".into()
            } else {
                msg.from.clone()
            },
            body: if hide {
                String::new()
            } else {
                super::presence::preview(msg)
            },
            ..im::BroadcastPush::default()
        };
        // Where the users come from: the tenant's users, or each department's members.
        let sources: Vec<(Table, Vec<u8>)> = match audience {
            Audience::All => vec![(Table::Users, keys::tenant(tid))],
            Audience::Dept(d) => self
                .subtree(tid, *d)?
                .into_iter()
                .map(|d| (Table::Org, super::org::key::member(tid, d, None)))
                .collect(),
        };
        for (table, prefix) in sources {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self
                    .store
                    .scan(table, &prefix, after.as_deref(), PUSH_CHUNK)?;
                let n = page.len();
                for (k, v) in page {
                    let user = match table {
                        Table::Users => serde_json::from_slice::<UserRecord>(&v).ok(),
                        _ => k
                            .get(17..25)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_be_bytes)
                            .and_then(|uid| self.user_by_uid(tid, uid).ok().flatten()),
                    };
                    after = Some(k);
                    if let Some(u) = user
                        && !self.has_foreground_device(tid, u.uid)
                    {
                        chunk.users.push(u.account);
                        if chunk.users.len() == PUSH_CHUNK && !pace(b, &mut chunk).await {
                            return Ok(());
                        }
                    }
                }
                if n < PUSH_CHUNK {
                    break;
                }
            }
        }
        if !chunk.users.is_empty() {
            pace(b, &mut chunk).await;
        }
        Ok(())
    }

    /// Recalls a broadcast (`b:...`): the entry loses its content; online readers are told.
    pub async fn recall_broadcast(
        &self,
        tid: u64,
        conversation: &str,
        seq: u64,
    ) -> Result<(), ImError> {
        let conv = match ConvId::parse(conversation) {
            Some(c @ ConvId::Broadcast(_)) => c,
            _ => {
                return Err(ImError::BadRequest(format!(
                    "not a broadcast conversation: {conversation:?}"
                )));
            }
        };
        let ConvId::Broadcast(scope) = &conv else {
            return Err(ImError::Internal("unreachable".into()));
        };
        let audience = match scope.as_str() {
            "all" => Audience::All,
            s => Audience::Dept(
                s.strip_prefix('d')
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| ImError::NotFound(format!("conversation {conversation}")))?,
            ),
        };
        let log = keys::log(tid, &conv);
        let _lock = self.conv_lock(tid, &conv).lock().await;
        let mut msg = self.message_at(&log, seq)?;
        if msg.recalled {
            return Ok(());
        }
        msg.recalled = true;
        msg.content = None;
        self.commit(vec![Op::ReplaceEntry {
            log,
            seq,
            value: msg.encode_to_vec(),
        }])
        .await?;
        let depts = self.audience_depts(tid, &audience)?;
        let event = Kind::Recalled(im::Recalled {
            conversation: conv.to_string(),
            seq,
            by: String::new(),
        });
        for uid in self.online_users(tid) {
            if let Some(u) = self.user_by_uid(tid, uid)?
                && Self::in_audience(&u, depts.as_ref())
            {
                self.emit(tid, uid, event.clone(), QoS::AtLeastOnce);
            }
        }
        Ok(())
    }

    /// Whether the device's user reads broadcast log `scope`.
    pub(super) fn may_read_broadcast(&self, login: &ImLogin, scope: &str) -> Result<bool, ImError> {
        if scope == "all" {
            return Ok(true);
        }
        let Some(u) = self.user(login.tenant, &login.account)? else {
            return Ok(false);
        };
        Ok(self
            .broadcast_scopes(login.tenant, &u)?
            .iter()
            .any(|s| s == scope))
    }

    /// Where a new user's broadcast history starts: the current head of `b:all`.
    pub(super) fn broadcast_start(&self, tid: u64) -> Result<BTreeMap<String, u64>, ImError> {
        let head = self
            .store
            .log_last(&keys::log(tid, &ConvId::Broadcast("all".into())))?;
        Ok(BTreeMap::from([("all".to_owned(), head)]))
    }

    /// The broadcast scopes user `u` reads: `all`, its departments and their ancestors.
    fn broadcast_scopes(&self, tid: u64, u: &UserRecord) -> Result<Vec<String>, ImError> {
        let mut out = vec!["all".to_owned()];
        for d in &u.depts {
            for a in self.ancestors(tid, *d)? {
                let s = format!("d{a}");
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// User `uid`'s row of a broadcast conversation it reads (virtual: nothing stored but
    /// its read positions).
    pub(super) fn broadcast_row(
        &self,
        tid: u64,
        u: &UserRecord,
        scope: &str,
    ) -> Result<UserConvRecord, ImError> {
        let conv = ConvId::Broadcast(scope.to_owned());
        let mut row = UserConvRecord {
            min_seq: u.bcast_from.get(scope).copied().unwrap_or(0),
            ..UserConvRecord::default()
        };
        self.fill_cursors(tid, u.uid, &conv, &mut row)?;
        Ok(row)
    }

    /// Adds to `rows` (a user's stored conversation rows) the broadcast conversations the
    /// user reads that have messages and no stored row.
    pub(super) fn add_broadcast_rows(
        &self,
        tid: u64,
        uid: u64,
        rows: &mut Vec<(ConvId, UserConvRecord)>,
    ) -> Result<(), ImError> {
        let Some(u) = self.user_by_uid(tid, uid)? else {
            return Ok(());
        };
        for scope in self.broadcast_scopes(tid, &u)? {
            let conv = ConvId::Broadcast(scope.clone());
            if rows.iter().any(|(c, _)| *c == conv) {
                continue;
            }
            if self.store.log_last(&keys::log(tid, &conv))? == 0 {
                continue;
            }
            rows.push((conv, self.broadcast_row(tid, &u, &scope)?));
        }
        Ok(())
    }
}

impl ImService {
    /// Records of tenant `tid` in the IM tables keyed by tenant (users, conversation rows,
    /// cursors, per-user records...): what a write per user would show up in. For tests and
    /// benchmarks; O(records of the tenant).
    pub fn tenant_records(&self, tid: u64) -> Result<u64, ImError> {
        let prefix = keys::tenant(tid);
        let mut n = 0;
        for table in Table::ALL {
            if matches!(
                table,
                Table::Accounts | Table::TenantKeys | Table::Org | Table::Console
            ) {
                continue; // not keyed by tenant id first
            }
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self.store.scan(table, &prefix, after.as_deref(), 10_000)?;
                n += page.len() as u64;
                match page.last() {
                    Some((k, _)) if page.len() == 10_000 => after = Some(k.clone()),
                    _ => break,
                }
            }
        }
        Ok(n)
    }

    /// Entries of broadcast log `scope` of tenant `tid` (at most 10,000 counted).
    pub fn broadcast_entries(&self, tid: u64, scope: &str) -> Result<usize, ImError> {
        let log = keys::log(tid, &ConvId::Broadcast(scope.to_owned()));
        let last = self.store.log_last(&log)?;
        Ok(self.store.log_range(&log, 1, last, 10_000, false)?.len())
    }
}

/// The topic of a tenant's broadcast push chunks.
fn push_topic(tid: u64) -> String {
    format!("{}{tid}/broadcast", super::presence::PUSH_PREFIX)
}

/// Whether any session (a push worker) subscribes to `topic`.
pub(super) fn has_subscriber(b: &Arc<BrokerState>, topic: &str) -> bool {
    if b.cluster.is_some() {
        // The worker may sit on another node: NATS drops the job if no node wants it.
        return true;
    }
    let probe = Message {
        topic: topic.to_owned(),
        payload: Bytes::new(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
        expires_at: None,
        origin: 0,
    };
    let mut out = Vec::new();
    b.routes.route(&probe, |_| true, &mut out);
    !out.is_empty()
}

/// Publishes a full chunk, then waits [`PUSH_INTERVAL`]; false if the broker is shutting
/// down.
async fn pace(b: &Arc<BrokerState>, chunk: &mut im::BroadcastPush) -> bool {
    publish_chunk(b, chunk);
    tokio::select! {
        _ = b.shutdown.cancelled() => false,
        _ = tokio::time::sleep(PUSH_INTERVAL) => true,
    }
}

/// Publishes one push chunk for the push worker and empties it.
fn publish_chunk(b: &Arc<BrokerState>, chunk: &mut im::BroadcastPush) {
    let payload = chunk.encode_to_vec();
    chunk.users.clear();
    chunk.chunk += 1;
    b.publish_detached(Arc::new(Message {
        topic: push_topic(chunk.tenant),
        payload: Bytes::from(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
        expires_at: None,
        origin: 0,
    }));
}
