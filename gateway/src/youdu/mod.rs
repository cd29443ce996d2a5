//! Youdu's server API (seed 002), in shape with the seed and Youdu's published SDKs: an
//! enterprise app's server exchanges its buin + appId for an access token
//! (`POST /cgi/gettoken`) and sends text messages to users and departments
//! (`POST /cgi/msg/send?accessToken=...`), every body encrypted with the app's
//! EncodingAESKey ([`crypto`]). Messages arrive in each user's conversation with that
//! workbench app (`a:{appId}:{uid}`), badge included.
//!
//! Access tokens are stateless (any gateway instance checks them): the expiry and an
//! HMAC-SHA256, keyed with the app's AES key, over buin, appId and the expiry. Error codes
//! are Youdu's (`errcode`): 100000–100014 for tokens and envelopes, 200001/200007 for
//! recipients, -1 for a broker failure.

pub mod crypto;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use ring::hmac;
use serde_json::{Value, json};

use crate::AppState;
use crate::native::auth::{WINDOW_SECS, hex, unix_now};
use crypto::YouduKey;

/// Lifetime of an access token (seconds), as Youdu's.
const TOKEN_TTL: u64 = 7200;
/// Longest text (characters); longer ones are cut.
const MAX_TEXT_CHARS: usize = 600;

const ERR_INTERNAL: i64 = -1;
const ERR_MISS_TOKEN: i64 = 100000;
const ERR_TOKEN_INVALID: i64 = 100001;
const ERR_TOKEN_EXPIRED: i64 = 100002;
const ERR_INVALID_REQUEST: i64 = 100003;
const ERR_BAD_JSON: i64 = 100004;
const ERR_INVALID_APPID: i64 = 100005;
const ERR_DECRYPT: i64 = 100006;
const ERR_MISS_BUIN: i64 = 100008;
const ERR_INVALID_BUIN: i64 = 100009;
const ERR_MISS_APPID: i64 = 100010;
const ERR_MISS_ENCRYPT: i64 = 100011;
const ERR_TOUSER_OVERLIMIT: i64 = 200001;
const ERR_INVALID_TOUSER: i64 = 200007;

fn err(code: i64, msg: &str) -> Json<Value> {
    tracing::info!(errcode = code, errmsg = msg, "youdu: request refused");
    Json(json!({ "errcode": code, "errmsg": msg }))
}

/// A request body of at most the gateway's body limit; a larger one is refused with 413
/// and Youdu's answer shape (axum's own refusal would be plain text).
struct Body(Bytes);

impl FromRequest<Arc<AppState>> for Body {
    type Rejection = (StatusCode, Json<Value>);

    async fn from_request(req: Request, s: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        axum::body::to_bytes(req.into_body(), s.body_limit)
            .await
            .map(Body)
            .map_err(|_| {
                let msg = format!("请求体过大 (body larger than {} bytes)", s.body_limit);
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    err(ERR_INVALID_REQUEST, &msg),
                )
            })
    }
}

/// The routes, at Youdu's paths.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/cgi/gettoken", post(get_token))
        .route("/cgi/msg/send", post(send))
}

/// A workbench app as this API needs it.
struct App {
    id: String,
    tenant: u64,
    buin: u64,
    key: YouduKey,
}

/// Parses the `{buin, appId, encrypt}` envelope and finds the app; the Youdu error if not.
async fn envelope(s: &AppState, body: &[u8]) -> Result<(App, String), Json<Value>> {
    let v: Value = serde_json::from_slice(body).map_err(|_| err(ERR_BAD_JSON, "错误的消息格式"))?;
    let buin = match v.get("buin") {
        None | Some(Value::Null) => return Err(err(ERR_MISS_BUIN, "缺少企业号(buin)")),
        Some(b) => b
            .as_u64()
            .ok_or_else(|| err(100012, "企业号字段格式不正确"))?,
    };
    let app_id = match v.get("appId") {
        None | Some(Value::Null) => return Err(err(ERR_MISS_APPID, "缺少应用ID(appId)")),
        Some(a) => a
            .as_str()
            .ok_or_else(|| err(100013, "应用ID字段格式不正确"))?,
    };
    let encrypt = match v.get("encrypt") {
        None | Some(Value::Null) => return Err(err(ERR_MISS_ENCRYPT, "缺少加密字段")),
        Some(e) => e
            .as_str()
            .ok_or_else(|| err(100014, "encrypt字段格式不正确"))?,
    };
    let a = match s
        .service
        .call("app/get_any", &json!({ "app_id": app_id }))
        .await
    {
        Ok(a) => a,
        Err(crate::service::ServiceError::Api { .. }) => {
            return Err(err(ERR_INVALID_APPID, "无效的AppId"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "youdu: broker unavailable");
            return Err(err(ERR_INTERNAL, "系统繁忙"));
        }
    };
    if !a["compat_apis"].as_bool().unwrap_or(true) {
        return Err(err(
            3,
            "接口权限不足 (Youdu's API is off for this enterprise)",
        ));
    }
    if s.auth
        .admit(
            a["tenant"].as_u64().unwrap_or_default(),
            a["api_rate_per_sec"].as_u64().unwrap_or_default() as u32,
        )
        .is_err()
    {
        return Err(err(ERR_INTERNAL, "系统繁忙 (rate limited)"));
    }
    if a["buin"].as_u64() != Some(buin) {
        return Err(err(ERR_INVALID_BUIN, "无效的企业号"));
    }
    let key = YouduKey::new(a["encoding_aes_key"].as_str().unwrap_or_default())
        .map_err(|_| err(ERR_INTERNAL, "bad app key"))?;
    let app = App {
        id: app_id.to_owned(),
        tenant: a["tenant"].as_u64().unwrap_or_default(),
        buin,
        key,
    };
    Ok((app, encrypt.to_owned()))
}

fn random16() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 16];
    // A failing system RNG leaves zeros: the prefix is padding, not a secret.
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    r
}

