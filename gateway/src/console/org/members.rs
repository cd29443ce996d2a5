//! A department's page (its sub-departments, a page of its members, rename/move/delete
//! forms) and members: add, edit (details and departments), disable and enable (a ban
//! from connecting, `moderation/ban`), reset the password (the member must change it at
//! the next password login, seed 000).
//!
//! Routes (below `/console/org/{tid}`): `dept/{d}/members` (POST: add a member to it),
//! `member/{account}` (GET the edit form, POST save), `member/{account}/{disable,enable,
//! reset}` (POST).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dept, departments, dept_url, refusal, unprocessable};
use crate::console::render;
use crate::console::tenants::Tenant;
use crate::console::{ConsoleError, ConsoleState, ConsoleUser, FieldErrors, FormData, Page, Post};

/// Members shown per page of a department.
const PAGE: usize = 50;
/// The longest detail field the directory keeps (bytes).
const MAX_FIELD: usize = 128;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/org/{tid}/dept/{d}/members", post(add_member))
        .route(
            "/org/{tid}/member/{account}",
            get(member_page).post(save_member),
        )
        .route("/org/{tid}/member/{account}/disable", post(disable))
        .route("/org/{tid}/member/{account}/enable", post(enable))
        .route("/org/{tid}/member/{account}/reset", post(reset_password))
}

/// A member as the directory shows it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub uid: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub position: String,
    #[serde(default)]
    pub departments: Vec<u64>,
    #[serde(default)]
    pub disabled: bool,
}

impl Member {
    /// The URL of its edit page.
    pub fn url(&self, tid: impl std::borrow::Borrow<u64>) -> String {
        member_url(*tid.borrow(), &self.user_id)
    }
}

