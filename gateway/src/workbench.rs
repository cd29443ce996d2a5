//! Workbench app icons: at most [`MAX_ICON_BYTES`], GIF, JPEG or PNG only (sniffed from
//! the bytes, never taken from the file name or the claimed type), stored through the
//! gateway's [`crate::files::BlobStore`]. The app record keeps the icon's file id
//! (`icon_file`); users' clients get a signed link to it in their workbench list (the IM
//! service signs it as the gateway does), and app-server lists (`/v1/app/list`,
//! `/v1/app/get`) carry `icon_signed_url`.
//!
//! [`set_app_icon`] is the service path: the REST endpoint `POST /v1/apps/{app_id}/icon`
//! (signed, multipart with a `file` part) calls it, and so can the web console.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::files::{UrlSigner, file_part, store_file};
use crate::native::Signed;

/// Largest icon (bytes).
pub const MAX_ICON_BYTES: usize = 1024 * 1024;
/// Icon types, as sniffed.
pub const ICON_TYPES: [&str; 3] = ["image/gif", "image/jpeg", "image/png"];

/// Stores `bytes` as the icon of workbench app `app_id` of `tenant` and records it on the
/// app. `name` is the uploaded file's name, `claimed` the type the uploader said (checked
/// against the bytes). Answers `{app_id, icon_file, icon_url}` (`icon_url`: a signed
/// download path, valid an hour).
pub async fn set_app_icon(
    state: &AppState,
    tenant: u64,
    app_id: &str,
    name: String,
    claimed: &str,
    bytes: Bytes,
) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty icon"));
    }
    if bytes.len() > MAX_ICON_BYTES {
        return Err(ApiError::too_large(MAX_ICON_BYTES));
    }
    let Some(files) = state.files.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            "file storage is not configured",
        ));
    };
    // The app must be the tenant's before anything is stored.
    state
        .service
        .call("app/get", &json!({ "tenant": tenant, "app_id": app_id }))
        .await?;
    let meta = store_file(files, name, claimed, bytes, Some(&ICON_TYPES)).await?;
    state
        .service
        .call(
            "app/update",
            &json!({ "tenant": tenant, "app_id": app_id, "icon_file": meta.id }),
        )
        .await?;
    tracing::info!(tenant, app_id, file = %meta.id, "workbench app icon set");
    Ok(json!({ "app_id": app_id, "icon_file": meta.id, "icon_url": state.signer.url(&meta.id) }))
}

/// Adds `icon_signed_url` to each app of an app-server answer (`{apps: [...]}` or one
/// app) that has an uploaded icon.
pub fn sign_icons(signer: &UrlSigner, v: &mut Value) {
    let one = |a: &mut Value| {
        if let Some(id) = a["icon_file"].as_str().filter(|id| !id.is_empty()) {
            let url = signer.url(id);
            a["icon_signed_url"] = url.into();
        }
    };
    if v.get("apps").is_some() {
        if let Some(apps) = v.get_mut("apps").and_then(Value::as_array_mut) {
            apps.iter_mut().for_each(one);
        }
    } else if v.get("app_id").is_some() {
        one(v);
    }
}

/// `POST /v1/apps/{app_id}/icon`.
#[utoipa::path(post, path = "/v1/apps/{app_id}/icon", tag = "areas",
    request_body(content_type = "multipart/form-data", description = "one part named `file`: GIF, JPEG or PNG, at most 1 MiB"),
    params(("app_id" = String, Path)), security(("signature" = [])),
    responses((status = 200, description = "{app_id, icon_file, icon_url}"),
               (status = 400, description = "not a form, empty, or not the image it claims"),
               (status = 404, description = "no such app of this tenant"),
               (status = 413, description = "over 1 MiB"), (status = 415, description = "not GIF, JPEG or PNG")))]
pub async fn upload_icon(
    State(s): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    req: Signed,
) -> Result<Json<Value>, ApiError> {
    let (name, claimed, bytes) =
        file_part(&req.content_type, req.body.clone(), MAX_ICON_BYTES).await?;
    Ok(Json(
        set_app_icon(&s, req.tenant.id, &app_id, name, &claimed, bytes).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_get_signed_icon_links_only_for_uploaded_icons() {
        let signer = UrlSigner::new("s");
        let id = "a".repeat(64);
        let mut v =
            json!({"apps": [{"app_id": "1", "icon_file": id}, {"app_id": "2", "icon_file": ""}]});
        sign_icons(&signer, &mut v);
        let url = v["apps"][0]["icon_signed_url"].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("/files/{id}?exp=")), "{url}");
        assert!(v["apps"][1].get("icon_signed_url").is_none());
    }
}
