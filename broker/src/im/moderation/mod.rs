//! Moderation (IM part 2; the contract is docs/im/moderation.md): bans for a duration
//! (from connecting: the user record's `banned_until` and a kick; or from sending), global
//! and per-conversation mutes, the sensitive-word filter ([`words`]) and per-user send rate
//! limits ([`rate`]). [`ImService::check_send`] runs before every message a user sends
//! (1:1, group, chatroom) and also applies the blacklist and the tenant's friends-only rule
//! to 1:1 messages.
//!
//! Storage, `Moderation` table, keys starting with the tenant (big-endian):
//! - `tenant, 'W'`: the word list and mode (JSON [`words::WordList`]);
//! - `tenant, 'R'`: the rate limit (JSON [`rate::Rate`]);
//! - `tenant, 'u', uid`: the user's send ban and global mute (JSON [`UserModeration`]);
//! - `tenant, 'c', uid, conversation id`: a per-conversation mute (until, u64 seconds).
//!
//! Each tenant's settings are read once and cached with the built matcher ([`Settings`]);
//! changes go through the store, then replace the cache entry. Per-user records are read
//! per send (one or two point reads).

pub mod rate;
pub mod words;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_proto::im;

use super::keys::ConvId;
use super::{ImError, ImLogin, ImService};
use crate::store::{Op, Table, unix_now};

/// "Forever", as an until time.
pub const FOREVER: u64 = u64::MAX;
/// Most per-conversation mutes listed by `moderation/status`.
const MAX_LISTED: usize = 100;

/// A tenant's moderation settings, as used by `check_send`.
#[derive(Debug, Default)]
pub struct Settings {
    pub words: WordsState,
    pub rate: Option<rate::Rate>,
}

/// The stored word list and its built filter.
#[derive(Debug, Default)]
pub struct WordsState {
    pub list: words::WordList,
    pub filter: Option<words::Filter>,
}

/// A user's send ban and global mute (Unix seconds; 0: none; [`FOREVER`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserModeration {
    pub send_banned_until: u64,
    pub muted_until: u64,
}

/// In-memory state of moderation (settings per tenant, rate limiters).
#[derive(Debug, Default)]
pub struct Moderation {
    settings: RwLock<HashMap<u64, Arc<Settings>>>,
    limiter: rate::Limiter,
    /// Serialises changes of settings and user records (read, change, write).
    changes: tokio::sync::Mutex<()>,
}

fn tenant_key(tid: u64, tag: u8) -> Vec<u8> {
    let mut k = tid.to_be_bytes().to_vec();
    k.push(tag);
    k
}

