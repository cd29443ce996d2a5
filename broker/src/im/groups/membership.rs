//! Who is in a group: joining (at once or by request), leaving, invitations, kicks, and
//! the pending requests the owner and admins decide.

use std::sync::Arc;

use serde_json::json;

use switchboard_proto::im::{self, GroupRole};

use super::deliver::{Change, json_put};
use super::manage::{
    Actor, MAX_NAME, check_len, new_member, notice, removal, request_view, require,
};
use super::{GroupState, RequestRecord, key};
use crate::im::error::{ImError, ok};
use crate::im::{ImLogin, ImService, now_ms};
use crate::store::{Op, Table};

/// Pending join requests per group at most (beyond, new ones are refused with 409).
pub(super) const MAX_PENDING: usize = 1000;

impl ImService {
    /// A user asks to join: a member at once (public group) or a pending request (private).
    pub(in crate::im) async fn group_join(
        &self,
        tid: u64,
        login: &ImLogin,
        req: im::JoinGroupRequest,
    ) -> Result<im::JoinGroupResponse, ImError> {
        check_len("message", &req.message, MAX_NAME)?;
        let gid = req.group_id;
        let _manage = self.manage_lock(tid, &gid).lock().await;
        let old = self.existing(tid, &gid)?;
        let joined = |joined, pending| im::JoinGroupResponse {
            status: ok(),
            joined,
            pending,
        };
        if old.members.contains_key(&login.uid) {
            return Ok(joined(true, false));
        }
        let user = vec![(login.uid, login.account.clone())];
        if old.rec.approval {
            let request = RequestRecord {
                account: login.account.clone(),
                invited_by: String::new(),
                message: req.message,
                requested_ms: now_ms(),
            };
            self.file_requests(tid, &old, &user, request).await?;
            return Ok(joined(false, true));
        }
        let actor = Actor::User {
            uid: login.uid,
            account: login.account.clone(),
        };
        self.add_members(tid, old, &user, &actor, "group.member_joined")
            .await?;
        Ok(joined(true, false))
    }

