//! RongCloud's blacklist, word filter and group endpoints, over the IM service's `social`,
//! `moderation` and `group` requests (docs/im/*.md). Those that are one request built from
//! form parameters are rows of [`SIMPLE`]; the others (paging, fall-backs, conversions)
//! are written out.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::{Answer, RcError, RcRequest, ok, targets};
use crate::AppState;
use crate::native::auth::unix_now;

/// Where a field of the IM service request comes from.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A required form parameter.
    Param(&'static str),
    /// A required form parameter, as a list of one.
    ParamList(&'static str),
    /// A repeated parameter naming users (`targets`: 1 to 1,000 of them).
    Targets(&'static str),
    /// An optional parameter, else a (required) other one.
    ParamOr(&'static str, &'static str),
    /// A constant.
    Const(u64),
}

/// An endpoint that is one IM service request answered `{"code": 200}`: its path, the
/// request, and the request's fields in the order they are checked.
type Simple = (&'static str, &'static str, &'static [(&'static str, Field)]);

const SIMPLE: &[Simple] = {
    use Field::*;
    &[
        (
            "/user/blacklist/add.json",
            "social/block",
            &[("user", Param("userId")), ("users", Targets("blackUserId"))],
        ),
        (
            "/user/blacklist/remove.json",
            "social/unblock",
            &[("user", Param("userId")), ("users", Targets("blackUserId"))],
        ),
        (
            "/wordfilter/add.json",
            "moderation/add_words",
            &[("words", ParamList("word"))],
        ),
        (
            "/wordfilter/delete.json",
            "moderation/remove_words",
            &[("words", ParamList("word"))],
        ),
        (
            "/group/create.json",
            "group/create",
            &[
                ("members", Targets("userId")),
                ("group_id", Param("groupId")),
                ("name", ParamOr("groupName", "groupId")),
            ],
        ),
        (
            "/group/quit.json",
            "group/quit",
            &[
                ("members", Targets("userId")),
                ("group_id", Param("groupId")),
            ],
        ),
        (
            "/group/dismiss.json",
            "group/dismiss",
            &[("group_id", Param("groupId"))],
        ),
        (
            "/group/refresh.json",
            "group/update",
            &[("group_id", Param("groupId")), ("name", Param("groupName"))],
        ),
        (
            "/group/user/gag/rollback.json",
            "group/mute",
            &[
                ("members", Targets("userId")),
                ("group_id", Param("groupId")),
                ("duration_secs", Const(0)),
            ],
        ),
    ]
};

/// The routes of this file.
pub fn routes() -> axum::Router<Arc<AppState>> {
    let mut router = axum::Router::new();
    for spec in SIMPLE {
        router = router.route(
            spec.0,
            post(move |State(s): State<Arc<AppState>>, r: RcRequest| simple(s, r, spec)),
        );
    }
    router
        .route("/user/blacklist/query.json", post(blacklist_query))
        .route("/wordfilter/list.json", post(word_list))
        .route("/group/join.json", post(group_join))
        .route("/group/sync.json", post(group_sync))
        .route("/group/user/query.json", post(group_members))
        .route("/group/user/gag/add.json", post(gag_add))
        .route("/group/user/gag/list.json", post(gag_list))
}

/// The IM service request body of a [`SIMPLE`] endpoint (without the tenant).
fn simple_body(r: &RcRequest, fields: &[(&str, Field)]) -> Result<Value, RcError> {
    let mut body = json!({});
    for (name, from) in fields {
        body[*name] = match *from {
            Field::Param(k) => r.need(k)?.into(),
            Field::ParamList(k) => json!([r.need(k)?]),
            Field::Targets(k) => json!(targets(r, k)?),
            Field::ParamOr(k, or) => match r.get(k).filter(|v| !v.is_empty()) {
                Some(v) => v.into(),
                None => r.need(or)?.into(),
            },
            Field::Const(n) => n.into(),
        };
    }
    Ok(body)
}

async fn simple(s: Arc<AppState>, r: RcRequest, spec: &'static Simple) -> Answer {
    let body = simple_body(&r, spec.2)?;
    call(&s, spec.1, body, r.tenant.id).await?;
    Ok(ok(json!({})))
}

