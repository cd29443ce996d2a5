//! The IM side of operations (`/console/ops/im?tenant=`): a tenant's groups and chatrooms
//! (searchable, paged: `gq`/`gafter`, `rq`/`rafter`), one chatroom's or one group's members
//! (paged: `rmafter`, `gmafter`), and a message trace for one user: their
//! conversations with the last messages (sent, and how far the user has read), whether
//! they are online, and what every gateway's push worker did with pushes to them (per
//! message and in full). All through the IM service's ops (`room/*`, `group/*`,
//! `conversations`, `history`, `online`, `console/push_trace/list`).

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
/// Groups and chatrooms per page, and members per page.
const LIST_PAGE: usize = 50;
const MEMBERS_PAGE: usize = 100;
/// Push decisions shown per user.
const TRACE_PUSHES: usize = 100;

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
    /// Search text and page token of the group list.
    #[serde(default)]
    gq: String,
    #[serde(default)]
    gafter: String,
    /// Search text and page token of the chatroom list.
    #[serde(default)]
    rq: String,
    #[serde(default)]
    rafter: String,
    /// Page tokens of the chosen group's and chatroom's members.
    #[serde(default)]
    gmafter: String,
    #[serde(default)]
    rmafter: String,
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
    /// seq, from, time, text, state (read / unread / recalled), push outcomes
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
    /// Search text of the chatroom list, and the link to its next page ("" at the end).
    rq: String,
    rooms_next: String,
    room_members: Vec<Row>,
    room_members_next: String,
    /// A tenant's groups (id, name, members, owner), searchable, paged.
    groups: Vec<Row>,
    gq: String,
    groups_next: String,
    /// The search stopped at the broker's scan budget: more may match further on.
    groups_partial: bool,
    group_info: Vec<(String, String)>,
    group_members: Vec<Row>,
    group_members_next: String,
    online: Option<bool>,
    trace: Vec<TraceConv>,
    pushes: Vec<Row>,
}

/// A time in milliseconds since the epoch as operators read it: `2026-11-28 10:16:03 UTC`
/// ("" when absent, the raw value when it is not a time).
fn utc_time(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return s(v);
    };
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
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
        rq: q.rq.trim().chars().take(64).collect(),
        rooms_next: String::new(),
        room_members: Vec::new(),
        room_members_next: String::new(),
        groups: Vec::new(),
        gq: q.gq.trim().chars().take(64).collect(),
        groups_next: String::new(),
        groups_partial: false,
        group_info: Vec::new(),
        group_members: Vec::new(),
        group_members_next: String::new(),
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
        .call(
            "room/list",
            &json!({ "tenant": tid, "q": p.rq, "after": q.rafter, "limit": LIST_PAGE }),
        )
        .await?;
    p.rooms = rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| vec![s(&r["room"]), s(&r["name"]), s(&r["member_count"])])
        .collect();
    let link = |p: &ImPage, extra: &[(&str, &str)]| {
        let mut u = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("tenant", p.tenant.as_str()),
            ("room", &p.room),
            ("group", &p.group),
            ("user", &p.user),
            ("rq", &p.rq),
            ("gq", &p.gq),
        ] {
            if !v.is_empty() {
                u.append_pair(k, v);
            }
        }
        for (k, v) in extra {
            u.append_pair(k, v);
        }
        format!("/console/ops/im?{}", u.finish())
    };
    if let Some(next) = rooms["next"].as_str().filter(|n| !n.is_empty()) {
        p.rooms_next = link(&p, &[("rafter", next)]);
    }
    let groups = match st
        .call(
            "group/list",
            &json!({ "tenant": tid, "q": p.gq, "page_token": q.gafter, "limit": LIST_PAGE }),
        )
        .await
    {
        Ok(v) => v,
        Err(ConsoleError::Refused(_)) => {
            p.errors.add("gq", user.t("ops2.search_invalid"));
            json!({})
        }
        Err(e) => return Err(e),
    };
    p.groups = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                s(&g["group_id"]),
                s(&g["name"]),
                s(&g["member_count"]),
                s(&g["owner"]),
            ]
        })
        .collect();
    p.groups_partial = groups["partial"].as_bool().unwrap_or(false);
    if let Some(next) = groups["next_page_token"].as_str().filter(|n| !n.is_empty()) {
        p.groups_next = link(&p, &[("gafter", next)]);
    }
    if !p.room.is_empty() {
        match st
            .call(
                "room/members",
                &json!({ "tenant": tid, "room": p.room, "after": q.rmafter, "limit": MEMBERS_PAGE }),
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
                if let Some(next) = v["next"].as_str().filter(|n| !n.is_empty()) {
                    p.room_members_next = link(&p, &[("rmafter", next)]);
                }
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
                        &json!({ "tenant": tid, "group_id": p.group, "page_token": q.gmafter, "limit": MEMBERS_PAGE }),
                    )
                    .await?;
                p.group_members = m["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| vec![s(&m["account"]), s(&m["role"]), s(&m["nickname"])])
                    .collect();
                if let Some(next) = m["next_page_token"].as_str().filter(|n| !n.is_empty()) {
                    p.group_members_next = link(&p, &[("gmafter", next)]);
                }
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
        let peer_read = c["peer_read_seq"].as_u64().unwrap_or_default();
        let peer_delivered = c["peer_delivered_seq"].as_u64().unwrap_or_default();
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
                } else if s(&m["from"]) == p.user {
                    // Sent by the traced user: how far the other side got (1:1).
                    if seq <= peer_read {
                        user.t("ops2.state_peer_read")
                    } else if seq <= peer_delivered {
                        user.t("ops2.state_delivered")
                    } else {
                        user.t("ops2.state_sent")
                    }
                } else if seq <= read_seq {
                    user.t("ops.state_read")
                } else {
                    user.t("ops.state_stored")
                };
                vec![
                    seq.to_string(),
                    s(&m["from"]),
                    utc_time(&m["server_time_ms"]),
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
    // Every gateway's push worker reports to the broker: the pushes of this user wherever
    // they were made.
    let pushes = st
        .call(
            "console/push_trace/list",
            &json!({ "tenant": tid, "user": p.user, "limit": TRACE_PUSHES }),
        )
        .await?;
    let pushes = pushes["entries"].as_array().cloned().unwrap_or_default();
    // Each traced message shows the outcome of its pushes (the latest first).
    for c in &mut p.trace {
        for m in &mut c.messages {
            let outcomes: Vec<String> = pushes
                .iter()
                .filter(|e| s(&e["conversation"]) == c.id && s(&e["seq"]) == m[0])
                .map(|e| {
                    format!("{} {}", s(&e["vendor"]), s(&e["outcome"]))
                        .trim()
                        .to_owned()
                })
                .collect();
            m.push(outcomes.join(", "));
        }
    }
    p.pushes = pushes
        .iter()
        .map(|e| {
            let seq = e["seq"].as_u64().unwrap_or_default();
            vec![
                utc_time(&e["time_ms"]),
                s(&e["job"]),
                if seq == 0 {
                    String::new()
                } else {
                    format!("{} #{seq}", s(&e["conversation"]))
                },
                s(&e["vendor"]),
                s(&e["outcome"]),
                s(&e["detail"]),
            ]
        })
        .collect();
    Ok(())
}
