//! The native REST API (`/v1`, JSON) for app servers: every call is signed
//! ([`auth`]) and becomes one administrative request to the IM service over MQTT; the
//! answer comes back as JSON. Areas of IM part 2 (groups, chatrooms, contacts, moderation,
//! directory, broadcast) are reachable as `POST /v1/{area}/{op}` with the same JSON body
//! as their `$im/admin/{area}/{op}` request (docs/im/*.md), the tenant filled in from the
//! signature. docs/gateway.md lists the endpoints.

pub mod auth;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use auth::TenantAuth;

/// Areas reachable through `POST /v1/{area}/{op}`.
const AREAS: [&str; 9] = [
    "group",
    "room",
    "social",
    "moderation",
    "dir",
    "broadcast",
    "app",
    "hooks",
    "push",
];
/// Most users in one batch (registration, batch messages, online status).
const MAX_BATCH: usize = 1000;

type Answer = Result<Json<Value>, ApiError>;

/// The routes of `/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/users", post(register_users))
        .route("/v1/users/online", post(online))
        .route("/v1/users/{user}/token", post(token))
        .route("/v1/users/{user}/kick", post(kick))
        .route("/v1/users/{user}/ban", post(ban))
        .route("/v1/users/{user}/unban", post(unban))
        .route("/v1/users/{user}/conversations", get(conversations))
        .route(
            "/v1/users/{user}/conversations/{conv}/messages",
            get(history),
        )
        .route("/v1/users/{user}/conversations/{conv}/read", post(read))
        .route("/v1/tokens/revoke", post(revoke))
        .route("/v1/messages/private", post(send_private))
        .route("/v1/messages/batch", post(send_batch))
        .route("/v1/messages/system", post(send_system))
        .route("/v1/publish", post(iot_publish))
        .route("/v1/files", post(crate::files::upload))
        .route("/v1/files/{id}/url", post(crate::files::refresh_url))
        .route("/v1/retained", get(iot_retained))
        .route("/v1/{area}/{op}", post(area_call))
}

/// A request whose signature checked out: its tenant and body.
pub struct Signed {
    pub tenant: TenantAuth,
    pub body: Bytes,
    /// The request's Content-Type (multipart uploads need its boundary).
    pub content_type: String,
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let limit = if parts.uri.path() == "/v1/files" {
            crate::files::MAX_FILE_BYTES + 64 * 1024
        } else {
            state.body_limit
        };
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        let content_type = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let tenant = state
            .auth
            .verify(&state.service, &parts.headers, &body)
            .await?;
        state.auth.admit(tenant.id, tenant.rate)?;
        Ok(Signed {
            tenant,
            body,
            content_type,
        })
    }
}

/// Parses a JSON body.
fn body<T: DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    if b.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::bad_request(format!("a JSON body is required: {e}")));
    }
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// Adds fields to a JSON object.
fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

async fn create_tenant(State(s): State<Arc<AppState>>, headers: HeaderMap, raw: Bytes) -> Answer {
    #[derive(Deserialize)]
    struct New {
        name: String,
    }
    let account = s.auth.account(&s.service, &headers).await?;
    let r: New = body(&raw)?;
    let v = s
        .service
        .call(
            "create_tenant",
            &json!({ "name": r.name, "account": account }),
        )
        .await?;
    Ok(Json(v))
}

async fn register_users(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    #[derive(Deserialize)]
    struct User {
        user_id: String,
        #[serde(default)]
        name: String,
        password: Option<String>,
    }
    #[derive(Deserialize)]
    struct Batch {
        users: Vec<User>,
    }
    let r: Batch = body(&req.body)?;
    if r.users.is_empty() || r.users.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "users must hold 1..={MAX_BATCH} entries"
        )));
    }
    let mut out = Vec::with_capacity(r.users.len());
    for u in r.users {
        let v = s
            .service
            .call(
                "create_user",
                &json!({ "tenant": req.tenant.id, "account": u.user_id, "name": u.name,
                         "password": u.password, "upsert": true }),
            )
            .await?;
        out.push(v);
    }
    Ok(Json(json!({ "users": out })))
}

async fn online(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    let v = with(v, json!({ "tenant": req.tenant.id }));
    Ok(Json(s.service.call("online", &v).await?))
}

async fn token(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    #[derive(Deserialize)]
    struct Opts {
        #[serde(default)]
        device: String,
        ttl: Option<u64>,
    }
    let r: Opts = body(&req.body)?;
    let v = s
        .service
        .call(
            "token",
            &json!({ "tenant": req.tenant.id, "user": user, "device": r.device, "ttl": r.ttl }),
        )
        .await?;
    Ok(Json(v))
}