async fn call(s: &AppState, op: &str, mut body: Value, tenant: u64) -> Result<Value, RcError> {
    body["tenant"] = tenant.into();
    Ok(s.service.call(op, &body).await?)
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

async fn gag_list(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let group = r.need("groupId")?;
    let now_ms = unix_now() * 1000;
    let users: Vec<Value> = all_members(&s, r.tenant.id, group)
        .await?
        .iter()
        .filter(|m| m["muted_until_ms"].as_u64().is_some_and(|t| t > now_ms))
        .map(|m| {
            // RongCloud gives the end of the gag as "yyyy-MM-dd HH:mm:ss", Beijing time.
            let end = super::clock::beijing_ms(&m["muted_until_ms"]);
            json!({ "userId": m["account"], "time": end })
        })
        .collect();
    Ok(Json(json!({ "code": 200, "users": users })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::auth::TenantAuth;

    fn req(form: &[(&str, &str)]) -> RcRequest {
        RcRequest {
            tenant: TenantAuth {
                id: 1,
                secret: String::new(),
                buin: 0,
                compat: true,
                rate: 0,
            },
            form: form
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Default::default(),
            origin: String::new(),
            app_key: String::new(),
        }
    }

    fn spec(path: &str) -> &'static Simple {
        SIMPLE
            .iter()
            .find(|s| s.0 == path)
            .unwrap_or_else(|| panic!("{path} is not in SIMPLE"))
    }

    #[test]
    fn each_simple_endpoint_builds_its_request_and_names_a_missing_parameter() {
        // (path, form parameters, the request built from them)
        type Row = (&'static str, &'static [(&'static str, &'static str)], Value);
        let table: &[Row] = &[
            (
                "/user/blacklist/add.json",
                &[("userId", "a"), ("blackUserId", "b"), ("blackUserId", "c")],
                json!({"user": "a", "users": ["b", "c"]}),
            ),
            (
                "/user/blacklist/remove.json",
                &[("userId", "a"), ("blackUserId", "b")],
                json!({"user": "a", "users": ["b"]}),
            ),
            (
                "/wordfilter/add.json",
                &[("word", "bad")],
                json!({"words": ["bad"]}),
            ),
            (
                "/wordfilter/delete.json",
                &[("word", "bad")],
                json!({"words": ["bad"]}),
            ),
            (
                "/group/create.json",
                &[("userId", "a"), ("groupId", "g")],
                json!({"members": ["a"], "group_id": "g", "name": "g"}),
            ),
            (
                "/group/quit.json",
                &[("userId", "a"), ("groupId", "g")],
                json!({"members": ["a"], "group_id": "g"}),
            ),
            (
                "/group/dismiss.json",
                &[("groupId", "g")],
                json!({"group_id": "g"}),
            ),
            (
                "/group/refresh.json",
                &[("groupId", "g"), ("groupName", "G")],
                json!({"group_id": "g", "name": "G"}),
            ),
            (
                "/group/user/gag/rollback.json",
                &[("userId", "a"), ("groupId", "g")],
                json!({"members": ["a"], "group_id": "g", "duration_secs": 0}),
            ),
        ];
        assert_eq!(table.len(), SIMPLE.len(), "one row per endpoint");
        for (path, form, want) in table {
            let s = spec(path);
            assert_eq!(
                simple_body(&req(form), s.2).ok(),
                Some(want.clone()),
                "{path}"
            );
            // Without its last form parameter the request is refused, naming it.
            let (last, _) = form[form.len() - 1];
            let short: Vec<(&str, &str)> =
                form.iter().copied().filter(|(k, _)| *k != last).collect();
            match simple_body(&req(&short), s.2) {
                Err(e) => assert!(e.message.contains(last), "{path}: {}", e.message),
                Ok(v) => panic!("{path} without {last}: {v}"),
            }
        }
        let named = simple_body(
            &req(&[("userId", "a"), ("groupId", "g"), ("groupName", "Team")]),
            spec("/group/create.json").2,
        );
        assert_eq!(named.ok().map(|v| v["name"].clone()), Some(json!("Team")));
    }
}
