//! RongCloud's server API (seed 003), so that an app server built on RongCloud moves over
//! by changing its API host: the same paths, form parameters, signature and JSON answers,
//! translated into the same service calls as the native API.
//!
//! Signature: headers `App-Key`, `Nonce`, `Timestamp` (milliseconds) and `Signature` = hex
//! SHA-1 of app secret + nonce + timestamp; older SDKs send them prefixed `RC-`: both are
//! accepted. Answers are `{"code": 200, ...}`; errors `{"code": N, "errorMessage": ...}` with
//! RongCloud's codes: 1002 bad parameter (HTTP 400), 1004 signature (HTTP 401), 1008 rate
//! limit (HTTP 429), 1000 server error (HTTP 500). docs/gateway.md lists what is served.

pub mod chatroom;
pub mod clock;
pub mod content;
pub mod history;
pub mod push;
pub mod social;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ring::digest;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;
use crate::native::auth::{TenantAuth, WINDOW_SECS, header, hex, unix_now};
use crate::service::ServiceError;

/// Most recipients of one publish call (RongCloud's limit).
const MAX_TARGETS: usize = 1000;

/// A RongCloud error answer.
#[derive(Debug)]
pub struct RcError {
    status: StatusCode,
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl RcError {
    pub(crate) fn param(message: impl Into<String>) -> RcError {
        RcError {
            status: StatusCode::BAD_REQUEST,
            code: 1002,
            message: message.into(),
        }
    }

    fn signature(message: impl Into<String>) -> RcError {
        RcError {
            status: StatusCode::UNAUTHORIZED,
            code: 1004,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for RcError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Api { code, message } if code < 500 => RcError {
                status: StatusCode::BAD_REQUEST,
                code: if code == 429 { 1008 } else { 1002 },
                message,
            },
            other => {
                let e = ApiError::from(other);
                RcError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: 1000,
                    message: e.message,
                }
            }
        }
    }
}

impl From<ApiError> for RcError {
    fn from(e: ApiError) -> Self {
        match e.status {
            StatusCode::UNAUTHORIZED => RcError::signature(e.message),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST => RcError::param(e.message),
            s => RcError {
                status: s,
                code: 1000,
                message: e.message,
            },
        }
    }
}

impl IntoResponse for RcError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "errorMessage": self.message })),
        )
            .into_response()
    }
}

pub(crate) type Answer = Result<Json<Value>, RcError>;

pub(crate) fn ok(extra: Value) -> Json<Value> {
    let mut v = json!({ "code": 200 });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    Json(v)
}

/// A signed RongCloud request: its tenant and its form parameters.
pub struct RcRequest {
    pub tenant: TenantAuth,
    form: Vec<(String, String)>,
    /// The raw body (the JSON endpoints: tags, push).
    body: Bytes,
    /// Scheme and host the caller reached us by (`http://host`), for absolute URLs.
    pub(crate) origin: String,
    /// The App-Key the call was signed with.
    pub(crate) app_key: String,
}

impl RcRequest {
    /// The body as JSON (`/user/tag/set.json`, `/push.json`).
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, RcError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| RcError::param(format!("body is not the expected JSON: {e}")))
    }

    /// Every parameter, in order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.form.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of parameter `k`.
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// A required parameter.
    pub(crate) fn need(&self, k: &str) -> Result<&str, RcError> {
        self.get(k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RcError::param(format!("{k} 参数为必传项 (required)")))
    }

    /// Every value of a repeated parameter (`toUserId=a&toUserId=b`).
    fn all(&self, k: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A signature header, with or without the `RC-` prefix.
fn rc_header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header(h, name).or_else(|| header(h, &format!("rc-{name}")))
}

/// Hex SHA-1 of secret + nonce + timestamp.
pub fn signature(secret: &str, nonce: &str, timestamp: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(secret.as_bytes());
    ctx.update(nonce.as_bytes());
    ctx.update(timestamp.as_bytes());
    hex(ctx.finish().as_ref())
}

