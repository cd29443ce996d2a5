//! Organisation (seed 000's 组织架构): the department tree of a tenant with add, rename,
//! move and delete; a department's page with its members ([`members`]); CSV import with a
//! template, a default password and a report of rejected rows, and CSV export ([`csv`]).
//!
//! Every page is one more client of the directory service (`$im/admin/dir/{op}`,
//! `docs/im/org.md`): the rules (unique sibling names, no move under itself, no delete of
//! a department with members or children) are the service's; a refusal is shown next to
//! the form that caused it, in the visitor's language.
//!
//! Routes (below `/console`): `/org` (pick a tenant), `/org/{tid}` (the tree),
//! `/org/{tid}/depts` (POST: create), `/org/{tid}/dept/{d}` (a department),
//! `/org/{tid}/dept/{d}/{rename,move,delete}` (POST), the member routes of [`members`]
//! and the CSV routes of [`csv`].

pub mod csv;
pub mod members;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::tenants::Tenant;
use super::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, Page, Post, Role, render};

/// The root department (the enterprise itself).
pub const ROOT: u64 = 1;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/org", get(pick))
        .route("/org/{tid}", get(tree))
        .route("/org/{tid}/depts", post(create_dept))
        .route("/org/{tid}/dept/{d}", get(members::dept_page))
        .route("/org/{tid}/dept/{d}/rename", post(rename_dept))
        .route("/org/{tid}/dept/{d}/move", post(move_dept))
        .route("/org/{tid}/dept/{d}/delete", post(delete_dept))
        .merge(members::routes())
        .merge(csv::routes())
}

/// A department as `dir/list_depts` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Dept {
    pub dept_id: u64,
    pub name: String,
    #[serde(default)]
    pub parent: u64,
    #[serde(default)]
    pub path: String,
}

impl Dept {
    /// How deep below the root (the root: 0).
    pub fn depth(&self) -> usize {
        if self.path.is_empty() {
            0
        } else {
            self.path.matches('/').count() + 1
        }
    }

    /// The indentation class of its row (`d0`..`d8`).
    pub fn indent(&self) -> String {
        format!("d{}", self.depth().min(8))
    }

    /// The path as shown ("/" for the root).
    pub fn shown_path(&self) -> String {
        if self.path.is_empty() {
            "/".into()
        } else {
            format!("/{}", self.path)
        }
    }
}

/// Every department of tenant `tid`, in path order (the root first).
pub async fn departments(st: &ConsoleState, tid: u64) -> Result<Vec<Dept>, ConsoleError> {
    let v = st.call("dir/list_depts", &json!({ "tenant": tid })).await?;
    let mut depts: Vec<Dept> = serde_json::from_value(v["departments"].clone()).map_err(|e| {
        tracing::error!(error = %e, "console: undecodable department list");
        ConsoleError::Internal
    })?;
    depts.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(depts)
}

#[derive(askama::Template)]
#[template(path = "console/org/pick.html")]
struct PickPage {
    page: Page,
    /// "org" or "apps": where a tenant leads.
    area: &'static str,
    tenants: Vec<Tenant>,
}

/// The tenants the user may manage; a tenant administrator goes straight to theirs.
pub(super) async fn pick_tenant(
    st: &ConsoleState,
    user: &ConsoleUser,
    area: &'static str,
) -> Result<Response, ConsoleError> {
    user.require_tenant_role()?;
    if user.role == Role::TenantAdmin
        && let Some(t) = user.tenant
    {
        return Err(ConsoleError::Redirect(format!("/console/{area}/{t}")));
    }
    let v = st
        .call(
            "console/tenants/list",
            &json!({ "account": user.account, "tenant": user.tenant }),
        )
        .await?;
    let tenants: Vec<Tenant> = serde_json::from_value(v["tenants"].clone()).unwrap_or_default();
    let tenants = tenants.into_iter().filter(|t| user.sees(t)).collect();
    Ok(render(&PickPage {
        page: user.page(area),
        area,
        tenants,
    }))
}

async fn pick(st: State<ConsoleState>, user: ConsoleUser) -> Result<Response, ConsoleError> {
    pick_tenant(&st, &user, "org").await
}

#[derive(askama::Template)]
#[template(path = "console/org/tree.html")]
struct TreePage {
    page: Page,
    tenant: Tenant,
    depts: Vec<Dept>,
    errors: FieldErrors,
    /// The add form's values, kept when it is refused.
    name: String,
    parent: u64,
}

