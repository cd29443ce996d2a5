//! Administrative requests the REST gateway needs beyond the per-area ones
//! (`$im/admin/{op}`, JSON, `$service` only), routed from `service_api`:
//!
//! - `create_users {tenant, users: [{user_id, name?, password?}], upsert?}`: up to
//!   [`MAX_USER_BATCH`] users in one call; answers `{users: [{user_id, uid} | {user_id,
//!   error: {code, message}}]}`, one row per entry in order (a bad row does not stop the
//!   others).
//! - `banned_users {tenant}`: users whose login ban is still running, `{users: [{user_id,
//!   until}], complete}` (at most [`MAX_BANNED`], from the first [`MAX_SCAN`] users).
//! - `set_tags {tenant, user, tags}`: a user's push tags (at most [`MAX_TAGS`], each
//!   1..=[`MAX_TAG_BYTES`] bytes), replacing the previous ones. Stored in `UserMeta` as the
//!   user's list (`{tenant}{uid}tags`) and an index per tag (`{tenant}{0}tag:{tag}\0{uid}`).
//! - `tagged_users {tenant, tags, any?, after?, limit?}`: accounts having every tag (or any
//!   with `any`), a page at a time (`{users, next}`; `next` is empty on the last page).
//! - `push_notify {tenant, users, title?, body, from?, platforms?}`: a notification for
//!   each user's offline devices, handed to the push worker as jobs of at most 1,000
//!   users. `platforms` (`ios`, `android`; empty: all) leaves out users with no push token
//!   on those platforms and rides on the job (`PushJob.platforms`) for the worker to skip
//!   other devices; answers `{id, jobs, users}` (`users`: how many are left).
//! - `room_join_users {tenant, room, users}`: every online device of each user joins the
//!   chatroom (as if it had joined over MQTT); `{joined: [user], offline: [user]}`.
//! - `recall {tenant, user, conversation, seq}`: recalls a message as its sender `user`
//!   (the same rules as a device's recall: only the sender, within the tenant's window);
//!   the conversation's devices get the `recalled` event.
//! - `import_messages`: past messages from another platform (`service_import`).
//! - `tenant_settings`, `rotate_secret`: a tenant's settings and app secret for its
//!   developer account (`service_settings`).
//! - `check_token {token}`: the tenant and account of a valid IM login token, and the
//!   tenant's settings (devices uploading files over HTTPS).
//! - `messages_between {tenant, from_ms, to_ms}`: the oldest [`MAX_MESSAGES`] stored
//!   messages of the tenant's conversations (private, group, system, app, broadcast to
//!   all) with `from_ms <= server_time_ms < to_ms`, oldest first, `{messages, more,
//!   complete}` (`more`: call again from the last one's time; `complete` false when the
//!   [`MAX_SCAN`] conversation rows or [`MAX_READ`] log entries read were not enough):
//!   RongCloud's hourly history file.

use std::collections::BTreeSet;

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService, random_hex};
use crate::store::{Op, Table};

/// Users in one `create_users` call.
pub const MAX_USER_BATCH: usize = 500;
/// Users `banned_users` reads at most.
pub const MAX_SCAN: usize = 100_000;
/// Banned users `banned_users` answers at most.
pub const MAX_BANNED: usize = 1000;
/// Tags per user (RongCloud's limit).
pub const MAX_TAGS: usize = 20;
/// Bytes per tag (RongCloud's limit).
pub const MAX_TAG_BYTES: usize = 40;
/// Users per page of `tagged_users`, and per push job.
pub const MAX_PAGE: usize = 1000;
/// Messages `messages_between` answers at most.
pub const MAX_MESSAGES: usize = 1000;
/// Log entries `messages_between` reads at most (newer than the window included).
pub const MAX_READ: usize = 100_000;
/// Users of one `push_notify` or `room_join_users` call.
pub const MAX_USERS: usize = 10_000;
/// Device platforms a notification may be aimed at (`push_notify`'s `platforms`).
pub const PLATFORMS: [&str; 2] = ["ios", "android"];

