//! RongCloud's blacklist, word filter and group endpoints, over the IM service's `social`,
//! `moderation` and `group` requests (docs/im/*.md).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::{Answer, RcError, RcRequest, ok, targets};
use crate::AppState;
use crate::native::auth::unix_now;

/// The routes of this file.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/user/blacklist/add.json", post(blacklist_add))
        .route("/user/blacklist/remove.json", post(blacklist_remove))
        .route("/user/blacklist/query.json", post(blacklist_query))
        .route("/wordfilter/add.json", post(word_add))
        .route("/wordfilter/delete.json", post(word_delete))
        .route("/wordfilter/list.json", post(word_list))
        .route("/group/create.json", post(group_create))
        .route("/group/join.json", post(group_join))
        .route("/group/quit.json", post(group_quit))
        .route("/group/dismiss.json", post(group_dismiss))
        .route("/group/refresh.json", post(group_refresh))
        .route("/group/sync.json", post(group_sync))
        .route("/group/user/query.json", post(group_members))
        .route("/group/user/gag/add.json", post(gag_add))
        .route("/group/user/gag/rollback.json", post(gag_rollback))
        .route("/group/user/gag/list.json", post(gag_list))
}

async fn call(s: &AppState, op: &str, mut body: Value, tenant: u64) -> Result<Value, RcError> {
    body["tenant"] = tenant.into();
    Ok(s.service.call(op, &body).await?)
}

async fn blacklist_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let black = targets(&r, "blackUserId")?;
    call(
        &s,
        "social/block",
        json!({ "user": user, "users": black }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn blacklist_remove(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let black = targets(&r, "blackUserId")?;
    call(
        &s,
        "social/unblock",
        json!({ "user": user, "users": black }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn blacklist_query(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let mut users = Vec::new();
    let mut after = Value::Null;
    // Paged on our side; RongCloud answers the whole list.
    for _ in 0..20 {
        let mut body = json!({ "user": user, "limit": 500 });
        if !after.is_null() {
            body["after"] = after.clone();
        }
        let v = call(&s, "social/blocked", body, r.tenant.id).await?;
        for u in v["users"].as_array().into_iter().flatten() {
            users.push(u["user"].clone());
        }
        after = v["next"].clone();
        if after.is_null() || after.as_str().is_some_and(str::is_empty) {
            break;
        }
    }
    Ok(ok(json!({ "users": users })))
}

async fn word_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let word = r.need("word")?;
    call(
        &s,
        "moderation/add_words",
        json!({ "words": [word] }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn word_delete(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let word = r.need("word")?;
    call(
        &s,
        "moderation/remove_words",
        json!({ "words": [word] }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn word_list(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let v = call(&s, "moderation/words", json!({}), r.tenant.id).await?;
    let words: Vec<Value> = v["words"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| json!({ "word": w }))
        .collect();
    Ok(ok(json!({ "words": words })))
}

async fn group_create(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let members = targets(&r, "userId")?;
    let group = r.need("groupId")?;
    let name = r.get("groupName").unwrap_or(group);
    call(
        &s,
        "group/create",
        json!({ "group_id": group, "name": name, "members": members }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn group_join(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let members = targets(&r, "userId")?;
    let group = r.need("groupId")?;
    // RongCloud creates the group on join when it does not exist yet.
    let joined = call(
        &s,
        "group/join",
        json!({ "group_id": group, "members": members }),
        r.tenant.id,
    )
    .await;
    match joined {
        Ok(_) => {}
        Err(e) if e.code == 1002 && e.message.contains("not found") => {
            let name = r.get("groupName").unwrap_or(group);
            call(
                &s,
                "group/create",
                json!({ "group_id": group, "name": name, "members": members }),
                r.tenant.id,
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    Ok(ok(json!({})))
}

async fn group_quit(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let members = targets(&r, "userId")?;
    let group = r.need("groupId")?;
    call(
        &s,
        "group/quit",
        json!({ "group_id": group, "members": members }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn group_dismiss(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let group = r.need("groupId")?;
    call(
        &s,
        "group/dismiss",
        json!({ "group_id": group }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn group_refresh(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let group = r.need("groupId")?;
    let name = r.need("groupName")?;
    call(
        &s,
        "group/update",
        json!({ "group_id": group, "name": name }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn group_sync(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    // `group[{id}]={name}` pairs.
    let groups: Vec<Value> = r
        .pairs()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("group[")?.strip_suffix(']')?;
            Some(json!({ "id": id, "name": v }))
        })
        .collect();
    call(
        &s,
        "group/sync",
        json!({ "user": user, "groups": groups }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

/// Every member of a group (pages of 500).
async fn all_members(s: &AppState, tenant: u64, group: &str) -> Result<Vec<Value>, RcError> {
    let mut out = Vec::new();
    let mut token = Value::Null;
    for _ in 0..20 {
        let mut body = json!({ "group_id": group, "limit": 500 });
        if !token.is_null() {
            body["page_token"] = token.clone();
        }
        let v = call(s, "group/members", body, tenant).await?;
        out.extend(v["members"].as_array().cloned().unwrap_or_default());
        token = v["next_page_token"].clone();
        if token.is_null() || token.as_str().is_some_and(str::is_empty) {
            break;
        }
    }
    Ok(out)
}

async fn group_members(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let group = r.need("groupId")?;
    let users: Vec<Value> = all_members(&s, r.tenant.id, group)
        .await?
        .iter()
        .map(|m| json!({ "id": m["account"] }))
        .collect();
    Ok(ok(json!({ "users": users })))
}

async fn gag_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let members = targets(&r, "userId")?;
    let group = r.need("groupId")?;
    let minutes: u64 = r
        .need("minute")?
        .parse()
        .ok()
        .filter(|m| (1..=43_200).contains(m))
        .ok_or_else(|| RcError::param("minute must be 1..=43200"))?;
    call(
        &s,
        "group/mute",
        json!({ "group_id": group, "members": members, "duration_secs": minutes * 60 }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn gag_rollback(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let members = targets(&r, "userId")?;
    let group = r.need("groupId")?;
    call(
        &s,
        "group/mute",
        json!({ "group_id": group, "members": members, "duration_secs": 0 }),
        r.tenant.id,
    )
    .await?;
    Ok(ok(json!({})))
}

async fn gag_list(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let group = r.need("groupId")?;
    let now_ms = unix_now() * 1000;
    let users: Vec<Value> = all_members(&s, r.tenant.id, group)
        .await?
        .iter()
        .filter(|m| m["muted_until_ms"].as_u64().is_some_and(|t| t > now_ms))
        .map(|m| {
            // RongCloud gives the end of the gag as "yyyy-MM-dd HH:mm:ss"; we give Unix ms.
            json!({ "userId": m["account"], "time": m["muted_until_ms"] })
        })
        .collect();
    Ok(Json(json!({ "code": 200, "users": users })))
}
