//! Workbench apps (seeds 002 and 004: imo's 工作台 → 集成应用, Youdu's 企业应用): the APP
//! list of a tenant with its groups and categories (filters, with counts), the add/edit
//! form ([`form`]: every field of imo's form, validated on the server with errors next to
//! each field), an app's page with its credentials (`app_id`, `appkey`, EncodingAESKey), a
//! test notice to a user, and delete. Icons are uploaded with the form ([`icon`] checks
//! them; the gateway's `workbench::set_app_icon` stores them) and shown by signed link.
//!
//! Every page calls the workbench-app service (`$im/admin/app/{op}`): the rules (name
//! width, identifier, kinds, platforms) are the service's; the console maps its refusals
//! to the fields.
//!
//! Routes (below `/console`): `/apps` (pick a tenant), `/apps/{tid}` (the list,
//! `?group=&category=`), `/apps/{tid}/new` (GET form, POST multipart), `/apps/{tid}/app/
//! {app}` (the app), `/apps/{tid}/app/{app}/edit` (GET form, POST multipart),
//! `/apps/{tid}/app/{app}/{notice,delete}` (POST).

pub mod form;
pub mod icon;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::tenants::Tenant;
use super::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, Page, Post, render};
use crate::console::org::{refusal, unprocessable};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/apps", get(pick))
        .route("/apps/{tid}", get(list))
        .route("/apps/{tid}/app/{app}", get(show))
        .route("/apps/{tid}/app/{app}/notice", post(notice))
        .route("/apps/{tid}/app/{app}/delete", post(delete))
        .merge(form::routes())
}

/// How an app opens on one platform.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub web_url: String,
    pub external_browser: bool,
    pub launch_path: String,
    pub download_url: String,
}

impl Platform {
    /// A native app (launch path) rather than a web one.
    pub fn native(&self) -> bool {
        !self.launch_path.is_empty()
    }
}

/// Who sees an app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Visibility {
    pub mode: String,
    pub tenants: Vec<u64>,
    pub departments: Vec<u64>,
    pub users: Vec<String>,
}

/// A workbench app as the service shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct App {
    pub app_id: String,
    pub tenant: u64,
    pub name: String,
    pub identifier: String,
    pub appkey: String,
    pub encoding_aes_key: String,
    pub kind: String,
    pub group: String,
    pub category: String,
    pub icon_url: String,
    /// The uploaded icon's file id (set by [`crate::workbench::set_app_icon`]).
    pub icon_file: String,
    /// What pages show: a signed link to the uploaded icon, else `icon_url`.
    #[serde(skip)]
    pub icon_src: String,
    pub platforms: BTreeMap<String, Platform>,
    pub user_deletable: bool,
    pub sso_template: String,
    pub visibility: Visibility,
}

impl App {
    fn set_icon_src(&mut self, st: &ConsoleState) {
        self.icon_src = if self.icon_file.is_empty() {
            self.icon_url.clone()
        } else {
            st.app.signer.url(&self.icon_file)
        };
    }

    /// The platforms it is added to, as shown ("PC, Android").
    pub fn platform_list(&self) -> String {
        ["pc", "android", "ios"]
            .iter()
            .filter(|p| self.platforms.contains_key(**p))
            .map(|p| match *p {
                "pc" => "PC",
                "android" => "Android",
                _ => "iOS",
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How platform key `k` is shown.
    pub fn label(&self, k: &str) -> &'static str {
        match k {
            "pc" => "PC",
            "android" => "Android",
            "ios" => "iOS",
            _ => "Web",
        }
    }

    /// The entry of platform `p`, if added.
    pub fn platform(&self, p: &str) -> Option<&Platform> {
        self.platforms.get(p)
    }

    /// The translation key of its kind.
    pub fn kind_key(&self) -> &'static str {
        match self.kind.as_str() {
            "system" => "apps.kind_system",
            "custom" => "apps.kind_custom",
            _ => "apps.kind_enterprise",
        }
    }

    /// Its page.
    pub fn url(&self, tid: impl std::borrow::Borrow<u64>) -> String {
        format!("/console/apps/{}/app/{}", tid.borrow(), self.app_id)
    }
}

fn internal(e: serde_json::Error) -> ConsoleError {
    tracing::error!(error = %e, "console: undecodable workbench-app answer");
    ConsoleError::Internal
}

/// The apps of tenant `tid`.
pub async fn apps_of(st: &ConsoleState, tid: u64) -> Result<Vec<App>, ConsoleError> {
    let v = st.call("app/list", &json!({ "tenant": tid })).await?;
    let mut apps: Vec<App> = serde_json::from_value(v["apps"].clone()).map_err(internal)?;
    apps.iter_mut().for_each(|a| a.set_icon_src(st));
    Ok(apps)
}

/// App `app` of tenant `tid` (404 for another tenant's).
pub async fn app_of(st: &ConsoleState, tid: u64, app: &str) -> Result<App, ConsoleError> {
    let v = st
        .call("app/get", &json!({ "tenant": tid, "app_id": app }))
        .await?;
    let mut a: App = serde_json::from_value(v).map_err(internal)?;
    a.set_icon_src(st);
    // A platform app (tenant 0) visible to the tenant is readable, not the tenant's to edit.
    if a.tenant != tid {
        return Err(ConsoleError::NotFound);
    }
    Ok(a)
}

async fn pick(st: State<ConsoleState>, user: ConsoleUser) -> Result<Response, ConsoleError> {
    super::org::pick_tenant(&st, &user, "apps").await
}

#[derive(askama::Template)]
#[template(path = "console/apps/list.html")]
struct ListPage {
    page: Page,
    tenant: Tenant,
    apps: Vec<App>,
    /// (group, how many apps) and (category, how many), for the filters.
    groups: Vec<(String, usize)>,
    categories: Vec<(String, usize)>,
    group: String,
    category: String,
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    group: String,
    #[serde(default)]
    category: String,
}

/// Distinct non-empty values with their counts, in order.
pub fn counts<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for v in values.filter(|v| !v.is_empty()) {
        *m.entry(v.to_owned()).or_default() += 1;
    }
    m.into_iter().collect()
}

