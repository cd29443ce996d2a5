//! Tenants (seeds 001/003 console): list, create, show the credentials (the app secret is
//! shown once, on creation and rotation, then masked), rotate the secret, the enterprise
//! number (buin), the compat APIs switch, webhooks and push credentials (their secrets
//! likewise shown once, then masked).
//!
//! Developers see and create the tenants of their developer account; a tenant
//! administrator sees their one tenant; operators none.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::see_other;
use super::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, Page, Post, Role, render};

/// A tenant as the console shows it (`$im/admin/console/tenants/get`): the app secret is
/// masked.
#[derive(Debug, Clone, Deserialize)]
pub struct Tenant {
    pub tenant_id: u64,
    pub name: String,
    pub account: String,
    pub app_key: String,
    /// Masked (`ab12…`).
    pub app_secret: String,
    pub buin: u64,
    #[serde(default)]
    pub compat_apis: bool,
    #[serde(default)]
    pub created_ms: u64,
}

/// Push providers a tenant can configure (the broker's list).
pub const VENDORS: [&str; 8] = [
    "apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "honor", "meizu",
];
/// Webhook event kinds (the broker's list).
pub const HOOK_EVENTS: [&str; 4] = ["after_send", "presence", "group", "before_send"];

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/tenants", get(list))
        .route("/tenants/new", get(new_form).post(create))
        .route("/tenants/{id}", get(show))
        .route("/tenants/{id}/rotate", post(rotate))
        .route("/tenants/{id}/compat", post(compat))
        .route("/tenants/{id}/webhooks", post(webhooks))
        .route("/tenants/{id}/push", post(push))
}

#[derive(askama::Template)]
#[template(path = "console/tenants/list.html")]
struct ListPage {
    page: Page,
    tenants: Vec<Tenant>,
    can_create: bool,
}

async fn list(st: State<ConsoleState>, user: ConsoleUser) -> Result<Response, ConsoleError> {
    user.require_tenant_role()?;
    let v = st
        .call(
            "console/tenants/list",
            &json!({ "account": user.account, "tenant": user.tenant }),
        )
        .await?;
    let tenants: Vec<Tenant> = serde_json::from_value(v["tenants"].clone()).unwrap_or_default();
    let tenants = tenants.into_iter().filter(|t| user.sees(t)).collect();
    Ok(render(&ListPage {
        page: user.page("tenants"),
        tenants,
        can_create: user.role == Role::Developer,
    }))
}

#[derive(askama::Template)]
#[template(path = "console/tenants/new.html")]
struct NewPage {
    page: Page,
    name: String,
    errors: FieldErrors,
}

async fn new_form(user: ConsoleUser) -> Result<Response, ConsoleError> {
    user.require(Role::Developer)?;
    Ok(render(&NewPage {
        page: user.page("tenants"),
        name: String::new(),
        errors: FieldErrors::default(),
    }))
}

/// Credentials shown once (after creating a tenant or rotating its secret).
#[derive(askama::Template)]
#[template(path = "console/tenants/secret.html")]
struct SecretPage {
    page: Page,
    tenant_id: u64,
    /// Translation key of the heading.
    heading: &'static str,
    /// (translation key of the label, value, element id)
    values: Vec<(&'static str, String, &'static str)>,
}