async fn tree(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let depts = departments(&st, tid).await?;
    Ok(render(&TreePage {
        page: user.page("org"),
        tenant,
        depts,
        errors: FieldErrors::default(),
        name: String::new(),
        parent: ROOT,
    }))
}

/// A service refusal as a form error (the service's own words after ours), or the error.
pub(super) fn refusal(
    errors: &mut FieldErrors,
    field: &'static str,
    ours: &str,
    e: ConsoleError,
) -> Result<(), ConsoleError> {
    match e {
        ConsoleError::Refused(m) => {
            errors.add(field, format!("{ours} ({m})"));
            Ok(())
        }
        other => Err(other),
    }
}

/// A page rendered again with its form errors (422).
pub(super) fn unprocessable<T: askama::Template>(t: &T) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, render(t)).into_response()
}

async fn create_dept(
    st: State<ConsoleState>,
    Path(tid): Path<u64>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let name = form.get("name").to_owned();
    let parent: u64 = form.get("parent").parse().unwrap_or(ROOT);
    let mut errors = FieldErrors::default();
    if name.is_empty() {
        errors.add("name", user.t("org.name_required"));
    } else {
        let r = st
            .call(
                "dir/create_dept",
                &json!({ "tenant": tid, "name": name, "parent": parent }),
            )
            .await;
        match r {
            Ok(v) => {
                let id = v["dept_id"].as_u64().unwrap_or(ROOT);
                tracing::info!(user = %user.username, tenant = tid, dept = id, "console: department created");
                return Err(ConsoleError::Redirect(format!(
                    "/console/org/{tid}?made={id}"
                )));
            }
            Err(ConsoleError::NotFound) => errors.add("parent", user.t("org.parent_unknown")),
            Err(e) => refusal(&mut errors, "name", user.t("org.name_refused"), e)?,
        }
    }
    let depts = departments(&st, tid).await?;
    Ok(unprocessable(&TreePage {
        page: user.page("org"),
        tenant,
        depts,
        errors,
        name,
        parent,
    }))
}

async fn rename_dept(
    st: State<ConsoleState>,
    Path((tid, d)): Path<(u64, u64)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let name = form.get("name").to_owned();
    let mut errors = FieldErrors::default();
    if name.is_empty() {
        errors.add("rename", user.t("org.name_required"));
    } else {
        let r = st
            .call(
                "dir/update_dept",
                &json!({ "tenant": tid, "dept": d, "name": name }),
            )
            .await;
        match r {
            Ok(_) => return Err(ConsoleError::Redirect(dept_url(tid, d))),
            Err(e) => refusal(&mut errors, "rename", user.t("org.name_refused"), e)?,
        }
    }
    members::dept_again(&st, &user, tid, d, errors).await
}

async fn move_dept(
    st: State<ConsoleState>,
    Path((tid, d)): Path<(u64, u64)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let mut errors = FieldErrors::default();
    match form.get("parent").parse::<u64>() {
        Err(_) => errors.add("move", user.t("org.parent_unknown")),
        Ok(parent) => {
            let r = st
                .call(
                    "dir/update_dept",
                    &json!({ "tenant": tid, "dept": d, "parent": parent }),
                )
                .await;
            match r {
                Ok(_) => return Err(ConsoleError::Redirect(dept_url(tid, d))),
                Err(ConsoleError::NotFound) => errors.add("move", user.t("org.parent_unknown")),
                Err(e) => refusal(&mut errors, "move", user.t("org.move_refused"), e)?,
            }
        }
    }
    members::dept_again(&st, &user, tid, d, errors).await
}

async fn delete_dept(
    st: State<ConsoleState>,
    Path((tid, d)): Path<(u64, u64)>,
    Post { user, form: _ }: Post,
) -> Result<Response, ConsoleError> {
    user.tenant(&st, tid).await?;
    let mut errors = FieldErrors::default();
    match st
        .call("dir/delete_dept", &json!({ "tenant": tid, "dept": d }))
        .await
    {
        Ok(_) => {
            tracing::info!(user = %user.username, tenant = tid, dept = d, "console: department deleted");
            return Err(ConsoleError::Redirect(format!("/console/org/{tid}")));
        }
        Err(e) => refusal(&mut errors, "delete", user.t("org.delete_refused"), e)?,
    }
    members::dept_again(&st, &user, tid, d, errors).await
}

/// The page of department `d` of tenant `tid`.
pub fn dept_url(tid: u64, d: u64) -> String {
    format!("/console/org/{tid}/dept/{d}")
}