async fn kick(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user });
    Ok(Json(s.service.call("kick", &v).await?))
}

async fn ban(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    #[derive(Deserialize)]
    struct Opts {
        /// How long; absent: 100 years.
        minutes: Option<u64>,
    }
    let r: Opts = body(&req.body)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let until = now + r.minutes.unwrap_or(100 * 365 * 24 * 60).saturating_mul(60);
    let v = json!({ "tenant": req.tenant.id, "user": user, "until": until });
    s.service.call("ban", &v).await?;
    Ok(Json(json!({ "until": until })))
}

async fn unban(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user, "until": 0 });
    Ok(Json(s.service.call("ban", &v).await?))
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since_ms: u64,
}

async fn conversations(
    State(s): State<Arc<AppState>>,
    Path(user): Path<String>,
    Query(q): Query<Since>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user, "since_ms": q.since_ms });
    Ok(Json(s.service.call("conversations", &v).await?))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    before_seq: u64,
    #[serde(default)]
    limit: u32,
}

async fn history(
    State(s): State<Arc<AppState>>,
    Path((user, conv)): Path<(String, String)>,
    Query(q): Query<Page>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user, "conversation": conv,
                    "before_seq": q.before_seq, "limit": q.limit });
    Ok(Json(s.service.call("history", &v).await?))
}

async fn read(
    State(s): State<Arc<AppState>>,
    Path((user, conv)): Path<(String, String)>,
    req: Signed,
) -> Answer {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    let r: Seq = body(&req.body)?;
    let v = json!({ "tenant": req.tenant.id, "user": user, "conversation": conv, "seq": r.seq });
    Ok(Json(s.service.call("read", &v).await?))
}

async fn revoke(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    Ok(Json(s.service.call("revoke_token", &v).await?))
}

async fn send_private(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    let v = with(
        v,
        json!({ "tenant": req.tenant.id, "conv_type": "private" }),
    );
    Ok(Json(s.service.call("send", &v).await?))
}

async fn send_batch(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    #[derive(Deserialize)]
    struct Batch {
        from: String,
        to: Vec<String>,
        content: Value,
        client_msg_id: Option<String>,
    }
    let r: Batch = body(&req.body)?;
    if r.to.is_empty() || r.to.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "to must hold 1..={MAX_BATCH} users"
        )));
    }
    let mut results = serde_json::Map::new();
    for to in r.to {
        // One id per recipient, derived from the caller's: a retried batch is idempotent.
        let id = r.client_msg_id.as_ref().map(|id| format!("{id}:{to}"));
        let v = json!({ "tenant": req.tenant.id, "from": r.from, "to": to,
                        "content": r.content, "client_msg_id": id });
        let out = match s.service.call("send", &v).await {
            Ok(v) => v,
            Err(e) => {
                let e = ApiError::from(e);
                json!({ "error": { "code": e.code, "message": e.message } })
            }
        };
        results.insert(to, out);
    }
    Ok(Json(json!({ "results": results })))
}

async fn send_system(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    let v = with(v, json!({ "tenant": req.tenant.id }));
    Ok(Json(s.service.call("system_message", &v).await?))
}

async fn iot_publish(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    let v = with(v, json!({ "tenant": req.tenant.id }));
    Ok(Json(s.service.call("iot/publish", &v).await?))
}

#[derive(Deserialize)]
struct RetainedQuery {
    filter: String,
    limit: Option<usize>,
}

async fn iot_retained(
    State(s): State<Arc<AppState>>,
    Query(q): Query<RetainedQuery>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "filter": q.filter, "limit": q.limit });
    Ok(Json(s.service.call("iot/retained", &v).await?))
}

async fn area_call(
    State(s): State<Arc<AppState>>,
    Path((area, op)): Path<(String, String)>,
    req: Signed,
) -> Answer {
    // `hooks/answer` is the gateway's own call to the broker, never an app server's.
    let internal = area == "hooks" && !matches!(op.as_str(), "set" | "get");
    if !AREAS.contains(&area.as_str()) || internal {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            format!("no such endpoint: /v1/{area}/{op}"),
        ));
    }
    let v: Value = body(&req.body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let v = with(v, json!({ "tenant": req.tenant.id }));
    Ok(Json(s.service.call(&format!("{area}/{op}"), &v).await?))
}
