//! Roles and member settings: ownership transfer, admins, per-member mutes, nicknames.

use std::sync::Arc;

use serde_json::json;
use switchboard_proto::im::GroupRole;

use super::GroupState;
use super::deliver::{Change, json_put};
use super::key;
use super::manage::{Actor, MAX_NAME, check_len, notice, require};
use crate::im::error::ImError;
use crate::im::{ImService, now_ms};
use crate::store::{Op, Table};

/// Longest mute (ten years).
const MAX_MUTE_SECS: u64 = 10 * 365 * 24 * 3600;

impl ImService {
    /// Hands the group to another member (owner); the old owner becomes a member.
    pub(in crate::im) async fn group_transfer(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        to: &str,
    ) -> Result<(), ImError> {
        let users = self.users_of(tid, &[to.to_owned()])?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        require(&old, actor, GroupRole::Owner)?;
        let [(heir, account)] = users.as_slice() else {
            return Err(ImError::BadRequest("name exactly one new owner".into()));
        };
        if !old.members.contains_key(heir) {
            return Err(ImError::NotFound(format!("{account} is not a member")));
        }
        if *heir == old.rec.owner {
            return Ok(());
        }
        let mut new = old.edit();
        let previous = new.rec.owner;
        new.rec.owner = *heir;
        let mut ops = Vec::new();
        for (u, role) in [(previous, GroupRole::Member), (*heir, GroupRole::Owner)] {
            if let Some(m) = new.members.get_mut(&u) {
                m.role = role as i32;
                ops.push(json_put(Table::GroupMembers, key::member(tid, gid, u), m)?);
            }
        }
        self.commit_notice(
            tid,
            gid,
            actor,
            old,
            new,
            ops,
            "group.owner_transferred",
            vec![account.clone()],
        )
        .await
    }

    /// Makes members admins or members again (owner).
    pub(in crate::im) async fn group_set_admins(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        accounts: &[String],
        admin: bool,
    ) -> Result<(), ImError> {
        let users = self.users_of(tid, accounts)?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let role = require(&old, actor, GroupRole::Owner)?;
        let targets = self.targets(&old, &users, actor, role, false)?;
        let (to, kind) = if admin {
            (GroupRole::Admin, "group.admins_set")
        } else {
            (GroupRole::Member, "group.admins_unset")
        };
        let mut new = old.edit();
        let mut ops = Vec::new();
        for (u, _) in &targets {
            if let Some(m) = new.members.get_mut(u) {
                m.role = to as i32;
                ops.push(json_put(Table::GroupMembers, key::member(tid, gid, *u), m)?);
            }
        }
        let names = targets.into_iter().map(|(_, a)| a).collect();
        self.commit_notice(tid, gid, actor, old, new, ops, kind, names)
            .await
    }

    /// Mutes members for `secs` (0: unmutes them) (owner and admins; only the owner mutes
    /// admins).
    pub(in crate::im) async fn group_mute(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        accounts: &[String],
        secs: u64,
    ) -> Result<(), ImError> {
        if secs > MAX_MUTE_SECS {
            return Err(ImError::BadRequest(format!(
                "a mute lasts at most {MAX_MUTE_SECS} s"
            )));
        }
        let users = self.users_of(tid, accounts)?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let role = require(&old, actor, GroupRole::Admin)?;
        let targets = self.targets(&old, &users, actor, role, matches!(actor, Actor::Server))?;
        let until = if secs == 0 { 0 } else { now_ms() + secs * 1000 };
        let mut new = old.edit();
        let mut ops = Vec::new();
        for (u, _) in &targets {
            if let Some(m) = new.members.get_mut(u) {
                m.muted_until_ms = until;
                ops.push(json_put(Table::GroupMembers, key::member(tid, gid, *u), m)?);
            }
        }
        let (kind, detail) = if secs == 0 {
            ("group.members_unmuted", serde_json::Value::Null)
        } else {
            ("group.members_muted", json!({ "until_ms": until }))
        };
        let names = targets.into_iter().map(|(_, a)| a).collect();
        let msg = notice(kind, actor, names, detail);
        self.group_append(
            tid,
            gid,
            msg,
            actor.uid(),
            Some(Change {
                ops,
                old: Some(old),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Sets a member's nickname in the group: one's own, or anyone's by the owner/admins.
    pub(in crate::im) async fn group_nickname(
        &self,
        tid: u64,
        actor: &Actor,
        gid: &str,
        account: &str,
        nickname: &str,
    ) -> Result<(), ImError> {
        check_len("nickname", nickname, MAX_NAME)?;
        let _manage = self.manage_lock(tid, gid).lock().await;
        let old = self.existing(tid, gid)?;
        let target = if account.is_empty() || account == actor.account() {
            require(&old, actor, GroupRole::Member)?;
            actor
                .uid()
                .ok_or_else(|| ImError::BadRequest("name the member".into()))?
        } else {
            require(&old, actor, GroupRole::Admin)?;
            old.uid_of(account)
                .ok_or_else(|| ImError::NotFound(format!("{account} is not a member")))?
        };
        let mut new = old.edit();
        let Some(m) = new.members.get_mut(&target) else {
            return Err(ImError::NotFound("no such member".into()));
        };
        if m.nickname == nickname {
            return Ok(());
        }
        m.nickname = nickname.to_owned();
        let name = m.account.clone();
        let ops = vec![json_put(
            Table::GroupMembers,
            key::member(tid, gid, target),
            m,
        )?];
        let msg = notice(
            "group.nickname_changed",
            actor,
            vec![name],
            json!({ "nickname": nickname }),
        );
        self.group_append(
            tid,
            gid,
            msg,
            actor.uid(),
            Some(Change {
                ops,
                old: Some(old),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        Ok(())
    }

    /// Members among `users` the actor may act on: not the actor, not the owner (unless
    /// `owner_ok`: the app server gags any member, as RongCloud's server API does), and
    /// admins only by the owner.
    pub(super) fn targets(
        &self,
        state: &GroupState,
        users: &[(u64, String)],
        actor: &Actor,
        role: GroupRole,
        owner_ok: bool,
    ) -> Result<Vec<(u64, String)>, ImError> {
        let mut out = Vec::new();
        for (u, a) in users {
            let Some(target) = state.role(*u) else {
                return Err(ImError::NotFound(format!("{a} is not a member")));
            };
            if Some(*u) == actor.uid() || (target == GroupRole::Owner && !owner_ok) {
                return Err(ImError::Forbidden(format!("cannot do this to {a}")));
            }
            if target == GroupRole::Admin && role != GroupRole::Owner {
                return Err(ImError::Forbidden(format!(
                    "only the owner may do this to admin {a}"
                )));
            }
            out.push((*u, a.clone()));
        }
        Ok(out)
    }

    /// Commits a change whose notice names `targets`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit_notice(
        &self,
        tid: u64,
        gid: &str,
        actor: &Actor,
        old: Arc<GroupState>,
        new: GroupState,
        ops: Vec<Op>,
        kind: &str,
        targets: Vec<String>,
    ) -> Result<(), ImError> {
        self.group_append(
            tid,
            gid,
            notice(kind, actor, targets, serde_json::Value::Null),
            actor.uid(),
            Some(Change {
                ops,
                old: Some(old),
                new: Some(new),
                joiners: Vec::new(),
            }),
        )
        .await?;
        Ok(())
    }
}
