//! The add/edit form of a workbench app, with every field of imo's form (seed 004, 工作台
//! 填写说明): the platforms it is added to (PC, Android, iOS), name (2–10 characters, two
//! Latin letters count as one), identifier (4–20 letters), icon (GIF/JPG/PNG ≤ 1 MB, with
//! a preview), group and category, per platform web (URL, embedded browser) or native
//! (launch path, download URL), auto-login parameters, user-deletable, placement (everyone
//! of the enterprise, or only some departments and users) and type (enterprise, system,
//! custom). Multipart (the icon): the `_csrf` part is checked before anything is done.
//!
//! Validation: the form's own consistency here (a chosen platform needs its URL or launch
//! path, URLs are http(s), auto-login needs its parameters, an icon is a real small image);
//! the app rules (name width, identifier) are the service's, whose refusal is shown next
//! to the field it names.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{App, Platform, app_of, apps_of, counts, icon};
use crate::console::org::{Dept, departments, unprocessable};
use crate::console::tenants::Tenant;
use crate::console::{
    ConsoleError, ConsoleState, ConsoleUser, FieldErrors, FormData, Page, render,
};

/// The platforms of the form: key, label, and its fields' names.
const PLATFORMS: [(&str, &str, &str, &str, &str); 3] = [
    ("pc", "PC", "url_pc", "launch_pc", "download_pc"),
    (
        "android",
        "Android",
        "url_android",
        "launch_android",
        "download_android",
    ),
    ("ios", "iOS", "url_ios", "launch_ios", "download_ios"),
];
/// Longest group, category, URL or parameter string the form takes.
const MAX_TEXT: usize = 1000;

/// Largest app form (bytes): room for a phone photo chosen by mistake as the icon, so that
/// it is refused next to the icon field (only the first [`icon::MAX_ICON`] + 1 bytes of it
/// are kept) instead of breaking the whole form.
const MAX_FORM: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<ConsoleState> {
    let limit = DefaultBodyLimit::max(MAX_FORM);
    Router::new()
        .route("/apps/{tid}/new", get(new_form).post(create).layer(limit))
        .route(
            "/apps/{tid}/app/{app}/edit",
            get(edit_form).post(update).layer(limit),
        )
}

/// One platform's section of the form.
pub struct PlatformValues {
    pub key: &'static str,
    pub label: &'static str,
    pub on: bool,
    pub native: bool,
    pub url: String,
    pub embedded: bool,
    pub launch: String,
    pub download: String,
    pub url_field: &'static str,
    pub launch_field: &'static str,
    pub download_field: &'static str,
}

/// What the form shows.
pub struct Values {
    pub name: String,
    pub identifier: String,
    pub group: String,
    pub category: String,
    pub kind: String,
    pub platforms: Vec<PlatformValues>,
    pub autologin: bool,
    pub sso: String,
    pub deletable: bool,
    pub only: bool,
    pub depts: Vec<u64>,
    pub users: String,
    pub icon_url: String,
    /// The icon shown on the form (the app's current one; not posted back).
    pub icon_preview: String,
}

impl Values {
    fn of_app(a: &App) -> Values {
        let platforms = PLATFORMS
            .iter()
            .map(|(key, label, u, l, d)| {
                let p = a.platforms.get(*key);
                let e = p.cloned().unwrap_or_default();
                PlatformValues {
                    key,
                    label,
                    on: p.is_some(),
                    native: e.native(),
                    embedded: !e.external_browser,
                    url: e.web_url,
                    launch: e.launch_path,
                    download: e.download_url,
                    url_field: u,
                    launch_field: l,
                    download_field: d,
                }
            })
            .collect();
        Values {
            name: a.name.clone(),
            identifier: a.identifier.clone(),
            group: a.group.clone(),
            category: a.category.clone(),
            kind: if a.kind.is_empty() {
                "enterprise".into()
            } else {
                a.kind.clone()
            },
            platforms,
            autologin: !a.sso_template.is_empty(),
            sso: a.sso_template.clone(),
            deletable: a.user_deletable,
            only: a.visibility.mode == "only",
            depts: a.visibility.departments.clone(),
            users: a.visibility.users.join(", "),
            icon_url: a.icon_url.clone(),
            icon_preview: a.icon_src.clone(),
        }
    }

