//! Friends, friend requests and the blacklist.
//!
//! A friend request is a record under the recipient (`REQUEST + requester`); accepting it
//! deletes it and writes a `FRIEND` record under each side, in one commit. A request to
//! someone who already asked us is an acceptance. Changes of one pair of users run one at a
//! time (a sharded lock: check, then commit). Both sides' devices get a `ContactEvent`.
//! Blocking is private (no event) and independent of friendship: the blocked user's 1:1
//! messages (in `check_send`, moderation) and friend requests (here) are refused with 405.

use serde::{Deserialize, Serialize};
use switchboard_proto::QoS;
use switchboard_proto::im::{self, contact_event::Kind as ContactKind, event::Kind};

use super::super::error::ok;
use super::super::records::UserRecord;
use super::super::{ImError, ImLogin, ImService, now_ms};
use super::{key, tag};
use crate::store::{Op, Table};

/// Longest greeting of a friend request.
const MAX_GREETING: usize = 256;
/// Page size of the lists: default and most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

/// A friend, a pending request or a blocked user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct ContactRecord {
    pub since_ms: u64,
    pub message: String,
}

/// The `Social` key of user `uid`'s blacklist entry for `other` (present: blocked).
pub(crate) fn block_key(tid: u64, uid: u64, other: u64) -> Vec<u8> {
    key(tid, uid, tag::BLOCK, Some(other))
}

impl ImService {
    /// Whether `a` and `b` are friends.
    pub(crate) fn is_friend(&self, tid: u64, a: u64, b: u64) -> Result<bool, ImError> {
        Ok(self
            .store
            .get(Table::Social, &key(tid, a, tag::FRIEND, Some(b)))?
            .is_some())
    }

    /// `friend_request`, `friend_accept`, `friend_reject`, `friend_delete`, `block`,
    /// `unblock` from `login` about `req.user`.
    pub(super) async fn contact_change(
        &self,
        login: &ImLogin,
        op: &str,
        req: im::SocialUserRequest,
    ) -> Result<im::Ack, ImError> {
        let tid = login.tenant;
        let me = login.uid;
        let peer = self.other_user(tid, me, &req.user)?;
        if req.message.len() > MAX_GREETING {
            return Err(ImError::BadRequest(format!(
                "message longer than {MAX_GREETING} bytes"
            )));
        }
        let _guard = self.social.lock(tid, me, peer.uid).lock().await;
        let now = now_ms();
        let record = |message: &str| {
            serde_json::to_vec(&ContactRecord {
                since_ms: now,
                message: message.to_owned(),
            })
            .map_err(|e| ImError::Internal(e.to_string()))
        };
        let mine = |t: u8| key(tid, me, t, Some(peer.uid));
        let theirs = |t: u8| key(tid, peer.uid, t, Some(me));
        let exists =
            |k: &[u8]| -> Result<bool, ImError> { Ok(self.store.get(Table::Social, k)?.is_some()) };
        let event = match op {
            "block" => {
                self.commit(vec![put(mine(tag::BLOCK), record("")?)])
                    .await?;
                None
            }
            "unblock" => {
                self.commit(vec![Op::Delete {
                    table: Table::Social,
                    key: mine(tag::BLOCK),
                }])
                .await?;
                None
            }
            "friend_request" => {
                if exists(&mine(tag::FRIEND))? {
                    return Ok(im::Ack { status: ok() });
                }
                if exists(&theirs(tag::BLOCK))? {
                    return Err(ImError::Blocked(format!("{} blocked you", peer.account)));
                }
                if exists(&mine(tag::REQUEST))? {
                    // They asked first: this is an acceptance.
                    self.commit(befriend(tid, me, peer.uid, &record("")?))
                        .await?;
                    Some((ContactKind::Accepted, String::new()))
                } else {
                    self.commit(vec![put(theirs(tag::REQUEST), record(&req.message)?)])
                        .await?;
                    Some((ContactKind::Requested, req.message.clone()))
                }
            }
            "friend_accept" => {
                if !exists(&mine(tag::REQUEST))? {
                    return Err(ImError::NotFound(format!(
                        "no friend request from {}",
                        peer.account
                    )));
                }
                self.commit(befriend(tid, me, peer.uid, &record("")?))
                    .await?;
                Some((ContactKind::Accepted, String::new()))
            }
            "friend_reject" => {
                if !exists(&mine(tag::REQUEST))? {
                    return Err(ImError::NotFound(format!(
                        "no friend request from {}",
                        peer.account
                    )));
                }
                self.commit(vec![Op::Delete {
                    table: Table::Social,
                    key: mine(tag::REQUEST),
                }])
                .await?;
                Some((ContactKind::Rejected, String::new()))
            }
            "friend_delete" => {
                if !exists(&mine(tag::FRIEND))? {
                    return Err(ImError::NotFound(format!(
                        "{} is not a friend",
                        peer.account
                    )));
                }
                self.commit(vec![
                    Op::Delete {
                        table: Table::Social,
                        key: mine(tag::FRIEND),
                    },
                    Op::Delete {
                        table: Table::Social,
                        key: theirs(tag::FRIEND),
                    },
                ])
                .await?;
                Some((ContactKind::Deleted, String::new()))
            }
            other => {
                return Err(ImError::NotFound(format!(
                    "no such request: social/{other}"
                )));
            }
        };
        if let Some((kind, message)) = event {
            let ev = Kind::Contact(im::ContactEvent {
                kind: kind as i32,
                from: login.account.clone(),
                to: peer.account.clone(),
                message,
                time_ms: now,
            });
            self.emit(tid, peer.uid, ev.clone(), QoS::AtLeastOnce);
            self.emit(tid, me, ev, QoS::AtLeastOnce);
        }
        Ok(im::Ack { status: ok() })
    }

