//! The handlers of the native API. Each is annotated for the OpenAPI document
//! ([`super::openapi`]): the document is generated from these definitions.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{AREAS, Answer, MAX_BATCH, Params, Signed, body, with};
use crate::AppState;
use crate::error::ApiError;

/// An error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code (docs/gateway.md).
    pub code: u32,
    pub message: String,
    /// The request's id (also the `X-Request-Id` answer header).
    pub request_id: Option<String>,
}

/// A JSON object (the answer or body of an IM service request).
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct AnyObject(pub serde_json::Map<String, Value>);

/// Message content: `{"type": "text", "text": ...}` and the other types of docs/gateway.md.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Content {
    /// text, emoji, image, voice, video, file, location, rich, custom.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct NewTenant {
    pub name: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct NewUser {
    pub user_id: String,
    #[serde(default)]
    pub name: String,
    pub password: Option<String>,
}

/// Users per `create_users` service call (the broker's own limit is 500).
const USERS_PER_CALL: usize = 500;

#[derive(Deserialize, ToSchema)]
pub struct UserBatch {
    /// 1 to 1,000 users; existing ones are updated.
    pub users: Vec<NewUser>,
}

#[derive(Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<String>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct TokenOptions {
    /// phone, pc, web or pad.
    #[serde(default)]
    pub device: String,
    /// Seconds (default 7 days).
    pub ttl: Option<u64>,
}

#[derive(Deserialize, Default, ToSchema)]
pub struct BanOptions {
    /// How long; absent: indefinitely.
    pub minutes: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
pub struct Revoke {
    pub token: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PrivateMessage {
    pub from: String,
    pub to: String,
    pub content: Content,
    /// Makes a resend idempotent.
    pub client_msg_id: Option<String>,
    #[serde(default)]
    pub mentions: Vec<String>,
    #[serde(default)]
    pub mention_all: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct BatchMessage {
    pub from: String,
    /// 1 to 1,000 recipients.
    pub to: Vec<String>,
    pub content: Content,
    pub client_msg_id: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SystemMessage {
    pub to: String,
    /// A text notice, or `content`.
    #[serde(default)]
    pub text: String,
    pub content: Option<Content>,
    /// A workbench app's message instead of a system notice.
    pub app: Option<String>,
    pub client_msg_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReadUpTo {
    pub seq: u64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PublishBody {
    /// A topic of the tenant's namespace, as its devices name it.
    pub topic: String,
    pub payload: Option<String>,
    pub payload_base64: Option<String>,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
}

#[derive(Deserialize, IntoParams)]
pub struct Since {
    /// Only conversations changed after this time (Unix ms).
    #[serde(default)]
    pub since_ms: u64,
}

#[derive(Deserialize, IntoParams)]
pub struct Page {
    /// Messages before this seq (0: from the newest).
    #[serde(default)]
    pub before_seq: u64,
    /// At most this many (default 50, at most 500).
    #[serde(default)]
    pub limit: u32,
    /// Only messages at or after this time (Unix ms); with `from_ms` or `to_ms` the
    /// range is by time and `before_seq` is ignored.
    pub from_ms: Option<u64>,
    /// Only messages before this time (Unix ms).
    pub to_ms: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
pub struct RetainedQuery {
    /// An MQTT filter of the tenant's topics.
    pub filter: String,
    pub limit: Option<usize>,
}

/// Forwards a typed body as JSON to the IM service's `op`, with the tenant added.
async fn forward<T: Serialize>(s: &AppState, op: &str, tenant: u64, v: &T) -> Answer {
    let v = serde_json::to_value(v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let v = with(v, json!({ "tenant": tenant }));
    Ok(Json(s.service.call(op, &v).await?))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "account", request_body = NewTenant,
    params(("Account-Id" = String, Header), ("Account-Token" = String, Header)),
    responses((status = 200, description = "{tenant_id, app_key, app_secret, buin}", body = AnyObject),
               (status = 401, body = ErrorBody)))]
pub async fn create_tenant(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Answer {
    let account = s.auth.account(&s.service, &headers).await?;
    let r: NewTenant = body(&raw)?;
    let v = s
        .service
        .call(
            "create_tenant",
            &json!({ "name": r.name, "account": account }),
        )
        .await?;
    Ok(Json(v))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = UserBatch,
    security(("signature" = [])),
    responses((status = 200, description = "{users: [{user_id, uid} or {user_id, error: {code, message}}]}, in order", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn register_users(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: UserBatch = body(&req.body)?;
    if r.users.is_empty() || r.users.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "users must hold 1..={MAX_BATCH} entries"
        )));
    }
    // One service call per chunk (the broker's batch op), a row per user in order: a bad
    // row is answered with its error and does not stop the others.
    let mut out = Vec::with_capacity(r.users.len());
    for chunk in r.users.chunks(USERS_PER_CALL) {
        let v = s
            .service
            .call(
                "create_users",
                &json!({ "tenant": req.tenant.id, "users": chunk, "upsert": true }),
            )
            .await?;
        if let Some(rows) = v["users"].as_array() {
            out.extend(rows.iter().cloned());
        }
    }
    Ok(Json(json!({ "users": out })))
}

#[utoipa::path(post, path = "/v1/users/online", tag = "users", request_body = UserList,
    security(("signature" = [])),
    responses((status = 200, description = "{users: {user: {online, devices}}}", body = AnyObject),
               (status = 400, body = ErrorBody)))]
pub async fn online(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: UserList = body(&req.body)?;
    let v = json!({ "tenant": req.tenant.id, "users": r.users });
    Ok(Json(s.service.call("online", &v).await?))
}

#[utoipa::path(post, path = "/v1/users/{user}/token", tag = "users", request_body = TokenOptions,
    params(("user" = String, Path)), security(("signature" = [])),
    responses((status = 200, description = "{token}", body = AnyObject), (status = 404, body = ErrorBody)))]
pub async fn token(
    State(s): State<Arc<AppState>>,
    Path(user): Path<String>,
    req: Signed,
) -> Answer {
    let r: TokenOptions = body(&req.body)?;
    let v = s
        .service
        .call(
            "token",
            &json!({ "tenant": req.tenant.id, "user": user, "device": r.device, "ttl": r.ttl }),
        )
        .await?;
    Ok(Json(v))
}

#[utoipa::path(post, path = "/v1/users/{user}/kick", tag = "users",
    params(("user" = String, Path)), security(("signature" = [])),
    responses((status = 200, description = "{devices}", body = AnyObject), (status = 404, body = ErrorBody)))]
pub async fn kick(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user });
    Ok(Json(s.service.call("kick", &v).await?))
}