    fn of_form(f: &FormData, icon_url: String, icon_preview: String) -> Values {
        let platforms = PLATFORMS
            .iter()
            .map(|(key, label, u, l, d)| PlatformValues {
                key,
                label,
                on: f.checked(&format!("plat_{key}")),
                native: f.get(&format!("type_{key}")) == "native",
                url: f.get(u).to_owned(),
                embedded: f.checked(&format!("embedded_{key}")),
                launch: f.get(l).to_owned(),
                download: f.get(d).to_owned(),
                url_field: u,
                launch_field: l,
                download_field: d,
            })
            .collect();
        Values {
            name: f.get("name").to_owned(),
            identifier: f.get("identifier").to_owned(),
            group: f.get("group").to_owned(),
            category: f.get("category").to_owned(),
            kind: f.get("kind").to_owned(),
            platforms,
            autologin: f.checked("autologin"),
            sso: f.get("sso").to_owned(),
            deletable: f.get("deletable") != "no",
            only: f.get("placement") == "only",
            depts: f
                .all("dept")
                .iter()
                .filter_map(|d| d.trim().parse().ok())
                .collect(),
            users: f.get("users").to_owned(),
            icon_url,
            icon_preview,
        }
    }

    /// The accounts of the placement's user list.
    fn user_list(&self) -> Vec<String> {
        self.users
            .split([',', ';', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks the form's consistency (the service checks the app rules).
    fn check(&self, user: &ConsoleUser, errors: &mut FieldErrors) {
        let http = |s: &str| s.starts_with("https://") || s.starts_with("http://");
        if self.name.is_empty() {
            errors.add("name", user.t("apps.name_invalid"));
        }
        if self.identifier.is_empty() {
            errors.add("identifier", user.t("apps.identifier_invalid"));
        }
        if !["enterprise", "system", "custom"].contains(&self.kind.as_str()) {
            errors.add("kind", user.t("apps.kind_invalid"));
        }
        if self.group.chars().count() > 64 || self.category.chars().count() > 64 {
            errors.add("group", user.t("apps.group_too_long"));
        }
        if !self.platforms.iter().any(|p| p.on) {
            errors.add("platforms", user.t("apps.platform_required"));
        }
        for p in self.platforms.iter().filter(|p| p.on) {
            if p.native {
                if p.launch.is_empty() || p.launch.len() > MAX_TEXT {
                    errors.add(p.launch_field, user.t("apps.launch_required"));
                }
                if !p.download.is_empty() && (!http(&p.download) || p.download.len() > MAX_TEXT) {
                    errors.add(p.download_field, user.t("apps.url_invalid"));
                }
            } else if !http(&p.url) || p.url.len() > MAX_TEXT {
                errors.add(p.url_field, user.t("apps.url_invalid"));
            }
        }
        if self.autologin && (self.sso.is_empty() || self.sso.len() > MAX_TEXT) {
            errors.add("sso", user.t("apps.sso_required"));
        }
        if self.only && self.depts.is_empty() && self.user_list().is_empty() {
            errors.add("placement", user.t("apps.placement_required"));
        }
    }

    /// The service's body (without tenant and app id).
    fn body(&self) -> Value {
        let mut platforms = serde_json::Map::new();
        for p in self.platforms.iter().filter(|p| p.on) {
            let e = if p.native {
                Platform {
                    launch_path: p.launch.clone(),
                    download_url: p.download.clone(),
                    ..Platform::default()
                }
            } else {
                Platform {
                    web_url: p.url.clone(),
                    external_browser: !p.embedded,
                    ..Platform::default()
                }
            };
            platforms.insert(
                p.key.to_owned(),
                json!({ "web_url": e.web_url, "external_browser": e.external_browser,
                        "launch_path": e.launch_path, "download_url": e.download_url }),
            );
        }
        let (mode, depts, users) = if self.only {
            ("only", self.depts.clone(), self.user_list())
        } else {
            ("all", Vec::new(), Vec::new())
        };
        json!({
            "name": self.name,
            "identifier": self.identifier,
            "kind": self.kind,
            "group": self.group,
            "category": self.category,
            "platforms": platforms,
            "user_deletable": self.deletable,
            "sso_template": if self.autologin { self.sso.as_str() } else { "" },
            "visibility": { "mode": mode, "tenants": [], "departments": depts, "users": users },
            "icon_url": self.icon_url,
        })
    }
}

#[derive(askama::Template)]
#[template(path = "console/apps/form.html")]
struct FormPage {
    page: Page,
    tenant: Tenant,
    /// The app being edited (none: a new one).
    app_id: String,
    v: Values,
    depts: Vec<Dept>,
    groups: Vec<(String, usize)>,
    categories: Vec<(String, usize)>,
    errors: FieldErrors,
}

impl FormPage {
    fn action(&self) -> String {
        if self.app_id.is_empty() {
            format!("/console/apps/{}/new", self.tenant.tenant_id)
        } else {
            format!(
                "/console/apps/{}/app/{}/edit",
                self.tenant.tenant_id, self.app_id
            )
        }
    }

    fn dept_on(&self, d: &Dept) -> bool {
        self.v.depts.contains(&d.dept_id)
    }
}

async fn form_page(
    st: &ConsoleState,
    user: &ConsoleUser,
    tenant: Tenant,
    app_id: String,
    v: Values,
    errors: FieldErrors,
) -> Result<Response, ConsoleError> {
    let tid = tenant.tenant_id;
    let apps = apps_of(st, tid).await?;
    let p = FormPage {
        page: user.page("apps"),
        depts: departments(st, tid).await?,
        groups: counts(apps.iter().map(|a| a.group.as_str())),
        categories: counts(apps.iter().map(|a| a.category.as_str())),
        tenant,
        app_id,
        v,
        errors,
    };
    Ok(if p.errors.is_empty() {
        render(&p)
    } else {
        unprocessable(&p)
    })
}

async fn new_form(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let v = Values::of_app(&App {
        user_deletable: true,
        ..App::default()
    });
    form_page(&st, &user, tenant, String::new(), v, FieldErrors::default()).await
}

async fn edit_form(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path((tid, app)): Path<(u64, String)>,
) -> Result<Response, ConsoleError> {
    let tenant = user.tenant(&st, tid).await?;
    let app = app_of(&st, tid, &app).await?;
    let v = Values::of_app(&app);
    form_page(&st, &user, tenant, app.app_id, v, FieldErrors::default()).await
}

/// The form's fields and its icon file (empty when none was chosen).
async fn read(user: &ConsoleUser, mut mp: Multipart) -> Result<(FormData, Vec<u8>), ConsoleError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut icon = Vec::new();
    let bad = |e: axum::extract::multipart::MultipartError| {
        tracing::info!(error = %e, "console: unreadable app form");
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ConsoleError::Refused(user.t("apps.form_too_large").to_owned())
        } else {
            ConsoleError::Refused(format!("unreadable form: {}", e.body_text()))
        }
    };
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "icon" {
            // Keep one byte past the limit at most: enough for the size check to refuse it.
            icon.clear();
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                let room = (icon::MAX_ICON + 1).saturating_sub(icon.len());
                icon.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        } else {
            let text = field.text().await.map_err(bad)?;
            pairs.push((name, text));
        }
    }
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    Ok((FormData::parse(encoded.as_bytes()), icon))
}

