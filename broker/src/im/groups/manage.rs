//! Group operations, shared by clients (`$im/req/group/{op}`, acting as a user: owner,
//! admin or member) and the app server (`$im/admin/group/{op}`, acting with the owner's
//! rights). Each runs under the group's management lock (check, then act) and commits its
//! change with a notice through [`ImService::group_append`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use switchboard_proto::im::{self, GroupRole};

use super::deliver::Change;
use super::membership::MAX_PENDING;
use super::{
    GroupRecord, GroupState, MAX_ACCOUNTS, MemberRecord, RequestRecord, check_id, info_of, key,
    member_view, page_size,
};
use crate::im::error::{ImError, ok};
use crate::im::keys::{self, ConvId};
use crate::im::{ImService, now_ms, random_hex};
use crate::store::{Op, Table};

/// Longest name, avatar URL, announcement and nickname (bytes).
pub(super) const MAX_NAME: usize = 256;
const MAX_AVATAR: usize = 1024;
const MAX_ANNOUNCEMENT: usize = 4096;

/// Who asks for a change.
#[derive(Debug, Clone)]
pub(in crate::im) enum Actor {
    /// A user (their role in the group decides).
    User { uid: u64, account: String },
    /// The app server: the owner's rights in every group.
    Server,
}

impl Actor {
    pub(super) fn account(&self) -> &str {
        match self {
            Actor::User { account, .. } => account,
            Actor::Server => "",
        }
    }

    pub(super) fn uid(&self) -> Option<u64> {
        match self {
            Actor::User { uid, .. } => Some(*uid),
            Actor::Server => None,
        }
    }
}

/// Checks the actor's role in the group is at least `min`; returns it.
pub(super) fn require(
    state: &GroupState,
    actor: &Actor,
    min: GroupRole,
) -> Result<GroupRole, ImError> {
    let role = match actor {
        Actor::Server => GroupRole::Owner,
        Actor::User { uid, .. } => state.role(*uid).ok_or_else(|| {
            ImError::Forbidden(format!("you are not a member of group {}", state.rec.id))
        })?,
    };
    if (role as i32) < (min as i32) {
        let who = if min == GroupRole::Owner {
            "the owner"
        } else {
            "the owner and admins"
        };
        return Err(ImError::Forbidden(format!(
            "only {who} of group {} may do this",
            state.rec.id
        )));
    }
    Ok(role)
}

pub(super) fn check_len(what: &str, s: &str, max: usize) -> Result<(), ImError> {
    if s.len() > max {
        return Err(ImError::BadRequest(format!(
            "{what} longer than {max} bytes"
        )));
    }
    Ok(())
}

/// A notice of the group log.
pub(super) fn notice(
    kind: &str,
    actor: &Actor,
    targets: Vec<String>,
    detail: serde_json::Value,
) -> im::Message {
    let detail_json = if detail.is_null() {
        String::new()
    } else {
        detail.to_string()
    };
    im::Message {
        from: actor.account().to_owned(),
        content: Some(im::Content {
            body: Some(im::content::Body::Notice(im::Notice {
                kind: kind.to_owned(),
                operator: actor.account().to_owned(),
                targets,
                text: String::new(),
                detail_json,
            })),
        }),
        ..im::Message::default()
    }
}

/// Ops that take user `uid` out of a group: member record, index entry, conversation row
/// and positions.
pub(super) fn removal(tid: u64, gid: &str, uid: u64) -> Vec<Op> {
    let conv = ConvId::Group(gid.to_owned());
    let mut ops = vec![
        Op::Delete {
            table: Table::GroupMembers,
            key: key::member(tid, gid, uid),
        },
        Op::Delete {
            table: Table::GroupMembers,
            key: key::user_group(tid, uid, gid),
        },
        Op::Delete {
            table: Table::UserConvs,
            key: keys::user_conv(tid, uid, &conv),
        },
    ];
    for c in [
        keys::Cursor::Read,
        keys::Cursor::Delivered,
        keys::Cursor::Mention,
    ] {
        ops.push(Op::Delete {
            table: Table::Cursors,
            key: keys::cursor(tid, uid, &conv, c),
        });
    }
    ops
}

