//! The app server's push settings over REST, typed and documented in the OpenAPI document
//! (`/openapi.json`, tag `push`): device tokens (`/v1/push/register`, `unregister`,
//! `tokens`), quiet hours (`quiet_set`, `quiet_get`), the preview switch (`privacy_set`,
//! `privacy_get`) and notification templates (`templates/set`, `templates/get`). Each is
//! signed like every `/v1` call, the tenant from the signature, and forwarded to the IM
//! service's `$im/admin/push/{op}`; templates are checked here first
//! ([`super::templates::Templates::parse`]), so a bad one gets a 400 naming the problem.
//! Credentials, test pushes and the trace are in [`super::rest`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::templates::{Templates, builtin_json};
use crate::AppState;
use crate::error::ApiError;
use crate::native::handlers::{AnyObject, ErrorBody};
use crate::native::{Answer, Signed, body, with};

/// A device's push token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenBody {
    pub user: String,
    /// apns, fcm, huawei, xiaomi, oppo, vivo, honor, meizu.
    pub vendor: String,
    pub token: String,
    /// iOS bundle id / Android package name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// APNs development environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    /// The device's language (zh-CN, en): which templates its pushes use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

/// A token to forget.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UnregisterBody {
    pub user: String,
    pub token: String,
}

/// A user.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserBody {
    pub user: String,
}

/// A user, or (without) the tenant.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MaybeUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Quiet hours of a user, or (without `user`) the tenant's default.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct QuietBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// "HH:MM" local time.
    #[serde(default)]
    pub start: String,
    /// "HH:MM"; before `start`: the window crosses midnight.
    #[serde(default)]
    pub end: String,
    /// An IANA time-zone name (Asia/Shanghai), daylight saving included; wins over
    /// `utc_offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// "+08:00", "-05:30", "Z".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,
    /// silent (default) or suppress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Clear the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off: Option<bool>,
}

/// The preview switch of a user, or (without `user`) of the whole tenant.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PrivacyBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Pushes say only "You have a new message" (the `hidden` template).
    pub hide_preview: bool,
}

/// The tenant's notification templates (docs/push.md, Templates).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TemplatesBody {
    /// `{language: {kind: {title, body}}}`; kinds text, image, file, voice, video,
    /// location, call, other, group_text ... group_other, app, system, hidden;
    /// placeholders {sender}, {group}, {app}, {text}, {file}. Replaces the whole set.
    #[schema(value_type = Object)]
    pub templates: Value,
    /// The language for devices whose own has no templates (default en).
    #[serde(default)]
    pub default_lang: String,
}

/// Forwards `b` (with the signature's tenant) to `$im/admin/push/{op}`.
async fn forward<T: Serialize>(s: &AppState, op: &str, tenant: u64, b: &T) -> Answer {
    let v = serde_json::to_value(b).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(
        s.service
            .call(&format!("push/{op}"), &with(v, json!({ "tenant": tenant })))
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/push/register", tag = "push", request_body = TokenBody,
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody),
               (status = 404, body = ErrorBody)))]
pub async fn register(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: TokenBody = body(&req.body)?;
    forward(&s, "register", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/unregister", tag = "push", request_body = UnregisterBody,
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody),
               (status = 404, body = ErrorBody)))]
pub async fn unregister(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: UnregisterBody = body(&req.body)?;
    forward(&s, "unregister", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/tokens", tag = "push", request_body = UserBody,
    security(("signature" = [])),
    responses((status = 200, description = "{tokens: [...], quiet, hide_preview}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn tokens(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: UserBody = body(&req.body)?;
    forward(&s, "tokens", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/quiet_set", tag = "push", request_body = QuietBody,
    security(("signature" = [])),
    responses((status = 200, description = "{quiet}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn quiet_set(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: QuietBody = body(&req.body)?;
    forward(&s, "quiet_set", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/quiet_get", tag = "push", request_body = MaybeUser,
    security(("signature" = [])),
    responses((status = 200, description = "{quiet: the user's own, effective: what applies}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn quiet_get(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: MaybeUser = body(&req.body)?;
    forward(&s, "quiet_get", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/privacy_set", tag = "push", request_body = PrivacyBody,
    security(("signature" = [])),
    responses((status = 200, description = "{hide_preview}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn privacy_set(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: PrivacyBody = body(&req.body)?;
    forward(&s, "privacy_set", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/privacy_get", tag = "push", request_body = MaybeUser,
    security(("signature" = [])),
    responses((status = 200, description = "{tenant, user, hide_preview: what applies}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn privacy_get(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: MaybeUser = body(&req.body)?;
    forward(&s, "privacy_get", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/templates/set", tag = "push", request_body = TemplatesBody,
    security(("signature" = [])),
    responses((status = 200, body = AnyObject), (status = 400, body = ErrorBody)))]
pub async fn templates_set(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: TemplatesBody = body(&req.body)?;
    Templates::parse(&b.templates, &b.default_lang)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    forward(&s, "templates/set", req.tenant.id, &b).await
}

#[utoipa::path(post, path = "/v1/push/templates/get", tag = "push", request_body = AnyObject,
    security(("signature" = [])),
    responses((status = 200, description = "{templates, default_lang, builtin: the zh and en defaults}", body = AnyObject),
               (status = 400, body = ErrorBody)))]
pub async fn templates_get(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let mut v = s
        .service
        .call("push/templates/get", &json!({ "tenant": req.tenant.id }))
        .await?;
    v["builtin"] = builtin_json();
    Ok(Json(v))
}