/// Maps the service's refusal to the field it names.
fn service_refusal(
    user: &ConsoleUser,
    errors: &mut FieldErrors,
    e: ConsoleError,
) -> Result<(), ConsoleError> {
    match e {
        ConsoleError::Refused(m) if m.contains("app name") => {
            errors.add("name", user.t("apps.name_invalid"));
            Ok(())
        }
        ConsoleError::Refused(m) if m.contains("identifier") => {
            errors.add("identifier", user.t("apps.identifier_invalid"));
            Ok(())
        }
        other => crate::console::org::refusal(errors, "form", user.t("apps.refused"), other),
    }
}

/// A checked icon to store once the app exists: its bytes and sniffed type.
type Icon = Option<(Vec<u8>, &'static str)>;

/// Validates the posted form and its icon (`old`: the app's icon URL and what the form
/// shows of it). `Err(errors)`: show again.
async fn validate(
    st: &ConsoleState,
    user: &ConsoleUser,
    form: &FormData,
    icon_bytes: Vec<u8>,
    old: (String, String),
) -> Result<Result<(Values, Icon), (Values, FieldErrors)>, ConsoleError> {
    let mut errors = FieldErrors::default();
    let v = Values::of_form(form, old.0, old.1);
    v.check(user, &mut errors);
    let icon = if icon_bytes.is_empty() {
        None
    } else if st.app.files.is_none() {
        tracing::warn!("console: an icon was uploaded but file storage is not configured");
        errors.add("icon", user.t("apps.icon_no_storage"));
        None
    } else {
        match icon::check(&icon_bytes) {
            Ok(mime) => Some((icon_bytes, mime)),
            Err(key) => {
                errors.add("icon", user.t(key));
                None
            }
        }
    };
    if !errors.is_empty() {
        return Ok(Err((v, errors)));
    }
    Ok(Ok((v, icon)))
}

/// Stores `icon` as app `app_id`'s through the gateway's one icon path (the REST API's
/// [`crate::workbench::set_app_icon`]: blob store, then `icon_file` on the app).
async fn store_icon(
    st: &ConsoleState,
    tid: u64,
    app_id: &str,
    icon: Icon,
) -> Result<(), ConsoleError> {
    let Some((bytes, mime)) = icon else {
        return Ok(());
    };
    crate::workbench::set_app_icon(&st.app, tid, app_id, "icon".into(), mime, bytes.into())
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(tenant = tid, app = app_id, error = ?e, "console: icon not stored");
            ConsoleError::Internal
        })
}

