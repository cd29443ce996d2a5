//! Uploads from users' devices: `POST /v1/device/files` with `Authorization: Bearer <IM
//! login token>` (the token the device logs in to MQTT with) and a multipart form with one
//! `file` part. The token is checked by the IM service (`check_token`: signature, expiry,
//! revocation, ban). The answer is the same as the app server's upload (`file_id`, signed
//! `url`, `thumbnail_url`, ...), ready to put in an image or file message.
//!
//! Limits per tenant, counted per gateway instance (in memory, like the API rate limits):
//! the tenant's settings (`upload_max_file_bytes`, `upload_bytes_per_hour`,
//! `upload_files_per_hour`, stored in the broker with its policy, changed by its developer
//! account with `PUT /v1/tenants/{id}/settings`; `check_token` hands them over with the
//! device's identity). Defaults: [`DEVICE_MAX_FILE`] bytes a file (also the ceiling),
//! [`TENANT_BYTES_PER_HOUR`] bytes and [`TENANT_FILES_PER_HOUR`] files an hour; a bigger
//! file gets 413, an hour's budget spent 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::{describe, file_part, store_file};
use crate::AppState;
use crate::error::ApiError;

/// Largest file a device may upload (the default and the ceiling of a tenant's setting).
pub const DEVICE_MAX_FILE: usize = 20 * 1024 * 1024;
/// Bytes a tenant's devices may upload per hour by default (per gateway instance).
pub const TENANT_BYTES_PER_HOUR: u64 = 2 * 1024 * 1024 * 1024;
/// Files a tenant's devices may upload per hour by default (per gateway instance).
pub const TENANT_FILES_PER_HOUR: u32 = 10_000;
/// Tenants tracked at most (the oldest windows are forgotten first).
const MAX_TENANTS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(3600);

/// One tenant's use in the current hour.
struct Window {
    started: Instant,
    bytes: u64,
    files: u32,
}

/// A tenant's upload settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_file_bytes: usize,
    pub bytes_per_hour: u64,
    pub files_per_hour: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_file_bytes: DEVICE_MAX_FILE,
            bytes_per_hour: TENANT_BYTES_PER_HOUR,
            files_per_hour: TENANT_FILES_PER_HOUR,
        }
    }
}