fn member_url(tid: u64, account: &str) -> String {
    format!(
        "/console/org/{tid}/member/{}",
        form_urlencoded::byte_serialize(account.as_bytes()).collect::<String>()
    )
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ConsoleError> {
    serde_json::from_value(v).map_err(|e| {
        tracing::error!(error = %e, "console: undecodable directory answer");
        ConsoleError::Internal
    })
}

#[derive(Deserialize)]
struct DeptAnswer {
    dept_id: u64,
    name: String,
    #[serde(default)]
    parent: u64,
    #[serde(default)]
    children: Vec<Child>,
    #[serde(default)]
    members: Vec<Member>,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct Child {
    dept_id: u64,
    name: String,
}

#[derive(askama::Template)]
#[template(path = "console/org/dept.html")]
struct DeptPage {
    page: Page,
    tenant: Tenant,
    dept: DeptAnswer,
    /// Where it is in the tree ("/" for the root).
    path: String,
    /// Departments it may move under (not itself nor one below it).
    parents: Vec<Dept>,
    errors: FieldErrors,
    /// The add-member form's values, kept when it is refused.
    add: FormData,
    /// The `after` of this page of members ("" for the first).
    after: String,
}

#[derive(Deserialize)]
pub struct After {
    #[serde(default)]
    after: String,
}

async fn render_dept(
    st: &ConsoleState,
    user: &ConsoleUser,
    tenant: Tenant,
    d: u64,
    after: String,
    errors: FieldErrors,
    add: FormData,
) -> Result<DeptPage, ConsoleError> {
    let tid = tenant.tenant_id;
    let v = st
        .call(
            "dir/dept",
            &json!({ "tenant": tid, "dept": d, "after": after, "limit": PAGE }),
        )
        .await?;
    let dept: DeptAnswer = decode(v)?;
    let all = departments(st, tid).await?;
    let path = all
        .iter()
        .find(|x| x.dept_id == d)
        .map_or_else(|| "/".to_owned(), Dept::shown_path);
    let own = path.trim_start_matches('/').to_owned();
    let parents = all
        .into_iter()
        .filter(|x| {
            x.dept_id != d
                && (own.is_empty() || !(x.path == own || x.path.starts_with(&format!("{own}/"))))
        })
        .collect();
    Ok(DeptPage {
        page: user.page("org"),
        tenant,
        dept,
        path,
        parents,
        errors,
        add,
        after,
    })
}

pub(super) async fn dept_page(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path((tid, d)): Path<(u64, u64)>,
    Query(q): Query<After>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let p = render_dept(
        &st,
        &user,
        tenant,
        d,
        q.after,
        FieldErrors::default(),
        FormData::default(),
    )
    .await?;
    Ok(render(&p))
}

/// The department page again, with the errors of one of its forms (422).
pub(super) async fn dept_again(
    st: &ConsoleState,
    user: &ConsoleUser,
    tid: u64,
    d: u64,
    errors: FieldErrors,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(st, tid).await?;
    let p = render_dept(
        st,
        user,
        tenant,
        d,
        String::new(),
        errors,
        FormData::default(),
    )
    .await?;
    Ok(unprocessable(&p))
}

/// Checks the detail fields of a member form.
fn check_details(user: &ConsoleUser, form: &FormData, errors: &mut FieldErrors) {
    for field in ["name", "title", "position", "phone", "email"] {
        if form.get(field).len() > MAX_FIELD {
            errors.add(field, user.t("org.too_long"));
        }
    }
    let email = form.get("email");
    if !email.is_empty() && !email.contains('@') {
        errors.add("email", user.t("org.email_invalid"));
    }
}

fn details(form: &FormData) -> Value {
    json!({
        "name": form.get("name"),
        "title": form.get("title"),
        "position": form.get("position"),
        "phone": form.get("phone"),
        "email": form.get("email"),
    })
}

/// Whether `a` is an account the directory takes (letters, digits, `_-.@+`, ≤ 64).
fn valid_account(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@+".contains(&b))
}

async fn add_member(
    st: State<ConsoleState>,
    Path((tid, d)): Path<(u64, u64)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let account = form.get("account");
    let password = form.raw("password");
    let mut errors = FieldErrors::default();
    if !valid_account(account) {
        errors.add("account", user.t("org.account_invalid"));
    }
    if !password.is_empty() && password.len() < 8 {
        errors.add("password", user.t("org.password_short"));
    }
    check_details(&user, &form, &mut errors);
    if errors.is_empty() {
        // A new account only: an existing one is edited on its own page.
        match st
            .call("dir/member", &json!({ "tenant": tid, "account": account }))
            .await
        {
            Ok(_) => errors.add("account", user.t("org.account_taken")),
            Err(ConsoleError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    if errors.is_empty() {
        let mut body = details(&form);
        body["tenant"] = json!(tid);
        body["account"] = json!(account);
        body["departments"] = json!([d]);
        if !password.is_empty() {
            body["password"] = json!(password);
            body["must_change_password"] = json!(true);
        }
        match st.call("dir/add_member", &body).await {
            Ok(_) => {
                tracing::info!(user = %user.username, tenant = tid, account, "console: member added");
                return Err(ConsoleError::Redirect(dept_url(tid, d)));
            }
            Err(e) => refusal(&mut errors, "account", user.t("org.member_refused"), e)?,
        }
    }
    let p = render_dept(&st, &user, tenant, d, String::new(), errors, form).await?;
    Ok(unprocessable(&p))
}

#[derive(askama::Template)]
#[template(path = "console/org/member.html")]
struct MemberPage {
    page: Page,
    tenant: Tenant,
    member: Member,
    depts: Vec<Dept>,
    errors: FieldErrors,
    /// The message after a successful action (translation key), if any.
    done: &'static str,
}

impl MemberPage {
    fn in_dept(&self, d: &Dept) -> bool {
        self.member.departments.contains(&d.dept_id)
    }
}

async fn load_member(st: &ConsoleState, tid: u64, account: &str) -> Result<Member, ConsoleError> {
    decode(
        st.call("dir/member", &json!({ "tenant": tid, "account": account }))
            .await?,
    )
}

async fn member_again(
    st: &ConsoleState,
    user: &ConsoleUser,
    tenant: Tenant,
    member: Member,
    errors: FieldErrors,
    done: &'static str,
) -> Result<Response, ConsoleError> {
    let depts = departments(st, tenant.tenant_id).await?;
    let p = MemberPage {
        page: user.page("org"),
        tenant,
        member,
        depts,
        done,
        errors,
    };
    Ok(if p.errors.is_empty() {
        render(&p)
    } else {
        unprocessable(&p)
    })
}

#[derive(Deserialize)]
struct Done {
    #[serde(default)]
    done: String,
}

async fn member_page(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path((tid, account)): Path<(u64, String)>,
    Query(q): Query<Done>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let member = load_member(&st, tid, &account).await?;
    let done = match q.done.as_str() {
        "saved" => "org.saved",
        "disabled" => "org.disabled_done",
        "enabled" => "org.enabled_done",
        "reset" => "org.reset_done",
        _ => "",
    };
    member_again(&st, &user, tenant, member, FieldErrors::default(), done).await
}

async fn save_member(
    st: State<ConsoleState>,
    Path((tid, account)): Path<(u64, String)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let mut member = load_member(&st, tid, &account).await?;
    let mut errors = FieldErrors::default();
    check_details(&user, &form, &mut errors);
    let depts: Vec<u64> = form
        .all("dept")
        .iter()
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    if depts.is_empty() {
        errors.add("dept", user.t("org.dept_required"));
    }
    if errors.is_empty() {
        let mut body = details(&form);
        body["tenant"] = json!(tid);
        body["account"] = json!(account);
        body["departments"] = json!(depts);
        match st.call("dir/update_member", &body).await {
            Ok(_) => {
                return Err(ConsoleError::Redirect(format!(
                    "{}?done=saved",
                    member_url(tid, &account)
                )));
            }
            Err(e) => refusal(&mut errors, "dept", user.t("org.member_refused"), e)?,
        }
    }
    // Show what was typed, with the errors.
    member.name = form.get("name").to_owned();
    member.title = form.get("title").to_owned();
    member.position = form.get("position").to_owned();
    member.phone = form.get("phone").to_owned();
    member.email = form.get("email").to_owned();
    member.departments = depts;
    member_again(&st, &user, tenant, member, errors, "").await
}

async fn set_disabled(
    st: &ConsoleState,
    user: &ConsoleUser,
    tid: u64,
    account: &str,
    disable: bool,
) -> Result<Response, ConsoleError> {
    user.tenant(st, tid).await?;
    load_member(st, tid, account).await?;
    let (op, done) = if disable {
        ("moderation/ban", "disabled")
    } else {
        ("moderation/unban", "enabled")
    };
    // seconds 0: until enabled again.
    st.call(op, &json!({ "tenant": tid, "user": account, "seconds": 0 }))
        .await?;
    tracing::info!(user = %user.username, tenant = tid, account, disable, "console: member disabled/enabled");
    Err(ConsoleError::Redirect(format!(
        "{}?done={done}",
        member_url(tid, account)
    )))
}

async fn disable(
    st: State<ConsoleState>,
    Path((tid, account)): Path<(u64, String)>,
    Post { user, form: _ }: Post,
) -> Result<Response, ConsoleError> {
    set_disabled(&st, &user, tid, &account, true).await
}

async fn enable(
    st: State<ConsoleState>,
    Path((tid, account)): Path<(u64, String)>,
    Post { user, form: _ }: Post,
) -> Result<Response, ConsoleError> {
    set_disabled(&st, &user, tid, &account, false).await
}

async fn reset_password(
    st: State<ConsoleState>,
    Path((tid, account)): Path<(u64, String)>,
    Post { user, form }: Post,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let member = load_member(&st, tid, &account).await?;
    let password = form.raw("password");
    let mut errors = FieldErrors::default();
    if password.len() < 8 || password.len() > 128 {
        errors.add("password", user.t("org.password_short"));
    } else {
        let body = json!({ "tenant": tid, "account": account, "password": password,
                           "must_change_password": true });
        match st.call("dir/update_member", &body).await {
            Ok(_) => {
                tracing::info!(user = %user.username, tenant = tid, account, "console: member password reset");
                return Err(ConsoleError::Redirect(format!(
                    "{}?done=reset",
                    member_url(tid, &account)
                )));
            }
            Err(e) => refusal(&mut errors, "password", user.t("org.member_refused"), e)?,
        }
    }
    member_again(&st, &user, tenant, member, errors, "").await
}
