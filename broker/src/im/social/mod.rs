//! Contacts (friend requests), blacklists, user profiles and presence (IM part 2; the
//! contract is docs/im/social.md).
//!
//! Everything durable lives in the `Social` table under keys that start with the tenant and
//! the user (big-endian), then a one-byte tag, then the other user's uid where there is
//! one ([`key`]): a user's friends, incoming friend requests and blocked users are prefix
//! scans, in uid order, paged. Presence is in memory ([`presence`]): only online users and
//! the subscriptions of online watchers.
//!
//! Files: [`contacts`] (friends, requests, blacklist), [`presence`] (subscriptions, events,
//! privacy, last seen, the service events topic), [`profile`].

pub(crate) mod contacts;
mod presence;
mod profile;

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService};

pub use presence::EVENTS_PREFIX;

/// Tags of `Social` records (the byte after tenant and uid).
pub(super) mod tag {
    /// `+ friend uid`: a friend (both sides have one).
    pub const FRIEND: u8 = b'f';
    /// `+ requester uid`: a pending friend request to this user.
    pub const REQUEST: u8 = b'r';
    /// `+ blocked uid`: this user blacklisted that one.
    pub const BLOCK: u8 = b'b';
    /// The user's profile.
    pub const PROFILE: u8 = b'p';
    /// The user's presence visibility (one byte).
    pub const PRIVACY: u8 = b'v';
    /// When the user's last device went offline (Unix ms, u64).
    pub const LAST_SEEN: u8 = b'l';
}

/// The key of a `Social` record: tenant, user, tag and (for lists) the other user.
pub(super) fn key(tid: u64, uid: u64, tag: u8, other: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(&tid.to_be_bytes());
    k.extend_from_slice(&uid.to_be_bytes());
    k.push(tag);
    if let Some(o) = other {
        k.extend_from_slice(&o.to_be_bytes());
    }
    k
}

/// Number of locks that serialise contact and profile changes (check-then-act); users
/// share one when their hashes collide.
const LOCKS: usize = 64;

