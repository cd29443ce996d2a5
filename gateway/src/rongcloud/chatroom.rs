//! RongCloud's chatroom endpoints, over the IM service's `room` requests
//! (docs/im/chatrooms.md). Membership in our chatrooms belongs to device connections, so
//! `/chatroom/join.json` joins every online device of each user (as if each had joined
//! over MQTT); a user with no device online is not joined (as in RongCloud, where a
//! chatroom member must be connected). `/chatroom/message/priority/add.json` names
//! low-priority message types: low is already our chatrooms' default for every type a
//! room does not list as high, so the call checks its parameters and answers 200.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::clock::beijing_ms;
use super::{Answer, RcError, RcRequest, ok, targets};
use crate::AppState;

/// The routes of this file.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/chatroom/create.json", post(create))
        .route("/chatroom/destroy.json", post(destroy))
        .route("/chatroom/query.json", post(query))
        .route("/chatroom/user/query.json", post(users))
        .route("/chatroom/message/stopDistribution.json", post(stop))
        .route("/chatroom/message/resumeDistribution.json", post(resume))
        .route("/chatroom/user/gag/add.json", post(gag_add))
        .route("/chatroom/user/gag/rollback.json", post(gag_rollback))
        .route("/chatroom/user/gag/list.json", post(gag_list))
        .route("/chatroom/user/block/add.json", post(block_add))
        .route("/chatroom/user/block/rollback.json", post(block_rollback))
        .route("/chatroom/user/block/list.json", post(block_list))
        .route("/chatroom/user/whitelist/add.json", post(whitelist_add))
        .route("/chatroom/join.json", post(join))
        .route("/chatroom/message/priority/add.json", post(priority_add))
}

/// RongCloud's limit on users per join call.
const MAX_JOIN: usize = 50;

async fn join(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let who = targets(&r, "userId")?;
    if who.len() > MAX_JOIN {
        return Err(RcError::param(format!(
            "userId 数量超限 (at most {MAX_JOIN})"
        )));
    }
    room(&s, &r, "info", json!({ "room": id })).await?;
    let mut body = json!({ "room": id, "users": who });
    body["tenant"] = r.tenant.id.into();
    s.service.call("room_join_users", &body).await?;
    Ok(ok(json!({})))
}

async fn priority_add(_s: State<Arc<AppState>>, r: RcRequest) -> Answer {
    let types = targets(&r, "objectName")?;
    if types.len() > 5 {
        return Err(RcError::param(
            "objectName 每次最多 5 个 (at most 5 per call)",
        ));
    }
    if let Some(t) = types.iter().find(|t| t.len() > 32) {
        return Err(RcError::param(format!(
            "objectName {t} longer than 32 bytes"
        )));
    }
    Ok(ok(json!({})))
}

async fn room(s: &AppState, r: &RcRequest, op: &str, mut body: Value) -> Result<Value, RcError> {
    body["tenant"] = r.tenant.id.into();
    Ok(s.service.call(&format!("room/{op}"), &body).await?)
}

fn minutes(r: &RcRequest) -> Result<u64, RcError> {
    r.need("minute")?
        .parse::<u64>()
        .ok()
        .filter(|m| (1..=43_200).contains(m))
        .ok_or_else(|| RcError::param("minute must be 1..=43200"))
}

async fn create(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    // `chatroom[{id}]={name}` pairs.
    let rooms: Vec<(String, String)> = r
        .pairs()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("chatroom[")?.strip_suffix(']')?;
            Some((id.to_owned(), v.to_owned()))
        })
        .collect();
    if rooms.is_empty() {
        return Err(RcError::param(
            "chatroom[{id}]={name} 参数为必传项 (required)",
        ));
    }
    for (id, name) in rooms {
        match room(&s, &r, "create", json!({ "room": id, "name": name })).await {
            Ok(_) => {}
            // RongCloud's create is idempotent: an existing room stays.
            Err(e) if e.message.contains("conflict") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ok(json!({})))
}

async fn destroy(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    for id in targets(&r, "chatroomId")? {
        room(&s, &r, "destroy", json!({ "room": id })).await?;
    }
    Ok(ok(json!({})))
}

async fn query(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let mut rooms = Vec::new();
    for id in targets(&r, "chatroomId")? {
        let v = room(&s, &r, "info", json!({ "room": id })).await?;
        // RongCloud gives the creation time as Beijing time.
        let created = beijing_ms(&v["created_ms"]);
        rooms.push(json!({ "chrmId": v["room"], "name": v["name"], "time": created }));
    }
    Ok(ok(json!({ "chatRooms": rooms })))
}

async fn users(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let count: u64 = r
        .get("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(500)
        .clamp(1, 500);
    let v = room(&s, &r, "members", json!({ "room": id, "limit": count })).await?;
    let mut members: Vec<Value> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| json!({ "id": m["account"], "time": beijing_ms(&m["joined_ms"]) }))
        .collect();
    if r.get("order") == Some("2") {
        members.reverse();
    }
    Ok(ok(json!({ "total": v["total"], "users": members })))
}

async fn stop(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    room(&s, &r, "pause", json!({ "room": id })).await?;
    Ok(ok(json!({})))
}

async fn resume(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    room(&s, &r, "resume", json!({ "room": id })).await?;
    Ok(ok(json!({})))
}

async fn gag_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    for_minutes(&s, &r, "gag").await
}

/// `op` (`gag` or `block`) of the `userId`s in room `chatroomId` for `minute` minutes.
async fn for_minutes(s: &AppState, r: &RcRequest, op: &str) -> Answer {
    let id = r.need("chatroomId")?;
    let who = targets(r, "userId")?;
    let secs = minutes(r)? * 60;
    room(
        s,
        r,
        op,
        json!({ "room": id, "accounts": who, "duration_secs": secs }),
    )
    .await?;
    Ok(ok(json!({})))
}

async fn gag_rollback(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let who = targets(&r, "userId")?;
    room(&s, &r, "ungag", json!({ "room": id, "accounts": who })).await?;
    Ok(ok(json!({})))
}

async fn gag_list(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let v = room(&s, &r, "gagged", json!({ "room": id })).await?;
    let users: Vec<Value> = v["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| json!({ "userId": u["account"], "time": beijing_ms(&u["until_ms"]) }))
        .collect();
    Ok(ok(json!({ "users": users })))
}

async fn block_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    for_minutes(&s, &r, "block").await
}

async fn block_rollback(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let who = targets(&r, "userId")?;
    room(&s, &r, "unblock", json!({ "room": id, "accounts": who })).await?;
    Ok(ok(json!({})))
}

async fn block_list(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let v = room(&s, &r, "blocked", json!({ "room": id })).await?;
    let users: Vec<Value> = v["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            // RongCloud gives the block's end as Beijing time.
            json!({ "userId": u["account"], "time": beijing_ms(&u["until_ms"]) })
        })
        .collect();
    Ok(ok(json!({ "users": users })))
}

async fn whitelist_add(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let id = r.need("chatroomId")?;
    let who = targets(&r, "userId")?;
    room(
        &s,
        &r,
        "whitelist_add",
        json!({ "room": id, "accounts": who }),
    )
    .await?;
    Ok(ok(json!({})))
}