async fn create(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path(tid): Path<u64>,
    mp: Multipart,
) -> Result<Response, ConsoleError> {
    let (form, icon_bytes) = read(&user, mp).await?;
    user.check_csrf(form.raw("_csrf"))?;
    let tenant = user.tenant(&st, tid).await?;
    let none = (String::new(), String::new());
    let (v, mut errors) = match validate(&st, &user, &form, icon_bytes, none).await? {
        Err(x) => x,
        Ok((v, icon)) => {
            let mut body = v.body();
            body["tenant"] = json!(tid);
            match st.call("app/create", &body).await {
                Ok(a) => {
                    let id = a["app_id"].as_str().unwrap_or_default();
                    store_icon(&st, tid, id, icon).await?;
                    tracing::info!(user = %user.username, tenant = tid, app = id, "console: workbench app created");
                    return Err(ConsoleError::Redirect(format!(
                        "/console/apps/{tid}/app/{id}"
                    )));
                }
                Err(e) => (v, {
                    let mut errors = FieldErrors::default();
                    service_refusal(&user, &mut errors, e)?;
                    errors
                }),
            }
        }
    };
    if errors.is_empty() {
        errors.add("form", user.t("apps.refused"));
    }
    form_page(&st, &user, tenant, String::new(), v, errors).await
}

async fn update(
    st: State<ConsoleState>,
    user: ConsoleUser,
    Path((tid, app_id)): Path<(u64, String)>,
    mp: Multipart,
) -> Result<Response, ConsoleError> {
    let (form, icon_bytes) = read(&user, mp).await?;
    user.check_csrf(form.raw("_csrf"))?;
    let tenant = user.tenant(&st, tid).await?;
    let app = app_of(&st, tid, &app_id).await?;
    let old = (app.icon_url.clone(), app.icon_src.clone());
    let (v, mut errors) = match validate(&st, &user, &form, icon_bytes, old).await? {
        Err(x) => x,
        Ok((v, icon)) => {
            let mut body = v.body();
            body["tenant"] = json!(tid);
            body["app_id"] = json!(app.app_id);
            match st.call("app/update", &body).await {
                Ok(_) => {
                    store_icon(&st, tid, &app.app_id, icon).await?;
                    tracing::info!(user = %user.username, tenant = tid, app = %app.app_id, "console: workbench app updated");
                    return Err(ConsoleError::Redirect(format!(
                        "/console/apps/{tid}/app/{}",
                        app.app_id
                    )));
                }
                Err(e) => (v, {
                    let mut errors = FieldErrors::default();
                    service_refusal(&user, &mut errors, e)?;
                    errors
                }),
            }
        }
    };
    if errors.is_empty() {
        errors.add("form", user.t("apps.refused"));
    }
    form_page(&st, &user, tenant, app.app_id, v, errors).await
}