impl FromRequest<Arc<AppState>> for RcRequest {
    type Rejection = RcError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, RcError> {
        let (parts, body) = req.into_parts();
        let h = &parts.headers;
        let origin = format!(
            "{}://{}",
            header(h, "x-forwarded-proto").unwrap_or("http"),
            header(h, "host").unwrap_or("127.0.0.1")
        );
        let (Some(app_key), Some(nonce), Some(ts), Some(sig)) = (
            rc_header(h, "app-key"),
            rc_header(h, "nonce"),
            rc_header(h, "timestamp"),
            rc_header(h, "signature"),
        ) else {
            return Err(RcError::signature(
                "App-Key, Nonce, Timestamp and Signature headers are required",
            ));
        };
        let ms: u64 = ts
            .parse()
            .map_err(|_| RcError::signature("Timestamp must be Unix milliseconds"))?;
        let now = unix_now();
        if (ms / 1000).abs_diff(now) > WINDOW_SECS {
            return Err(RcError::signature("Timestamp outside ±300 seconds"));
        }
        if nonce.is_empty() || nonce.len() > 128 {
            return Err(RcError::signature("Nonce must be 1..=128 bytes"));
        }
        let tenant = state.auth.tenant(&state.service, app_key).await?;
        let expected = signature(&tenant.secret, nonce, ts);
        if !bool::from(
            expected
                .as_bytes()
                .ct_eq(sig.to_ascii_lowercase().as_bytes()),
        ) {
            tracing::info!(app_key, "gateway (RongCloud): signature mismatch");
            return Err(RcError::signature("签名错误 (signature mismatch)"));
        }
        state
            .auth
            .remember_nonce(tenant.id, &format!("rc:{nonce}"), now)?;
        if !tenant.compat {
            return Err(RcError {
                status: StatusCode::FORBIDDEN,
                code: 1004,
                message: "RongCloud's API is turned off for this app".into(),
            });
        }
        state
            .auth
            .admit(tenant.id, tenant.rate)
            .map_err(|_| RcError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: 1008,
                message: "调用频率超限 (rate limited)".into(),
            })?;
        let body: Bytes = axum::body::to_bytes(body, state.body_limit)
            .await
            .map_err(|_| RcError::param("body too large"))?;
        let form = form_urlencoded::parse(&body).into_owned().collect();
        Ok(RcRequest {
            tenant,
            form,
            body,
            origin,
            app_key: app_key.to_owned(),
        })
    }
}

/// The routes, at RongCloud's paths.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/user/getToken.json", post(get_token))
        .route("/user/refresh.json", post(refresh))
        .route("/user/checkOnline.json", post(check_online))
        .route("/user/block.json", post(block))
        .route("/user/unblock.json", post(unblock))
        .route("/user/block/query.json", post(block_query))
        .route("/message/broadcast.json", post(broadcast))
        .route("/message/private/publish.json", post(publish_private))
        .route("/message/system/publish.json", post(publish_system))
        .route("/message/group/publish.json", post(publish_group))
        .route("/message/chatroom/publish.json", post(publish_chatroom))
        .merge(social::routes())
        .merge(chatroom::routes())
        .merge(push::routes())
        .merge(history::routes())
}

async fn get_token(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    if user.len() > 64 {
        return Err(RcError::param("userId 长度超限 (longer than 64 bytes)"));
    }
    let name = r.get("name").unwrap_or_default();
    s.service
        .call(
            "create_user",
            &json!({ "tenant": r.tenant.id, "account": user, "name": name, "upsert": true }),
        )
        .await?;
    let v = s
        .service
        .call("token", &json!({ "tenant": r.tenant.id, "user": user }))
        .await?;
    Ok(ok(json!({ "userId": user, "token": v["token"] })))
}

async fn refresh(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let mut body = json!({ "tenant": r.tenant.id, "account": user, "upsert": true });
    if let Some(name) = r.get("name") {
        body["name"] = name.into();
    }
    // Only existing users are refreshed.
    let online = s
        .service
        .call("online", &json!({ "tenant": r.tenant.id, "users": [user] }))
        .await?;
    if online["users"][user]["exists"].as_bool() != Some(true) {
        return Err(RcError::param(format!("userId {user} does not exist")));
    }
    s.service.call("create_user", &body).await?;
    Ok(ok(json!({})))
}

async fn check_online(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let v = s
        .service
        .call("online", &json!({ "tenant": r.tenant.id, "users": [user] }))
        .await?;
    let on = v["users"][user]["online"].as_bool().unwrap_or(false);
    Ok(ok(json!({ "status": if on { "1" } else { "0" } })))
}

