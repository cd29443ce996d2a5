//! Developer-account calls on one of the account's tenants (headers `Account-Id` and
//! `Account-Token`, like `POST /v1/tenants`): `GET`/`PUT /v1/tenants/{id}/settings` (the
//! device upload budgets, stored with the tenant's policy in the broker) and `POST
//! /v1/tenants/{id}/secret` (rotate the app secret). The broker checks that the account
//! owns the tenant (404 otherwise).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::handlers::{AnyObject, ErrorBody};
use super::{Answer, body};
use crate::AppState;

/// Settings to change; fields left out keep their value.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Bytes the tenant's devices may upload an hour (per gateway instance); default 2 GiB.
    pub upload_bytes_per_hour: Option<u64>,
    /// Files the tenant's devices may upload an hour (per gateway instance); default 10,000.
    pub upload_files_per_hour: Option<u32>,
    /// Largest file a device may upload, 1 to 20 MiB (the default).
    pub upload_max_file_bytes: Option<u64>,
}

#[utoipa::path(get, path = "/v1/tenants/{id}/settings", tag = "account",
    params(("id" = u64, Path), ("Account-Id" = String, Header), ("Account-Token" = String, Header)),
    responses((status = 200, description = "{upload_bytes_per_hour, upload_files_per_hour, upload_max_file_bytes}", body = AnyObject),
               (status = 401, body = ErrorBody), (status = 404, description = "no such tenant of this account", body = ErrorBody)))]
pub async fn get_settings(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Answer {
    let account = s.auth.account(&s.service, &headers).await?;
    let v = json!({ "account": account, "tenant": id });
    Ok(Json(s.service.call("tenant_settings", &v).await?))
}

#[utoipa::path(put, path = "/v1/tenants/{id}/settings", tag = "account", request_body = SettingsBody,
    params(("id" = u64, Path), ("Account-Id" = String, Header), ("Account-Token" = String, Header)),
    responses((status = 200, description = "the settings after the change", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 404, description = "no such tenant of this account", body = ErrorBody)))]
pub async fn put_settings(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    raw: Bytes,
) -> Answer {
    let account = s.auth.account(&s.service, &headers).await?;
    let set: SettingsBody = body(&raw)?;
    let v = json!({ "account": account, "tenant": id, "set": set });
    Ok(Json(s.service.call("tenant_settings", &v).await?))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/secret", tag = "account",
    params(("id" = u64, Path), ("Account-Id" = String, Header), ("Account-Token" = String, Header)),
    responses((status = 200, description = "{app_key, app_secret}: the secret shown once; the old secret stops working (gateways cache it up to a minute)", body = AnyObject),
               (status = 401, body = ErrorBody), (status = 404, description = "no such tenant of this account", body = ErrorBody)))]
pub async fn rotate_secret(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Answer {
    let account = s.auth.account(&s.service, &headers).await?;
    let v = json!({ "account": account, "tenant": id });
    let out = s.service.call("rotate_secret", &v).await?;
    // This gateway stops taking the old secret at once (others within their cache time).
    if let Some(key) = out["app_key"].as_str() {
        s.auth.forget(key);
    }
    tracing::info!(tenant = id, %account, "app secret rotated");
    Ok(Json(out))
}
