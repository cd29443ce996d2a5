//! The IM part of the operator API (`/api/v1/im/...`, bearer token): what `switchboard ctl
//! tenant|user|token|im` call. The REST open API for app servers (signed requests, the
//! seeds' dialects) is the gateway's; this is the operator's back door to the same
//! service calls.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_proto::im;

use super::error::ImError;
use super::records::TenantPolicy;
use super::{ImService, random_hex};
use crate::admin::{Admin, ApiError};

/// The routes, merged into the admin API.
pub(crate) fn routes() -> Router<Admin> {
    Router::new()
        .route("/api/v1/im/tenants", post(create_tenant))
        .route("/api/v1/im/tenants/{tid}/users", post(create_user))
        .route("/api/v1/im/tenants/{tid}/tokens", post(token))
        .route("/api/v1/im/tenants/{tid}/policy", put(policy))
        .route("/api/v1/im/tenants/{tid}/system", post(system_message))
}

impl From<ImError> for ApiError {
    fn from(e: ImError) -> Self {
        let code = match &e {
            ImError::BadRequest(_) => "bad_request",
            ImError::Unauthorized(_) => "unauthorized",
            ImError::Banned | ImError::Forbidden(_) => "forbidden",
            ImError::Blocked(_) => "blocked",
            ImError::Muted(_) => "muted",
            ImError::RateLimited(_) => "rate_limited",
            ImError::Sensitive(_) => "sensitive_content",
            ImError::NotFound(_) => "not_found",
            ImError::Conflict(_) => "conflict",
            ImError::Gone(_) => "gone",
            ImError::TooLarge(_) => "too_large",
            ImError::Unavailable(_) => "unavailable",
            ImError::Internal(_) => "internal",
        };
        if matches!(e, ImError::Internal(_)) {
            tracing::error!(error = %e, "IM admin request failed");
        }
        ApiError {
            code,
            message: e.to_string(),
            status: StatusCode::from_u16(e.code() as u16)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

fn service(a: &Admin, headers: &HeaderMap) -> Result<std::sync::Arc<ImService>, ApiError> {
    a.check(headers)?;
    a.broker.im.clone().ok_or(ApiError {
        code: "disabled",
        message: "the IM service is not running".into(),
        status: StatusCode::NOT_FOUND,
    })
}

#[derive(Deserialize)]
struct NewTenant {
    name: String,
    account: Option<String>,
}

#[derive(Serialize)]
struct TenantCreated {
    tenant_id: u64,
    app_key: String,
    app_secret: String,
    buin: u64,
    account: String,
}

async fn create_tenant(
    State(a): State<Admin>,
    headers: HeaderMap,
    Json(req): Json<NewTenant>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let im = service(&a, &headers)?;
    let t = im.create_tenant(&req.name, req.account.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            tenant_id: t.id,
            app_key: t.app_key,
            app_secret: t.app_secret,
            buin: t.buin,
            account: t.account,
        }),
    ))
}

#[derive(Deserialize)]
struct NewUser {
    account: String,
    #[serde(default)]
    name: String,
    password: Option<String>,
    /// Update an existing user instead of failing with 409.
    #[serde(default)]
    upsert: bool,
}

#[derive(Serialize)]
struct UserCreated {
    user_id: String,
    uid: u64,
}

async fn create_user(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(req): Json<NewUser>,
) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    let im = service(&a, &headers)?;
    let u = im
        .create_user(
            tid,
            &req.account,
            &req.name,
            req.password.as_deref(),
            req.upsert,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserCreated {
            user_id: u.account,
            uid: u.uid,
        }),
    ))
}

#[derive(Deserialize)]
struct NewToken {
    user: String,
    #[serde(default)]
    device: String,
    /// Seconds; default 7 days.
    ttl: Option<u64>,
}

#[derive(Serialize)]
struct TokenIssued {
    token: String,
}

async fn token(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(req): Json<NewToken>,
) -> Result<Json<TokenIssued>, ApiError> {
    let im = service(&a, &headers)?;
    let token = im.issue_token(
        tid,
        &req.user,
        &req.device,
        req.ttl.unwrap_or(7 * 24 * 3600),
    )?;
    Ok(Json(TokenIssued { token }))
}

async fn policy(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(p): Json<TenantPolicy>,
) -> Result<StatusCode, ApiError> {
    let im = service(&a, &headers)?;
    im.set_policy(tid, p).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SystemMessage {
    to: String,
    /// A workbench app's message (its app id) instead of a system notice.
    app: Option<String>,
    text: String,
    client_msg_id: Option<String>,
}

#[derive(Serialize)]
struct Sent {
    conversation: String,
    seq: u64,
}

async fn system_message(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(req): Json<SystemMessage>,
) -> Result<Json<Sent>, ApiError> {
    let im = service(&a, &headers)?;
    let id = match req.client_msg_id {
        Some(id) => id,
        None => random_hex(8)?,
    };
    let content = im::Content {
        body: Some(im::content::Body::Text(im::Text { text: req.text })),
    };
    let (conv, seq) = im
        .send_system(tid, &req.to, req.app.as_deref(), &id, content)
        .await?;
    Ok(Json(Sent {
        conversation: conv.to_string(),
        seq,
    }))
}