pub(super) fn new_member(account: &str, role: GroupRole) -> MemberRecord {
    MemberRecord {
        account: account.to_owned(),
        role: role as i32,
        joined_ms: now_ms(),
        ..MemberRecord::default()
    }
}

impl ImService {
    /// Creates a group owned by `owner` (uid, account) with `req.members`.
    pub(in crate::im) async fn group_create(
        &self,
        tid: u64,
        owner: (u64, String),
        req: im::CreateGroupRequest,
    ) -> Result<im::GroupResponse, ImError> {
        let gid = if req.group_id.is_empty() {
            random_hex(12)?
        } else {
            req.group_id
        };
        check_id(&gid)?;
        check_len("name", &req.name, MAX_NAME)?;
        check_len("avatar", &req.avatar, MAX_AVATAR)?;
        check_len("announcement", &req.announcement, MAX_ANNOUNCEMENT)?;
        let mut users = self.users_of(tid, &req.members)?;
        users.retain(|(u, _)| *u != owner.0);
        let max = self.max_members(tid)?;
        if users.len() + 1 > max as usize {
            return Err(ImError::Conflict(format!(
                "a group has at most {max} members"
            )));
        }
        let _manage = self.manage_lock(tid, &gid).lock().await;
        if self.group_record(tid, &gid)?.is_some() {
            return Err(ImError::Conflict(format!("group {gid} exists")));
        }
        let mut members = BTreeMap::new();
        members.insert(owner.0, new_member(&owner.1, GroupRole::Owner));
        for (u, a) in &users {
            members.insert(*u, new_member(a, GroupRole::Member));
        }
        let state = GroupState {
            rec: GroupRecord {
                id: gid.clone(),
                name: req.name,
                avatar: req.avatar,
                announcement: req.announcement,
                approval: req.join_mode == im::JoinMode::Approval as i32,
                owner: owner.0,
                all_muted: false,
                member_count: members.len() as u32,
                created_ms: now_ms(),
            },
            members,
            personal: Arc::default(),
        };
        let joiners: Vec<u64> = state.members.keys().copied().collect();
        let info = state.info(max);
        let me = state.members.get(&owner.0).map(member_view);
        let actor = Actor::User {
            uid: owner.0,
            account: owner.1,
        };
        let targets = users.iter().map(|(_, a)| a.clone()).collect();
        self.group_append(
            tid,
            &gid,
            notice(
                "group.created",
                &actor,
                targets,
                json!({ "name": info.name }),
            ),
            Some(owner.0),
            Some(Change {
                ops: Vec::new(),
                old: None,
                new: Some(state),
                joiners: joiners.clone(),
            }),
        )
        .await?;
        self.joined_event(tid, &gid, &users, &actor, &info);
        Ok(im::GroupResponse {
            status: ok(),
            group: Some(info),
            me,
        })
    }

    /// A group's information, and the requester's membership.
    pub(in crate::im) fn group_info(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
    ) -> Result<im::GroupResponse, ImError> {
        let state = self.existing(tid, gid)?;
        Ok(im::GroupResponse {
            status: ok(),
            group: Some(state.info(self.max_members(tid)?)),
            me: actor
                .uid()
                .and_then(|u| state.members.get(&u))
                .map(member_view),
        })
    }