fn user_key(tid: u64, uid: u64) -> Vec<u8> {
    let mut k = tenant_key(tid, b'u');
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

fn conv_key(tid: u64, uid: u64, conv: &ConvId) -> Vec<u8> {
    let mut k = tenant_key(tid, b'c');
    k.extend_from_slice(&uid.to_be_bytes());
    k.extend_from_slice(conv.to_string().as_bytes());
    k
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ImError> {
    serde_json::to_vec(v).map_err(|e| ImError::Internal(e.to_string()))
}

/// The until time of a duration from now (`None` or 0 seconds: forever).
fn until(seconds: Option<u64>) -> u64 {
    match seconds {
        None | Some(0) => FOREVER,
        Some(s) => unix_now().saturating_add(s),
    }
}

#[derive(Deserialize)]
struct BanReq {
    tenant: u64,
    user: String,
    seconds: Option<u64>,
    /// "connect" (default) or "send".
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct MuteReq {
    tenant: u64,
    user: String,
    seconds: Option<u64>,
    conversation: Option<String>,
}

#[derive(Deserialize)]
struct UserReq {
    tenant: u64,
    user: String,
}

#[derive(Deserialize)]
struct WordsReq {
    tenant: u64,
    #[serde(default)]
    words: Vec<String>,
    mode: Option<words::Mode>,
}

#[derive(Deserialize)]
struct TenantReq {
    tenant: u64,
}

#[derive(Deserialize)]
struct RateReq {
    tenant: u64,
    messages: u32,
    #[serde(default = "one")]
    per_secs: u32,
    burst: Option<u32>,
}

fn one() -> u32 {
    1
}

impl ImService {
    /// Checks a message user `login` is about to send to `conv` (`peer`: the recipient of
    /// a 1:1 message) and may rewrite its content (masked words). In order: send ban and
    /// mutes (423), blacklist (405), friends only (403), words (451 or masked), rate (429);
    /// a refused message takes no token from the rate limit.
    pub(super) fn check_send(
        &self,
        login: &ImLogin,
        conv: &ConvId,
        peer: Option<u64>,
        req: &mut im::SendRequest,
    ) -> Result<(), ImError> {
        let tid = login.tenant;
        let now = unix_now();
        // The sender's ban/mute, its mute in this conversation and the recipient's
        // blacklist entry for it, in one read.
        let (user, in_conv) = (user_key(tid, login.uid), conv_key(tid, login.uid, conv));
        let block = peer.map(|p| crate::im::social::contacts::block_key(tid, p, login.uid));
        let mut wanted = vec![
            (Table::Moderation, user.as_slice()),
            (Table::Moderation, in_conv.as_slice()),
        ];
        if let Some(k) = &block {
            wanted.push((Table::Social, k.as_slice()));
        }
        let mut found = self.store.get_many(&wanted)?.into_iter();
        let (user, in_conv, blocked) = (
            found.next().flatten(),
            found.next().flatten(),
            found.next().flatten().is_some(),
        );
        if let Some(v) = user {
            let m: UserModeration = serde_json::from_slice(&v).unwrap_or_default();
            if m.send_banned_until > now {
                return Err(ImError::Muted(format!(
                    "banned from sending {}",
                    until_text(m.send_banned_until)
                )));
            }
            if m.muted_until > now {
                return Err(ImError::Muted(format!(
                    "muted {}",
                    until_text(m.muted_until)
                )));
            }
        }
        if let Some(v) = in_conv
            && let Ok(b) = <[u8; 8]>::try_from(v.as_slice())
            && u64::from_be_bytes(b) > now
        {
            return Err(ImError::Muted(format!(
                "muted in {conv} {}",
                until_text(u64::from_be_bytes(b))
            )));
        }
        if let Some(peer) = peer {
            if blocked {
                return Err(ImError::Blocked(
                    "the recipient does not accept your messages".into(),
                ));
            }
            if self.tenant(tid)?.policy.friends_required && !self.is_friend(tid, login.uid, peer)? {
                return Err(ImError::Forbidden(
                    "this app only delivers messages between friends".into(),
                ));
            }
        }
        let settings = self.moderation_settings(tid)?;
        if let (Some(f), Some(content)) = (&settings.words.filter, req.content.as_mut()) {
            f.apply(content)?;
        }
        if let Some(r) = settings.rate
            && !self
                .moderation
                .limiter
                .take(tid, login.uid, r, std::time::Instant::now())
        {
            return Err(ImError::RateLimited(format!(
                "at most {} messages per {} s (bursts of {})",
                r.messages, r.per_secs, r.burst
            )));
        }
        Ok(())
    }

    /// Tenant `tid`'s settings (cached).
    fn moderation_settings(&self, tid: u64) -> Result<Arc<Settings>, ImError> {
        if let Some(s) = self.moderation.settings.read().get(&tid) {
            return Ok(s.clone());
        }
        let generation = self.cluster().map_or(0, |c| {
            c.moderation_gen.load(std::sync::atomic::Ordering::Acquire)
        });
        let list: words::WordList =
            match self.store.get(Table::Moderation, &tenant_key(tid, b'W'))? {
                Some(v) => serde_json::from_slice(&v)
                    .map_err(|e| ImError::Internal(format!("corrupt word list: {e}")))?,
                None => words::WordList::default(),
            };
        let rate = match self.store.get(Table::Moderation, &tenant_key(tid, b'R'))? {
            Some(v) => Some(
                serde_json::from_slice(&v)
                    .map_err(|e| ImError::Internal(format!("corrupt rate limit: {e}")))?,
            ),
            None => None,
        };
        // Building a long list's matcher takes a while (~0.2-0.8 s for 10,000 words); it
        // happens once per tenant and process. On the multi-threaded runtime, the worker
        // hands its other tasks over meanwhile.
        let build = || words::Filter::new(&list);
        let filter = match tokio::runtime::Handle::try_current() {
            Ok(h)
                if list.words.len() > 100
                    && h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(build)?
            }
            _ => build()?,
        };
        let s = Arc::new(Settings {
            words: WordsState { filter, list },
            rate,
        });
        let mut settings = self.moderation.settings.write();
        if self.cluster().is_none_or(|c| {
            c.moderation_gen.load(std::sync::atomic::Ordering::Acquire) == generation
        }) {
            settings.insert(tid, s.clone());
        }
        Ok(s)
    }

    /// The app server's request `$im/admin/moderation/{op}` (JSON).
    pub(super) async fn moderation_admin(
        &self,
        op: &str,
        payload: &[u8],
    ) -> Result<Value, ImError> {
        let _guard = self.moderation.changes.lock().await;
        Ok(match op {
            "ban" => {
                let r: BanReq = parse(payload)?;
                let t = until(r.seconds);
                match r.scope.as_str() {
                    "" | "connect" => self.ban(r.tenant, &r.user, t).await?,
                    "send" => {
                        self.change_user(r.tenant, &r.user, |m| m.send_banned_until = t)
                            .await?;
                    }
                    other => return Err(ImError::BadRequest(format!("no scope {other:?}"))),
                }
                json!({ "until": t })
            }
            "unban" => {
                let r: BanReq = parse(payload)?;
                match r.scope.as_str() {
                    "" | "connect" => self.ban(r.tenant, &r.user, 0).await?,
                    "send" => {
                        self.change_user(r.tenant, &r.user, |m| m.send_banned_until = 0)
                            .await?;
                    }
                    other => return Err(ImError::BadRequest(format!("no scope {other:?}"))),
                }
                json!({})
            }
            "mute" | "unmute" => {
                let r: MuteReq = parse(payload)?;
                let t = if op == "mute" { until(r.seconds) } else { 0 };
                match r.conversation {
                    Some(c) => self.mute_in(r.tenant, &r.user, &c, t).await?,
                    None => {
                        self.change_user(r.tenant, &r.user, |m| m.muted_until = t)
                            .await?;
                    }
                }
                json!({ "until": t })
            }
            "status" => {
                let r: UserReq = parse(payload)?;
                self.moderation_status(r.tenant, &r.user)?
            }
            "set_words" | "add_words" | "remove_words" => {
                let r: WordsReq = parse(payload)?;
                self.tenant(r.tenant)?;
                let current = self.moderation_settings(r.tenant)?.words.list.clone();
                let mut list = match op {
                    "set_words" => words::WordList {
                        words: r.words,
                        mode: current.mode,
                    },
                    "add_words" => {
                        let mut l = current;
                        l.words.extend(r.words);
                        l
                    }
                    _ => {
                        let drop: std::collections::HashSet<String> = r
                            .words
                            .iter()
                            .map(|w| w.trim().to_ascii_lowercase())
                            .collect();
                        let mut l = current;
                        l.words.retain(|w| !drop.contains(&w.to_ascii_lowercase()));
                        l
                    }
                };
                if let Some(m) = r.mode {
                    list.mode = m;
                }
                let list = list.normalise()?;
                // Building takes a while for long lists (~0.4 s for 10,000 words): off the
                // runtime's threads.
                let (list, filter) = tokio::task::spawn_blocking(move || {
                    let filter = words::Filter::new(&list);
                    (list, filter)
                })
                .await
                .map_err(|e| ImError::Internal(format!("word filter build: {e}")))?;
                let filter = filter?;
                self.commit(vec![Op::Put {
                    table: Table::Moderation,
                    key: tenant_key(r.tenant, b'W'),
                    value: to_json(&list)?,
                }])
                .await?;
                let count = list.words.len();
                self.replace_settings(r.tenant, |s| s.words = WordsState { list, filter })?;
                json!({ "words": count })
            }
            "words" => {
                let r: TenantReq = parse(payload)?;
                self.tenant(r.tenant)?;
                let s = self.moderation_settings(r.tenant)?;
                json!({ "words": s.words.list.words, "mode": s.words.list.mode })
            }
            "set_rate_limit" => {
                let r: RateReq = parse(payload)?;
                self.tenant(r.tenant)?;
                let rate = rate::Rate {
                    messages: r.messages,
                    per_secs: r.per_secs,
                    burst: r.burst.unwrap_or(r.messages),
                };
                let op = if r.messages == 0 {
                    Op::Delete {
                        table: Table::Moderation,
                        key: tenant_key(r.tenant, b'R'),
                    }
                } else if rate.valid() {
                    Op::Put {
                        table: Table::Moderation,
                        key: tenant_key(r.tenant, b'R'),
                        value: to_json(&rate)?,
                    }
                } else {
                    return Err(ImError::BadRequest(
                        "messages, per_secs and burst must be at least 1 (messages 0: no limit)"
                            .into(),
                    ));
                };
                self.commit(vec![op]).await?;
                let rate = (r.messages > 0).then_some(rate);
                self.replace_settings(r.tenant, |s| s.rate = rate)?;
                json!({ "rate_limit": rate })
            }
            "rate_limit" => {
                let r: TenantReq = parse(payload)?;
                self.tenant(r.tenant)?;
                json!({ "rate_limit": self.moderation_settings(r.tenant)?.rate })
            }
            other => {
                return Err(ImError::NotFound(format!(
                    "no such request: moderation/{other}"
                )));
            }
        })
    }

    /// Replaces tenant `tid`'s cached settings with a changed copy.
    fn replace_settings(
        &self,
        tid: u64,
        change: impl FnOnce(&mut Settings),
    ) -> Result<(), ImError> {
        let current = self.moderation_settings(tid)?;
        let mut next = Settings {
            words: WordsState {
                filter: current.words.filter.clone(),
                list: current.words.list.clone(),
            },
            rate: current.rate,
        };
        change(&mut next);
        self.moderation.settings.write().insert(tid, Arc::new(next));
        if let Some(c) = self.cluster() {
            c.moderation_changed(tid);
        }
        Ok(())
    }

    /// Forgets tenant `tid`'s cached settings (another node changed them).
    pub(super) fn evict_moderation(&self, tid: u64) {
        self.moderation.settings.write().remove(&tid);
    }

    /// Reads, changes and writes user `account`'s moderation record.
    async fn change_user(
        &self,
        tid: u64,
        account: &str,
        change: impl FnOnce(&mut UserModeration),
    ) -> Result<(), ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let k = user_key(tid, user.uid);
        let mut m: UserModeration = match self.store.get(Table::Moderation, &k)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => UserModeration::default(),
        };
        change(&mut m);
        let op = if m == UserModeration::default() {
            Op::Delete {
                table: Table::Moderation,
                key: k,
            }
        } else {
            Op::Put {
                table: Table::Moderation,
                key: k,
                value: to_json(&m)?,
            }
        };
        self.commit(vec![op]).await?;
        Ok(())
    }

    /// Mutes user `account` in conversation `conv` until `t` (0: lifts it).
    async fn mute_in(&self, tid: u64, account: &str, conv: &str, t: u64) -> Result<(), ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let conv = ConvId::parse(conv)
            .ok_or_else(|| ImError::BadRequest(format!("not a conversation id: {conv:?}")))?;
        let k = conv_key(tid, user.uid, &conv);
        let op = if t == 0 {
            Op::Delete {
                table: Table::Moderation,
                key: k,
            }
        } else {
            Op::Put {
                table: Table::Moderation,
                key: k,
                value: t.to_be_bytes().to_vec(),
            }
        };
        self.commit(vec![op]).await?;
        Ok(())
    }

    /// `moderation/status`: a user's bans and mutes in force.
    fn moderation_status(&self, tid: u64, account: &str) -> Result<Value, ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let now = unix_now();
        let m: UserModeration = match self
            .store
            .get(Table::Moderation, &user_key(tid, user.uid))?
        {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => UserModeration::default(),
        };
        let live = |t: u64| if t > now { t } else { 0 };
        let mut prefix = tenant_key(tid, b'c');
        prefix.extend_from_slice(&user.uid.to_be_bytes());
        let mut conversations = Vec::new();
        for (k, v) in self
            .store
            .scan(Table::Moderation, &prefix, None, MAX_LISTED)?
        {
            let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) else {
                continue;
            };
            let t = u64::from_be_bytes(b);
            if t > now
                && let Some(c) = k
                    .get(prefix.len()..)
                    .and_then(|c| std::str::from_utf8(c).ok())
            {
                conversations.push(json!({ "conversation": c, "until": t }));
            }
        }
        Ok(json!({
            "user": user.account,
            "banned_until": live(user.banned_until),
            "send_banned_until": live(m.send_banned_until),
            "muted_until": live(m.muted_until),
            "muted_in": conversations,
        }))
    }
}

/// "until {t}" or "indefinitely".
fn until_text(t: u64) -> String {
    if t == FOREVER {
        "indefinitely".into()
    } else {
        format!("until {t} (Unix seconds)")
    }
}
