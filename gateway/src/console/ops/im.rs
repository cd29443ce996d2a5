//! The IM side of operations (`/console/ops/im?tenant=`): a tenant's chatrooms, one
//! chatroom's or one group's members, and a message trace for one user: their
//! conversations with the last messages (sent, and how far the user has read), whether
//! they are online, and the push worker's record of pushes to them. All through the IM
//! service's existing ops (`room/*`, `group/*`, `conversations`, `history`, `online`) and
//! the push worker's trace.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, Page, Role, render};

/// Conversations traced per user, and messages per conversation.
const TRACE_CONVS: usize = 10;
const TRACE_MESSAGES: u32 = 20;

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/ops/im", get(page))
}

#[derive(Deserialize, Default)]
struct Q {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    user: String,
}

/// One line of a table: cells as text.
pub type Row = Vec<String>;

/// One conversation of the trace.
pub struct TraceConv {
    pub id: String,
    pub kind: String,
    pub read_seq: u64,
    pub max_seq: u64,
    pub unread: u64,
    /// seq, from, time, text, state (read / unread / recalled)
    pub messages: Vec<Row>,
}

#[derive(askama::Template)]
#[template(path = "console/ops/im.html")]
struct ImPage {
    page: Page,
    tenant: String,
    room: String,
    group: String,
    user: String,
    errors: FieldErrors,
    rooms: Vec<Row>,
    room_members: Vec<Row>,
    group_info: Vec<(String, String)>,
    group_members: Vec<Row>,
    online: Option<bool>,
    trace: Vec<TraceConv>,
    pushes: Vec<Row>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn text_of(content: &Value) -> String {
    match content["type"].as_str() {
        Some("text") => content["text"].as_str().unwrap_or_default().to_owned(),
        Some(t) => format!("[{t}]"),
        None => String::new(),
    }
}

async fn page(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Query(q): Query<Q>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Operator)?;
    let mut p = ImPage {
        page: user.page("im"),
        tenant: q.tenant.trim().to_owned(),
        room: q.room.trim().chars().take(128).collect(),
        group: q.group.trim().chars().take(128).collect(),
        user: q.user.trim().chars().take(64).collect(),
        errors: FieldErrors::default(),
        rooms: Vec::new(),
        room_members: Vec::new(),
        group_info: Vec::new(),
        group_members: Vec::new(),
        online: None,
        trace: Vec::new(),
        pushes: Vec::new(),
    };
    if p.tenant.is_empty() {
        return Ok(render(&p));
    }
    let Ok(tid) = p.tenant.parse::<u64>() else {
        p.errors.add("tenant", user.t("ops.tenant_invalid"));
        let mut r = render(&p);
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    };
    // A tenant that does not exist is a field error, not an error page.
    match st
        .call("console/tenants/get", &json!({ "tenant": tid }))
        .await
    {
        Ok(_) => {}
        Err(ConsoleError::NotFound) => {
            p.errors.add("tenant", user.t("ops.tenant_unknown"));
            let mut r = render(&p);
            *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
        Err(e) => return Err(e),
    }
    let rooms = st
        .call("room/list", &json!({ "tenant": tid, "limit": 100 }))
        .await?;
    p.rooms = rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| vec![s(&r["room"]), s(&r["name"]), s(&r["member_count"])])
        .collect();
    if !p.room.is_empty() {
        match st
            .call(
                "room/members",
                &json!({ "tenant": tid, "room": p.room, "limit": 200 }),
            )
            .await
        {
            Ok(v) => {
                p.room_members = v["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| vec![s(&m["account"]), s(&m["devices"]), s(&m["gagged"])])
                    .collect();
            }
            Err(ConsoleError::NotFound | ConsoleError::Refused(_)) => {
                p.errors.add("room", user.t("ops.room_unknown"));
            }
            Err(e) => return Err(e),
        }
    }
    if !p.group.is_empty() {
        match st
            .call("group/info", &json!({ "tenant": tid, "group_id": p.group }))
            .await
        {
            Ok(v) => {
                p.group_info = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), s(v)))
                    .collect();
                let m = st
                    .call(
                        "group/members",
                        &json!({ "tenant": tid, "group_id": p.group, "limit": 200 }),
                    )
                    .await?;
                p.group_members = m["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| vec![s(&m["account"]), s(&m["role"]), s(&m["nickname"])])
                    .collect();
            }
            Err(ConsoleError::NotFound | ConsoleError::Refused(_)) => {
                p.errors.add("group", user.t("ops.group_unknown"));
            }
            Err(e) => return Err(e),
        }
    }
    if !p.user.is_empty() {
        trace(&st, &user, tid, &mut p).await?;
    }
    let failed = !p.errors.is_empty();
    let mut r = render(&p);
    if failed {
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

async fn trace(
    st: &ConsoleState,
    user: &ConsoleUser,
    tid: u64,
    p: &mut ImPage,
) -> Result<(), ConsoleError> {
    let convs = match st
        .call("conversations", &json!({ "tenant": tid, "user": p.user }))
        .await
    {
        Ok(v) => v,
        Err(ConsoleError::NotFound | ConsoleError::Refused(_)) => {
            p.errors.add("user", user.t("ops.user_unknown"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let online = st
        .call("online", &json!({ "tenant": tid, "users": [p.user] }))
        .await?;
    p.online = online["users"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|u| u["online"].as_bool());
    for c in convs["conversations"]
        .as_array()
        .into_iter()
        .flatten()
        .take(TRACE_CONVS)
    {
        let id = s(&c["id"]);
        let read_seq = c["read_seq"].as_u64().unwrap_or_default();
        let h = st
            .call(
                "history",
                &json!({ "tenant": tid, "user": p.user, "conversation": id, "limit": TRACE_MESSAGES }),
            )
            .await?;
        let messages = h["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let seq = m["seq"].as_u64().unwrap_or_default();
                let state = if m["recalled"].as_bool().unwrap_or(false) {
                    user.t("ops.state_recalled")
                } else if seq <= read_seq {
                    user.t("ops.state_read")
                } else {
                    user.t("ops.state_stored")
                };
                vec![
                    seq.to_string(),
                    s(&m["from"]),
                    s(&m["server_time_ms"]),
                    text_of(&m["content"]),
                    state.to_owned(),
                ]
            })
            .collect();
        p.trace.push(TraceConv {
            id,
            kind: s(&c["type"]),
            read_seq,
            max_seq: c["max_seq"].as_u64().unwrap_or_default(),
            unread: c["unread"].as_u64().unwrap_or_default(),
            messages,
        });
    }
    if let Some(w) = &st.app.push {
        p.pushes = w
            .trace(tid, &p.user, 50)
            .into_iter()
            .map(|e| {
                vec![
                    e.time_ms.to_string(),
                    e.job,
                    e.vendor,
                    e.outcome.to_owned(),
                    e.detail,
                ]
            })
            .collect();
    }
    Ok(())
}