    /// The app server makes two users friends (no request, both sides told).
    pub(super) async fn make_friends(&self, tid: u64, a: &str, b: &str) -> Result<(), ImError> {
        let a = self
            .user(tid, a)?
            .ok_or_else(|| ImError::NotFound(format!("user {a}")))?;
        let b = self.other_user(tid, a.uid, b)?;
        let _guard = self.social.lock(tid, a.uid, b.uid).lock().await;
        let now = now_ms();
        let rec = serde_json::to_vec(&ContactRecord {
            since_ms: now,
            message: String::new(),
        })
        .map_err(|e| ImError::Internal(e.to_string()))?;
        self.commit(befriend(tid, a.uid, b.uid, &rec)).await?;
        let ev = Kind::Contact(im::ContactEvent {
            kind: ContactKind::Accepted as i32,
            from: b.account.clone(),
            to: a.account.clone(),
            message: String::new(),
            time_ms: now,
        });
        self.emit(tid, a.uid, ev.clone(), QoS::AtLeastOnce);
        self.emit(tid, b.uid, ev, QoS::AtLeastOnce);
        Ok(())
    }

    /// One page of the user's friends, incoming friend requests or blocked users.
    pub(super) fn contact_list(
        &self,
        login: &ImLogin,
        op: &str,
        req: im::SocialListRequest,
    ) -> Result<im::SocialContactList, ImError> {
        self.list_page(login.tenant, login.uid, op, &req.after, req.limit)
    }

    /// One page of list `op` ("friends", "friend_requests", "blocked") of user `uid`.
    pub(super) fn list_page(
        &self,
        tid: u64,
        uid: u64,
        op: &str,
        after: &str,
        limit: u32,
    ) -> Result<im::SocialContactList, ImError> {
        let t = match op {
            "friends" => tag::FRIEND,
            "friend_requests" => tag::REQUEST,
            _ => tag::BLOCK,
        };
        let limit = match limit as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let prefix = key(tid, uid, t, None);
        let after = if after.is_empty() {
            None
        } else {
            let u = self
                .user(tid, after)?
                .ok_or_else(|| ImError::BadRequest(format!("after: no user {after}")))?;
            Some(key(tid, uid, t, Some(u.uid)))
        };
        let rows = self
            .store
            .scan(Table::Social, &prefix, after.as_deref(), limit + 1)?;
        let more = rows.len() > limit;
        let mut contacts = Vec::with_capacity(limit.min(rows.len()));
        for (k, v) in rows.into_iter().take(limit) {
            let Some(other) = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let Some(account) = self.account_of(tid, other)? else {
                continue;
            };
            let rec: ContactRecord = serde_json::from_slice(&v).unwrap_or_default();
            contacts.push(im::SocialContact {
                user: account,
                since_ms: rec.since_ms,
                message: rec.message,
            });
        }
        let next = if more {
            contacts.last().map(|c| c.user.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(im::SocialContactList {
            status: ok(),
            contacts,
            next,
        })
    }

    /// The app server adds users `others` to user `account`'s blacklist (or, with `block`
    /// false, takes them off), as RongCloud's server API does. Unknown accounts are 404
    /// and nothing changes.
    pub(super) async fn admin_block(
        &self,
        tid: u64,
        account: &str,
        others: &[String],
        block: bool,
    ) -> Result<(), ImError> {
        if others.len() > MAX_PAGE {
            return Err(ImError::TooLarge(format!(
                "at most {MAX_PAGE} users per request"
            )));
        }
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let rec = serde_json::to_vec(&ContactRecord {
            since_ms: now_ms(),
            message: String::new(),
        })
        .map_err(|e| ImError::Internal(e.to_string()))?;
        let mut ops = Vec::with_capacity(others.len());
        for o in others {
            let other = self.other_user(tid, user.uid, o)?;
            let k = key(tid, user.uid, tag::BLOCK, Some(other.uid));
            ops.push(if block {
                put(k, rec.clone())
            } else {
                Op::Delete {
                    table: Table::Social,
                    key: k,
                }
            });
        }
        self.commit(ops).await?;
        Ok(())
    }

    /// User `account` of the tenant, who must exist and not be `me`.
    fn other_user(&self, tid: u64, me: u64, account: &str) -> Result<UserRecord, ImError> {
        let peer = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        if peer.uid == me {
            return Err(ImError::BadRequest("that is yourself".into()));
        }
        Ok(peer)
    }
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Op {
    Op::Put {
        table: Table::Social,
        key,
        value,
    }
}

/// The ops that make `a` and `b` friends and drop the requests between them.
fn befriend(tid: u64, a: u64, b: u64, rec: &[u8]) -> Vec<Op> {
    vec![
        put(key(tid, a, tag::FRIEND, Some(b)), rec.to_vec()),
        put(key(tid, b, tag::FRIEND, Some(a)), rec.to_vec()),
        Op::Delete {
            table: Table::Social,
            key: key(tid, a, tag::REQUEST, Some(b)),
        },
        Op::Delete {
            table: Table::Social,
            key: key(tid, b, tag::REQUEST, Some(a)),
        },
    ]
}
