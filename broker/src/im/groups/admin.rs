//! The app server's group requests, `$im/admin/group/{op}` (JSON in and out; RongCloud's
//! model: the app server chooses group ids, creates groups with their members, joins and
//! quits users, dismisses, syncs a user's groups, and has the owner's rights everywhere).
//! Shapes: `docs/im/groups.md`.

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::{Actor, MAX_ACCOUNTS};
use crate::im::{ImError, ImLogin, ImService, random_hex};

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct Create {
    tenant: u64,
    group_id: String,
    #[serde(default)]
    name: String,
    /// Default: the first member.
    owner: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    join_mode: Option<String>,
    #[serde(default)]
    avatar: String,
    #[serde(default)]
    announcement: String,
}

#[derive(Deserialize)]
struct Target {
    tenant: u64,
    group_id: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct Update {
    tenant: u64,
    group_id: String,
    name: Option<String>,
    avatar: Option<String>,
    announcement: Option<String>,
    join_mode: Option<String>,
    all_muted: Option<bool>,
}

#[derive(Deserialize)]
struct Transfer {
    tenant: u64,
    group_id: String,
    owner: String,
}

#[derive(Deserialize)]
struct Admins {
    tenant: u64,
    group_id: String,
    members: Vec<String>,
    admin: bool,
}

#[derive(Deserialize)]
struct Mute {
    tenant: u64,
    group_id: String,
    members: Vec<String>,
    duration_secs: u64,
}

#[derive(Deserialize)]
struct Page {
    tenant: u64,
    group_id: Option<String>,
    user: Option<String>,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    limit: u32,
    /// `list`: text the group id or name contains.
    #[serde(default)]
    q: String,
}

#[derive(Deserialize)]
struct Decide {
    tenant: u64,
    group_id: String,
    user: String,
    approve: bool,
}

#[derive(Deserialize)]
struct SyncGroup {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Sync {
    tenant: u64,
    user: String,
    groups: Vec<SyncGroup>,
}

#[derive(Deserialize)]
struct Send {
    tenant: u64,
    group_id: String,
    from: String,
    text: String,
    client_msg_id: Option<String>,
    #[serde(default)]
    mentions: Vec<String>,
    #[serde(default)]
    mention_all: bool,
}

fn join_mode(m: Option<&str>) -> Result<Option<i32>, ImError> {
    match m {
        None => Ok(None),
        Some("open") => Ok(Some(im::JoinMode::Open as i32)),
        Some("approval") => Ok(Some(im::JoinMode::Approval as i32)),
        Some(other) => Err(ImError::BadRequest(format!(
            "join_mode {other:?}: \"open\" or \"approval\""
        ))),
    }
}

/// A group's information as JSON.
pub(super) fn info_json(g: &im::GroupInfo) -> Value {
    json!({
        "group_id": g.group_id,
        "name": g.name,
        "avatar": g.avatar,
        "announcement": g.announcement,
        "join_mode": if g.join_mode == im::JoinMode::Approval as i32 { "approval" } else { "open" },
        "owner": g.owner,
        "member_count": g.member_count,
        "max_members": g.max_members,
        "all_muted": g.all_muted,
        "created_ms": g.created_ms,
    })
}

fn role_name(r: i32) -> &'static str {
    match im::GroupRole::try_from(r) {
        Ok(im::GroupRole::Owner) => "owner",
        Ok(im::GroupRole::Admin) => "admin",
        _ => "member",
    }
}

/// Runs one request.
pub(super) async fn request(im: &ImService, op: &str, payload: &[u8]) -> Result<Value, ImError> {
    let actor = Actor::Server;
    Ok(match op {
        "create" => {
            let r: Create = parse(payload)?;
            let owner_account = r
                .owner
                .clone()
                .or_else(|| r.members.first().cloned())
                .ok_or_else(|| ImError::BadRequest("a group needs an owner or members".into()))?;
            let owner = im
                .user(r.tenant, &owner_account)?
                .ok_or_else(|| ImError::NotFound(format!("user {owner_account}")))?;
            if r.group_id.is_empty() {
                return Err(ImError::BadRequest("group_id is required".into()));
            }
            let req = im::CreateGroupRequest {
                group_id: r.group_id,
                name: r.name,
                avatar: r.avatar,
                announcement: r.announcement,
                join_mode: join_mode(r.join_mode.as_deref())?.unwrap_or_default(),
                members: r.members,
            };
            let g = im
                .group_create(r.tenant, (owner.uid, owner.account), req)
                .await?;
            g.group.as_ref().map(info_json).unwrap_or_default()
        }
        "join" => {
            let r: Target = parse(payload)?;
            let resp = im
                .group_invite(r.tenant, &actor, &r.group_id, &r.members)
                .await?;
            json!({ "added": resp.added })
        }
        "quit" => {
            let r: Target = parse(payload)?;
            for a in &r.members {
                let u = im
                    .user(r.tenant, a)?
                    .ok_or_else(|| ImError::NotFound(format!("user {a}")))?;
                im.group_leave(r.tenant, u.uid, &r.group_id).await?;
            }
            json!({})
        }
        "kick" => {
            let r: Target = parse(payload)?;
            im.group_kick(r.tenant, &actor, &r.group_id, &r.members)
                .await?;
            json!({})
        }
        "dismiss" => {
            let r: Target = parse(payload)?;
            im.group_dismiss(r.tenant, &actor, &r.group_id).await?;
            json!({})
        }
        "info" => {
            let r: Target = parse(payload)?;
            let g = im.group_info(r.tenant, &actor, &r.group_id)?;
            g.group.as_ref().map(info_json).unwrap_or_default()
        }
        "update" => {
            let r: Update = parse(payload)?;
            let req = im::UpdateGroupRequest {
                group_id: r.group_id,
                name: r.name,
                avatar: r.avatar,
                announcement: r.announcement,
                join_mode: join_mode(r.join_mode.as_deref())?,
                all_muted: r.all_muted,
            };
            let g = im.group_update(r.tenant, &actor, req).await?;
            g.group.as_ref().map(info_json).unwrap_or_default()
        }
        "transfer" => {
            let r: Transfer = parse(payload)?;
            im.group_transfer(r.tenant, &actor, &r.group_id, &r.owner)
                .await?;
            json!({})
        }
        "set_admins" => {
            let r: Admins = parse(payload)?;
            im.group_set_admins(r.tenant, &actor, &r.group_id, &r.members, r.admin)
                .await?;
            json!({})
        }
        "mute" => {
            let r: Mute = parse(payload)?;
            im.group_mute(r.tenant, &actor, &r.group_id, &r.members, r.duration_secs)
                .await?;
            json!({})
        }
        "members" => {
            let r: Page = parse(payload)?;
            let gid = r
                .group_id
                .ok_or_else(|| ImError::BadRequest("group_id is required".into()))?;
            let page = im.group_members(r.tenant, None, &gid, &r.page_token, r.limit)?;
            let members: Vec<Value> = page
                .members
                .iter()
                .map(|m| {
                    json!({
                        "account": m.account,
                        "role": role_name(m.role),
                        "nickname": m.nickname,
                        "muted_until_ms": m.muted_until_ms,
                        "joined_ms": m.joined_ms,
                    })
                })
                .collect();
            json!({ "members": members, "next_page_token": page.next_page_token })
        }
        "list" => {
            let r: Page = parse(payload)?;
            json!(im.tenant_groups(r.tenant, &r.q, &r.page_token, r.limit)?)
        }
        "user_groups" => {
            let r: Page = parse(payload)?;
            let account = r
                .user
                .ok_or_else(|| ImError::BadRequest("user is required".into()))?;
            let u = im
                .user(r.tenant, &account)?
                .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
            let page = im.user_groups(r.tenant, u.uid, &r.page_token, r.limit)?;
            let groups: Vec<Value> = page.groups.iter().map(info_json).collect();
            json!({ "groups": groups, "next_page_token": page.next_page_token })
        }
        "pending" => {
            let r: Target = parse(payload)?;
            let p = im.group_pending(r.tenant, &actor, &r.group_id)?;
            let requests: Vec<Value> = p
                .requests
                .iter()
                .map(|q| {
                    json!({
                        "user": q.account,
                        "invited_by": q.invited_by,
                        "message": q.message,
                        "requested_ms": q.requested_ms,
                    })
                })
                .collect();
            json!({ "requests": requests })
        }
        "decide" => {
            let r: Decide = parse(payload)?;
            im.group_decide(r.tenant, &actor, &r.group_id, &r.user, r.approve)
                .await?;
            json!({})
        }
        "sync" => {
            let r: Sync = parse(payload)?;
            sync(im, r).await?
        }
        "send" => {
            let r: Send = parse(payload)?;
            let u = im
                .user(r.tenant, &r.from)?
                .ok_or_else(|| ImError::NotFound(format!("user {}", r.from)))?;
            let login = ImLogin {
                tenant: r.tenant,
                uid: u.uid,
                account: u.account,
                platform: String::new(),
                token_id: String::new(),
            };
            let req = im::SendRequest {
                to: r.group_id,
                conv_type: im::ConvType::Group as i32,
                client_msg_id: match r.client_msg_id {
                    Some(id) => id,
                    None => random_hex(8)?,
                },
                content: Some(im::Content {
                    body: Some(im::content::Body::Text(im::Text { text: r.text })),
                }),
                mentions: r.mentions,
                mention_all: r.mention_all,
                ..im::SendRequest::default()
            };
            let s = im.send_group(&login, 0, req).await?;
            json!({ "conversation": s.conversation, "seq": s.seq, "duplicate": s.duplicate })
        }
        other => return Err(ImError::NotFound(format!("no such request: group/{other}"))),
    })
}

/// RongCloud's "sync a user's groups": the user ends up a member of exactly the groups
/// listed (missing groups are created with the user as owner; groups not listed are left).
async fn sync(im: &ImService, r: Sync) -> Result<Value, ImError> {
    if r.groups.len() > MAX_ACCOUNTS {
        return Err(ImError::BadRequest(format!(
            "more than {MAX_ACCOUNTS} groups"
        )));
    }
    let u = im
        .user(r.tenant, &r.user)?
        .ok_or_else(|| ImError::NotFound(format!("user {}", r.user)))?;
    let (mut created, mut joined, mut left) = (Vec::new(), Vec::new(), Vec::new());
    for g in &r.groups {
        if im.is_group_member(r.tenant, &g.id, u.uid)? {
            continue;
        }
        let exists = im.group_record(r.tenant, &g.id)?.is_some();
        if exists {
            im.group_invite(
                r.tenant,
                &Actor::Server,
                &g.id,
                std::slice::from_ref(&u.account),
            )
            .await?;
            joined.push(g.id.clone());
        } else {
            let req = im::CreateGroupRequest {
                group_id: g.id.clone(),
                name: g.name.clone(),
                ..im::CreateGroupRequest::default()
            };
            im.group_create(r.tenant, (u.uid, u.account.clone()), req)
                .await?;
            created.push(g.id.clone());
        }
    }
    let mut token = String::new();
    loop {
        let page = im.user_groups(r.tenant, u.uid, &token, 0)?;
        for g in &page.groups {
            if !r.groups.iter().any(|x| x.id == g.group_id) {
                left.push(g.group_id.clone());
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    for gid in &left {
        im.group_leave(r.tenant, u.uid, gid).await?;
    }
    Ok(json!({ "created": created, "joined": joined, "left": left }))
}