#[utoipa::path(post, path = "/v1/users/{user}/ban", tag = "users", request_body = BanOptions,
    params(("user" = String, Path)), security(("signature" = [])),
    responses((status = 200, description = "{until}", body = AnyObject), (status = 404, body = ErrorBody)))]
pub async fn ban(State(s): State<Arc<AppState>>, Path(user): Path<String>, req: Signed) -> Answer {
    let r: BanOptions = body(&req.body)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Saturating: a ban of u64::MAX minutes is "forever", not an overflow.
    let until = now.saturating_add(r.minutes.unwrap_or(100 * 365 * 24 * 60).saturating_mul(60));
    let v = json!({ "tenant": req.tenant.id, "user": user, "until": until });
    s.service.call("ban", &v).await?;
    Ok(Json(json!({ "until": until })))
}

#[utoipa::path(post, path = "/v1/users/{user}/unban", tag = "users",
    params(("user" = String, Path)), security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 404, body = ErrorBody)))]
pub async fn unban(
    State(s): State<Arc<AppState>>,
    Path(user): Path<String>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user, "until": 0 });
    Ok(Json(s.service.call("ban", &v).await?))
}

#[utoipa::path(get, path = "/v1/users/{user}/conversations", tag = "conversations",
    params(("user" = String, Path), Since), security(("signature" = [])),
    responses((status = 200, description = "{conversations, unread_total, server_time_ms}", body = AnyObject),
               (status = 404, body = ErrorBody)))]
pub async fn conversations(
    State(s): State<Arc<AppState>>,
    Path(user): Path<String>,
    Params(q): Params<Since>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "user": user, "since_ms": q.since_ms });
    Ok(Json(s.service.call("conversations", &v).await?))
}

