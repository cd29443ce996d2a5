//! Tenants (seeds 001/003 console): list, create, show the credentials (the app secret is
//! shown once, on creation and rotation, then masked), rotate the secret, the enterprise
//! number (buin), the compat APIs switch, webhooks and push credentials.

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{ConsoleError, ConsoleState, ConsoleUser, Page, Role, render};

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

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/tenants", get(list))
}

#[derive(askama::Template)]
#[template(path = "console/tenants/list.html")]
struct ListPage {
    page: Page,
    tenants: Vec<Tenant>,
    can_create: bool,
}

async fn list(
    st: axum::extract::State<ConsoleState>,
    user: ConsoleUser,
) -> Result<Response, ConsoleError> {
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
