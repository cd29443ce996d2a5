//! The app server's side of push configuration: `POST /v1/push/credentials/set` (the
//! tenant's provider credentials, the same JSON as `$im/admin/push/credentials/set`
//! without `tenant`, which the signature gives) and `POST /v1/push/credentials/get`, which
//! answers only which vendors are configured and their non-secret identifiers: secrets go
//! in, never out. Vendors whose credentials the gateway's configuration file gives are
//! shown with `source: "config"` and cannot be set here (409). `POST /v1/push/test {user}` sends a test notification to each of the
//! user's devices now and answers each provider's verdict; `POST /v1/push/trace {user?,
//! limit?}` answers this instance's latest decisions about the tenant's jobs (sent, no
//! token, no credentials, token removed, provider error and why).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::native::handlers::{AnyObject, ErrorBody};
use crate::native::{Answer, Signed, body, with};

/// Which decisions to show.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct TraceBody {
    /// Only this user's (default: every user of the tenant).
    pub user: Option<String>,
    /// At most this many (≤ 500, default 100).
    pub limit: Option<u64>,
}

/// Fields of a vendor's credentials that are not secret and may be shown back.
const PUBLIC_FIELDS: [&str; 8] = [
    "key_id",
    "team_id",
    "topic",
    "app_id",
    "package_name",
    "badge_class",
    "client_id",
    "channel_id",
];

/// `POST /v1/push/credentials/{set,get}`.
#[utoipa::path(post, path = "/v1/push/credentials/{op}", tag = "push", request_body = AnyObject,
    params(("op" = String, Path, description = "set: the body is {apns?, fcm?, huawei?, xiaomi?, oppo?, vivo?, honor?, meizu?}, \
        each vendor's credentials object (replaces the whole set; 409 for a vendor the gateway's configuration \
        file sets); get: which vendors are set and their non-secret ids (source: config for those of the file)")),
    security(("signature" = [])),
    responses((status = 200, description = "set: {}; get: {vendors: {vendor: {non-secret ids}}}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 409, description = "a vendor's credentials come from the configuration file", body = ErrorBody)))]
pub async fn credentials(
    State(s): State<Arc<AppState>>,
    Path(op): Path<String>,
    req: Signed,
) -> Answer {
    let tenant = json!({ "tenant": req.tenant.id });
    match op.as_str() {
        "set" => {
            let v: Value = body(&req.body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request("the body must be a JSON object"));
            }
            refuse_configured(
                &s,
                req.tenant.id,
                v.as_object().into_iter().flatten().map(|(k, _)| k.as_str()),
            )?;
            Ok(Json(
                s.service
                    .call("push/credentials/set", &with(v, tenant))
                    .await?,
            ))
        }
        "get" => {
            let mut all = s.service.call("push/credentials/get", &tenant).await?;
            let configured = configured(&s, req.tenant.id);
            if let Some(w) = &s.push {
                w.overlay_configured(req.tenant.id, &mut all);
            }
            let mut vendors = redacted(&all);
            for v in configured {
                vendors[v.as_str()]["source"] = "config".into();
            }
            Ok(Json(json!({ "vendors": vendors })))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            404,
            format!("no such endpoint: /v1/push/credentials/{op}"),
        )),
    }
}

/// The vendors of `tenant` whose credentials this gateway's configuration file gives.
fn configured(s: &AppState, tenant: u64) -> Vec<String> {
    s.push
        .as_ref()
        .map(|w| w.configured_vendors(tenant))
        .unwrap_or_default()
}

/// 409 when any of `vendors` has its credentials in the configuration file: the file is
/// what the operator deployed, and an API change would be silently outranked.
pub(crate) fn refuse_configured<'a>(
    s: &AppState,
    tenant: u64,
    vendors: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let configured = configured(s, tenant);
    let clash: Vec<&str> = vendors
        .into_iter()
        .filter(|v| configured.iter().any(|c| c == v))
        .collect();
    if clash.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        409,
        format!(
            "the {} push credentials of tenant {tenant} come from the gateway's configuration file \
             ([gateway.push.tenants.{tenant}]); change them there and restart",
            clash.join(", ")
        ),
    ))
}

fn worker(s: &AppState) -> Result<&Arc<super::Worker>, ApiError> {
    s.push.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            503,
            "the push worker is off on this gateway",
        )
    })
}

/// `POST /v1/push/test {user}`.
#[utoipa::path(post, path = "/v1/push/test", tag = "push", request_body = super::api::UserBody,
    security(("signature" = [])),
    responses((status = 200, description = "{devices: [{vendor, token (8 characters), outcome, detail?}]}", body = AnyObject),
               (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 502, description = "the worker could not read the user's devices", body = ErrorBody),
               (status = 503, description = "the push worker is off on this gateway", body = ErrorBody)))]
pub async fn test(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let v: Value = body(&req.body)?;
    let user = v["user"].as_str().unwrap_or_default();
    if user.is_empty() {
        return Err(ApiError::bad_request("user is required"));
    }
    let w = worker(&s)?;
    // An unknown user is the caller's mistake (404), not the worker's.
    s.service
        .call(
            "push/tokens",
            &json!({"tenant": req.tenant.id, "user": user}),
        )
        .await?;
    let devices = w
        .test_user(req.tenant.id, user)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, 502, e))?;
    Ok(Json(json!({ "devices": devices })))
}

/// `POST /v1/push/trace {user?, limit? (≤ 500, default 100)}`.
#[utoipa::path(post, path = "/v1/push/trace", tag = "push", request_body = TraceBody,
    security(("signature" = [])),
    responses((status = 200, description = "{entries: [{time_ms, job, user, vendor, outcome, detail}]}, newest first", body = AnyObject),
               (status = 400, body = ErrorBody),
               (status = 503, description = "the push worker is off on this gateway", body = ErrorBody)))]
pub async fn trace(State(s): State<Arc<AppState>>, req: Signed) -> Answer {
    let b: TraceBody = body(&req.body)?;
    let limit = b.limit.unwrap_or(100).min(500) as usize;
    let entries = worker(&s)?.trace(req.tenant.id, b.user.as_deref().unwrap_or_default(), limit);
    Ok(Json(json!({ "entries": entries })))
}

/// Each configured vendor with its public fields only (FCM: its project id).
pub(crate) fn redacted(all: &Value) -> Value {
    let mut out = Map::new();
    for (vendor, c) in all.as_object().into_iter().flatten() {
        let mut shown = Map::new();
        for f in PUBLIC_FIELDS {
            if let Some(v) = c.get(f) {
                shown.insert(f.to_owned(), v.clone());
            }
        }
        if vendor == "fcm"
            && let Ok(sa) = super::fcm::service_account(c)
        {
            shown.insert("project_id".into(), sa.project_id.into());
        }
        out.insert(vendor.clone(), Value::Object(shown));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_shown() {
        let v = redacted(&json!({"apns": {"key_p8": "SECRET", "key_id": "K"},
                                 "xiaomi": {"app_secret": "SECRET"}}));
        assert!(!v.to_string().contains("SECRET"), "{v}");
        assert_eq!(v["apns"]["key_id"], json!("K"));
        assert!(v["xiaomi"].is_object());
    }
}