    /// Member `uid` leaves. An owner who leaves hands the group to the longest-standing
    /// admin, else member; the last member leaving dismisses it.
    pub(in crate::im) async fn group_leave(
        &self,
        tid: u64,
        uid: u64,
        gid: &str,
    ) -> Result<(), ImError> {
        let manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let Some(me) = old.members.get(&uid) else {
            return Err(ImError::Forbidden(format!(
                "you are not a member of group {gid}"
            )));
        };
        let actor = Actor::User {
            uid,
            account: me.account.clone(),
        };
        if old.members.len() == 1 {
            drop(manage);
            return self.group_dismiss(tid, &actor, gid).await;
        }
        let mut new = old.edit();
        new.members.remove(&uid);
        let mut detail = serde_json::Value::Null;
        if old.rec.owner == uid {
            let heir = new
                .members
                .iter()
                .max_by_key(|(u, m)| (m.role, std::cmp::Reverse((m.joined_ms, **u))))
                .map(|(u, _)| *u)
                .ok_or_else(|| ImError::Internal("a group without members".into()))?;
            new.rec.owner = heir;
            if let Some(m) = new.members.get_mut(&heir) {
                m.role = GroupRole::Owner as i32;
                detail = json!({ "new_owner": m.account });
            }
        }
        let mut ops = removal(tid, gid, uid);
        if let Some(m) = new
            .members
            .get(&new.rec.owner)
            .filter(|_| !detail.is_null())
        {
            ops.push(json_put(
                Table::GroupMembers,
                key::member(tid, gid, new.rec.owner),
                m,
            )?);
        }
        self.group_append(
            tid,
            gid,
            notice(
                "group.member_left",
                &actor,
                vec![me.account.clone()],
                detail,
            ),
            None,
            Some(Change {
                ops,
                old: Some(old.clone()),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        self.removed_event(tid, gid, &[uid], &actor, &old);
        Ok(())
    }

    /// Invites users: members at once when the owner or an admin invites or the group is
    /// public; a member's invitation into a private group waits for approval.
    pub(in crate::im) async fn group_invite(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        accounts: &[String],
    ) -> Result<im::InviteResponse, ImError> {
        let mut users = self.users_of(tid, accounts)?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let role = require(&old, actor, GroupRole::Member)?;
        users.retain(|(u, _)| !old.members.contains_key(u));
        let names: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
        let mut resp = im::InviteResponse {
            status: ok(),
            ..im::InviteResponse::default()
        };
        if users.is_empty() {
            return Ok(resp);
        }
        if old.rec.approval && role == GroupRole::Member {
            let request = RequestRecord {
                invited_by: actor.account().to_owned(),
                requested_ms: now_ms(),
                ..RequestRecord::default()
            };
            self.file_requests(tid, &old, &users, request).await?;
            resp.pending = names;
        } else {
            self.add_members(tid, old, &users, actor, "group.members_invited")
                .await?;
            resp.added = names;
        }
        Ok(resp)
    }

    /// Removes members (owner and admins; only the owner removes admins).
    pub(in crate::im) async fn group_kick(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        accounts: &[String],
    ) -> Result<(), ImError> {
        let users = self.users_of(tid, accounts)?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let role = require(&old, actor, GroupRole::Admin)?;
        let targets = self.targets(&old, &users, actor, role, false)?;
        let mut new = old.edit();
        let mut ops = Vec::new();
        for (u, _) in &targets {
            new.members.remove(u);
            ops.extend(removal(tid, gid, *u));
        }
        let names = targets.iter().map(|(_, a)| a.clone()).collect();
        self.group_append(
            tid,
            gid,
            notice(
                "group.members_kicked",
                actor,
                names,
                serde_json::Value::Null,
            ),
            actor.uid(),
            Some(Change {
                ops,
                old: Some(old.clone()),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        let uids: Vec<u64> = targets.iter().map(|(u, _)| *u).collect();
        self.removed_event(tid, gid, &uids, actor, &old);
        Ok(())
    }

    /// Pending join requests and invitations (owner and admins), oldest first by user.
    pub(in crate::im) fn group_pending(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
    ) -> Result<im::PendingResponse, ImError> {
        let state = self.existing(tid, gid)?;
        require(&state, actor, GroupRole::Admin)?;
        let requests = self
            .store
            .scan(Table::Groups, &key::requests(tid, gid), None, MAX_PENDING)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<RequestRecord>(&v).ok())
            .map(|r| request_view(gid, r))
            .collect();
        Ok(im::PendingResponse {
            status: ok(),
            requests,
        })
    }

    /// Approves or rejects a pending request (owner and admins).
    pub(in crate::im) async fn group_decide(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        account: &str,
        approve: bool,
    ) -> Result<(), ImError> {
        let users = self.users_of(tid, &[account.to_owned()])?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        require(&old, actor, GroupRole::Admin)?;
        let Some((uid, _)) = users.first().cloned() else {
            return Err(ImError::NotFound(format!("user {account}")));
        };
        let rkey = key::request(tid, gid, uid);
        let Some(raw) = self.store.get(Table::Groups, &rkey)? else {
            return Err(ImError::NotFound(format!(
                "no request of {account} pending"
            )));
        };
        let request: RequestRecord = serde_json::from_slice(&raw)
            .map_err(|e| ImError::Internal(format!("corrupt join request: {e}")))?;
        if approve && !old.members.contains_key(&uid) {
            // The request's record goes with the change (add_members deletes it).
            return self
                .add_members(tid, old, &users, actor, "group.member_joined")
                .await;
        }
        self.commit(vec![Op::Delete {
            table: Table::Groups,
            key: rkey,
        }])
        .await?;
        if !approve {
            self.group_event(
                tid,
                &[uid],
                &im::GroupEvent {
                    group_id: gid.to_owned(),
                    kind: "request_rejected".into(),
                    operator: actor.account().to_owned(),
                    group: Some(old.info(0)),
                    request: Some(request_view(gid, request)),
                },
            );
        }
        Ok(())
    }

    /// Adds `users` (not members yet) as members, dropping their pending requests.
    pub(super) async fn add_members(
        &self,
        tid: u64,
        old: Arc<GroupState>,
        users: &[(u64, String)],
        actor: &Actor,
        kind: &str,
    ) -> Result<(), ImError> {
        let gid = old.rec.id.clone();
        let max = self.max_members(tid)?;
        if old.members.len() + users.len() > max as usize {
            return Err(ImError::Conflict(format!(
                "group {gid} is full ({max} members at most)"
            )));
        }
        let mut new = old.edit();
        let mut ops = Vec::new();
        for (u, a) in users {
            new.members.insert(*u, new_member(a, GroupRole::Member));
            ops.push(Op::Delete {
                table: Table::Groups,
                key: key::request(tid, &gid, *u),
            });
        }
        let info = new.info(max);
        let names = users.iter().map(|(_, a)| a.clone()).collect();
        self.group_append(
            tid,
            &gid,
            notice(kind, actor, names, serde_json::Value::Null),
            actor.uid(),
            Some(Change {
                ops,
                old: Some(old),
                new: Some(new),
                joiners: users.iter().map(|(u, _)| *u).collect(),
            }),
        )
        .await?;
        self.joined_event(tid, &gid, users, actor, &info);
        Ok(())
    }

    /// Stores join requests (or invitations awaiting approval) and tells the owner and
    /// admins.
    pub(super) async fn file_requests(
        &self,
        tid: u64,
        state: &GroupState,
        users: &[(u64, String)],
        template: RequestRecord,
    ) -> Result<(), ImError> {
        let gid = &state.rec.id;
        let pending = self
            .store
            .scan(Table::Groups, &key::requests(tid, gid), None, MAX_PENDING)?
            .len();
        if pending + users.len() > MAX_PENDING {
            return Err(ImError::Conflict(format!(
                "group {gid} has {MAX_PENDING} requests pending already"
            )));
        }
        let mut ops = Vec::new();
        let mut views = Vec::new();
        for (u, a) in users {
            let r = RequestRecord {
                account: a.clone(),
                ..template.clone()
            };
            ops.push(json_put(Table::Groups, key::request(tid, gid, *u), &r)?);
            views.push(request_view(gid, r));
        }
        self.commit(ops).await?;
        let deciders: Vec<u64> = state
            .members
            .iter()
            .filter(|(_, m)| m.role >= GroupRole::Admin as i32)
            .map(|(u, _)| *u)
            .collect();
        for v in views {
            self.group_event(
                tid,
                &deciders,
                &im::GroupEvent {
                    group_id: gid.clone(),
                    kind: "join_request".into(),
                    operator: v.invited_by.clone(),
                    group: None,
                    request: Some(v),
                },
            );
        }
        Ok(())
    }

    pub(super) fn joined_event(
        &self,
        tid: u64,
        gid: &str,
        users: &[(u64, String)],
        actor: &Actor,
        info: &im::GroupInfo,
    ) {
        let uids: Vec<u64> = users.iter().map(|(u, _)| *u).collect();
        self.group_event(
            tid,
            &uids,
            &im::GroupEvent {
                group_id: gid.to_owned(),
                kind: "joined".into(),
                operator: actor.account().to_owned(),
                group: Some(info.clone()),
                request: None,
            },
        );
    }

    pub(super) fn removed_event(
        &self,
        tid: u64,
        gid: &str,
        uids: &[u64],
        actor: &Actor,
        old: &GroupState,
    ) {
        self.group_event(
            tid,
            uids,
            &im::GroupEvent {
                group_id: gid.to_owned(),
                kind: "removed".into(),
                operator: actor.account().to_owned(),
                group: Some(old.info(0)),
                request: None,
            },
        );
    }
}