async fn list(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
    Query(f): Query<Filter>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let all = apps_of(&st, tid).await?;
    let groups = counts(all.iter().map(|a| a.group.as_str()));
    let categories = counts(all.iter().map(|a| a.category.as_str()));
    let apps = all
        .into_iter()
        .filter(|a| f.group.is_empty() || a.group == f.group)
        .filter(|a| f.category.is_empty() || a.category == f.category)
        .collect();
    Ok(render(&ListPage {
        page: user.page("apps"),
        tenant,
        apps,
        groups,
        categories,
        group: f.group,
        category: f.category,
    }))
}

#[derive(askama::Template)]
#[template(path = "console/apps/show.html")]
struct ShowPage {
    page: Page,
    tenant: Tenant,
    app: App,
    errors: FieldErrors,
    /// The test notice's outcome: accounts reached and unknown.
    sent: Vec<String>,
    unknown: Vec<String>,
    /// The notice form's values, kept.
    to: String,
    text: String,
}

async fn show(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path((tid, app)): Path<(u64, String)>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let app = app_of(&st, tid, &app).await?;
    Ok(render(&ShowPage {
        page: user.page("apps"),
        tenant,
        app,
        errors: FieldErrors::default(),
        sent: Vec::new(),
        unknown: Vec::new(),
        to: String::new(),
        text: String::new(),
    }))
}

/// Accounts a notice goes to at most from this form.
const MAX_NOTICE_TO: usize = 100;

async fn notice(
    st: State<ConsoleState>,
    Path((tid, app_id)): Path<(u64, String)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let app = app_of(&st, tid, &app_id).await?;
    let to = form.get("to").to_owned();
    let text = form.get("text").to_owned();
    let users: Vec<&str> = to
        .split([',', ';', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut errors = FieldErrors::default();
    if users.is_empty() || users.len() > MAX_NOTICE_TO {
        errors.add("to", user.t("apps.to_required"));
    }
    if text.is_empty() || text.len() > 4000 {
        errors.add("text", user.t("apps.text_required"));
    }
    let (mut sent, mut unknown) = (Vec::new(), Vec::new());
    if errors.is_empty() {
        let r = st
            .call(
                "app/notice",
                &json!({ "tenant": tid, "app_id": app.app_id, "users": users, "text": text }),
            )
            .await;
        match r {
            Ok(v) => {
                let strings = |k: &str| -> Vec<String> {
                    serde_json::from_value(v[k].clone()).unwrap_or_default()
                };
                sent = strings("sent");
                unknown = strings("unknown");
                tracing::info!(user = %user.username, tenant = tid, app = %app.app_id, sent = sent.len(), "console: test notice sent");
            }
            Err(e) => refusal(&mut errors, "text", user.t("apps.notice_refused"), e)?,
        }
    }
    let p = ShowPage {
        page: user.page("apps"),
        tenant,
        app,
        errors,
        sent,
        unknown,
        to,
        text,
    };
    Ok(if p.errors.is_empty() {
        render(&p)
    } else {
        unprocessable(&p)
    })
}

async fn delete(
    st: State<ConsoleState>,
    Path((tid, app_id)): Path<(u64, String)>,
    Post { user, form: _ }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let app = app_of(&st, tid, &app_id).await?;
    st.call(
        "app/delete",
        &json!({ "tenant": tid, "app_id": app.app_id }),
    )
    .await?;
    tracing::info!(user = %user.username, tenant = tid, app = %app.app_id, "console: workbench app deleted");
    Err(ConsoleError::Redirect(format!("/console/apps/{tid}")))
}
