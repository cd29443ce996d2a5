//! The IM part of the operator API (`/api/v1/im/...`, bearer token): what `switchboard ctl
//! tenant|user|token|im` call. The REST open API for app servers (signed requests, the
//! seeds' dialects) is the gateway's; this is the operator's back door to the same
//! service calls.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
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
        .route(
            "/api/v1/im/tenants/{tid}/policy",
            put(replace_policy).patch(patch_policy).get(get_policy),
        )
        .route("/api/v1/im/tenants/{tid}/system", post(system_message))
        .route(
            "/api/v1/im/tenants/{tid}/departments",
            post(create_dept).get(list_depts),
        )
        .route(
            "/api/v1/im/tenants/{tid}/departments/{dept}",
            get(dept_page).patch(update_dept).delete(delete_dept),
        )
        .route("/api/v1/im/tenants/{tid}/members", post(set_member))
        .route(
            "/api/v1/im/tenants/{tid}/members/{account}",
            delete(remove_member),
        )
        .route(
            "/api/v1/im/tenants/{tid}/import",
            post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .route("/api/v1/im/tenants/{tid}/export", get(export))
        .route("/api/v1/im/tenants/{tid}/directory", get(dir_version))
        .route("/api/v1/im/tenants/{tid}/broadcast", post(broadcast))
        .route("/api/v1/im/tenants/{tid}/broadcast/recall", post(recall))
}

/// Largest CSV an import request may carry (split bigger files; re-import is idempotent).
const MAX_IMPORT_BYTES: usize = 64 << 20;

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
            ImError::Replayed(_) => "replayed",
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
    /// The enterprise administrator (seed 000): a member of the root department who must
    /// change `admin_password` at the first login.
    admin: Option<String>,
    admin_password: Option<String>,
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
    if req.admin.is_some() != req.admin_password.is_some() {
        return Err(ImError::BadRequest("admin and admin_password go together".into()).into());
    }
    let t = im.create_tenant(&req.name, req.account.as_deref()).await?;
    if let (Some(account), Some(password)) = (req.admin, req.admin_password) {
        let input = super::org::MemberInput {
            account,
            password: Some(password),
            departments: Some(vec![super::org::ROOT]),
            title: Some("Administrator".into()),
            must_change_password: Some(true),
            ..super::org::MemberInput::default()
        };
        im.set_member(t.id, input, false).await?;
    }
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
    /// Also put the user in this department of the directory.
    dept: Option<u64>,
    /// Require a password change at the first password login.
    #[serde(default)]
    must_change_password: bool,
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
    if req.dept.is_some() || req.must_change_password {
        let input = super::org::MemberInput {
            account: u.account.clone(),
            departments: match req.dept {
                Some(d) => {
                    let mut depts = u.depts.clone();
                    depts.push(d);
                    Some(depts)
                }
                None => None,
            },
            must_change_password: req.must_change_password.then_some(true),
            ..super::org::MemberInput::default()
        };
        im.set_member(tid, input, true).await?;
    }
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

/// `GET .../policy`: the tenant's whole policy.
async fn get_policy(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
) -> Result<Json<TenantPolicy>, ApiError> {
    let im = service(&a, &headers)?;
    Ok(Json(im.tenant(tid)?.policy.clone()))
}