    /// Changes a group's name, avatar, announcement, join mode or whole-group mute.
    pub(in crate::im) async fn group_update(
        &self,
        tid: u64,
        actor: &Actor,
        req: im::UpdateGroupRequest,
    ) -> Result<im::GroupResponse, ImError> {
        let gid = req.group_id.clone();
        let _manage = self.manage_lock(tid, &gid).lock().await;
        let old = self.existing(tid, &gid)?;
        require(&old, actor, GroupRole::Admin)?;
        let mut new = old.edit();
        let mut detail = serde_json::Map::new();
        if let Some(n) = req.name.filter(|n| *n != new.rec.name) {
            check_len("name", &n, MAX_NAME)?;
            detail.insert("name".into(), json!(n));
            new.rec.name = n;
        }
        if let Some(a) = req.avatar.filter(|a| *a != new.rec.avatar) {
            check_len("avatar", &a, MAX_AVATAR)?;
            detail.insert("avatar".into(), json!(a));
            new.rec.avatar = a;
        }
        if let Some(a) = req.announcement.filter(|a| *a != new.rec.announcement) {
            check_len("announcement", &a, MAX_ANNOUNCEMENT)?;
            detail.insert("announcement".into(), json!(a));
            new.rec.announcement = a;
        }
        if let Some(m) = req.join_mode {
            let approval = m == im::JoinMode::Approval as i32;
            if approval != new.rec.approval {
                detail.insert(
                    "join_mode".into(),
                    json!(if approval { "approval" } else { "open" }),
                );
                new.rec.approval = approval;
            }
        }
        let mut kind = "group.info_updated";
        if let Some(m) = req.all_muted.filter(|m| *m != new.rec.all_muted) {
            detail.insert("all_muted".into(), json!(m));
            new.rec.all_muted = m;
            if detail.len() == 1 {
                kind = if m {
                    "group.all_muted"
                } else {
                    "group.all_unmuted"
                };
            }
        }
        let max = self.max_members(tid)?;
        if detail.is_empty() {
            return Ok(im::GroupResponse {
                status: ok(),
                group: Some(old.info(max)),
                me: None,
            });
        }
        let info = new.info(max);
        self.group_append(
            tid,
            &gid,
            notice(kind, actor, Vec::new(), serde_json::Value::Object(detail)),
            actor.uid(),
            Some(Change {
                ops: Vec::new(),
                old: Some(old),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        Ok(im::GroupResponse {
            status: ok(),
            group: Some(info),
            me: None,
        })
    }

    /// Dismisses a group (owner): every member is out, the log is dropped.
    pub(in crate::im) async fn group_dismiss(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
    ) -> Result<(), ImError> {
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        require(&old, actor, GroupRole::Owner)?;
        let mut ops = vec![Op::Delete {
            table: Table::Groups,
            key: key::group(tid, gid),
        }];
        for &uid in old.members.keys() {
            ops.extend(removal(tid, gid, uid));
        }
        for (k, _) in self
            .store
            .scan(Table::Groups, &key::requests(tid, gid), None, MAX_PENDING)?
        {
            ops.push(Op::Delete {
                table: Table::Groups,
                key: k,
            });
        }
        self.group_append(
            tid,
            gid,
            notice(
                "group.dismissed",
                actor,
                Vec::new(),
                serde_json::Value::Null,
            ),
            None,
            Some(Change {
                ops,
                old: Some(old.clone()),
                new: None,
                joiners: Vec::new(),
            }),
        )
        .await?;
        let uids: Vec<u64> = old.members.keys().copied().collect();
        self.group_event(
            tid,
            &uids,
            &im::GroupEvent {
                group_id: gid.to_owned(),
                kind: "removed".into(),
                operator: actor.account().to_owned(),
                group: Some(old.info(0)),
                request: None,
            },
        );
        // Nobody can read the log any more: housekeeping.
        self.store.write(
            vec![Op::TrimLog {
                log: keys::log(tid, &ConvId::Group(gid.to_owned())),
                below: u64::MAX,
            }],
            None,
        );
        Ok(())
    }

    /// A page of a group's members, in a stable order (`viewer`: a member, or `None` for
    /// the app server).
    pub(in crate::im) fn group_members(
        &self,
        tid: u64,
        viewer: Option<u64>,
        gid: &str,
        page_token: &str,
        limit: u32,
    ) -> Result<im::MembersResponse, ImError> {
        let state = self.existing(tid, gid)?;
        if let Some(v) = viewer
            && !state.members.contains_key(&v)
        {
            return Err(ImError::Forbidden(format!(
                "you are not a member of group {gid}"
            )));
        }
        let after = match page_token {
            "" => None,
            t => Some(
                t.parse::<u64>()
                    .map_err(|_| ImError::BadRequest("invalid page_token".into()))?,
            ),
        };
        let limit = page_size(limit);
        let range = match after {
            None => state.members.range(..),
            Some(a) => state.members.range(a.saturating_add(1)..),
        };
        let page: Vec<(&u64, &MemberRecord)> = range.take(limit + 1).collect();
        let more = page.len() > limit;
        let page = &page[..page.len().min(limit)];
        Ok(im::MembersResponse {
            status: ok(),
            members: page.iter().map(|(_, m)| member_view(m)).collect(),
            next_page_token: match (more, page.last()) {
                (true, Some((u, _))) => u.to_string(),
                _ => String::new(),
            },
        })
    }

    /// A page of the groups user `uid` is a member of, by group id.
    pub(in crate::im) fn user_groups(
        &self,
        tid: u64,
        uid: u64,
        page_token: &str,
        limit: u32,
    ) -> Result<im::MyGroupsResponse, ImError> {
        let limit = page_size(limit);
        let prefix = key::user_groups(tid, uid);
        let after = (!page_token.is_empty()).then(|| key::user_group(tid, uid, page_token));
        let page = self
            .store
            .scan(Table::GroupMembers, &prefix, after.as_deref(), limit)?;
        let more = page.len() == limit;
        let max = self.max_members(tid)?;
        let mut resp = im::MyGroupsResponse {
            status: ok(),
            ..im::MyGroupsResponse::default()
        };
        for (k, _) in &page {
            let Some(gid) = k
                .get(prefix.len()..)
                .and_then(|g| std::str::from_utf8(g).ok())
            else {
                continue;
            };
            if let Some(rec) = self.group_record(tid, gid)? {
                let owner = self.account_of(tid, rec.owner)?.unwrap_or_default();
                resp.groups.push(info_of(&rec, owner, max));
            }
            if more {
                resp.next_page_token = gid.to_owned();
            }
        }
        Ok(resp)
    }

    /// Users by account (each must exist), without duplicates.
    pub(super) fn users_of(
        &self,
        tid: u64,
        accounts: &[String],
    ) -> Result<Vec<(u64, String)>, ImError> {
        if accounts.len() > MAX_ACCOUNTS {
            return Err(ImError::BadRequest(format!(
                "more than {MAX_ACCOUNTS} accounts in one request"
            )));
        }
        let mut out: Vec<(u64, String)> = Vec::with_capacity(accounts.len());
        for a in accounts {
            let u = self
                .user(tid, a)?
                .ok_or_else(|| ImError::NotFound(format!("user {a}")))?;
            if !out.iter().any(|(x, _)| *x == u.uid) {
                out.push((u.uid, u.account));
            }
        }
        Ok(out)
    }

    /// Group `gid`, or 404.
    pub(super) fn existing(&self, tid: u64, gid: &str) -> Result<Arc<GroupState>, ImError> {
        check_id(gid)?;
        self.group_state(tid, gid)?
            .ok_or_else(|| ImError::NotFound(format!("group {gid}")))
    }

    pub(super) fn max_members(&self, tid: u64) -> Result<u32, ImError> {
        Ok(self.tenant(tid)?.policy.max_group_members)
    }
}

pub(super) fn request_view(gid: &str, r: RequestRecord) -> im::JoinRequest {
    im::JoinRequest {
        group_id: gid.to_owned(),
        account: r.account,
        invited_by: r.invited_by,
        message: r.message,
        requested_ms: r.requested_ms,
    }
}