async fn block(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    let minutes: u64 = r
        .need("minute")?
        .parse()
        .ok()
        .filter(|m| (1..=43_200).contains(m))
        .ok_or_else(|| RcError::param("minute must be 1..=43200"))?;
    let until = unix_now() + minutes * 60;
    s.service
        .call(
            "ban",
            &json!({ "tenant": r.tenant.id, "user": user, "until": until }),
        )
        .await?;
    Ok(ok(json!({})))
}

async fn unblock(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let user = r.need("userId")?;
    s.service
        .call(
            "ban",
            &json!({ "tenant": r.tenant.id, "user": user, "until": 0 }),
        )
        .await?;
    Ok(ok(json!({})))
}

/// `{"users": [{"userId", "blockEndTime": "2015-01-11 01:28:20"}]}`, Beijing time.
async fn block_query(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let v = s
        .service
        .call("banned_users", &json!({ "tenant": r.tenant.id }))
        .await?;
    let users: Vec<Value> = v["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            json!({ "userId": u["user_id"],
                    "blockEndTime": clock::beijing(u["until"].as_u64().unwrap_or_default()) })
        })
        .collect();
    Ok(ok(json!({ "users": users })))
}

/// The recipients of a publish call (1..=1,000).
pub(crate) fn targets<'a>(r: &'a RcRequest, k: &str) -> Result<Vec<&'a str>, RcError> {
    let t = r.all(k);
    if t.is_empty() || t.iter().any(|x| x.is_empty()) {
        return Err(RcError::param(format!("{k} 参数为必传项 (required)")));
    }
    if t.len() > MAX_TARGETS {
        return Err(RcError::param(format!(
            "{k} 数量超限 (at most {MAX_TARGETS})"
        )));
    }
    Ok(t)
}

/// The message of a publish call as our content object.
fn message(r: &RcRequest) -> Result<Value, RcError> {
    content::from_rongcloud(r.need("objectName")?, r.need("content")?).map_err(RcError::param)
}

/// The one shape of the `/message/*/publish.json` handlers: the message of the call, its
/// targets (1..=1,000, parameter `targets_key`), one service call per target whose body
/// `call` makes from the target and the content.
async fn publish_each(
    s: &AppState,
    r: &RcRequest,
    targets_key: &str,
    call: impl Fn(&str, &Value) -> (&'static str, Value),
) -> Answer {
    let to = targets(r, targets_key)?;
    let content = message(r)?;
    for t in to {
        let (op, body) = call(t, &content);
        s.service.call(op, &body).await?;
    }
    Ok(ok(json!({})))
}

/// Sends the message from `fromUserId` to each target as `conv_type`.
async fn send_each(s: &AppState, r: &RcRequest, conv_type: &str, targets_key: &str) -> Answer {
    let from = r.need("fromUserId")?;
    let tenant = r.tenant.id;
    publish_each(s, r, targets_key, |to, content| {
        let body = json!({ "tenant": tenant, "from": from, "to": to,
                           "conv_type": conv_type, "content": content });
        ("send", body)
    })
    .await
}

async fn publish_private(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    send_each(&s, &r, "private", "toUserId").await
}

async fn publish_group(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    send_each(&s, &r, "group", "toGroupId").await
}

async fn publish_chatroom(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    send_each(&s, &r, "chatroom", "toChatroomId").await
}

async fn publish_system(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    // RongCloud names a sender; our system conversation's messages come from the tenant.
    r.need("fromUserId")?;
    let tenant = r.tenant.id;
    publish_each(&s, &r, "toUserId", |to, content| {
        let body = json!({ "tenant": tenant, "to": to, "content": content });
        ("system_message", body)
    })
    .await
}

/// A message to every user of the app (RongCloud: a system-type conversation; offline
/// devices get a notification). Answers `{"code": 200, "id"}`.
async fn broadcast(State(s): State<Arc<AppState>>, r: RcRequest) -> Answer {
    let from = r.need("fromUserId")?;
    let content = message(&r)?;
    let id = format!("{:016x}", rand::random::<u64>());
    s.service
        .call(
            "broadcast/all",
            &json!({ "tenant": r.tenant.id, "from": from, "content": content,
                     "client_msg_id": id }),
        )
        .await?;
    Ok(ok(json!({ "id": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_sha1_hex_of_secret_nonce_timestamp() {
        // SHA-1("abc") from FIPS 180-2.
        assert_eq!(
            signature("a", "b", "c"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