impl Budget {
    /// From the `settings` of a `check_token` answer: absent fields keep the default, a
    /// file size above the ceiling is capped.
    pub fn from_settings(v: &Value) -> Budget {
        let d = Budget::default();
        Budget {
            max_file_bytes: v["upload_max_file_bytes"]
                .as_u64()
                .map_or(d.max_file_bytes, |n| {
                    usize::try_from(n)
                        .unwrap_or(DEVICE_MAX_FILE)
                        .min(DEVICE_MAX_FILE)
                }),
            bytes_per_hour: v["upload_bytes_per_hour"]
                .as_u64()
                .unwrap_or(d.bytes_per_hour),
            files_per_hour: v["upload_files_per_hour"]
                .as_u64()
                .map_or(d.files_per_hour, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
}

/// What each tenant has used of its hourly budget.
#[derive(Default)]
pub struct Quotas {
    used: Mutex<HashMap<u64, Window>>,
}

impl Quotas {
    /// Counts an upload of `size` bytes for `tenant` against `budget`, or says when to
    /// retry (seconds).
    pub fn take(&self, tenant: u64, budget: Budget, size: u64, now: Instant) -> Result<(), u64> {
        let mut used = self.used.lock();
        if used.len() >= MAX_TENANTS && !used.contains_key(&tenant) {
            used.retain(|_, w| now.duration_since(w.started) < WINDOW);
        }
        let w = used.entry(tenant).or_insert(Window {
            started: now,
            bytes: 0,
            files: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window {
                started: now,
                bytes: 0,
                files: 0,
            };
        }
        if w.files >= budget.files_per_hour || w.bytes.saturating_add(size) > budget.bytes_per_hour
        {
            let left = WINDOW.saturating_sub(now.duration_since(w.started));
            return Err(left.as_secs().max(1));
        }
        w.files += 1;
        w.bytes += size;
        Ok(())
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, 40105, message)
}

/// `POST /v1/device/files`.
#[utoipa::path(post, path = "/v1/device/files", tag = "files",
    request_body(content_type = "multipart/form-data", description = "one part named `file`"),
    params(("Authorization" = String, Header, description = "Bearer <IM login token>")),
    responses((status = 200, description = "{file_id, sha256, size, mime, name, width, height, url, thumbnail_url}"),
               (status = 400, description = "not a form, empty, or not the image it claims"),
               (status = 401, description = "no or invalid token"),
               (status = 413, description = "over the tenant's largest file (default and ceiling 20 MiB)"), (status = 415, description = "type not accepted"),
               (status = 429, description = "the tenant's hourly upload budget is spent")))]
pub async fn upload(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("Authorization: Bearer <IM token> is required"))?
        .to_owned();
    let Some(files) = s.files.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            "file storage is not configured",
        ));
    };
    let who = match s
        .service
        .call("check_token", &json!({ "token": token }))
        .await
    {
        Ok(v) => v,
        Err(crate::service::ServiceError::Api { code, message }) if code < 500 => {
            tracing::info!(code, %message, "device upload: token refused");
            return Err(unauthorized(format!("token refused: {message}")));
        }
        Err(e) => return Err(e.into()),
    };
    let tenant = who["tenant"].as_u64().unwrap_or_default();
    let user = who["user"].as_str().unwrap_or_default().to_owned();
    let budget = Budget::from_settings(&who["settings"]);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let max = budget.max_file_bytes;
    let body = axum::body::to_bytes(body, max + 64 * 1024)
        .await
        .map_err(|_| ApiError::too_large(max))?;
    let (name, claimed, bytes) = file_part(&content_type, body, max).await?;
    s.uploads
        .take(tenant, budget, bytes.len() as u64, Instant::now())
        .map_err(|retry| ApiError {
            retry_after: Some(retry),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                42901,
                "this tenant's hourly upload budget is spent",
            )
        })?;
    let meta = store_file(files, name, &claimed, bytes, None).await?;
    tracing::info!(tenant, user, id = %meta.id, size = meta.size, mime = %meta.mime, "device file stored");
    Ok(Json(describe(&s.signer, &meta)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_budget_is_per_hour_and_per_tenant() {
        let q = Quotas::default();
        let b = Budget {
            max_file_bytes: 100,
            bytes_per_hour: 100,
            files_per_hour: 2,
        };
        let t0 = Instant::now();
        assert_eq!(q.take(1, b, 60, t0), Ok(()));
        assert!(q.take(1, b, 60, t0).is_err(), "over the bytes");
        assert_eq!(q.take(1, b, 10, t0), Ok(()));
        assert!(q.take(1, b, 1, t0).is_err(), "over the count");
        assert_eq!(q.take(2, b, 10, t0), Ok(()), "another tenant");
        assert_eq!(q.take(1, b, 60, t0 + WINDOW), Ok(()), "a new hour");
        let bigger = Budget {
            files_per_hour: 3,
            ..b
        };
        assert_eq!(
            q.take(1, bigger, 1, t0 + WINDOW),
            Ok(()),
            "a raised budget counts at once"
        );
    }

    #[test]
    fn settings_fill_the_budget_with_defaults_and_cap_the_file_size() {
        assert_eq!(Budget::from_settings(&Value::Null), Budget::default());
        let b = Budget::from_settings(&json!({"upload_max_file_bytes": u64::MAX,
                                              "upload_files_per_hour": 5}));
        assert_eq!((b.max_file_bytes, b.files_per_hour), (DEVICE_MAX_FILE, 5));
        assert_eq!(b.bytes_per_hour, TENANT_BYTES_PER_HOUR);
    }
}
