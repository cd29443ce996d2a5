//! The native REST API (`/v1`, JSON) for app servers: every call is signed
//! ([`auth`]) and becomes one administrative request to the IM service over MQTT; the
//! answer comes back as JSON. Areas of IM part 2 (groups, chatrooms, contacts, moderation,
//! directory, broadcast) are reachable as `POST /v1/{area}/{op}` with the same JSON body
//! as their `$im/admin/{area}/{op}` request (docs/im/*.md), the tenant filled in from the
//! signature. docs/gateway.md lists the endpoints.

pub mod auth;
pub mod handlers;
pub mod messages;
pub mod openapi;
pub mod tenants;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use auth::TenantAuth;

/// Areas reachable through `POST /v1/{area}/{op}`.
pub(crate) const AREAS: [&str; 9] = [
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
pub(crate) const MAX_BATCH: usize = 1000;

pub(crate) type Answer = Result<Json<Value>, ApiError>;

/// The routes of `/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    use handlers::*;
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .route("/v1/tenants", post(create_tenant))
        .route(
            "/v1/tenants/{id}/settings",
            get(tenants::get_settings).put(tenants::put_settings),
        )
        .route("/v1/tenants/{id}/secret", post(tenants::rotate_secret))
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
        .route("/v1/messages/recall", post(messages::recall))
        .route("/v1/messages/import", post(messages::import))
        .route("/v1/publish", post(iot_publish))
        .route("/v1/files", post(crate::files::upload))
        .route("/v1/files/{id}/url", post(crate::files::refresh_url))
        .route(
            "/v1/apps/{app_id}/icon",
            post(crate::workbench::upload_icon),
        )
        .route("/v1/retained", get(iot_retained))
        .route(
            "/v1/push/credentials/{op}",
            post(crate::push::rest::credentials),
        )
        .route("/v1/push/test", post(crate::push::rest::test))
        .route("/v1/push/trace", post(crate::push::rest::trace))
        .route("/v1/push/register", post(crate::push::api::register))
        .route("/v1/push/unregister", post(crate::push::api::unregister))
        .route("/v1/push/tokens", post(crate::push::api::tokens))
        .route("/v1/push/quiet_set", post(crate::push::api::quiet_set))
        .route("/v1/push/quiet_get", post(crate::push::api::quiet_get))
        .route("/v1/push/privacy_set", post(crate::push::api::privacy_set))
        .route("/v1/push/privacy_get", post(crate::push::api::privacy_get))
        .route(
            "/v1/push/templates/set",
            post(crate::push::api::templates_set),
        )
        .route(
            "/v1/push/templates/get",
            post(crate::push::api::templates_get),
        )
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
        let path = parts.uri.path();
        let limit = if path == "/v1/files" {
            crate::files::MAX_FILE_BYTES + 64 * 1024
        } else if path.starts_with("/v1/apps/") && path.ends_with("/icon") {
            crate::workbench::MAX_ICON_BYTES + 64 * 1024
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

/// A query string parsed into `T`; a malformed one is a JSON `{code: 400, message}` error
/// like every other (axum's own `Query` answers plain text).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// Parses a JSON body.
pub(crate) fn body<T: DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    if b.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::bad_request(format!("a JSON body is required: {e}")));
    }
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// Adds fields to a JSON object.
pub(crate) fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}