/// `PUT .../policy`: the whole policy; fields left out get their defaults.
async fn replace_policy(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<TenantPolicy>, ApiError> {
    let im = service(&a, &headers)?;
    im.tenant(tid)?;
    let policy = merge_policy(&TenantPolicy::default(), body)?;
    im.set_policy(tid, policy.clone()).await?;
    Ok(Json(policy))
}

/// `PATCH .../policy`: the fields given change, the others keep their current values.
async fn patch_policy(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<TenantPolicy>, ApiError> {
    let im = service(&a, &headers)?;
    let policy = merge_policy(&im.tenant(tid)?.policy, body)?;
    im.set_policy(tid, policy.clone()).await?;
    Ok(Json(policy))
}

/// `base` with the fields of `body` over it; an unknown field or a value of the wrong
/// type is a 400 naming it (a typo must not silently leave a setting unchanged).
fn merge_policy(
    base: &TenantPolicy,
    body: serde_json::Map<String, serde_json::Value>,
) -> Result<TenantPolicy, ImError> {
    let bad = |e: serde_json::Error| ImError::BadRequest(format!("tenant policy: {e}"));
    let serde_json::Value::Object(mut fields) = serde_json::to_value(base).map_err(bad)? else {
        return Err(ImError::Internal(
            "tenant policy is not a JSON object".into(),
        ));
    };
    for (k, v) in body {
        if !fields.contains_key(&k) {
            return Err(ImError::BadRequest(format!(
                "tenant policy: unknown field `{k}`"
            )));
        }
        fields.insert(k, v);
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(bad)
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

/// Runs app-server op `{area}/{op}` for tenant `tid` with `body` (its JSON shape, the
/// tenant added): the operator API and `$im/admin/` share one implementation.
async fn tenant_op(
    im: &ImService,
    op: &str,
    tid: u64,
    mut body: serde_json::Value,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(o) = body.as_object_mut() {
        o.insert("tenant".into(), tid.into());
    }
    let payload = body.to_string();
    Ok(Json(im.admin_request(op, payload.as_bytes()).await?))
}

async fn create_dept(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let im = service(&a, &headers)?;
    Ok((
        StatusCode::CREATED,
        tenant_op(&im, "dir/create_dept", tid, body).await?,
    ))
}

async fn list_depts(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    tenant_op(&im, "dir/list_depts", tid, serde_json::json!({})).await
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

async fn dept_page(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path((tid, dept)): Path<(u64, u64)>,
    Query(p): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    Ok(Json(im.dept_page(
        tid,
        dept,
        p.after.as_deref(),
        p.limit,
    )?))
}

async fn update_dept(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path((tid, dept)): Path<(u64, u64)>,
    Json(mut body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("dept".into(), dept.into());
    }
    tenant_op(&im, "dir/update_dept", tid, body).await
}

async fn delete_dept(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path((tid, dept)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    let im = service(&a, &headers)?;
    im.delete_dept(tid, dept).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_member(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    tenant_op(&im, "dir/add_member", tid, body).await
}

#[derive(Deserialize)]
struct FromDept {
    dept: Option<u64>,
}

async fn remove_member(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path((tid, account)): Path<(u64, String)>,
    Query(q): Query<FromDept>,
) -> Result<StatusCode, ApiError> {
    let im = service(&a, &headers)?;
    im.remove_member(tid, &account, q.dept).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ImportQuery {
    default_password: Option<String>,
}

/// The body is the CSV file itself.
async fn import(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Query(q): Query<ImportQuery>,
    body: String,
) -> Result<Json<super::org::ImportReport>, ApiError> {
    let im = service(&a, &headers)?;
    Ok(Json(
        im.import_csv(tid, &body, q.default_password.as_deref())
            .await?,
    ))
}

async fn export(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Query(p): Query<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    let (csv, next) = im.export_csv(tid, p.after.as_deref(), p.limit)?;
    Ok(Json(serde_json::json!({ "csv": csv, "next": next })))
}

async fn dir_version(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    tenant_op(&im, "dir/version", tid, serde_json::json!({})).await
}

/// `{text, dept?, to?, client_msg_id?, from?}`: to a department, to a list, or to all.
async fn broadcast(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    let op = if body.get("to").is_some() {
        "broadcast/users"
    } else if body.get("dept").is_some() {
        "broadcast/dept"
    } else {
        "broadcast/all"
    };
    tenant_op(&im, op, tid, body).await
}

async fn recall(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(tid): Path<u64>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let im = service(&a, &headers)?;
    tenant_op(&im, "broadcast/recall", tid, body).await
}