#[utoipa::path(get, path = "/v1/users/{user}/conversations/{conv}/messages", tag = "conversations",
    params(("user" = String, Path), ("conv" = String, Path), Page), security(("signature" = [])),
    responses((status = 200, description = "{messages (newest first), more}; by seq, or by time with from_ms/to_ms", body = AnyObject),
               (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(s): State<Arc<AppState>>,
    Path((user, conv)): Path<(String, String)>,
    Params(q): Params<Page>,
    req: Signed,
) -> Answer {
    if q.from_ms.is_some() || q.to_ms.is_some() {
        let range = (q.from_ms.unwrap_or(0), q.to_ms.unwrap_or(u64::MAX));
        let limit = match q.limit {
            0 => 50,
            n => n.min(500) as usize,
        };
        return super::messages::history_between(&s, req.tenant.id, &user, &conv, range, limit)
            .await;
    }
    let v = json!({ "tenant": req.tenant.id, "user": user, "conversation": conv,
                    "before_seq": q.before_seq, "limit": q.limit });
    Ok(Json(s.service.call("history", &v).await?))
}

#[utoipa::path(post, path = "/v1/users/{user}/conversations/{conv}/read", tag = "conversations",
    request_body = ReadUpTo, params(("user" = String, Path), ("conv" = String, Path)),
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(s): State<Arc<AppState>>,
    Path((user, conv)): Path<(String, String)>,
    req: Signed,
) -> Answer {
    let r: ReadUpTo = body(&req.body)?;
    let v = json!({ "tenant": req.tenant.id, "user": user, "conversation": conv, "seq": r.seq });
    Ok(Json(s.service.call("read", &v).await?))
}

#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "users", request_body = Revoke,
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody)))]
pub async fn revoke(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: Revoke = body(&req.body)?;
    Ok(Json(
        s.service
            .call(
                "revoke_token",
                &json!({ "token": r.token, "tenant": req.tenant.id }),
            )
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/messages/private", tag = "messages", request_body = PrivateMessage,
    security(("signature" = [])),
    responses((status = 200, description = "{conversation, seq, server_time_ms, duplicate}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn send_private(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: PrivateMessage = body(&req.body)?;
    let v = serde_json::to_value(&r).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let v = with(
        v,
        json!({ "tenant": req.tenant.id, "conv_type": "private" }),
    );
    Ok(Json(s.service.call("send", &v).await?))
}

#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages", request_body = BatchMessage,
    security(("signature" = [])),
    responses((status = 200, description = "{results: {user: answer or {error}}}", body = AnyObject),
               (status = 400, body = ErrorBody)))]
pub async fn send_batch(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: BatchMessage = body(&req.body)?;
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

#[utoipa::path(post, path = "/v1/messages/system", tag = "messages", request_body = SystemMessage,
    security(("signature" = [])),
    responses((status = 200, description = "{conversation, seq}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn send_system(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: SystemMessage = body(&req.body)?;
    forward(&s, "system_message", req.tenant.id, &r).await
}

#[utoipa::path(post, path = "/v1/publish", tag = "iot", request_body = PublishBody,
    security(("signature" = [])),
    responses((status = 200, description = "{topic, matched}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn iot_publish(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let r: PublishBody = body(&req.body)?;
    forward(&s, "iot/publish", req.tenant.id, &r).await
}

#[utoipa::path(get, path = "/v1/retained", tag = "iot", params(RetainedQuery),
    security(("signature" = [])),
    responses((status = 200, description = "{messages: [{topic, qos, payload_base64}]}", body = AnyObject),
               (status = 400, body = ErrorBody)))]
pub async fn iot_retained(
    State(s): State<Arc<AppState>>,
    Params(q): Params<RetainedQuery>,
    req: Signed,
) -> Answer {
    let v = json!({ "tenant": req.tenant.id, "filter": q.filter, "limit": q.limit });
    Ok(Json(s.service.call("iot/retained", &v).await?))
}

#[utoipa::path(post, path = "/v1/{area}/{op}", tag = "areas", request_body = AnyObject,
    params(("area" = String, Path, description = "group, room, social, moderation, dir, broadcast, app, hooks, push"),
           ("op" = String, Path, description = "the area's operation (docs/im/*.md)")),
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody),
               (status = 404, body = ErrorBody)))]
pub async fn area_call(
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
    let mut answer = s.service.call(&format!("{area}/{op}"), &v).await?;
    if area == "app" {
        crate::workbench::sign_icons(&s.signer, &mut answer);
    }
    Ok(Json(answer))
}
