//! Groups (IM part 2, seed 001): creation by clients or the app server, membership with
//! roles, approval of join requests, mutes, announcements, and group messages stored once
//! in the group's log and delivered by reference. `docs/im/groups.md` is the contract.
//!
//! Storage (see [`key`]): the group record and its pending join requests in `Groups`,
//! member records and the per-user index of groups in `GroupMembers`. A member's
//! conversation row (`UserConvs`, `g:{gid}`) is written when they join (`min_seq` = the
//! log head then) and deleted when they leave, so sync and the conversation list need no
//! write per message.
//!
//! In memory: a bounded cache of active groups' members ([`GroupState`], replaced as a
//! whole on every change, under the conversation lock, so a send never reads 3,000 member
//! records and a kicked member stops receiving at once), and per member of a cached group
//! the read position and do-not-disturb flag used to count unread messages and skip
//! pushes.
//!
//! Files: this one (records, cache, client request dispatch); the operations, shared by
//! clients and the app server: [`manage`] (create, info, update, dismiss, lists),
//! [`membership`] (join, leave, invite, kick, requests), [`roles`] (owner, admins, mutes,
//! nicknames); [`deliver`] (sending and fan-out); [`admin`] (the app server's JSON
//! requests); [`import`] (past messages from another platform); [`list`] (a tenant's
//! groups, paged and searchable).

mod admin;
mod deliver;
mod import;
mod list;
mod manage;
mod membership;
mod roles;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_proto::im;

use super::keys::ConvId;
use super::{ImError, ImLogin, ImService};
use crate::store::Table;

pub(super) use manage::Actor;

/// Longest group id.
const MAX_GROUP_ID: usize = 64;
/// Groups whose members are kept in memory at most (beyond, one is evicted: it is read
/// again from the store when next used).
const CACHE_GROUPS: usize = 1024;
/// Shards of the management lock (changes of one group run one at a time).
const MANAGE_LOCKS: usize = 64;
/// Members and groups per page: default and most.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 500;
/// Accounts one request may name.
const MAX_ACCOUNTS: usize = 500;
/// Records read per store scan.
const SCAN_PAGE: usize = 1000;

/// A group as stored (`Groups`, [`key::group`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct GroupRecord {
    pub id: String,
    pub name: String,
    pub avatar: String,
    pub announcement: String,
    /// Join requests need approval (private group).
    pub approval: bool,
    pub owner: u64,
    pub all_muted: bool,
    pub member_count: u32,
    pub created_ms: u64,
}

/// A member as stored (`GroupMembers`, [`key::member`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct MemberRecord {
    pub account: String,
    /// [`im::GroupRole`] as a number.
    pub role: i32,
    pub nickname: String,
    pub muted_until_ms: u64,
    pub joined_ms: u64,
    /// The log head when the member joined (their history starts after it).
    pub min_seq: u64,
}

/// A pending join request (`Groups`, [`key::request`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct RequestRecord {
    pub account: String,
    pub invited_by: String,
    pub message: String,
    pub requested_ms: u64,
}

/// A member's own state that fan-out needs: read position and do-not-disturb.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Personal {
    pub read_seq: u64,
    pub dnd: bool,
}

/// A group and its members, as cached; never changed in place (a change makes a new one).
#[derive(Debug)]
pub(super) struct GroupState {
    pub rec: GroupRecord,
    /// By uid: the stable order of member lists.
    pub members: BTreeMap<u64, MemberRecord>,
    /// Read positions and do-not-disturb of members, filled as fan-out needs them; shared
    /// by successive states of the group, bounded by its members.
    pub personal: Arc<Mutex<foldhash::HashMap<u64, Personal>>>,
}

impl GroupState {
    fn role(&self, uid: u64) -> Option<im::GroupRole> {
        self.members
            .get(&uid)
            .map(|m| im::GroupRole::try_from(m.role).unwrap_or(im::GroupRole::Member))
    }

    /// The uid of a member by account.
    fn uid_of(&self, account: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.account == account)
            .map(|(u, _)| *u)
    }

    /// A copy to change.
    fn edit(&self) -> GroupState {
        GroupState {
            rec: self.rec.clone(),
            members: self.members.clone(),
            personal: self.personal.clone(),
        }
    }

    fn info(&self, max_members: u32) -> im::GroupInfo {
        let owner = self
            .members
            .get(&self.rec.owner)
            .map(|m| m.account.clone())
            .unwrap_or_default();
        info_of(&self.rec, owner, max_members)
    }
}