fn token_mac(app: &App, expiry: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &app.key_bytes());
    let msg = format!("youdu-token:{}:{}:{expiry}", app.buin, app.id);
    hex(hmac::sign(&key, msg.as_bytes()).as_ref())
}

impl App {
    fn key_bytes(&self) -> Vec<u8> {
        // The token key is derived from the AES key, never the AES key itself.
        let d = ring::digest::digest(&ring::digest::SHA256, self.key.fingerprint_input());
        d.as_ref().to_vec()
    }
}

async fn get_token(State(s): State<Arc<AppState>>, Body(body): Body) -> Json<Value> {
    let (app, encrypt) = match envelope(&s, &body).await {
        Ok(x) => x,
        Err(e) => return e,
    };
    let Ok(plain) = app.key.decrypt(&encrypt, &app.id) else {
        return err(ERR_DECRYPT, "encrypt字段解密失败");
    };
    let ts: Option<u64> = std::str::from_utf8(&plain)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let now = unix_now();
    if ts.is_none_or(|t| t.abs_diff(now) > WINDOW_SECS) {
        return err(
            ERR_INVALID_REQUEST,
            "时间戳无效 (timestamp missing or stale)",
        );
    }
    let expiry = now + TOKEN_TTL;
    let token = format!("{expiry}.{}", token_mac(&app, expiry));
    let answer = json!({ "accessToken": token, "expireIn": TOKEN_TTL }).to_string();
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "encrypt": app.key.encrypt(answer.as_bytes(), &app.id, random16()),
    }))
}

/// Checks an access token against the app.
fn check_token(app: &App, token: &str) -> Result<(), Json<Value>> {
    let (exp, mac) = token
        .split_once('.')
        .ok_or_else(|| err(ERR_TOKEN_INVALID, "ACCESS_TOKEN不存在"))?;
    let expiry: u64 = exp
        .parse()
        .map_err(|_| err(ERR_TOKEN_INVALID, "ACCESS_TOKEN不存在"))?;
    let expected = token_mac(app, expiry);
    use subtle::ConstantTimeEq;
    if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return Err(err(ERR_TOKEN_INVALID, "ACCESS_TOKEN不存在"));
    }
    if expiry < unix_now() {
        return Err(err(ERR_TOKEN_EXPIRED, "ACCESS_TOKEN过期"));
    }
    Ok(())
}

/// The recipients named by a `|`-separated list (empty entries skipped).
fn split(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn send(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    Body(body): Body,
) -> Json<Value> {
    // The first `accessToken` of the query string (parsed by hand: a repeated or odd
    // parameter is no reason for a non-Youdu answer).
    let token = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "accessToken")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return err(ERR_MISS_TOKEN, "空的ACCESS_TOKEN");
    };
    let (app, encrypt) = match envelope(&s, &body).await {
        Ok(x) => x,
        Err(e) => return e,
    };
    if let Err(e) = check_token(&app, &token) {
        return e;
    }
    let Ok(plain) = app.key.decrypt(&encrypt, &app.id) else {
        return err(ERR_DECRYPT, "encrypt字段解密失败");
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&plain) else {
        return err(ERR_BAD_JSON, "错误的消息格式");
    };
    if msg["msgType"].as_str() != Some("text") {
        return err(ERR_INVALID_REQUEST, "msgType 仅支持 text");
    }
    let text: String = msg["text"]["content"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(MAX_TEXT_CHARS)
        .collect();
    if text.is_empty() {
        return err(ERR_INVALID_REQUEST, "text.content 为空");
    }
    let users = split(msg["toUser"].as_str());
    let depts = split(msg["toDept"].as_str());
    if users.len() > 1000 || depts.len() > 100 {
        return err(ERR_TOUSER_OVERLIMIT, "toUser超过长度");
    }
    if users.is_empty() && depts.is_empty() {
        return err(ERR_INVALID_TOUSER, "无效的toUser");
    }
    let Some(dept_ids) = depts
        .iter()
        .map(|d| d.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()
    else {
        return err(ERR_INVALID_REQUEST, "无效的部门ID格式");
    };
    let r = s
        .service
        .call(
            "app/notice",
            &json!({ "tenant": app.tenant, "app_id": app.id, "users": users,
                     "depts": dept_ids, "text": text }),
        )
        .await;
    match r {
        Ok(v) => {
            let unknown: Vec<&str> = v["unknown"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if unknown.is_empty() {
                Json(json!({ "errcode": 0, "errmsg": "ok" }))
            } else {
                Json(
                    json!({ "errcode": 0, "errmsg": format!("invalid toUser: {}", unknown.join("|")) }),
                )
            }
        }
        Err(crate::service::ServiceError::Api { code: 404, message }) => {
            err(ERR_INVALID_REQUEST, &message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "youdu msg/send failed");
            err(ERR_INTERNAL, "系统繁忙")
        }
    }
}