async fn create(
    st: State<ConsoleState>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.require(Role::Developer)?;
    let name = form.get("name").to_owned();
    let mut errors = FieldErrors::default();
    if name.is_empty() || name.len() > 128 {
        errors.add("name", user.t("tenants.name_invalid"));
    }
    if errors.is_empty() {
        match st
            .call(
                "create_tenant",
                &json!({ "name": name, "account": user.account }),
            )
            .await
        {
            Ok(v) => {
                tracing::info!(user = %user.username, tenant = %v["tenant_id"], "console: tenant created");
                return Ok(render(&SecretPage {
                    page: user.page("tenants"),
                    tenant_id: v["tenant_id"].as_u64().unwrap_or_default(),
                    heading: "tenants.created",
                    values: vec![
                        ("tenants.id", v["tenant_id"].to_string(), "new-tenant-id"),
                        ("tenants.app_key", str_of(&v["app_key"]), "new-app-key"),
                        (
                            "tenants.app_secret",
                            str_of(&v["app_secret"]),
                            "new-app-secret",
                        ),
                        ("tenants.buin", v["buin"].to_string(), "new-buin"),
                    ],
                }));
            }
            Err(ConsoleError::Refused(m)) => errors.add("name", m),
            Err(e) => return Err(e),
        }
    }
    let mut r = render(&NewPage {
        page: user.page("tenants"),
        name,
        errors,
    });
    *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    Ok(r)
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A webhook configuration as shown (secret masked).
pub struct HookView {
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub timeout_ms: u64,
    pub fail_open: bool,
}

#[derive(askama::Template)]
#[template(path = "console/tenants/show.html")]
struct ShowPage {
    page: Page,
    t: Tenant,
    hook: Option<HookView>,
    hook_errors: FieldErrors,
    hook_url: String,
    /// Configured push providers and their public fields.
    push: Vec<(String, String)>,
    push_errors: FieldErrors,
    vendors: &'static [&'static str],
    events: &'static [&'static str],
}

impl ShowPage {
    fn has_event(&self, e: &str) -> bool {
        self.hook
            .as_ref()
            .map_or(e == "after_send", |h| h.events.iter().any(|x| x == e))
    }
}

fn mask(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}••••••••")
}

async fn show_page(
    st: &ConsoleState,
    user: &ConsoleUser,
    tid: u64,
    hook_errors: FieldErrors,
    hook_url: Option<String>,
    push_errors: FieldErrors,
) -> Result<Response, ConsoleError> {
    let t = user.tenant(st, tid).await?;
    let h = st.call("hooks/get", &json!({ "tenant": tid })).await?;
    let hook = h.get("url").and_then(Value::as_str).map(|url| HookView {
        url: url.to_owned(),
        secret: mask(h["secret"].as_str().unwrap_or_default()),
        events: h["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        timeout_ms: h["timeout_ms"].as_u64().unwrap_or(2000),
        fail_open: h["fail_open"].as_bool().unwrap_or(true),
    });
    let creds = st
        .call("push/credentials/get", &json!({ "tenant": tid }))
        .await?;
    let shown = crate::push::rest::redacted(&creds);
    let push = shown
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let hook_url =
        hook_url.unwrap_or_else(|| hook.as_ref().map(|h| h.url.clone()).unwrap_or_default());
    let failed = !hook_errors.is_empty() || !push_errors.is_empty();
    let mut r = render(&ShowPage {
        page: user.page("tenants"),
        t,
        hook,
        hook_errors,
        hook_url,
        push,
        push_errors,
        vendors: &VENDORS,
        events: &HOOK_EVENTS,
    });
    if failed {
        *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(r)
}

async fn show(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    show_page(
        &st,
        &user,
        tid,
        FieldErrors::default(),
        None,
        FieldErrors::default(),
    )
    .await
}

async fn rotate(
    st: State<ConsoleState>,
    Path(tid): Path<u64>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let t = user.tenant(&st, tid).await?;
    let page = if form.get("what") == "key" {
        let v = st
            .call("console/tenants/rotate_key", &json!({ "tenant": tid }))
            .await?;
        tracing::info!(user = %user.username, tenant = tid, "console: app key rotated");
        SecretPage {
            page: user.page("tenants"),
            tenant_id: tid,
            heading: "tenants.key_rotated",
            values: vec![("tenants.app_key", str_of(&v["app_key"]), "new-app-key")],
        }
    } else {
        let v = st
            .call("console/tenants/rotate_secret", &json!({ "tenant": tid }))
            .await?;
        tracing::info!(user = %user.username, tenant = tid, "console: app secret rotated");
        SecretPage {
            page: user.page("tenants"),
            tenant_id: tid,
            heading: "tenants.rotated",
            values: vec![
                ("tenants.app_key", t.app_key.clone(), "new-app-key"),
                (
                    "tenants.app_secret",
                    str_of(&v["app_secret"]),
                    "new-app-secret",
                ),
            ],
        }
    };
    // This gateway's signature check forgets the old credentials now; other gateways
    // within their cache time (a minute).
    st.app.auth.forget(&t.app_key);
    Ok(render(&page))
}

async fn compat(
    st: State<ConsoleState>,
    Path(tid): Path<u64>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let t = user.tenant(&st, tid).await?;
    let on = form.checked("on");
    st.call(
        "console/tenants/compat",
        &json!({ "tenant": tid, "on": on }),
    )
    .await?;
    st.app.auth.forget(&t.app_key);
    Ok(see_other(&format!("/console/tenants/{tid}")))
}

async fn webhooks(
    st: State<ConsoleState>,
    Path(tid): Path<u64>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let url = form.get("url").to_owned();
    let mut errors = FieldErrors::default();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !url.is_empty() && (!scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace)) {
        errors.add("url", user.t("tenants.hook_url_invalid"));
    }
    let events: Vec<&str> = form
        .all("events")
        .into_iter()
        .filter(|e| HOOK_EVENTS.contains(e))
        .collect();
    if !url.is_empty() && events.is_empty() {
        errors.add("events", user.t("tenants.hook_events_required"));
    }
    let timeout_ms = match form.get("timeout_ms") {
        "" => 2000,
        s => match s.parse::<u64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                errors.add("timeout_ms", user.t("tenants.hook_timeout_invalid"));
                0
            }
        },
    };
    if !errors.is_empty() {
        return show_page(&st, &user, tid, errors, Some(url), FieldErrors::default()).await;
    }
    if url.is_empty() {
        st.call("hooks/set", &json!({ "tenant": tid, "url": "" }))
            .await?;
        return Ok(see_other(&format!("/console/tenants/{tid}")));
    }
    // A new signing secret each time the settings are saved: shown once.
    let secret = {
        let mut b = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| ConsoleError::Internal)?;
        super::session::hex(&b)
    };
    st.call(
        "hooks/set",
        &json!({ "tenant": tid, "url": url, "secret": secret, "events": events,
            "timeout_ms": timeout_ms, "fail_open": form.checked("fail_open") }),
    )
    .await?;
    tracing::info!(user = %user.username, tenant = tid, "console: webhooks set");
    Ok(render(&SecretPage {
        page: user.page("tenants"),
        tenant_id: tid,
        heading: "tenants.hook_saved",
        values: vec![
            ("tenants.hook_url", url, "hook-url"),
            ("tenants.hook_secret", secret, "hook-secret"),
        ],
    }))
}