fn info_of(rec: &GroupRecord, owner: String, max_members: u32) -> im::GroupInfo {
    im::GroupInfo {
        group_id: rec.id.clone(),
        name: rec.name.clone(),
        avatar: rec.avatar.clone(),
        announcement: rec.announcement.clone(),
        join_mode: if rec.approval {
            im::JoinMode::Approval as i32
        } else {
            im::JoinMode::Open as i32
        },
        owner,
        member_count: rec.member_count,
        max_members,
        all_muted: rec.all_muted,
        created_ms: rec.created_ms,
    }
}

fn member_view(m: &MemberRecord) -> im::GroupMember {
    im::GroupMember {
        account: m.account.clone(),
        role: m.role,
        nickname: m.nickname.clone(),
        muted_until_ms: m.muted_until_ms,
        joined_ms: m.joined_ms,
    }
}

/// In-memory state of the group service (caches; the store is the truth).
#[derive(Debug)]
pub struct Groups {
    cache: Mutex<HashMap<(u64, String), Arc<GroupState>>>,
    /// Bumped on every change: a state read from the store is cached only if no change
    /// happened meanwhile (else it may be older than the change).
    epoch: AtomicU64,
    manage: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Groups {
    fn default() -> Self {
        Groups {
            cache: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            manage: (0..MANAGE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

/// Keys of the group records. Group ids are ASCII without `\0` or `\x01` ([`valid_id`]),
/// so the separators below keep one group's keys apart from another's.
pub(super) mod key {
    fn join(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// `Groups`: tenant, group id, 0.
    pub fn group(tid: u64, gid: &str) -> Vec<u8> {
        join(&[&tid.to_be_bytes(), gid.as_bytes(), &[0]])
    }

    /// `Groups`: prefix of a group's pending requests.
    pub fn requests(tid: u64, gid: &str) -> Vec<u8> {
        join(&[&tid.to_be_bytes(), gid.as_bytes(), &[1]])
    }

    /// `Groups`: the pending request of user `uid`.
    pub fn request(tid: u64, gid: &str, uid: u64) -> Vec<u8> {
        join(&[&requests(tid, gid), &uid.to_be_bytes()])
    }

    /// `GroupMembers`: prefix of a group's members.
    pub fn members(tid: u64, gid: &str) -> Vec<u8> {
        join(&[&tid.to_be_bytes(), b"m", gid.as_bytes(), &[0]])
    }

    /// `GroupMembers`: member `uid` of a group.
    pub fn member(tid: u64, gid: &str, uid: u64) -> Vec<u8> {
        join(&[&members(tid, gid), &uid.to_be_bytes()])
    }

    /// `GroupMembers`: prefix of the index of user `uid`'s groups.
    pub fn user_groups(tid: u64, uid: u64) -> Vec<u8> {
        join(&[&tid.to_be_bytes(), b"u", &uid.to_be_bytes()])
    }

    /// `GroupMembers`: group `gid` in user `uid`'s index.
    pub fn user_group(tid: u64, uid: u64, gid: &str) -> Vec<u8> {
        join(&[&user_groups(tid, uid), gid.as_bytes()])
    }
}

/// Whether `gid` is a valid group id: 1 to 64 of `A-Z a-z 0-9 - _ . @ =`.
pub(super) fn valid_id(gid: &str) -> bool {
    !gid.is_empty()
        && gid.len() <= MAX_GROUP_ID
        && gid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@=".contains(&b))
}

fn check_id(gid: &str) -> Result<(), ImError> {
    if valid_id(gid) {
        Ok(())
    } else {
        Err(ImError::BadRequest(format!(
            "invalid group id {gid:?} (1..={MAX_GROUP_ID} of A-Z a-z 0-9 - _ . @ =)"
        )))
    }
}

/// A page size a client asked for.
fn page_size(limit: u32) -> usize {
    match limit as usize {
        0 => PAGE_DEFAULT,
        n => n.min(PAGE_MAX),
    }
}

impl ImService {
    /// A client's group request `$im/req/group/{op}`.
    pub(super) async fn group_request(
        &self,
        login: &ImLogin,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        fn decode<T: prost::Message + Default>(p: &[u8]) -> Result<T, ImError> {
            T::decode(p).map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))
        }
        let actor = Actor::User {
            uid: login.uid,
            account: login.account.clone(),
        };
        let tid = login.tenant;
        Ok(match op {
            "create" => self
                .group_create(tid, (login.uid, login.account.clone()), decode(payload)?)
                .await?
                .encode_to_vec(),
            "info" => {
                let r: im::GroupRef = decode(payload)?;
                self.group_info(tid, &actor, &r.group_id)?.encode_to_vec()
            }
            "update" => self
                .group_update(tid, &actor, decode(payload)?)
                .await?
                .encode_to_vec(),
            "dismiss" => {
                let r: im::GroupRef = decode(payload)?;
                self.group_dismiss(tid, &actor, &r.group_id).await?;
                ack()
            }
            "join" => self
                .group_join(tid, login, decode(payload)?)
                .await?
                .encode_to_vec(),
            "leave" => {
                let r: im::GroupRef = decode(payload)?;
                self.group_leave(tid, login.uid, &r.group_id).await?;
                ack()
            }
            "invite" => {
                let r: im::GroupMembersRequest = decode(payload)?;
                self.group_invite(tid, &actor, &r.group_id, &r.accounts)
                    .await?
                    .encode_to_vec()
            }
            "kick" => {
                let r: im::GroupMembersRequest = decode(payload)?;
                self.group_kick(tid, &actor, &r.group_id, &r.accounts)
                    .await?;
                ack()
            }
            "transfer" => {
                let r: im::GroupMembersRequest = decode(payload)?;
                let [to] = r.accounts.as_slice() else {
                    return Err(ImError::BadRequest("name exactly one new owner".into()));
                };
                self.group_transfer(tid, &actor, &r.group_id, to).await?;
                ack()
            }
            "set_admins" | "unset_admins" => {
                let r: im::GroupMembersRequest = decode(payload)?;
                self.group_set_admins(tid, &actor, &r.group_id, &r.accounts, op == "set_admins")
                    .await?;
                ack()
            }
            "mute" => {
                let r: im::MuteMembersRequest = decode(payload)?;
                self.group_mute(tid, &actor, &r.group_id, &r.accounts, r.duration_secs)
                    .await?;
                ack()
            }
            "nickname" => {
                let r: im::NicknameRequest = decode(payload)?;
                self.group_nickname(tid, &actor, &r.group_id, &r.account, &r.nickname)
                    .await?;
                ack()
            }
            "dnd" => {
                let r: im::DndRequest = decode(payload)?;
                check_id(&r.group_id)?;
                let req = im::UpdateConversationRequest {
                    conversation: ConvId::Group(r.group_id).to_string(),
                    muted: Some(r.dnd),
                    ..im::UpdateConversationRequest::default()
                };
                self.update_conversation(login, req).await?.encode_to_vec()
            }
            "pending" => {
                let r: im::GroupRef = decode(payload)?;
                self.group_pending(tid, &actor, &r.group_id)?
                    .encode_to_vec()
            }
            "decide" => {
                let r: im::DecideRequest = decode(payload)?;
                self.group_decide(tid, &actor, &r.group_id, &r.account, r.approve)
                    .await?;
                ack()
            }
            "members" => {
                let r: im::MembersRequest = decode(payload)?;
                self.group_members(tid, Some(login.uid), &r.group_id, &r.page_token, r.limit)?
                    .encode_to_vec()
            }
            "mine" => {
                let r: im::MyGroupsRequest = decode(payload)?;
                self.user_groups(tid, login.uid, &r.page_token, r.limit)?
                    .encode_to_vec()
            }
            other => return Err(ImError::NotFound(format!("no such request: group/{other}"))),
        })
    }

    /// The app server's group request `$im/admin/group/{op}` (JSON).
    pub(super) async fn group_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        admin::request(self, op, payload).await
    }

    /// Whether user `uid` is a member of group `gid` of tenant `tid`.
    pub(super) fn is_group_member(&self, tid: u64, gid: &str, uid: u64) -> Result<bool, ImError> {
        Ok(self
            .group_state(tid, gid)?
            .is_some_and(|s| s.members.contains_key(&uid)))
    }

    /// A conversation's read position or do-not-disturb flag changed (`read`,
    /// `update_conversation`): the cached copy of a group member's is dropped.
    pub(super) fn group_personal_changed(&self, tid: u64, conv: &ConvId, uid: u64) {
        let ConvId::Group(gid) = conv else { return };
        self.evict_personal(tid, gid, &[uid]);
        if let Some(c) = self.cluster() {
            c.personal_changed(tid, gid, vec![uid]);
        }
    }

    /// Drops the cached read positions and do-not-disturb flags of `uids` in group `gid`.
    pub(super) fn evict_personal(&self, tid: u64, gid: &str, uids: &[u64]) {
        if let Some(s) = self.groups.cache.lock().get(&(tid, gid.to_owned())) {
            let mut personal = s.personal.lock();
            for uid in uids {
                personal.remove(uid);
            }
        }
    }

    /// Forgets the cached state of group `gid` (another node changed it).
    pub(super) fn evict_group(&self, tid: u64, gid: &str) {
        let mut cache = self.groups.cache.lock();
        self.groups.epoch.fetch_add(1, Ordering::AcqRel);
        cache.remove(&(tid, gid.to_owned()));
    }

    /// Group `gid` with its members (from the cache, else the store); `None` if there is
    /// no such group.
    fn group_state(&self, tid: u64, gid: &str) -> Result<Option<Arc<GroupState>>, ImError> {
        if !valid_id(gid) {
            return Ok(None);
        }
        let cache_key = (tid, gid.to_owned());
        if let Some(s) = self.groups.cache.lock().get(&cache_key) {
            return Ok(Some(s.clone()));
        }
        let epoch = self.groups.epoch.load(Ordering::Acquire);
        let Some(rec) = self.group_record(tid, gid)? else {
            return Ok(None);
        };
        let mut members = BTreeMap::new();
        let prefix = key::members(tid, gid);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.store
                    .scan(Table::GroupMembers, &prefix, after.as_deref(), SCAN_PAGE)?;
            let n = page.len();
            for (k, v) in page {
                let uid = k
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes);
                match (uid, serde_json::from_slice::<MemberRecord>(&v)) {
                    (Some(uid), Ok(m)) => {
                        members.insert(uid, m);
                    }
                    _ => tracing::warn!(
                        tenant = tid,
                        group = gid,
                        "skipping a corrupt member record"
                    ),
                }
                after = Some(k);
            }
            if n < SCAN_PAGE {
                break;
            }
        }
        let state = Arc::new(GroupState {
            rec,
            members,
            personal: Arc::default(),
        });
        let mut cache = self.groups.cache.lock();
        if self.groups.epoch.load(Ordering::Acquire) == epoch {
            if cache.len() >= CACHE_GROUPS
                && let Some(k) = cache.keys().next().cloned()
            {
                cache.remove(&k);
            }
            cache.insert(cache_key, state.clone());
        }
        Ok(Some(state))
    }

    /// Replaces (or with `None` forgets) the cached state of a group after a change.
    fn set_group_state(&self, tid: u64, gid: &str, state: Option<Arc<GroupState>>) {
        if let Some(c) = self.cluster() {
            c.group_changed(tid, gid);
        }
        let mut cache = self.groups.cache.lock();
        self.groups.epoch.fetch_add(1, Ordering::AcqRel);
        match state {
            Some(s) => {
                if cache.len() >= CACHE_GROUPS
                    && !cache.contains_key(&(tid, gid.to_owned()))
                    && let Some(k) = cache.keys().next().cloned()
                {
                    cache.remove(&k);
                }
                cache.insert((tid, gid.to_owned()), s);
            }
            None => {
                cache.remove(&(tid, gid.to_owned()));
            }
        }
    }

    /// The stored record of group `gid`.
    fn group_record(&self, tid: u64, gid: &str) -> Result<Option<GroupRecord>, ImError> {
        match self.store.get(Table::Groups, &key::group(tid, gid))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| ImError::Internal(format!("corrupt group record: {e}"))),
            None => Ok(None),
        }
    }

    /// The management lock of a group.
    fn manage_lock(&self, tid: u64, gid: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::default().hash_one((tid, gid)) as usize;
        &self.groups.manage[h % MANAGE_LOCKS]
    }
}

/// An empty success answer.
fn ack() -> Vec<u8> {
    im::Ack {
        status: super::error::ok(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_checked_and_keys_keep_groups_apart() {
        for ok in ["g", "team-1", "a.b_c@d=e", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a:b", "a\0", "群", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        // "ab"'s keys are not under "a"'s prefixes, and a group's record is not one of
        // its requests.
        assert!(!key::member(1, "ab", 7).starts_with(&key::members(1, "a")));
        assert!(!key::request(1, "ab", 7).starts_with(&key::requests(1, "a")));
        assert!(!key::group(1, "a").starts_with(&key::requests(1, "a")));
        assert!(key::user_group(1, 7, "a").starts_with(&key::user_groups(1, 7)));
        assert!(!key::user_groups(1, 7).starts_with(&key::members(1, "")));
    }
}