/// In-memory state of the social features.
#[derive(Debug)]
pub struct Social {
    presence: presence::PresenceState,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Social {
    fn default() -> Self {
        Social {
            presence: presence::PresenceState::default(),
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl Social {
    /// The lock of the pair of users `a` and `b` (either order) of tenant `tid`.
    fn lock(&self, tid: u64, a: u64, b: u64) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::default().hash_one((tid, a.min(b), a.max(b)));
        &self.locks[h as usize % LOCKS]
    }
}

fn decode<T: prost::Message + Default>(p: &[u8]) -> Result<T, ImError> {
    T::decode(p).map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct AdminProfile {
    tenant: u64,
    user: String,
    name: Option<String>,
    avatar_url: Option<String>,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AdminUser {
    tenant: u64,
    user: String,
}

#[derive(Deserialize)]
struct AdminUsers {
    tenant: u64,
    users: Vec<String>,
}

#[derive(Deserialize)]
struct AdminPolicy {
    tenant: u64,
    friends_required: bool,
}

#[derive(Deserialize)]
struct AdminBlock {
    tenant: u64,
    user: String,
    users: Vec<String>,
}

#[derive(Deserialize)]
struct AdminList {
    tenant: u64,
    user: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: u32,
}

#[derive(Deserialize)]
struct AdminFriends {
    tenant: u64,
    user: String,
    friend: String,
}

impl ImService {
    /// A client's request `$im/req/social/{op}`.
    pub(super) async fn social_request(
        &self,
        login: &ImLogin,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Ok(match op {
            "subscribe_presence" => self
                .subscribe_presence(login, decode(payload)?)?
                .encode_to_vec(),
            "presence" => {
                let req: im::PresenceRequest = decode(payload)?;
                self.presence_query(login.tenant, Some(login.uid), &req.users)?
                    .encode_to_vec()
            }
            "set_privacy" => self
                .set_privacy(login, decode(payload)?)
                .await?
                .encode_to_vec(),
            "privacy" => im::PrivacyResponse {
                status: super::error::ok(),
                visibility: self.privacy(login.tenant, login.uid)? as i32,
            }
            .encode_to_vec(),
            "friend_request" | "friend_accept" | "friend_reject" | "friend_delete" | "block"
            | "unblock" => self
                .contact_change(login, op, decode(payload)?)
                .await?
                .encode_to_vec(),
            "friends" | "friend_requests" | "blocked" => self
                .contact_list(login, op, decode(payload)?)?
                .encode_to_vec(),
            "profile" => {
                let req: im::SocialUserRequest = decode(payload)?;
                let account = if req.user.is_empty() {
                    login.account.as_str()
                } else {
                    req.user.as_str()
                };
                im::ProfileResponse {
                    status: super::error::ok(),
                    profile: Some(self.profile(login.tenant, account)?),
                }
                .encode_to_vec()
            }
            "set_profile" => {
                let req: im::SetProfileRequest = decode(payload)?;
                let profile = self
                    .set_profile(
                        login.tenant,
                        &login.account,
                        req.name,
                        req.avatar_url,
                        req.extra.into_iter().collect(),
                    )
                    .await?;
                im::ProfileResponse {
                    status: super::error::ok(),
                    profile: Some(profile),
                }
                .encode_to_vec()
            }
            other => {
                return Err(ImError::NotFound(format!(
                    "no such request: social/{other}"
                )));
            }
        })
    }

    /// The app server's request `$im/admin/social/{op}` (JSON).
    pub(super) async fn social_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        Ok(match op {
            "set_profile" => {
                let r: AdminProfile = parse(payload)?;
                let p = self
                    .set_profile(r.tenant, &r.user, r.name, r.avatar_url, r.extra)
                    .await?;
                profile_json(&p)
            }
            "profile" => {
                let r: AdminUser = parse(payload)?;
                profile_json(&self.profile(r.tenant, &r.user)?)
            }
            "presence" => {
                let r: AdminUsers = parse(payload)?;
                let answer = self.presence_query(r.tenant, None, &r.users)?;
                let users: Vec<Value> = answer
                    .presences
                    .iter()
                    .map(|p| {
                        json!({
                            "user": p.user,
                            "online": p.online,
                            "platforms": p.platforms,
                            "last_seen_ms": p.last_seen_ms,
                        })
                    })
                    .collect();
                json!({ "users": users })
            }
            "set_policy" => {
                let r: AdminPolicy = parse(payload)?;
                let mut policy = self.tenant(r.tenant)?.policy.clone();
                policy.friends_required = r.friends_required;
                self.set_policy(r.tenant, policy).await?;
                json!({})
            }
            "block" | "unblock" => {
                let r: AdminBlock = parse(payload)?;
                self.admin_block(r.tenant, &r.user, &r.users, op == "block")
                    .await?;
                json!({})
            }
            "friends" | "friend_requests" | "blocked" => {
                let r: AdminList = parse(payload)?;
                let u = self
                    .user(r.tenant, &r.user)?
                    .ok_or_else(|| ImError::NotFound(format!("user {}", r.user)))?;
                let page = self.list_page(r.tenant, u.uid, op, &r.after, r.limit)?;
                let users: Vec<Value> = page
                    .contacts
                    .iter()
                    .map(
                        |c| json!({ "user": c.user, "since_ms": c.since_ms, "message": c.message }),
                    )
                    .collect();
                json!({ "users": users, "next": page.next })
            }
            "add_friends" => {
                let r: AdminFriends = parse(payload)?;
                self.make_friends(r.tenant, &r.user, &r.friend).await?;
                json!({})
            }
            other => {
                return Err(ImError::NotFound(format!(
                    "no such request: social/{other}"
                )));
            }
        })
    }
}

fn profile_json(p: &im::UserProfile) -> Value {
    json!({
        "user": p.user,
        "name": p.name,
        "avatar_url": p.avatar_url,
        "extra": p.extra,
        "updated_ms": p.updated_ms,
    })
}