async fn push(
    st: State<ConsoleState>,
    Path(tid): Path<u64>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let vendor = form.get("vendor").to_owned();
    let mut errors = FieldErrors::default();
    if !VENDORS.contains(&vendor.as_str()) {
        errors.add("vendor", user.t("tenants.push_vendor_invalid"));
    }
    if crate::push::rest::refuse_configured(&st.app, tid, [vendor.as_str()]).is_err() {
        errors.add("vendor", user.t("tenants.push_vendor_configured"));
    }
    let remove = form.checked("remove");
    let config: Option<Value> = if remove {
        None
    } else {
        match serde_json::from_str::<Value>(form.get("config")) {
            Ok(v) if v.is_object() => Some(v),
            _ => {
                errors.add("config", user.t("tenants.push_config_invalid"));
                None
            }
        }
    };
    if errors.is_empty() {
        // The set op replaces every provider: merge into the stored ones (read here, never
        // shown).
        let mut all = st
            .call("push/credentials/get", &json!({ "tenant": tid }))
            .await?;
        if let Some(o) = all.as_object_mut() {
            match config {
                Some(c) => {
                    o.insert(vendor.clone(), c);
                }
                None => {
                    o.remove(&vendor);
                }
            }
            o.insert("tenant".into(), json!(tid));
        }
        match st.call("push/credentials/set", &all).await {
            Ok(_) => {
                tracing::info!(user = %user.username, tenant = tid, vendor, "console: push credentials set");
                return Ok(see_other(&format!("/console/tenants/{tid}")));
            }
            Err(ConsoleError::Refused(m)) => errors.add("config", m),
            Err(e) => return Err(e),
        }
    }
    show_page(&st, &user, tid, FieldErrors::default(), None, errors).await
}