/// The platform of a push token's vendor: APNs is iOS, every other vendor Android.
pub fn token_platform(vendor: &str) -> &'static str {
    if vendor == "apns" { "ios" } else { "android" }
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct BatchUser {
    user_id: String,
    #[serde(default)]
    name: String,
    password: Option<String>,
}

#[derive(Deserialize)]
struct CreateUsers {
    tenant: u64,
    users: Vec<BatchUser>,
    #[serde(default)]
    upsert: bool,
}

#[derive(Deserialize)]
struct TenantOnly {
    tenant: u64,
}

#[derive(Deserialize)]
struct SetTags {
    tenant: u64,
    user: String,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct Tagged {
    tenant: u64,
    tags: Vec<String>,
    #[serde(default)]
    any: bool,
    #[serde(default)]
    after: String,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct Notify {
    tenant: u64,
    users: Vec<String>,
    #[serde(default)]
    title: String,
    body: String,
    #[serde(default)]
    from: String,
    /// Only devices of these platforms (`ios`, `android`); empty: all.
    #[serde(default)]
    platforms: Vec<String>,
}

#[derive(Deserialize)]
struct RoomJoin {
    tenant: u64,
    room: String,
    users: Vec<String>,
}

#[derive(Deserialize)]
struct Between {
    tenant: u64,
    from_ms: u64,
    to_ms: u64,
}

#[derive(Deserialize)]
struct RecallAs {
    tenant: u64,
    user: String,
    conversation: String,
    seq: u64,
}

#[derive(Deserialize)]
struct CheckToken {
    token: String,
}

fn tags_key(tid: u64, uid: u64) -> Vec<u8> {
    [&tid.to_be_bytes()[..], &uid.to_be_bytes(), b"tags"].concat()
}

/// The index prefix of one tag (uid 0: no user has it).
fn tag_prefix(tid: u64, tag: &str) -> Vec<u8> {
    [
        &tid.to_be_bytes()[..],
        &0u64.to_be_bytes(),
        b"tag:",
        tag.as_bytes(),
        b"\0",
    ]
    .concat()
}

fn valid_tags(tags: &[String]) -> Result<(), ImError> {
    if tags.len() > MAX_TAGS {
        return Err(ImError::BadRequest(format!("at most {MAX_TAGS} tags")));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > MAX_TAG_BYTES || t.contains('\0'))
    {
        return Err(ImError::BadRequest(format!(
            "tag {t:?} must be 1..={MAX_TAG_BYTES} bytes"
        )));
    }
    Ok(())
}

impl ImService {
    /// Runs `op` if it is one of this file's; `None` otherwise.
    pub(super) async fn gateway_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Option<Result<Value, ImError>> {
        Some(match op {
            "create_users" => self.create_users(payload).await,
            "banned_users" => self.banned_users(payload),
            "set_tags" => self.set_tags(payload).await,
            "tagged_users" => self.tagged_users(payload),
            "push_notify" => self.push_notify(payload),
            "room_join_users" => self.room_join_users(payload),
            "messages_between" => self.messages_between(payload),
            "recall" => self.recall_as(payload).await,
            "import_messages" => self.import_messages(payload).await,
            "tenant_settings" => self.tenant_settings(payload).await,
            "rotate_secret" => self.rotate_own_secret(payload).await,
            "check_token" => parse::<CheckToken>(payload).and_then(|r| {
                let (claims, user) = self.check_token(&r.token)?;
                let settings =
                    super::service_settings::settings_json(&self.tenant(claims.t)?.policy);
                Ok(
                    json!({ "tenant": claims.t, "user": user.account, "uid": user.uid,
                           "settings": settings }),
                )
            }),
            _ => return None,
        })
    }

    async fn create_users(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: CreateUsers = parse(payload)?;
        if r.users.is_empty() || r.users.len() > MAX_USER_BATCH {
            return Err(ImError::BadRequest(format!(
                "users must hold 1..={MAX_USER_BATCH} entries"
            )));
        }
        self.tenant(r.tenant)?;
        let mut rows = Vec::with_capacity(r.users.len());
        for u in r.users {
            let row = match self
                .create_user(
                    r.tenant,
                    &u.user_id,
                    &u.name,
                    u.password.as_deref(),
                    r.upsert,
                )
                .await
            {
                Ok(rec) => json!({ "user_id": rec.account, "uid": rec.uid }),
                // The store failing fails the whole call: later rows would fail the same way.
                Err(e @ (ImError::Unavailable(_) | ImError::Internal(_))) => return Err(e),
                Err(e) => json!({ "user_id": u.user_id,
                                  "error": { "code": e.code(), "message": e.to_string() } }),
            };
            rows.push(row);
        }
        Ok(json!({ "users": rows }))
    }

    fn banned_users(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: TenantOnly = parse(payload)?;
        self.tenant(r.tenant)?;
        let now = crate::store::unix_now();
        let prefix = super::keys::tenant(r.tenant);
        let (mut out, mut after, mut scanned) = (Vec::new(), None::<Vec<u8>>, 0);
        let complete = loop {
            let page = self
                .store
                .scan(Table::Users, &prefix, after.as_deref(), MAX_PAGE)?;
            let last_page = page.len() < MAX_PAGE;
            scanned += page.len();
            for (k, v) in &page {
                let Ok(u) = serde_json::from_slice::<super::records::UserRecord>(v) else {
                    tracing::warn!(key = ?k, "banned_users: corrupt user record skipped");
                    continue;
                };
                if u.banned_until > now {
                    out.push(json!({ "user_id": u.account, "until": u.banned_until }));
                }
            }
            if out.len() >= MAX_BANNED {
                out.truncate(MAX_BANNED);
                break false;
            }
            if last_page {
                break true;
            }
            if scanned >= MAX_SCAN {
                break false;
            }
            after = page.last().map(|(k, _)| k.clone());
        };
        Ok(json!({ "users": out, "complete": complete }))
    }

    async fn set_tags(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: SetTags = parse(payload)?;
        valid_tags(&r.tags)?;
        let user = self
            .user(r.tenant, &r.user)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", r.user)))?;
        let new: BTreeSet<String> = r.tags.into_iter().collect();
        let _guard = self.admin.lock().await;
        let old: BTreeSet<String> = match self
            .store
            .get(Table::UserMeta, &tags_key(r.tenant, user.uid))?
        {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        let index =
            |t: &String| [tag_prefix(r.tenant, t), user.uid.to_be_bytes().to_vec()].concat();
        let mut ops: Vec<Op> = old
            .difference(&new)
            .map(|t| Op::Delete {
                table: Table::UserMeta,
                key: index(t),
            })
            .collect();
        ops.extend(new.difference(&old).map(|t| Op::Put {
            table: Table::UserMeta,
            key: index(t),
            value: Vec::new(),
        }));
        ops.push(Op::Put {
            table: Table::UserMeta,
            key: tags_key(r.tenant, user.uid),
            value: serde_json::to_vec(&new).map_err(|e| ImError::Internal(e.to_string()))?,
        });
        self.commit(ops).await?;
        Ok(json!({ "user_id": user.account, "tags": new }))
    }

    /// The tags of user `uid`.
    fn tags_of(&self, tid: u64, uid: u64) -> Result<BTreeSet<String>, ImError> {
        Ok(
            match self.store.get(Table::UserMeta, &tags_key(tid, uid))? {
                Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
                None => BTreeSet::new(),
            },
        )
    }

    fn tagged_users(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Tagged = parse(payload)?;
        valid_tags(&r.tags)?;
        if r.tags.is_empty() {
            return Err(ImError::BadRequest("tags lists 1 or more tags".into()));
        }
        let limit = r.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        // Walks the indexes in uid order: the cursor is the last uid answered.
        let after: u64 = if r.after.is_empty() {
            0
        } else {
            r.after
                .parse()
                .map_err(|_| ImError::BadRequest(format!("bad paging cursor {:?}", r.after)))?
        };
        let wanted: BTreeSet<&String> = r.tags.iter().collect();
        let mut uids = BTreeSet::new();
        // With `any`, the union of the tags' indexes; otherwise the first tag's index,
        // filtered by each user's own list.
        let scanned: Vec<&String> = if r.any {
            r.tags.iter().collect()
        } else {
            r.tags.iter().take(1).collect()
        };
        for t in scanned {
            let prefix = tag_prefix(r.tenant, t);
            let start = [prefix.clone(), after.to_be_bytes().to_vec()].concat();
            for (k, _) in self
                .store
                .scan(Table::UserMeta, &prefix, Some(&start), limit)?
            {
                if let Some(uid) = k
                    .get(prefix.len()..prefix.len() + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                {
                    uids.insert(uid);
                }
            }
        }
        let page: Vec<u64> = uids.into_iter().take(limit).collect();
        let full = page.len() == limit;
        let mut users = Vec::with_capacity(page.len());
        for &uid in &page {
            if !r.any {
                let has = self.tags_of(r.tenant, uid)?;
                if !wanted.iter().all(|t| has.contains(*t)) {
                    continue;
                }
            }
            if let Some(a) = self.account_of(r.tenant, uid)? {
                users.push(a);
            }
        }
        let next = match (full, page.last()) {
            (true, Some(last)) => last.to_string(),
            _ => String::new(),
        };
        Ok(json!({ "users": users, "next": next }))
    }

    fn push_notify(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Notify = parse(payload)?;
        if r.users.is_empty() || r.users.len() > MAX_USERS {
            return Err(ImError::BadRequest(format!(
                "users lists 1..={MAX_USERS} accounts"
            )));
        }
        if r.body.is_empty() || r.body.len() > 4096 {
            return Err(ImError::BadRequest("body must be 1..=4096 bytes".into()));
        }
        self.tenant(r.tenant)?;
        if let Some(p) = r
            .platforms
            .iter()
            .find(|p| !PLATFORMS.contains(&p.as_str()))
        {
            return Err(ImError::BadRequest(format!(
                "platform {p:?} is not one of {}",
                PLATFORMS.join(", ")
            )));
        }
        let b = self
            .broker()
            .ok_or_else(|| ImError::Unavailable("broker stopping".into()))?;
        // Users with no token on the platforms asked for get no job.
        let users = if PLATFORMS.iter().all(|p| r.platforms.iter().any(|q| q == p)) {
            r.users
        } else {
            let mut kept = Vec::with_capacity(r.users.len());
            for account in r.users {
                let Some(u) = self.user(r.tenant, &account)? else {
                    continue;
                };
                let tokens = self.push_tokens(r.tenant, u.uid)?;
                if tokens
                    .iter()
                    .any(|t| r.platforms.iter().any(|p| p == token_platform(&t.vendor)))
                {
                    kept.push(account);
                }
            }
            kept
        };
        let id = random_hex(8)?;
        let mut jobs = Vec::new();
        for (i, chunk) in users.chunks(MAX_PAGE).enumerate() {
            let job = im::PushJob {
                job_id: format!("{}:notify:{id}:{i}", r.tenant),
                tenant: r.tenant,
                title: r.title.clone(),
                body: r.body.clone(),
                collapse_key: format!("notify:{id}"),
                from: r.from.clone(),
                users: chunk.to_vec(),
                platforms: r.platforms.clone(),
                ..im::PushJob::default()
            };
            jobs.push(job.job_id.clone());
            super::presence::publish_push_job(&b, &job);
        }
        Ok(json!({ "id": id, "jobs": jobs, "users": users.len() }))
    }

    fn room_join_users(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: RoomJoin = parse(payload)?;
        if r.users.is_empty() || r.users.len() > MAX_USERS {
            return Err(ImError::BadRequest(format!(
                "users lists 1..={MAX_USERS} accounts"
            )));
        }
        let (mut joined, mut offline) = (Vec::new(), Vec::new());
        for account in &r.users {
            let user = self
                .user(r.tenant, account)?
                .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
            let devices = self.devices(r.tenant, user.uid);
            if devices.is_empty() {
                offline.push(account.clone());
                continue;
            }
            for (client_id, platform) in devices {
                let login = ImLogin {
                    tenant: r.tenant,
                    uid: user.uid,
                    account: user.account.clone(),
                    platform,
                    token_id: String::new(),
                };
                let req = im::RoomJoinRequest {
                    room: r.room.clone(),
                    last: None,
                };
                self.room_join(&login, &client_id, req)?;
            }
            joined.push(account.clone());
        }
        Ok(json!({ "joined": joined, "offline": offline }))
    }

    async fn recall_as(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: RecallAs = parse(payload)?;
        let login = self.as_user(r.tenant, &r.user)?;
        self.recall(
            &login,
            im::RecallRequest {
                conversation: r.conversation,
                seq: r.seq,
            },
        )
        .await?;
        Ok(json!({}))
    }

    fn messages_between(&self, payload: &[u8]) -> Result<Value, ImError> {
        use super::keys::ConvId;
        let r: Between = parse(payload)?;
        self.tenant(r.tenant)?;
        if r.from_ms >= r.to_ms {
            return Err(ImError::BadRequest("from_ms must be before to_ms".into()));
        }
        // The tenant's conversations: every user's rows name them (broadcasts to everyone
        // are virtual rows, added by hand).
        let mut convs: BTreeSet<String> = BTreeSet::new();
        convs.insert(ConvId::Broadcast("all".into()).to_string());
        let prefix = super::keys::tenant(r.tenant);
        let (mut after, mut scanned, mut complete) = (None::<Vec<u8>>, 0, true);
        loop {
            let page = self
                .store
                .scan(Table::UserConvs, &prefix, after.as_deref(), MAX_PAGE)?;
            scanned += page.len();
            for (k, _) in &page {
                if let Some(c) = super::keys::conv_of_user_conv_key(k)
                    && !matches!(c, ConvId::Chatroom(_))
                {
                    convs.insert(c.to_string());
                }
            }
            if page.len() < MAX_PAGE {
                break;
            }
            if scanned >= MAX_SCAN {
                complete = false;
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
        }
        let mut out: Vec<im::Message> = Vec::new();
        let mut read = 0;
        'convs: for c in convs {
            let Some(conv) = ConvId::parse(&c) else {
                continue;
            };
            let log = super::keys::log(r.tenant, &conv);
            let mut to = self.store.log_last(&log)?;
            // Newest first, until a message older than the window.
            while to > 0 {
                let entries = self.store.log_range(&log, 1, to, 256, true)?;
                let Some(&(oldest, _)) = entries.last() else {
                    break;
                };
                read += entries.len();
                if read > MAX_READ {
                    complete = false;
                    break 'convs;
                }
                for (_, v) in &entries {
                    let Ok(m) = im::Message::decode(v.as_slice()) else {
                        continue;
                    };
                    if m.server_time_ms < r.from_ms {
                        continue 'convs;
                    }
                    if m.server_time_ms < r.to_ms {
                        out.push(m);
                    }
                }
                to = oldest.saturating_sub(1);
            }
        }
        out.sort_by(|a, b| {
            (a.server_time_ms, &a.conversation, a.seq).cmp(&(
                b.server_time_ms,
                &b.conversation,
                b.seq,
            ))
        });
        let more = out.len() > MAX_MESSAGES;
        Ok(json!({
            "messages": out.iter().take(MAX_MESSAGES).map(super::json::message_to_json).collect::<Vec<_>>(),
            "more": more,
            "complete": complete,
        }))
    }
}
